package janitor

import (
	"testing"

	"github.com/containerd/containerd/namespaces"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// TestFindSnapshots checks that a snapshot an agent prepared for a container
// it never made is found and removed, and that neither a sandbox's snapshot
// in use nor a snapshot without the agent label is returned.
func TestFindSnapshots(t *testing.T) {
	client, ns := rig.Containerd(t)
	ctx := namespaces.WithNamespace(t.Context(), ns)

	prepareSnapshot(t, client, ns, "gone-3", map[string]string{runtime.LabelAgent: "agent-a"})
	prepareSnapshot(t, client, ns, "not-ours", map[string]string{"other": "x"})
	runSandbox(t, client, ns, "running-1", "agent-b", true)
	runSandbox(t, client, ns, "made-1", "agent-b", false)

	found, err := findSnapshots(t.Context(), client, ns)
	if err != nil {
		t.Fatal(err)
	}
	got := byName(found)
	if len(got) != 1 {
		t.Fatalf("found %v, want only gone-3", got)
	}
	l, ok := got["gone-3"]
	if !ok {
		t.Fatalf("found %v, want gone-3", got)
	}
	if l.Kind != KindSnapshot || l.Namespace != ns || l.AgentID != "agent-a" || l.SandboxID != "gone" || l.Revision != 3 {
		t.Errorf("leftover %+v: want kind snapshot, namespace %s, agent agent-a, sandbox gone revision 3", l, ns)
	}
	recent(t, "snapshot", l.Created)

	if err := l.Remove(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := client.SnapshotService(rig.Snapshotter).Stat(ctx, "gone-3"); err == nil {
		t.Fatal("snapshot gone-3 is still there after Remove")
	}
	if err := l.Remove(t.Context()); err != nil {
		t.Fatalf("Remove of a snapshot already gone: %v", err)
	}
	for _, key := range []string{"not-ours", "running-1", "made-1"} {
		if _, err := client.SnapshotService(rig.Snapshotter).Stat(ctx, key); err != nil {
			t.Errorf("snapshot %s: %v, want it kept", key, err)
		}
	}
	if again, err := findSnapshots(t.Context(), client, ns); err != nil || len(again) != 0 {
		t.Errorf("after Remove: found %v, %v; want nothing", byName(again), err)
	}
}

// TestParseContainerID checks the split of a container ID into sandbox ID
// and revision, which every leftover tied to a sandbox reports.
func TestParseContainerID(t *testing.T) {
	for _, tc := range []struct {
		id      string
		sandbox string
		rev     int64
		ok      bool
	}{
		{"abc-1", "abc", 1, true},
		{"a-b-c-12", "a-b-c", 12, true},
		{"abc", "", 0, false},
		{"-1", "", 0, false},
		{"abc-0", "", 0, false},
		{"abc-x", "", 0, false},
		{"abc-+1", "", 0, false},
		{"warm-0123456789012345", "", 0, false},
	} {
		sb, rev, ok := parseContainerID(tc.id)
		if sb != tc.sandbox || rev != tc.rev || ok != tc.ok {
			t.Errorf("parseContainerID(%q) = %q, %d, %v; want %q, %d, %v", tc.id, sb, rev, ok, tc.sandbox, tc.rev, tc.ok)
		}
	}
}
