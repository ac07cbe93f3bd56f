package agent

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fast-sandbox/fast-sandbox/pkg/cgroup"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

func withCgroupParent(p string) harnessOption {
	return func(s *harnessSetup) { s.runtime.CgroupParent = p }
}

// testCgroupParent returns a cgroup parent of the test's own (as an agent
// pod's cgroup would be), removed with everything below it when the test
// ends.
func testCgroupParent(t *testing.T) string {
	t.Helper()
	p := fmt.Sprintf("/fsbtest-parent-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
	t.Cleanup(func() {
		if _, err := cgroup.Remove(context.Background(), p, 0); err != nil {
			t.Errorf("remove the test's cgroup parent: %v", err)
		}
	})
	return p
}

// TestSandboxCgroupsGoUnderTheParent runs an agent with a cgroup parent (in
// a pod, --cgroup-parent auto: the pod's cgroup): each sandbox's cgroup,
// with its limits, its task and its log driver, is below the parent, and
// gone after the delete.
func TestSandboxCgroupsGoUnderTheParent(t *testing.T) {
	parent := testCgroupParent(t)
	h := newHarness(t, withCgroupParent(parent))
	for _, rt := range []string{"runc", "crun"} {
		t.Run(rt, func(t *testing.T) {
			sb := h.create(&fsbv1.SandboxSpec{
				Image: rig.ImageRef, Command: []string{"sh", "-c", "echo up; sleep 600"}, Runtime: rt,
				Resources: &fsbv1.Resources{Cpu: "250m", Memory: "48Mi"},
			})
			h.waitLog(sb, "up")
			ns := h.namespace()
			want := path.Join(parent, ns, sb.GetContainerId())
			if got := h.sandboxCgroup(sb); got != want {
				t.Fatalf("sandbox cgroup %s, want %s", got, want)
			}
			for file, value := range map[string]int64{
				"memory/memory.limit_in_bytes": 48 << 20,
				"cpu/cpu.cfs_quota_us":         25000,
			} {
				c, name, _ := strings.Cut(file, "/")
				if got := readInt(t, filepath.Join(cgroup.Root, c, want, name)); got != value {
					t.Errorf("%s of the sandbox's cgroup: %d, want %d", file, got, value)
				}
			}
			procs, err := os.ReadFile(filepath.Join(cgroup.Root, "memory", want, cgroup.TaskLeaf, "cgroup.procs"))
			if err != nil || len(strings.Fields(string(procs))) == 0 {
				t.Errorf("no process in the task's cgroup below the parent (%v)", err)
			}
			own, err := os.ReadFile(filepath.Join("/proc", fmt.Sprint(logDriverPid(t, sb.GetLogPath())), "cgroup"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(own), ":memory:"+want+"/"+cgroup.HelperLeaf+"\n") {
				t.Errorf("the log driver is not in %s/%s:\n%s", want, cgroup.HelperLeaf, own)
			}
			h.delete(sb.GetSandboxId(), 0)
			assertNoCgroup(t, want)
		})
	}
}

// TestCgroupsUnderTheParentAreFoundAgain: what sweeps and removes sandbox
// cgroups finds them under a parent: a leftover below it is removed at the
// agent's start, and a sandbox made under a parent is removed with its
// cgroup by an agent started without one (the path is read from the
// container's spec, as the janitor reads it).
func TestCgroupsUnderTheParentAreFoundAgain(t *testing.T) {
	parent := testCgroupParent(t)
	h := newHarness(t, withCgroupParent(parent))
	sb := h.create(spec("echo up; sleep 600"))
	h.waitLog(sb, "up")
	dir := h.sandboxCgroup(sb)
	left := path.Join(parent, h.namespace(), "sb-leftover-1")
	h.restart(func() {
		for _, hier := range hierarchies(t) {
			if err := os.MkdirAll(filepath.Join(hier, left, cgroup.HelperLeaf), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	})
	assertNoCgroup(t, left)
	if _, err := os.Stat(filepath.Join(cgroup.Root, "memory", dir)); err != nil {
		t.Errorf("the running sandbox's cgroup is gone after the restart: %v", err)
	}

	h.rcfg.CgroupParent = ""
	h.restart(nil)
	if got := h.get(sb.GetSandboxId()).GetPhase(); got != fsbv1.Phase_PHASE_RUNNING {
		t.Fatalf("the sandbox is %v after a restart without the parent", got)
	}
	h.delete(sb.GetSandboxId(), 0)
	assertNoCgroup(t, dir)
}

// namespace returns the test's containerd namespace (the agent's).
func (h *harness) namespace() string {
	h.t.Helper()
	ns := strings.TrimPrefix(h.agentID, "agent-")
	if ns == h.agentID || ns == "" {
		h.t.Fatalf("agent ID %q does not name the namespace", h.agentID)
	}
	return ns
}
