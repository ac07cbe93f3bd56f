package store_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

func open(t testing.TB, opts ...store.Option) *store.Embedded {
	t.Helper()
	s, err := store.OpenEmbedded(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func sandbox(namespace, name string) *v1alpha1.Sandbox {
	return &v1alpha1.Sandbox{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec:       v1alpha1.SandboxSpec{Image: "busybox", Command: []string{"sleep", "60"}},
	}
}

func mustCreate(t testing.TB, s store.Interface, sb *v1alpha1.Sandbox) *v1alpha1.Sandbox {
	t.Helper()
	out, err := s.Create(context.Background(), sb)
	if err != nil {
		t.Fatalf("create %s/%s: %v", sb.Namespace, sb.Name, err)
	}
	return out
}

// rv reads the resourceVersion of an object or a list.
func rv(t testing.TB, obj interface{ GetResourceVersion() string }) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(obj.GetResourceVersion(), 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", obj.GetResourceVersion(), err)
	}
	return n
}

type errCheck func(error) bool

func isNil(err error) bool { return err == nil }

func TestCreate(t *testing.T) {
	withStatus := sandbox("default", "with-status")
	withStatus.Status = v1alpha1.SandboxStatus{Phase: v1alpha1.PhaseRunning, SandboxID: "sb-1"}
	withRV := sandbox("default", "with-rv")
	withRV.ResourceVersion = "7"
	deleting := sandbox("default", "deleting")
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	deleting.Generation = 9
	deleting.UID = "mine"
	badLabel := sandbox("default", "bad-label")
	badLabel.Labels = map[string]string{"a b": "c"}

	eachKind(t, func(t *testing.T, openStore func(testing.TB, ...store.Option) store.Interface) {
		for _, tc := range []struct {
			name string
			in   *v1alpha1.Sandbox
			want errCheck
		}{
			{"plain", sandbox("default", "plain"), isNil},
			{"status is ignored", withStatus, isNil},
			{"system fields are the store's", deleting, isNil},
			{"exists", sandbox("default", "existing"), apierrors.IsAlreadyExists},
			{"resourceVersion set", withRV, apierrors.IsBadRequest},
			{"no namespace", sandbox("", "x"), apierrors.IsInvalid},
			{"namespace not a DNS label", sandbox("Default", "x"), apierrors.IsInvalid},
			{"namespace with a dot", sandbox("a.b", "x"), apierrors.IsInvalid},
			{"no name", sandbox("default", ""), apierrors.IsInvalid},
			{"name not a DNS subdomain", sandbox("default", "X_y"), apierrors.IsInvalid},
			{"invalid label", badLabel, apierrors.IsInvalid},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := openStore(t)
				mustCreate(t, s, sandbox("default", "existing"))
				in := tc.in.DeepCopy()
				out, err := s.Create(context.Background(), in)
				if !tc.want(err) {
					t.Fatalf("Create: unexpected error %v", err)
				}
				if !apiequality.Semantic.DeepEqual(in, tc.in) {
					t.Error("Create modified its argument")
				}
				if err != nil {
					return
				}
				if out.UID == "" || out.UID == "mine" || out.ResourceVersion == "" || out.CreationTimestamp.IsZero() ||
					out.Generation != 1 || out.DeletionTimestamp != nil {
					t.Errorf("system fields not set by the store: %+v", out.ObjectMeta)
				}
				if !apiequality.Semantic.DeepEqual(out.Status, v1alpha1.SandboxStatus{}) {
					t.Errorf("status = %+v, want it dropped", out.Status)
				}
				if !apiequality.Semantic.DeepEqual(out.Spec, tc.in.Spec) {
					t.Errorf("spec = %+v, want %+v", out.Spec, tc.in.Spec)
				}
				got, err := s.Get(context.Background(), in.Namespace, in.Name)
				if err != nil {
					t.Fatal(err)
				}
				if !apiequality.Semantic.DeepEqual(got, out) {
					t.Errorf("Get = %+v, want what Create returned: %+v", got, out)
				}
			})
		}
	})
}

