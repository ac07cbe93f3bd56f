package agent

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// sandboxCgroup returns the sandbox's cgroup (the parent of its task's) as
// a path below a v1 hierarchy's root.
func (h *harness) sandboxCgroup(sb *fsbv1.AgentSandbox) string {
	h.t.Helper()
	return filepath.Dir(h.taskCgroup(sb))
}

// logDriverPid finds the log driver writing logPath among the host's
// processes, by its command line (the whole path: another test's driver
// may write a file of the same name).
func logDriverPid(t *testing.T, logPath string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			args := strings.Split(string(cmd), "\x00")
			if len(args) > 2 && args[1] == "log-driver" && strings.Contains(args[2], url.QueryEscape(logPath)) {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log driver process writes %s", logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cpuTicks returns a process's user+system time in clock ticks.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th of them.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}

func readInt(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLogFloodIsThrottledWithTheSandbox: a sandbox limited to 0.1 cpu that
// writes as fast as it can gets its log driver only what is left of its
// own 0.1 cpu, instead of most of a core outside its limits.
func TestLogFloodIsThrottledWithTheSandbox(t *testing.T) {
	for _, rt := range []string{"runc", "crun", "gvisor"} {
		t.Run(rt, func(t *testing.T) {
			h := newHarness(t)
			sb := h.create(&fsbv1.SandboxSpec{
				Image: rig.ImageRef, Command: []string{"yes"}, Runtime: rt,
				Resources: &fsbv1.Resources{Cpu: "100m", Memory: "256Mi"},
			})
			pid := logDriverPid(t, sb.GetLogPath())
			parent := h.sandboxCgroup(sb)
			own, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []string{"cpu", "memory", "pids"} {
				if !strings.Contains(string(own), ":"+c+":"+parent+"/") && !strings.Contains(string(own), ","+c+":"+parent+"/") {
					t.Errorf("the log driver is not in the sandbox's %s cgroup %s:\n%s", c, parent, own)
				}
			}
			if got := readInt(t, filepath.Join("/sys/fs/cgroup/cpu", parent, "cpu.cfs_quota_us")); got != 10000 {
				t.Errorf("the sandbox's cgroup has cpu.cfs_quota_us %d, want 10000", got)
			}

			const window = 3 * time.Second
			usage := filepath.Join("/sys/fs/cgroup/cpuacct", parent, "cpuacct.usage")
			ticks0, usage0, start := cpuTicks(t, pid), readInt(t, usage), time.Now()
			time.Sleep(window) // the measure is cpu time over a wall-clock window
			ticks1, usage1, wall := cpuTicks(t, pid), readInt(t, usage), time.Since(start)
			sandboxCores := float64(usage1-usage0) / float64(wall.Nanoseconds())
			driverCores := float64(ticks1-ticks0) / 100 / wall.Seconds() // USER_HZ is 100 on Linux
			t.Logf("%s: sandbox cgroup %.3f cores, log driver %.3f cores over %v", rt, sandboxCores, driverCores, wall.Round(time.Millisecond))
			if sandboxCores > 0.13 {
				t.Errorf("the sandbox and its log driver used %.3f cores, past the 0.1 limit", sandboxCores)
			}
			if driverCores > 0.13 {
				t.Errorf("the log driver alone used %.3f cores, past the sandbox's 0.1 limit", driverCores)
			}
			fi, err := os.Stat(sb.GetLogPath())
			if err != nil || fi.Size() == 0 {
				t.Errorf("the flood wrote no log: %v", err)
			}

			h.delete(sb.GetSandboxId(), 0)
			assertNoCgroup(t, parent)
		})
	}
}

// hierarchies lists the cgroup hierarchies mounted under /sys/fs/cgroup:
// every one the OCI runtime may have made a sandbox's cgroup in, not only
// those its limits use.
func hierarchies(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", e.Name(), "cgroup.procs")); err == nil {
			out = append(out, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.procs"); err == nil {
		out = append(out, "/sys/fs/cgroup") // unified
	}
	if len(out) == 0 {
		t.Fatal("no cgroup hierarchy under /sys/fs/cgroup")
	}
	return out
}

// assertNoCgroup fails the test when cgroup (a path such as /ns/sb-1-1) is
// in any hierarchy once a delete has returned: the delete removes it.
func assertNoCgroup(t *testing.T, cgroup string) {
	t.Helper()
	for _, hier := range hierarchies(t) {
		if _, err := os.Stat(filepath.Join(hier, cgroup)); !os.IsNotExist(err) {
			t.Errorf("%s is left after the delete (%v)", filepath.Join(hier, cgroup), err)
		}
	}
}

// driverGone says whether the log driver pid has ended: exited or killed
// (a zombie, or already reaped by the shim).
func driverGone(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	return strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))[0] == "Z"
}

// TestDeleteRemovesTheSandboxCgroupEverywhere: after a delete no
// hierarchy keeps the sandbox's cgroup, whether its log driver left on its
// own or was killed (the shim SIGKILLs one that is slow to stop, the OOM
// killer may pick one) and so removed nothing.
func TestDeleteRemovesTheSandboxCgroupEverywhere(t *testing.T) {
	h := newHarness(t)
	for _, kill := range []bool{false, true} {
		t.Run(fmt.Sprintf("driver-killed=%v", kill), func(t *testing.T) {
			sb := h.create(&fsbv1.SandboxSpec{
				Image: rig.ImageRef, Command: []string{"sh", "-c", "echo up; sleep 600"},
				Resources: &fsbv1.Resources{Cpu: "500m", Memory: "64Mi"},
			})
			h.waitLog(sb, "up")
			parent := h.sandboxCgroup(sb)
			if kill {
				if err := syscall.Kill(logDriverPid(t, sb.GetLogPath()), syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			h.delete(sb.GetSandboxId(), 0)
			assertNoCgroup(t, parent)
		})
	}
}

// TestLeftoverSandboxCgroupsAreRemovedAtStart: a sandbox cgroup of the
// agent's containerd namespace that no container owns (its driver and
// delete were cut short) is removed when the agent starts; a running
// sandbox's is kept.
func TestLeftoverSandboxCgroupsAreRemovedAtStart(t *testing.T) {
	h := newHarness(t)
	sb := h.create(spec("echo up; sleep 600"))
	h.waitLog(sb, "up")
	parent := h.sandboxCgroup(sb)
	left := filepath.Join(filepath.Dir(parent), "sb-leftover-1")
	h.restart(func() {
		for _, hier := range hierarchies(t) {
			if err := os.MkdirAll(filepath.Join(hier, left, "helpers"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	})
	assertNoCgroup(t, left)
	for _, hier := range hierarchies(t) {
		if _, err := os.Stat(filepath.Join(hier, parent)); err != nil && !strings.HasSuffix(hier, "/unified") {
			t.Errorf("the running sandbox's cgroup is gone: %v", err)
		}
	}
	if got := h.get(sb.GetSandboxId()).GetPhase(); got != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("the running sandbox is %v after the restart", got)
	}
}

// TestSmallPidsLimitRunsAndPrints: a pids limit counts the sandbox's own
// processes and threads only, not its log driver's (about 7): a sandbox at
// the least limit, v1alpha1.MinPids, runs fsb init (a Go program, about 6
// threads), a shell and three more processes.
func TestSmallPidsLimitRunsAndPrints(t *testing.T) {
	h := newHarness(t)
	for _, rt := range []string{"runc", "crun"} {
		t.Run(rt, func(t *testing.T) {
			sb := h.create(&fsbv1.SandboxSpec{
				Image: rig.ImageRef, Command: []string{"sh", "-c", "sleep 1 & sleep 1 & sleep 1 & wait; echo hello from a small sandbox"}, Runtime: rt,
				Resources: &fsbv1.Resources{Pids: v1alpha1.MinPids},
			})
			h.waitLog(sb, "hello from a small sandbox")
			h.delete(sb.GetSandboxId(), 0)
		})
	}
}

// TestLogFloodAtMinimumMemoryKeepsTheDriver: a sandbox at the least memory
// it may have floods its log, then takes memory the kernel cannot reclaim
// (a file in its /dev/shm). The OOM killer must take the task, never the
// log driver, which outlives the task with the flood in the log.
func TestLogFloodAtMinimumMemoryKeepsTheDriver(t *testing.T) {
	h := newHarness(t)
	for _, rt := range []string{"runc", "crun"} {
		t.Run(rt, func(t *testing.T) {
			sb := h.create(&fsbv1.SandboxSpec{
				Image: rig.ImageRef, Runtime: rt,
				Command:   []string{"sh", "-c", "yes | head -c 4000000; echo flood over; cat /dev/zero > /dev/shm/fill"},
				Resources: &fsbv1.Resources{Memory: "8Mi"},
			})
			pid := logDriverPid(t, sb.GetLogPath())
			ended := h.waitPhase(sb.GetSandboxId(), fsbv1.Phase_PHASE_FAILED)
			if ended.GetReason() != "OOMKilled" {
				t.Errorf("the sandbox ended %v, want OOMKilled", ended)
			}
			if driverGone(pid) {
				t.Error("the log driver ended with the task, want it running until the delete")
			}
			h.waitLog(sb, "flood over")
			h.delete(sb.GetSandboxId(), 0)
		})
	}
}
