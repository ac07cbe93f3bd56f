package janitor

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// mountBundle makes a bundle for task id in the rig containerd's state, as
// containerd's NewTask does, with its "work" link to workTarget and the
// overlay of a fresh snapshot of the test image mounted on its rootfs. It
// is what a dead shim leaves when nobody cleans after it. The test's end
// unmounts and removes it.
func mountBundle(t *testing.T, client *containerd.Client, ns, stateDir, id, workTarget string) string {
	t.Helper()
	bundle := filepath.Join(stateDir, ns, id)
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(rootfs, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mount.UnmountAll(rootfs, syscall.MNT_DETACH)
		os.RemoveAll(bundle)
	})
	if err := os.Symlink(workTarget, filepath.Join(bundle, "work")); err != nil {
		t.Fatal(err)
	}
	prepareSnapshot(t, client, ns, id, map[string]string{runtime.LabelAgent: "agent-a"})
	ctx := namespaces.WithNamespace(t.Context(), ns)
	mounts, err := client.SnapshotService(rig.Snapshotter).Mounts(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := mount.All(mounts, rootfs); err != nil {
		t.Fatalf("mount rootfs of %s: %v", id, err)
	}
	return rootfs
}

// TestFindMounts checks that a rootfs left mounted with neither task nor
// shim is found, unmounted and its dir removed, and that the rootfs of a
// running sandbox, of a bundle whose shim still runs and of a bundle that
// is not this containerd's are not returned.
func TestFindMounts(t *testing.T) {
	client, ns := rig.Containerd(t)
	ctx := namespaces.WithNamespace(t.Context(), ns)
	dirs, err := containerdDirs(ctx, client)
	if err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(rig.Env(t, rig.EnvRigDir), "state", taskPluginDir)
	runSandbox(t, client, ns, "live-1", "agent-b", true)
	live := filepath.Join(stateDir, ns, "live-1", "rootfs")
	points, err := mountPoints("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	// Else "not returned" below would prove nothing.
	if id, ok := dirs.rootfsOf(live, ns); !ok || id != "live-1" || !slices.Contains(points, live) {
		t.Fatalf("the running sandbox's rootfs %s is not seen as one of this containerd's (dirs %+v, id %q, %v)", live, dirs, id, ok)
	}
	workOf := func(id string) string { return filepath.Join(dirs.root, ns, id) }
	if dirs.state != "" {
		workOf = func(id string) string { return filepath.Join(t.TempDir(), id) }
	}

	gone := mountBundle(t, client, ns, stateDir, "gone-4", workOf("gone-4"))
	shimmed := mountBundle(t, client, ns, stateDir, "shimmed-5", workOf("shimmed-5"))
	startShimIn(t, filepath.Dir(shimmed), ns, "shimmed-5", rig.Env(t, rig.EnvSocket))
	foreign := ""
	if dirs.state == "" {
		// Tied to a containerd by the work link alone: one into another
		// containerd's root is not this one's.
		foreign = mountBundle(t, client, ns, stateDir, "foreign-6", filepath.Join(t.TempDir(), taskPluginDir, ns, "foreign-6"))
	}

	found, err := findMounts(t.Context(), client, ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Name != gone {
		t.Fatalf("found %v, want only %s", byName(found), gone)
	}
	l := found[0]
	if l.Kind != KindMount || l.Namespace != ns || l.SandboxID != "gone" || l.Revision != 4 {
		t.Errorf("leftover %+v: want kind mount, namespace %s, sandbox gone revision 4", l, ns)
	}
	recent(t, "mount", l.Created)

	if err := l.Remove(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := l.Remove(t.Context()); err != nil {
		t.Errorf("Remove of a mount already gone: %v", err)
	}
	points, err = mountPoints("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(points, gone) {
		t.Errorf("%s is still mounted after Remove", gone)
	}
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Errorf("rootfs dir %s: %v, want it removed", gone, err)
	}
	for _, p := range []string{live, shimmed, foreign} {
		if p != "" && !slices.Contains(points, p) {
			t.Errorf("%s was unmounted, want it kept", p)
		}
	}
}

// TestUnescapeMountPath checks mountinfo's octal escapes.
func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/a/b`:        "/a/b",
		`/a\040b`:     "/a b",
		`/a\011b\012`: "/a\tb\n",
		`/a\134b`:     `/a\b`,
		`/a\04`:       `/a\04`,
		`/a\9xyb`:     `/a\9xyb`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}