func TestObjectsAreNotShared(t *testing.T) {
	eachStore(t, func(t *testing.T, s store.Interface) {
		ctx := context.Background()
		in := sandbox("default", "a")
		in.Labels = map[string]string{"k": "v"}
		out, err := s.Create(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		in.Labels["k"] = "changed-input"
		in.Spec.Command[0] = "changed-input"
		out.Labels["k"] = "changed-output"
		out.Spec.Command[0] = "changed-output"

		got, err := s.Get(ctx, "default", "a")
		if err != nil {
			t.Fatal(err)
		}
		got.Spec.Command[0] = "changed-get"
		list, err := s.List(ctx, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		item := list.Items[0]
		if item.Labels["k"] != "v" || item.Spec.Command[0] != "sleep" {
			t.Errorf("stored object changed through a caller's pointer: %+v %+v", item.Labels, item.Spec.Command)
		}
	})
}

func TestUpdate(t *testing.T) {
	ctx := context.Background()
	eachKind(t, func(t *testing.T, openStore func(testing.TB, ...store.Option) store.Interface) {
		for _, tc := range []struct {
			name string
			// edit turns the stored object into the update's argument.
			edit           func(sb *v1alpha1.Sandbox)
			deleting       bool // the stored object has a finalizer and a deletionTimestamp
			want           errCheck
			wantGeneration int64
			wantWrite      bool
		}{
			{name: "labels", edit: func(sb *v1alpha1.Sandbox) { sb.Labels = map[string]string{"a": "b"} },
				want: isNil, wantGeneration: 1, wantWrite: true},
			{name: "spec bumps generation", edit: func(sb *v1alpha1.Sandbox) { sb.Spec.Image = "alpine" },
				want: isNil, wantGeneration: 2, wantWrite: true},
			{name: "status is ignored", edit: func(sb *v1alpha1.Sandbox) { sb.Status.Phase = v1alpha1.PhaseFailed },
				want: isNil, wantGeneration: 1, wantWrite: false},
			{name: "no change writes nothing", edit: func(sb *v1alpha1.Sandbox) {},
				want: isNil, wantGeneration: 1, wantWrite: false},
			{name: "empty resourceVersion is unconditional", edit: func(sb *v1alpha1.Sandbox) {
				sb.ResourceVersion = ""
				sb.Annotations = map[string]string{v1alpha1.AnnotationID: "sb-1"}
			}, want: isNil, wantGeneration: 1, wantWrite: true},
			{name: "system fields are kept", edit: func(sb *v1alpha1.Sandbox) {
				sb.Generation = 42
				sb.CreationTimestamp = metav1.Time{}
				sb.UID = ""
			}, want: isNil, wantGeneration: 1, wantWrite: false},
			{name: "stale resourceVersion", edit: func(sb *v1alpha1.Sandbox) {
				sb.ResourceVersion = strconv.FormatUint(mustParse(sb.ResourceVersion)-1, 10)
				sb.Spec.Image = "alpine"
			}, want: apierrors.IsConflict},
			{name: "absent", edit: func(sb *v1alpha1.Sandbox) { sb.Name = "absent" }, want: apierrors.IsNotFound},
			{name: "other uid", edit: func(sb *v1alpha1.Sandbox) { sb.UID = "other" }, want: apierrors.IsConflict},
			{name: "deletionTimestamp cannot be set", edit: func(sb *v1alpha1.Sandbox) {
				sb.DeletionTimestamp = &metav1.Time{Time: time.Now()}
			}, want: apierrors.IsInvalid},
			{name: "invalid name", edit: func(sb *v1alpha1.Sandbox) { sb.Name = "Bad" }, want: apierrors.IsInvalid},
			{name: "no new finalizer while deleting", deleting: true,
				edit: func(sb *v1alpha1.Sandbox) { sb.Finalizers = append(sb.Finalizers, "example.com/other") },
				want: apierrors.IsInvalid},
			{name: "deletionTimestamp stays while deleting", deleting: true,
				edit: func(sb *v1alpha1.Sandbox) {
					sb.DeletionTimestamp = nil
					sb.Labels = map[string]string{"a": "b"}
				},
				want: isNil, wantGeneration: 2, wantWrite: true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := openStore(t)
				in := sandbox("default", "a")
				if tc.deleting {
					in.Finalizers = []string{v1alpha1.Finalizer}
				}
				stored := mustCreate(t, s, in)
				if tc.deleting {
					if err := s.Delete(ctx, "default", "a"); err != nil {
						t.Fatal(err)
					}
					var err error
					if stored, err = s.Get(ctx, "default", "a"); err != nil {
						t.Fatal(err)
					}
				}
				arg := stored.DeepCopy()
				tc.edit(arg)
				argCopy := arg.DeepCopy()
				out, err := s.Update(ctx, arg)
				if !tc.want(err) {
					t.Fatalf("Update: unexpected error %v", err)
				}
				if !apiequality.Semantic.DeepEqual(arg, argCopy) {
					t.Error("Update modified its argument")
				}
				if err != nil {
					return
				}
				if out.Generation != tc.wantGeneration {
					t.Errorf("generation = %d, want %d", out.Generation, tc.wantGeneration)
				}
				if wrote := out.ResourceVersion != stored.ResourceVersion; wrote != tc.wantWrite {
					t.Errorf("resourceVersion %s -> %s; want a write: %v", stored.ResourceVersion, out.ResourceVersion, tc.wantWrite)
				}
				if out.UID != stored.UID || !out.CreationTimestamp.Equal(&stored.CreationTimestamp) ||
					!out.DeletionTimestamp.Equal(stored.DeletionTimestamp) {
					t.Errorf("system fields changed: %+v -> %+v", stored.ObjectMeta, out.ObjectMeta)
				}
				if !apiequality.Semantic.DeepEqual(out.Status, stored.Status) {
					t.Errorf("status changed: %+v", out.Status)
				}
				got, err := s.Get(ctx, "default", "a")
				if err != nil {
					t.Fatal(err)
				}
				if !apiequality.Semantic.DeepEqual(got, out) {
					t.Errorf("Get = %+v, want what Update returned: %+v", got, out)
				}
			})
		}
	})
}

func mustParse(s string) uint64 {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		panic(err)
	}
	return n
}

