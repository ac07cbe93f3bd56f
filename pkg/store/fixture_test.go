package store_test

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// The fixture in testdata/v1alpha1-datadir is a data dir as the first
// release of the embedded store wrote it (the store.db of `fsb controller
// --data-dir`). TestFixtureDataDirOpens proves that a controller upgraded
// over such a data dir still finds its sandboxes and can keep working on
// them.
//
// The fixture was generated once, with that release, by
//
//	go test ./pkg/store -run TestFixtureDataDirOpens -write-fixture
//
// Do not regenerate it after the store's format has changed: the point is a
// file today's code did not write. A new on-disk format gets a new fixture
// directory beside this one, and both keep their tests.
var writeFixture = flag.Bool("write-fixture", false,
	"write testdata/v1alpha1-datadir with the current store instead of testing against it")

const fixtureDir = "testdata/v1alpha1-datadir"

// fixtureTime is a whole second: the store keeps timestamps in RFC 3339.
var fixtureTime = metav1.NewTime(time.Date(2030, time.January, 2, 3, 4, 5, 0, time.UTC))

// fixtureFast is a FAST sandbox as the fast path writes it: its placement in
// annotations (a create drops status), the cleanup finalizer, no status.
func fixtureFast() *v1alpha1.Sandbox {
	return &v1alpha1.Sandbox{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "default", Name: "fast-one",
			Labels: map[string]string{"app": "fixture"},
			Annotations: map[string]string{
				v1alpha1.AnnotationID:       "sb-fixturefast00000001",
				v1alpha1.AnnotationAgent:    "agent-a",
				v1alpha1.AnnotationRevision: "1",
			},
			Finalizers: []string{v1alpha1.Finalizer},
		},
		Spec: v1alpha1.SandboxSpec{
			Image:           "localhost/fsb/busybox:latest",
			Command:         []string{"sh", "-c"},
			Args:            []string{"echo up; sleep 3600"},
			Envs:            []v1alpha1.EnvVar{{Name: "GREETING", Value: "hello"}},
			WorkingDir:      "/tmp",
			ExposedPorts:    []int32{8080},
			ConsistencyMode: v1alpha1.ConsistencyFast,
			FailurePolicy:   v1alpha1.FailurePolicyManual,
			Resources:       &v1alpha1.Resources{CPU: "500m", Memory: "64Mi", Pids: 64},
			Runtime:         "runc",
		},
	}
}

// fixtureStrong is a STRONG sandbox the controller has placed and seen
// running: its status written through UpdateStatus.
func fixtureStrong() *v1alpha1.Sandbox {
	return &v1alpha1.Sandbox{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "team-b", Name: "strong-one",
			Annotations: map[string]string{v1alpha1.AnnotationID: "sb-fixturestrong000001"},
			Finalizers:  []string{v1alpha1.Finalizer},
		},
		Spec: v1alpha1.SandboxSpec{
			Image:                  "localhost/fsb/busybox:latest",
			Command:                []string{"sleep", "3600"},
			ConsistencyMode:        v1alpha1.ConsistencyStrong,
			FailurePolicy:          v1alpha1.FailurePolicyManual,
			RecoveryTimeoutSeconds: 300,
			ExpireTime:             &fixtureTime,
			NoInit:                 true,
		},
		Status: v1alpha1.SandboxStatus{
			Phase:       v1alpha1.PhaseRunning,
			SandboxID:   "sb-fixturestrong000001",
			AssignedPod: "agent-b",
			NodeName:    "node-1",
			Endpoints:   []string{"127.0.0.1:8080"},
			Revision:    1,
			Conditions: []metav1.Condition{{
				Type: "Ready", Status: metav1.ConditionTrue, Reason: "Running",
				Message: "the sandbox runs", LastTransitionTime: fixtureTime,
			}},
		},
	}
}

