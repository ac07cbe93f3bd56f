package store_test

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// eachPoolStore runs f on the embedded store's pools and on the kube
// store's (the rig's API server), with the namespace the test's pools go in.
//
// On the shared API server the pool controllers of other packages' tests
// watch every namespace and write a misplaced pool's status, so a test's
// writes that are not about resourceVersions are unconditional (unconditional
// drops the resourceVersion), and its watch skips status-only changes.
func eachPoolStore(t *testing.T, f func(t *testing.T, p store.PoolInterface, ns string)) {
	t.Run("embedded", func(t *testing.T) { f(t, open(t).Pools(), "fsb-system") })
	t.Run("kube", func(t *testing.T) {
		env := rig.Kube(t)
		k, err := store.NewKube(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		f(t, k.Pools(), env.Namespace)
	})
}

func newPool(ns, name string) *v1alpha1.SandboxPool {
	return &v1alpha1.SandboxPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.SandboxPoolSpec{
			Capacity: &v1alpha1.PoolCapacity{PoolMin: 0, PoolMax: 2, BufferMin: 0, BufferMax: 1},
			Warm:     []v1alpha1.WarmEntry{{Image: "docker.io/library/busybox:latest", Runtime: "runc", Count: 2}},
		},
	}
}

func TestPoolCRUD(t *testing.T) {
	eachPoolStore(t, func(t *testing.T, p store.PoolInterface, ns string) {
		ctx := t.Context()
		in := newPool(ns, "gpu")
		in.Status.TotalAgents = 3 // dropped: status subresource
		created, err := p.Create(ctx, in)
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if created.UID == "" || created.ResourceVersion == "" || created.Generation != 1 || created.Status.TotalAgents != 0 {
			t.Fatalf("create: uid %q rv %q generation %d status %+v", created.UID, created.ResourceVersion, created.Generation, created.Status)
		}
		if len(created.Spec.Warm) != 1 || created.Spec.Warm[0].Count != 2 {
			t.Fatalf("create kept warm %+v", created.Spec.Warm)
		}
		if _, err := p.Create(ctx, newPool(ns, "gpu")); !apierrors.IsAlreadyExists(err) {
			t.Fatalf("second create: %v, want AlreadyExists", err)
		}

		for _, tc := range []struct {
			name   string
			change func(*v1alpha1.SandboxPool)
		}{
			{"poolMin above poolMax", func(p *v1alpha1.SandboxPool) { p.Spec.Capacity.PoolMin = 3 }},
			{"bad runtime type", func(p *v1alpha1.SandboxPool) { p.Spec.RuntimeType = "kvm" }},
			{"bad warm runtime", func(p *v1alpha1.SandboxPool) { p.Spec.Warm[0].Runtime = "kvm" }},
			{"name with a dot", func(p *v1alpha1.SandboxPool) { p.Name = "a.b" }},
		} {
			bad := newPool(ns, "bad")
			tc.change(bad)
			if _, err := p.Create(ctx, bad); !apierrors.IsInvalid(err) {
				t.Errorf("%s: create: %v, want Invalid", tc.name, err)
			}
		}

		got, err := p.Get(ctx, ns, "gpu")
		if err != nil || got.UID != created.UID {
			t.Fatalf("get: %v %v", got, err)
		}
		if _, err := p.Get(ctx, ns, "absent"); !apierrors.IsNotFound(err) {
			t.Fatalf("get absent: %v, want NotFound", err)
		} else if se, ok := err.(apierrors.APIStatus); !ok || se.Status().Details.Kind != "sandboxpools" {
			t.Fatalf("get absent: %v does not name sandboxpools", err)
		}

		// A label changes no generation; a spec change does.
		got.Labels = map[string]string{"team": "a"}
		stale := got.DeepCopy()
		labelled, err := p.Update(ctx, unconditional(got))
		if err != nil || labelled.Generation != 1 {
			t.Fatalf("label update: generation %d, %v", labelled.Generation, err)
		}
		labelled.Spec.Warm[0].Count = 5
		respec, err := p.Update(ctx, unconditional(labelled))
		if err != nil || respec.Generation != 2 || respec.Spec.Warm[0].Count != 5 {
			t.Fatalf("spec update: %+v, %v", respec, err)
		}
		stale.Spec.Warm = nil
		if _, err := p.Update(ctx, stale); !apierrors.IsConflict(err) {
			t.Fatalf("stale update: %v, want Conflict", err)
		}
		respec.Spec.Capacity.PoolMax = 0
		if _, err := p.Update(ctx, unconditional(respec)); !apierrors.IsInvalid(err) {
			t.Fatalf("invalid update: %v, want Invalid", err)
		}

		respec, _ = p.Get(ctx, ns, "gpu")
		respec.Status.TotalAgents = 2
		respec.Spec.Warm = nil // ignored by a status update
		st, err := p.UpdateStatus(ctx, unconditional(respec))
		if err != nil || st.Status.TotalAgents != 2 || len(st.Spec.Warm) != 1 || st.Generation != 2 {
			t.Fatalf("status update: %+v, %v", st, err)
		}

		list, err := p.List(ctx, ns, nil)
		if err != nil || len(list.Items) != 1 || list.Items[0].Name != "gpu" || list.ResourceVersion == "" {
			t.Fatalf("list: %+v, %v", list, err)
		}

		// A finalizer holds the deletion; dropping it ends it.
		st.Finalizers = []string{"sandbox.fast.io/pool-cleanup"}
		held, err := p.Update(ctx, unconditional(st))
		if err != nil {
			t.Fatalf("add finalizer: %v", err)
		}
		if err := p.Delete(ctx, ns, "gpu"); err != nil {
			t.Fatalf("delete: %v", err)
		}
		held, err = p.Get(ctx, ns, "gpu")
		if err != nil || held.DeletionTimestamp == nil {
			t.Fatalf("after delete with a finalizer: %+v, %v", held, err)
		}
		held.Finalizers = nil
		if _, err := p.Update(ctx, unconditional(held)); err != nil {
			t.Fatalf("drop finalizer: %v", err)
		}
		if _, err := p.Get(ctx, ns, "gpu"); !apierrors.IsNotFound(err) {
			t.Fatalf("get after the finalizer went: %v, want NotFound", err)
		}
		if err := p.Delete(ctx, ns, "gpu"); !apierrors.IsNotFound(err) {
			t.Fatalf("delete absent: %v, want NotFound", err)
		}
	})
}