func TestUpdateStatus(t *testing.T) {
	ctx := context.Background()
	running := v1alpha1.SandboxStatus{
		Phase: v1alpha1.PhaseRunning, SandboxID: "sb-1", AssignedPod: "agent-1",
		Endpoints: []string{"10.0.0.1:8080"},
		Conditions: []metav1.Condition{{
			Type: "Ready", Status: metav1.ConditionTrue, Reason: "Started",
			LastTransitionTime: metav1.Now(), // sub-second: stored in whole seconds
		}},
	}
	// An object created through the API server has no status at all, and
	// the typed client sends an empty one as "status": {}: the first status
	// update stores that, one write, even when the status is empty. The
	// embedded store compares the Go values. (The controller never sends
	// an unchanged status: it compares first.)
	writesOnKube := map[string]bool{"same status writes nothing": true, "same status with another spec": true}
	eachKind(t, func(t *testing.T, openStore func(testing.TB, ...store.Option) store.Interface) {
		for _, tc := range []struct {
			name      string
			edit      func(sb *v1alpha1.Sandbox)
			want      errCheck
			wantWrite bool
		}{
			{"status", func(sb *v1alpha1.Sandbox) { sb.Status = running }, isNil, true},
			{"spec and metadata are ignored", func(sb *v1alpha1.Sandbox) {
				sb.Status = running
				sb.Spec.Image = "alpine"
				sb.Labels = map[string]string{"a": "b"}
				sb.Finalizers = []string{v1alpha1.Finalizer}
			}, isNil, true},
			{"same status writes nothing", func(sb *v1alpha1.Sandbox) {}, isNil, false},
			{"same status with another spec", func(sb *v1alpha1.Sandbox) { sb.Spec.Image = "alpine" }, isNil, false},
			{"unconditional", func(sb *v1alpha1.Sandbox) {
				sb.ResourceVersion = ""
				sb.Status = running
			}, isNil, true},
			{"stale resourceVersion", func(sb *v1alpha1.Sandbox) {
				sb.ResourceVersion = "1"
				sb.Status = running
			}, apierrors.IsConflict, false},
			{"absent", func(sb *v1alpha1.Sandbox) { sb.Name = "absent" }, apierrors.IsNotFound, false},
			{"other uid", func(sb *v1alpha1.Sandbox) { sb.UID = "other" }, apierrors.IsConflict, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := openStore(t)
				mustCreate(t, s, sandbox("default", "other")) // so the stale resourceVersion 1 exists
				stored := mustCreate(t, s, sandbox("default", "a"))
				arg := stored.DeepCopy()
				tc.edit(arg)
				out, err := s.UpdateStatus(ctx, arg)
				if !tc.want(err) {
					t.Fatalf("UpdateStatus: unexpected error %v", err)
				}
				if err != nil {
					return
				}
				if !apiequality.Semantic.DeepEqual(out.Spec, stored.Spec) ||
					!apiequality.Semantic.DeepEqual(out.Labels, stored.Labels) ||
					!apiequality.Semantic.DeepEqual(out.Finalizers, stored.Finalizers) || out.Generation != 1 {
					t.Errorf("UpdateStatus changed more than status: %+v", out)
				}
				wantWrite := tc.wantWrite || (writesOnKube[tc.name] && isKube(s))
				if wrote := out.ResourceVersion != stored.ResourceVersion; wrote != wantWrite {
					t.Errorf("resourceVersion %s -> %s; want a write: %v", stored.ResourceVersion, out.ResourceVersion, wantWrite)
				}
				if tc.wantWrite {
					if out.Status.Phase != v1alpha1.PhaseRunning || len(out.Status.Conditions) != 1 {
						t.Errorf("status = %+v", out.Status)
					}
					// What a restart would read back: whole seconds.
					if ns := out.Status.Conditions[0].LastTransitionTime.Nanosecond(); ns != 0 {
						t.Errorf("condition time keeps %d ns; the stored form has whole seconds", ns)
					}
					// Writing the same status again is a no-op, whatever
					// else the argument carries.
					for _, edit := range []func(*v1alpha1.Sandbox){
						func(*v1alpha1.Sandbox) {},
						func(sb *v1alpha1.Sandbox) { sb.Spec.Image = "other"; sb.Labels = map[string]string{"x": "y"} },
					} {
						arg := out.DeepCopy()
						edit(arg)
						again, err := s.UpdateStatus(ctx, arg)
						if err != nil || again.ResourceVersion != out.ResourceVersion {
							t.Errorf("same status again: rv %s -> %s, err %v", out.ResourceVersion, again.ResourceVersion, err)
						}
					}
				}
			})
		}
	})
}