func TestFixtureDataDirOpens(t *testing.T) {
	if *writeFixture {
		generateFixture(t)
		return
	}
	ctx := context.Background()
	dir := t.TempDir()
	copyDir(t, fixtureDir, dir) // bbolt writes on open: never open the committed file
	s, err := store.OpenEmbedded(dir)
	if err != nil {
		t.Fatalf("open the fixture data dir: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })

	wants := []*v1alpha1.Sandbox{fixtureFast(), fixtureStrong()}
	list, err := s.List(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != len(wants) {
		t.Fatalf("the fixture lists %d sandboxes, want %d", len(list.Items), len(wants))
	}
	fixtureRV := rv(t, list)
	for i, want := range wants {
		got, err := s.Get(ctx, want.Namespace, want.Name)
		if err != nil {
			t.Fatalf("get %s/%s: %v", want.Namespace, want.Name, err)
		}
		checkFixtureObject(t, got, want, fixtureRV)
		if !apiequality.Semantic.DeepEqual(&list.Items[i], got) {
			t.Errorf("list item %d differs from get %s/%s:\n%+v\n%+v", i, want.Namespace, want.Name, list.Items[i], got)
		}
	}

	// A watch from the fixture's resourceVersion sees the writes made now, in
	// order, with versions above every stored one: the revision counter came
	// back with the file.
	w, err := s.Watch(ctx, "", list.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	created := mustCreate(t, s, sandbox("default", "after-upgrade"))
	if rv(t, created) <= fixtureRV {
		t.Errorf("new object has resourceVersion %s, not above the fixture's %d", created.ResourceVersion, fixtureRV)
	}

	strong, err := s.Get(ctx, "team-b", "strong-one")
	if err != nil {
		t.Fatal(err)
	}
	strong.Labels = map[string]string{"upgraded": "yes"}
	updated, err := s.Update(ctx, strong)
	if err != nil {
		t.Fatalf("update a fixture sandbox: %v", err)
	}
	if updated.Generation != strong.Generation || updated.Status.Phase != v1alpha1.PhaseRunning {
		t.Errorf("a labels-only update changed generation %d->%d or phase to %q",
			strong.Generation, updated.Generation, updated.Status.Phase)
	}
	updated.Status.Phase = v1alpha1.PhaseSucceeded
	if _, err := s.UpdateStatus(ctx, updated); err != nil {
		t.Fatalf("update the status of a fixture sandbox: %v", err)
	}

	// The FAST one carries the finalizer: delete marks it, and it goes once
	// the finalizer is removed, as the controller does after cleanup.
	if err := s.Delete(ctx, "default", "fast-one"); err != nil {
		t.Fatal(err)
	}
	fast, err := s.Get(ctx, "default", "fast-one")
	if err != nil {
		t.Fatalf("a sandbox with a finalizer is gone at once: %v", err)
	}
	if fast.DeletionTimestamp == nil {
		t.Fatal("delete set no deletionTimestamp")
	}
	fast.Finalizers = nil
	if _, err := s.Update(ctx, fast); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "default", "fast-one"); !apierrors.IsNotFound(err) {
		t.Fatalf("get after the finalizer is removed: %v, want NotFound", err)
	}

	wantEvents := []struct {
		typ  watch.EventType
		name string
	}{
		{watch.Added, "after-upgrade"},
		{watch.Modified, "strong-one"},
		{watch.Modified, "strong-one"},
		{watch.Modified, "fast-one"},
		{watch.Deleted, "fast-one"},
	}
	last := fixtureRV
	for _, want := range wantEvents {
		select {
		case e, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch ended before %s %s", want.typ, want.name)
			}
			obj := e.Object.(*v1alpha1.Sandbox)
			if e.Type != want.typ || obj.Name != want.name {
				t.Fatalf("watch event %s %s, want %s %s", e.Type, obj.Name, want.typ, want.name)
			}
			if n := rv(t, obj); n <= last {
				t.Errorf("event %s %s has resourceVersion %d, not above %d", e.Type, obj.Name, n, last)
			} else {
				last = n
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no watch event %s %s within 10s", want.typ, want.name)
		}
	}

	// What was written over the old file survives a restart.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = store.OpenEmbedded(dir)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	list, err = s.List(ctx, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sb := range list.Items {
		names = append(names, sb.Namespace+"/"+sb.Name+"="+string(sb.Status.Phase)+","+sb.Labels["upgraded"])
	}
	if want := []string{"default/after-upgrade=,", "team-b/strong-one=Succeeded,yes"}; !apiequality.Semantic.DeepEqual(names, want) {
		t.Errorf("after reopening: %q, want %q", names, want)
	}
	if rv(t, list) != last {
		t.Errorf("reopened at resourceVersion %s, want %d", list.ResourceVersion, last)
	}
}

// checkFixtureObject compares what the store read back with what the
// generator wrote: everything the user or the control plane set is intact,
// and the fields the store set are there.
func checkFixtureObject(t *testing.T, got, want *v1alpha1.Sandbox, listRV uint64) {
	t.Helper()
	name := want.Namespace + "/" + want.Name
	if got.UID == "" || got.CreationTimestamp.IsZero() || got.Generation != 1 || got.DeletionTimestamp != nil {
		t.Errorf("%s: system fields %+v", name, got.ObjectMeta)
	}
	if n := rv(t, got); n == 0 || n > listRV {
		t.Errorf("%s: resourceVersion %d outside (0, %d]", name, n, listRV)
	}
	for _, c := range []struct {
		field     string
		got, want any
	}{
		{"labels", got.Labels, want.Labels},
		{"annotations", got.Annotations, want.Annotations},
		{"finalizers", got.Finalizers, want.Finalizers},
		{"spec", got.Spec, want.Spec},
		{"status", got.Status, want.Status},
	} {
		if !apiequality.Semantic.DeepEqual(c.got, c.want) {
			t.Errorf("%s: %s = %+v, want %+v", name, c.field, c.got, c.want)
		}
	}
	agent, id, revision := v1alpha1.Placement(got)
	wantAgent, wantID, wantRevision := v1alpha1.Placement(want)
	if agent != wantAgent || id != wantID || revision != wantRevision {
		t.Errorf("%s: placement %s/%s/%d, want %s/%s/%d", name, agent, id, revision, wantAgent, wantID, wantRevision)
	}
}

// generateFixture writes the fixture data dir with the store as it is now.
func generateFixture(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := store.OpenEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, fixtureFast())
	strong := fixtureStrong()
	created := mustCreate(t, s, strong)
	strong.Status.DeepCopyInto(&created.Status)
	if _, err := s.UpdateStatus(ctx, created); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(fixtureDir); err != nil {
		t.Fatal(err)
	}
	copyDir(t, dir, fixtureDir)
	t.Logf("wrote %s", fixtureDir)
}

// copyDir copies the regular files of one directory into another.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
