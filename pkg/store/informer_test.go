package store_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// recorder keeps what an informer's handlers saw, by key.
type recorder struct {
	mu      sync.Mutex
	adds    map[string]int
	updates map[string]int
	deletes map[string]int
	phase   map[string]v1alpha1.Phase
}

func newRecorder() *recorder {
	return &recorder{adds: map[string]int{}, updates: map[string]int{}, deletes: map[string]int{}, phase: map[string]v1alpha1.Phase{}}
}

func (r *recorder) handlers() cache.ResourceEventHandlerFuncs {
	key := func(obj any) string {
		k, _ := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		return k
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.adds[key(obj)]++
			r.phase[key(obj)] = obj.(*v1alpha1.Sandbox).Status.Phase
		},
		UpdateFunc: func(_, obj any) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.updates[key(obj)]++
			r.phase[key(obj)] = obj.(*v1alpha1.Sandbox).Status.Phase
		},
		DeleteFunc: func(obj any) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.deletes[key(obj)]++
		},
	}
}

// eventually polls cond until it holds or five seconds pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func startInformer(t *testing.T, s store.Interface, r *recorder) cache.SharedIndexInformer {
	t.Helper()
	inf := cache.NewSharedIndexInformer(store.ListWatch(s, ""), &v1alpha1.Sandbox{}, 0, cache.Indexers{})
	if _, err := inf.AddEventHandler(r.handlers()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		inf.RunWithContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	return inf
}

func TestSharedInformer(t *testing.T) {
	eachStore(t, func(t *testing.T, s store.Interface) {
		ctx := context.Background()
		mustCreate(t, s, sandbox("default", "before")) // found by the initial list
		r := newRecorder()
		inf := startInformer(t, s, r)

		in := sandbox("team-a", "a")
		in.Finalizers = []string{v1alpha1.Finalizer}
		a := mustCreate(t, s, in)
		a.Status.Phase = v1alpha1.PhaseRunning
		a, err := s.UpdateStatus(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "default", "before"); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "team-a", "a"); err != nil { // marks only: finalizer
			t.Fatal(err)
		}

		check := func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.adds["default/before"] == 1 && r.deletes["default/before"] == 1 &&
				r.adds["team-a/a"] == 1 && r.updates["team-a/a"] == 2 && r.phase["team-a/a"] == v1alpha1.PhaseRunning &&
				r.deletes["team-a/a"] == 0
		}
		eventually(t, "adds, status update, deletion mark and delete", check)

		obj, exists, err := inf.GetIndexer().GetByKey("team-a/a")
		if err != nil || !exists {
			t.Fatalf("team-a/a not in the informer's cache: %v", err)
		}
		if obj.(*v1alpha1.Sandbox).DeletionTimestamp == nil {
			t.Error("the cached object does not show the deletion mark")
		}

		// The controller's last step: drop the finalizer, and the object goes.
		a, err = s.Get(ctx, "team-a", "a")
		if err != nil {
			t.Fatal(err)
		}
		a.Finalizers = nil
		if _, err := s.Update(ctx, a); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the delete after the last finalizer", func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.deletes["team-a/a"] == 1
		})
		if keys := inf.GetIndexer().ListKeys(); len(keys) != 0 {
			t.Errorf("cache still holds %v", keys)
		}
	})
}

// TestInformerSurvivesCutWatches has the store cut the informer's watch on
// bursts of writes; the informer resumes from the history or, when the history
// is too short, relists, and ends up with the truth either way.
func TestInformerSurvivesCutWatches(t *testing.T) {
	for _, tc := range []struct {
		name    string
		history int
	}{{"resume", store.DefaultWatchHistory}, {"relist", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t, store.WithWatchBuffer(1), store.WithWatchHistory(tc.history))
			inf := startInformer(t, s, newRecorder())

			var wg sync.WaitGroup
			for g := range 4 {
				wg.Go(func() {
					for i := range 25 {
						name := fmt.Sprintf("g%d-%d", g, i)
						if _, err := s.Create(ctx, sandbox("default", name)); err != nil {
							t.Error(err)
						}
						if i%3 == 0 {
							if err := s.Delete(ctx, "default", name); err != nil {
								t.Error(err)
							}
						}
					}
				})
			}
			wg.Wait()
			list, err := s.List(ctx, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, it := range list.Items {
				want = append(want, it.Namespace+"/"+it.Name)
			}
			eventually(t, "the informer's cache to match the store", func() bool {
				got := inf.GetIndexer().ListKeys()
				slices.Sort(got)
				return inf.LastSyncResourceVersion() == list.ResourceVersion && slices.Equal(got, want)
			})
		})
	}
}