func TestPoolWatch(t *testing.T) {
	eachPoolStore(t, func(t *testing.T, p store.PoolInterface, ns string) {
		ctx := t.Context()
		a, err := p.Create(ctx, newPool(ns, "a"))
		if err != nil {
			t.Fatal(err)
		}
		// From a's resourceVersion: what came after it, in order.
		w, err := p.Watch(ctx, ns, a.ResourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		if _, err := p.Create(ctx, newPool(ns, "b")); err != nil {
			t.Fatal(err)
		}
		a.Spec.Warm = nil
		if _, err := p.Update(ctx, unconditional(a)); err != nil {
			t.Fatal(err)
		}
		if err := p.Delete(ctx, ns, "b"); err != nil {
			t.Fatal(err)
		}
		want := []struct {
			typ  watch.EventType
			name string
		}{{watch.Added, "b"}, {watch.Modified, "a"}, {watch.Deleted, "b"}}
		// A Modified event that leaves the generation as it was is a status
		// write (another package's pool controller): not this test's.
		gen := map[string]int64{"a": a.Generation}
		for _, wt := range want {
			for {
				var e watch.Event
				select {
				case e = <-w.ResultChan():
				case <-time.After(10 * time.Second):
					t.Fatalf("no %s event of %s", wt.typ, wt.name)
				}
				pool, ok := e.Object.(*v1alpha1.SandboxPool)
				if ok && e.Type == watch.Modified && pool.Generation == gen[pool.Name] {
					continue
				}
				if !ok || e.Type != wt.typ || pool.Name != wt.name {
					t.Fatalf("event %s %T, want %s of %s", e.Type, e.Object, wt.typ, wt.name)
				}
				gen[pool.Name] = pool.Generation
				break
			}
		}
		if err := p.Delete(ctx, ns, "a"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPoolsApartFromSandboxes: the embedded store keeps pools in their own
// bucket and streams: a sandbox watch sees no pool and the other way round,
// and pools survive a reopen.
func TestPoolsApartFromSandboxes(t *testing.T) {
	dir := t.TempDir()
	s, err := store.OpenEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	pw, err := s.Pools().Watch(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	sw, err := s.Watch(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pools().Create(ctx, newPool("fsb-system", "same")); err != nil {
		t.Fatal(err)
	}
	sb := &v1alpha1.Sandbox{ObjectMeta: metav1.ObjectMeta{Namespace: "fsb-system", Name: "same"}}
	if _, err := s.Create(ctx, sb); err != nil {
		t.Fatalf("a sandbox named as a pool: %v", err)
	}
	for name, w := range map[string]watch.Interface{"pool": pw, "sandbox": sw} {
		select {
		case e := <-w.ResultChan():
			_, isPool := e.Object.(*v1alpha1.SandboxPool)
			if isPool != (name == "pool") {
				t.Errorf("the %s watch got a %T", name, e.Object)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the %s watch got nothing", name)
		}
		select {
		case e := <-w.ResultChan():
			t.Errorf("the %s watch got a second event: %s %T", name, e.Type, e.Object)
		case <-time.After(100 * time.Millisecond):
		}
		w.Stop()
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = store.OpenEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pool, err := s.Pools().Get(ctx, "fsb-system", "same")
	if err != nil || len(pool.Spec.Warm) != 1 {
		t.Fatalf("pool after reopen: %+v, %v", pool, err)
	}
	if _, err := s.Get(ctx, "fsb-system", "same"); err != nil {
		t.Fatalf("sandbox after reopen: %v", err)
	}
}

// TestPoolListWatchFeedsAnInformer: PoolListWatch drives client-go's
// informer as the pool declarer uses it.
func TestPoolListWatchFeedsAnInformer(t *testing.T) {
	s := open(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if _, err := s.Pools().Create(ctx, newPool("fsb-system", "before")); err != nil {
		t.Fatal(err)
	}
	inf := cache.NewSharedIndexInformer(store.PoolListWatch(s.Pools(), "fsb-system"), &v1alpha1.SandboxPool{}, 0, cache.Indexers{})
	done := make(chan struct{})
	go func() { defer close(done); inf.RunWithContext(ctx) }()
	defer func() { cancel(); <-done }()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("never synced")
	}
	if _, err := s.Pools().Create(ctx, newPool("fsb-system", "after")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(inf.GetStore().ListKeys()) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("informer has %v", inf.GetStore().ListKeys())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// unconditional is pool without its resourceVersion: an update that takes
// whatever is stored now.
func unconditional(pool *v1alpha1.SandboxPool) *v1alpha1.SandboxPool {
	cp := pool.DeepCopy()
	cp.ResourceVersion = ""
	return cp
}