func TestFinalizers(t *testing.T) {
	eachStore(t, func(t *testing.T, s store.Interface) {
		ctx := context.Background()
		w, err := s.Watch(ctx, "", "")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()

		in := sandbox("default", "a")
		in.Finalizers = []string{v1alpha1.Finalizer}
		created := mustCreate(t, s, in)
		expect(t, w, watch.Added, "a")

		if err := s.Delete(ctx, "default", "a"); err != nil {
			t.Fatal(err)
		}
		marked, err := s.Get(ctx, "default", "a")
		if err != nil {
			t.Fatalf("Get after Delete of an object with a finalizer: %v", err)
		}
		if marked.DeletionTimestamp == nil || marked.DeletionGracePeriodSeconds == nil || *marked.DeletionGracePeriodSeconds != 0 {
			t.Errorf("deletion not marked: %+v", marked.ObjectMeta)
		}
		if marked.Generation != created.Generation+1 {
			t.Errorf("generation %d -> %d; the API server bumps it when marking a deletion", created.Generation, marked.Generation)
		}
		if e := expect(t, w, watch.Modified, "a"); e.DeletionTimestamp == nil {
			t.Error("Modified event without deletionTimestamp")
		}

		// A second delete changes nothing.
		if err := s.Delete(ctx, "default", "a"); err != nil {
			t.Fatal(err)
		}
		again, err := s.Get(ctx, "default", "a")
		if err != nil {
			t.Fatal(err)
		}
		if again.ResourceVersion != marked.ResourceVersion || !again.DeletionTimestamp.Equal(marked.DeletionTimestamp) {
			t.Errorf("second Delete wrote: %+v -> %+v", marked.ObjectMeta, again.ObjectMeta)
		}

		// Status may still be written while finalizers hold the object.
		marked.Status.Phase = v1alpha1.PhaseTerminating
		if marked, err = s.UpdateStatus(ctx, marked); err != nil {
			t.Fatal(err)
		}
		expect(t, w, watch.Modified, "a")

		// Removing the last finalizer removes the object.
		marked.Finalizers = nil
		last, err := s.Update(ctx, marked)
		if err != nil {
			t.Fatal(err)
		}
		// The embedded store returns the object at its deletion's
		// resourceVersion; the API server returns it as last stored,
		// and only the DELETED event carries the deletion's.
		if isKube(s) {
			if last.ResourceVersion != marked.ResourceVersion {
				t.Errorf("the API server returned resourceVersion %s for the update that deleted, want the last stored %s", last.ResourceVersion, marked.ResourceVersion)
			}
		} else if rv(t, last) <= rv(t, marked) {
			t.Errorf("the deletion has resourceVersion %s, not after %s", last.ResourceVersion, marked.ResourceVersion)
		}
		if _, err := s.Get(ctx, "default", "a"); !apierrors.IsNotFound(err) {
			t.Fatalf("Get after the last finalizer went: %v, want NotFound", err)
		}
		if e := expect(t, w, watch.Deleted, "a"); isKube(s) && rv(t, e) <= rv(t, marked) {
			t.Errorf("Deleted event at %s, not after %s", e.ResourceVersion, marked.ResourceVersion)
		} else if !isKube(s) && e.ResourceVersion != last.ResourceVersion {
			t.Errorf("Deleted event at %s, Update returned %s", e.ResourceVersion, last.ResourceVersion)
		}

		// Without finalizers Delete removes at once.
		mustCreate(t, s, sandbox("default", "b"))
		expect(t, w, watch.Added, "b")
		if err := s.Delete(ctx, "default", "b"); err != nil {
			t.Fatal(err)
		}
		expect(t, w, watch.Deleted, "b")
		if _, err := s.Get(ctx, "default", "b"); !apierrors.IsNotFound(err) {
			t.Fatalf("Get after Delete: %v, want NotFound", err)
		}
		if err := s.Delete(ctx, "default", "b"); !apierrors.IsNotFound(err) {
			t.Fatalf("Delete of an absent object: %v, want NotFound", err)
		}
		if err := s.Delete(ctx, "default", "B"); !apierrors.IsInvalid(err) {
			t.Fatalf("Delete of an invalid name: %v, want Invalid", err)
		}
	})
}