func TestListWatchRefusesSelectors(t *testing.T) {
	lw := store.ListWatch(open(t), "")
	ctx := context.Background()
	if _, err := lw.ListWithContext(ctx, metav1.ListOptions{LabelSelector: "a=b"}); !apierrors.IsBadRequest(err) {
		t.Errorf("list with a label selector: %v, want BadRequest", err)
	}
	if _, err := lw.WatchWithContext(ctx, metav1.ListOptions{FieldSelector: "metadata.name=a"}); !apierrors.IsBadRequest(err) {
		t.Errorf("watch with a field selector: %v, want BadRequest", err)
	}
	yes := true
	if _, err := lw.WatchWithContext(ctx, metav1.ListOptions{SendInitialEvents: &yes}); !apierrors.IsInvalid(err) {
		t.Errorf("watch-list: %v, want Invalid (so reflectors fall back to list + watch)", err)
	}
}

func TestScheme(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []runtime.Object{
		&v1alpha1.Sandbox{}, &v1alpha1.SandboxList{}, &v1alpha1.SandboxPool{}, &v1alpha1.SandboxPoolList{},
	} {
		gvks, _, err := scheme.ObjectKinds(obj)
		if err != nil {
			t.Errorf("%T: %v", obj, err)
			continue
		}
		if gvks[0].GroupVersion() != v1alpha1.GroupVersion {
			t.Errorf("%T is %v", obj, gvks[0])
		}
		if _, err := scheme.New(gvks[0]); err != nil {
			t.Errorf("scheme.New(%v): %v", gvks[0], err)
		}
	}
	if store.GroupResource.String() != "sandboxes.sandbox.fast.io" {
		t.Errorf("GroupResource = %s", store.GroupResource)
	}
}

func TestDeepCopyDoesNotAlias(t *testing.T) {
	now := metav1.Now()
	sb := sandbox("default", "a")
	sb.Labels = map[string]string{"k": "v"}
	sb.Spec.Envs = []v1alpha1.EnvVar{{Name: "A", Value: "1"}}
	sb.Spec.ExpireTime = &now
	sb.Spec.Resources = &v1alpha1.Resources{CPU: "1"}
	sb.Status.Conditions = []metav1.Condition{{Type: "Ready"}}
	cp := sb.DeepCopyObject().(*v1alpha1.Sandbox)
	cp.Labels["k"] = "x"
	cp.Spec.Command[0] = "x"
	cp.Spec.Envs[0].Value = "x"
	cp.Spec.ExpireTime.Time = time.Time{}
	cp.Spec.Resources.CPU = "x"
	cp.Status.Conditions[0].Type = "x"
	if sb.Labels["k"] != "v" || sb.Spec.Command[0] != "sleep" || sb.Spec.Envs[0].Value != "1" ||
		sb.Spec.ExpireTime.IsZero() || sb.Spec.Resources.CPU != "1" || sb.Status.Conditions[0].Type != "Ready" {
		t.Errorf("DeepCopy shares memory with the original: %+v", sb)
	}
	pool := &v1alpha1.SandboxPoolList{Items: []v1alpha1.SandboxPool{{}}}
	pool.Items[0].Spec.AgentTemplate.Labels = map[string]string{"k": "v"}
	pcp := pool.DeepCopyObject().(*v1alpha1.SandboxPoolList)
	pcp.Items[0].Spec.AgentTemplate.Labels["k"] = "x"
	if pool.Items[0].Spec.AgentTemplate.Labels["k"] != "v" {
		t.Error("SandboxPoolList DeepCopy shares memory with the original")
	}
}
