package cgroup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestEnterRefusesPathsOutsideTheHierarchy(t *testing.T) {
	for _, p := range []string{"", "/", "relative/x", "/a/../../etc", "/a/"} {
		if _, err := Enter(p, Limits{}); err == nil {
			t.Errorf("Enter(%q) accepted it", p)
		}
	}
}

// TestEnterAndLeave runs the test process itself through what the log
// driver does: into a new cgroup with limits, and back out, leaving
// nothing behind. It needs root and a writable cgroup file system, as the
// rest of the rig does.
func TestEnterAndLeave(t *testing.T) {
	parent := fmt.Sprintf("/fsbtest-cgroup-%d", os.Getpid())
	before, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	// Limits far above what the test uses: the whole test process moves.
	leave, err := Enter(parent, Limits{CPUQuota: 400_000, CPUPeriod: 100_000, Memory: 8 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leave() })
	inside, _ := os.ReadFile("/proc/self/cgroup")
	controllers := []string{"cpu", "memory", "pids"}
	files := map[string]string{
		"cpu/cpu.cfs_quota_us":         "400000",
		"memory/memory.limit_in_bytes": "8589934592",
		"pids/pids.max":                "max", // the task's leaf's alone
	}
	if Unified() {
		controllers = []string{""}
		files = map[string]string{"/cpu.max": "400000 100000", "/memory.max": "8589934592", "/pids.max": "max"}
	}
	for _, c := range controllers {
		if !strings.Contains(string(inside), c+":"+parent+"/"+HelperLeaf+"\n") {
			t.Errorf("not in the %q cgroup %s/%s:\n%s", c, parent, HelperLeaf, inside)
		}
	}
	for file, want := range files {
		c, name, _ := strings.Cut(file, "/")
		b, err := os.ReadFile(filepath.Join(Root, c, parent, name))
		if err != nil || strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q (%v), want %s", file, b, err, want)
		}
	}
	if err := leave(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile("/proc/self/cgroup"); string(after) != string(before) {
		t.Errorf("back in\n%s\nwant\n%s", after, before)
	}
	for _, c := range append(v1Controllers, "") {
		if _, err := os.Stat(filepath.Join(Root, c, parent)); !os.IsNotExist(err) {
			t.Errorf("%s's cgroup %s is left: %v", c, parent, err)
		}
	}
}

// TestEnterV2UndoesWhatItMadeOnError runs the v2 path on the unified
// hierarchy of a hybrid host, where no controller can be handed down (all
// are v1's): entering fails, and leaves none of the cgroups it made.
func TestEnterV2UndoesWhatItMadeOnError(t *testing.T) {
	unified := filepath.Join(Root, "unified")
	var st unix.Statfs_t
	if err := unix.Statfs(unified, &st); err != nil || st.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Skipf("%s is not a hybrid host's unified hierarchy", unified)
	}
	if b, _ := os.ReadFile(filepath.Join(unified, "cgroup.controllers")); strings.TrimSpace(string(b)) != "" {
		t.Skipf("the unified hierarchy has controllers %q: entering would not fail", b)
	}
	top := fmt.Sprintf("/fsbtest-v2-%d", os.Getpid())
	t.Cleanup(func() { _, _ = Remove(context.Background(), top, 0) })
	before, _ := os.ReadFile("/proc/self/cgroup")
	_, err := enterV2(unified, top+"/sb-1-1", Limits{Memory: 64 << 20}, itoa(int64(os.Getpid())))
	if err == nil {
		t.Fatal("entering a hierarchy without controllers succeeded")
	}
	t.Logf("enter: %v", err)
	if _, err := os.Stat(filepath.Join(unified, top)); !os.IsNotExist(err) {
		t.Errorf("%s is left after a failed enter (%v)", filepath.Join(unified, top), err)
	}
	if after, _ := os.ReadFile("/proc/self/cgroup"); string(after) != string(before) {
		t.Errorf("moved by a failed enter: in\n%s\nwant\n%s", after, before)
	}
}

// TestParentOfOwnCgroup reads /proc/self/cgroup as a v1 (hybrid) and a v2
// host write it, inside a pod and out of one.
func TestParentOfOwnCgroup(t *testing.T) {
	const v1Pod = `12:pids:/kubepods/besteffort/pod0b4a7f3c-1d2e-4f50-8a6b-7c8d9e0f1a2b/4f1c2d
11:memory:/kubepods/besteffort/pod0b4a7f3c-1d2e-4f50-8a6b-7c8d9e0f1a2b/4f1c2d
4:cpu,cpuacct:/kubepods/besteffort/pod0b4a7f3c-1d2e-4f50-8a6b-7c8d9e0f1a2b/4f1c2d
1:name=systemd:/kubepods/besteffort/pod0b4a7f3c-1d2e-4f50-8a6b-7c8d9e0f1a2b/4f1c2d
0::/
`
	for _, tc := range []struct {
		name    string
		lines   string
		unified bool
		want    string // "" wants an error
	}{
		{"v1 pod", v1Pod, false, "/kubepods/besteffort/pod0b4a7f3c-1d2e-4f50-8a6b-7c8d9e0f1a2b"},
		{"v1 pod, systemd driver", "7:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-ab.scope\n", false,
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"},
		{"v2 pod", "0::/kubepods/burstable/pod1/c0ffee\n", true, "/kubepods/burstable/pod1"},
		{"v1 host process in a service", "11:memory:/system.slice/fsb-agent.service\n0::/system.slice/fsb-agent.service\n", false, "/system.slice"},
		{"v1 process at the root", "11:memory:/\n", false, ""},
		{"v2 private cgroup namespace", "0::/\n", true, ""},
		{"v1 without a memory hierarchy", "4:cpu,cpuacct:/a/b\n", false, ""},
		{"v2 read on a v1-only list", v1Pod[:strings.Index(v1Pod, "0::/")], true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parentIn([]byte(tc.lines), tc.unified)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("parent %q, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parent %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}