func TestErrorsNameTheResource(t *testing.T) {
	eachStore(t, func(t *testing.T, s store.Interface) {
		_, err := s.Get(context.Background(), "default", "nope")
		status, ok := err.(apierrors.APIStatus)
		if !ok {
			t.Fatalf("Get: %T %v, want an API status error", err, err)
		}
		d := status.Status().Details
		if d == nil || d.Group != "sandbox.fast.io" || d.Kind != "sandboxes" || d.Name != "nope" {
			t.Errorf("details = %+v, want sandboxes.sandbox.fast.io \"nope\"", d)
		}
	})
}

func TestPersistence(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := store.OpenEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c"} {
		in := sandbox("default", name)
		in.Labels = map[string]string{"name": name}
		in.Finalizers = []string{v1alpha1.Finalizer}
		in.Spec.ExpireTime = &metav1.Time{Time: time.Now().Add(time.Hour)}
		mustCreate(t, s, in)
	}
	b, _ := s.Get(ctx, "default", "b")
	b.Status.Phase = v1alpha1.PhaseRunning
	if _, err := s.UpdateStatus(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "default", "c"); err != nil { // marked, kept
		t.Fatal(err)
	}
	a, _ := s.Get(ctx, "default", "a")
	a.Finalizers = nil
	if _, err := s.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "default", "a"); err != nil {
		t.Fatal(err)
	}
	before, err := s.List(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "default", "b"); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("Get on a closed store: %v, want ServiceUnavailable", err)
	}
	if _, err := s.Create(ctx, sandbox("default", "d")); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("Create on a closed store: %v, want ServiceUnavailable", err)
	}

	s, err = store.OpenEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	after, err := s.List(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !apiequality.Semantic.DeepEqual(after, before) {
		t.Fatalf("after reopening:\n%+v\nbefore:\n%+v", after, before)
	}
	if len(after.Items) != 2 || after.Items[1].DeletionTimestamp == nil || after.Items[0].Status.Phase != v1alpha1.PhaseRunning {
		t.Errorf("unexpected objects after reopening: %+v", after.Items)
	}

	// The counter goes on where it stopped; history before the reopen is gone.
	d := mustCreate(t, s, sandbox("default", "d"))
	if rv(t, d) != rv(t, after)+1 {
		t.Errorf("first write after reopening has resourceVersion %s, want %d", d.ResourceVersion, rv(t, after)+1)
	}
	if _, err := s.Watch(ctx, "", strconv.FormatUint(rv(t, after)-1, 10)); !apierrors.IsResourceExpired(err) {
		t.Errorf("Watch from before the reopen: %v, want ResourceExpired", err)
	}
	w, err := s.Watch(ctx, "", after.ResourceVersion)
	if err != nil {
		t.Fatalf("Watch from the revision at reopen: %v", err)
	}
	defer w.Stop()
	expect(t, w, watch.Added, "d")
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := store.OpenEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := store.OpenEmbedded(dir); err == nil {
		s2.Close()
		t.Fatal("a second OpenEmbedded of the same dir succeeded")
	}
}

func TestList(t *testing.T) {
	eachStore(t, func(t *testing.T, s store.Interface) {
		ctx := context.Background()
		var last *v1alpha1.Sandbox
		for _, sb := range []struct{ ns, name, tier string }{
			{"team-a", "web-1", "web"}, {"team-a", "db-1", "db"}, {"team-b", "web-2", "web"}, {"team-c", "x", ""},
		} {
			in := sandbox(sb.ns, sb.name)
			if sb.tier != "" {
				in.Labels = map[string]string{"tier": sb.tier}
			}
			last = mustCreate(t, s, in)
		}
		for _, tc := range []struct {
			namespace string
			selector  string
			want      []string
		}{
			{"", "", []string{"team-a/db-1", "team-a/web-1", "team-b/web-2", "team-c/x"}},
			{"team-a", "", []string{"team-a/db-1", "team-a/web-1"}},
			{"", "tier=web", []string{"team-a/web-1", "team-b/web-2"}},
			{"team-b", "tier=web", []string{"team-b/web-2"}},
			{"team-b", "tier=db", nil},
			{"", "tier", []string{"team-a/db-1", "team-a/web-1", "team-b/web-2"}},
			{"", "!tier", []string{"team-c/x"}},
			{"nobody", "", nil},
		} {
			t.Run(tc.namespace+"?"+tc.selector, func(t *testing.T) {
				sel, err := labels.Parse(tc.selector)
				if err != nil {
					t.Fatal(err)
				}
				list, err := s.List(ctx, tc.namespace, sel)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, it := range list.Items {
					got = append(got, it.Namespace+"/"+it.Name)
				}
				if !apiequality.Semantic.DeepEqual(got, tc.want) {
					t.Errorf("got %v, want %v", got, tc.want)
				}
				// A list is at the store's revision: the last write's here;
				// on the API server, shared with other tests, at least that.
				if got, want := rv(t, list), rv(t, last); got != want && (!isKube(s) || got < want) {
					t.Errorf("list resourceVersion = %d, want the last write's %d", got, want)
				}
			})
		}
		if _, err := s.List(ctx, "Team", nil); !apierrors.IsInvalid(err) {
			t.Errorf("List of an invalid namespace: %v, want Invalid", err)
		}
	})
}
