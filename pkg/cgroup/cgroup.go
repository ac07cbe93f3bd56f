// Package cgroup puts a sandbox's helper processes — its log driver — under
// the sandbox's own cpu and memory limits.
//
// A sandbox's limits are set on a parent cgroup that holds two leaves: the
// task's, which the OCI runtime (runc, crun, runsc) makes and removes, and
// the helper's, which Enter makes and joins. The runtime applies the same
// limits to its leaf, so the task alone is held as before, and the task
// and its helpers together never exceed the parent's. The pids limit is
// the task's leaf's alone: it counts the sandbox's processes, and the
// driver's threads would eat a small one (8 pids would not start). Each leaf is removed
// by whoever made it: the runtime's on delete (while the log driver still
// drains the task's pipes, which is why the driver is not in that leaf), the
// helper's and the parent by the helper on its way out. What a killed helper
// leaves, the agent's delete (Remove, on every hierarchy) and its start
// remove.
//
// Both cgroup v1 (one hierarchy per controller, as Debian 12 mounts them)
// and the unified v2 hierarchy are handled; the choice is the one runc
// makes: v2 when /sys/fs/cgroup is a cgroup2 file system. The test rig
// here is a v1 (hybrid) host: the v2 path is exercised only as far as its
// undo on an error (on the hybrid host's unified hierarchy, which has no
// controllers to hand down), not with limits in force.
package cgroup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Root is where the cgroup file systems are mounted.
const Root = "/sys/fs/cgroup"

// TaskLeaf and HelperLeaf name the two leaves under a sandbox's cgroup.
const (
	TaskLeaf   = "task"
	HelperLeaf = "helpers"
)

// v1Controllers are the v1 hierarchies a sandbox's cgroup is made in: the
// ones its limits use, and cpuacct, which accounts its cpu time.
var v1Controllers = []string{"cpu", "cpuacct", "memory", "pids"}

// Limits are the limits a sandbox's cgroup holds its task and helpers
// to together; zero means none.
type Limits struct {
	// CPUQuota and CPUPeriod are CFS bandwidth in microseconds.
	CPUQuota, CPUPeriod int64
	Memory              int64 // bytes
}

// Unified reports whether the host uses the unified (v2) hierarchy.
func Unified() bool {
	var st unix.Statfs_t
	return unix.Statfs(Root, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// Enter makes the cgroup parent (a path such as /fsb/sb-1-1) with limits,
// when missing, and its HelperLeaf, and moves the calling process there.
// leave moves the process back to the cgroups it came from and removes the
// leaf, and the parent once the task's leaf is gone too; it is for a helper
// about to exit.
func Enter(parent string, limits Limits) (leave func() error, err error) {
	if !strings.HasPrefix(parent, "/") || filepath.Clean(parent) != parent || parent == "/" {
		return nil, fmt.Errorf("cgroup %q: want an absolute, clean path below the root", parent)
	}
	pid := []byte(strconv.Itoa(os.Getpid()))
	if Unified() {
		return enterV2(Root, parent, limits, pid)
	}
	return enterV1(parent, limits, pid)
}

func enterV1(parent string, limits Limits, pid []byte) (func() error, error) {
	origin, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	var joined []string
	leave := func() error {
		var errs []error
		for _, c := range joined {
			back := filepath.Join(Root, c, origin[c], "cgroup.procs")
			errs = append(errs, write(back, pid))
		}
		for _, c := range joined {
			errs = append(errs, rmdir(filepath.Join(Root, c, parent, HelperLeaf)))
			_ = rmdir(filepath.Join(Root, c, parent)) // busy while the task's leaf is there
		}
		return errors.Join(errs...)
	}
	for _, c := range v1Controllers {
		base := filepath.Join(Root, c)
		if _, ok := origin[c]; !ok {
			continue // not mounted, or not a controller here
		}
		dir := filepath.Join(base, parent)
		if err := os.MkdirAll(filepath.Join(dir, HelperLeaf), 0o755); err != nil {
			return nil, errors.Join(fmt.Errorf("make cgroup %s: %w", dir, err), leave())
		}
		var err error
		switch c {
		case "cpu":
			if limits.CPUQuota > 0 {
				err = errors.Join(write(filepath.Join(dir, "cpu.cfs_period_us"), itoa(limits.CPUPeriod)),
					write(filepath.Join(dir, "cpu.cfs_quota_us"), itoa(limits.CPUQuota)))
			}
		case "memory":
			if limits.Memory > 0 {
				err = write(filepath.Join(dir, "memory.limit_in_bytes"), itoa(limits.Memory))
			}
		}
		if err == nil {
			err = write(filepath.Join(dir, HelperLeaf, "cgroup.procs"), pid)
		}
		if err != nil {
			return nil, errors.Join(err, leave())
		}
		joined = append(joined, c)
	}
	if len(joined) == 0 {
		return nil, fmt.Errorf("cgroup %s: no cgroup v1 controller of %v is mounted under %s", parent, v1Controllers, Root)
	}
	return leave, nil
}

// enterV2 is Enter on the unified hierarchy mounted at root. On an error
// it removes the cgroups it made, as enterV1 does.
func enterV2(root, parent string, limits Limits, pid []byte) (leave func() error, err error) {
	origin, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, parent)
	leaf := filepath.Join(dir, HelperLeaf)
	var made []string // by this call, parents first
	defer func() {
		if err != nil {
			for _, d := range slices.Backward(made) {
				err = errors.Join(err, rmdir(d))
			}
		}
	}()
	mkdir := func(d string) error {
		if err := unix.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("make cgroup %s: %w", d, err)
		} else if err == nil {
			made = append(made, d)
		}
		return nil
	}
	// Controllers are handed down from the root: each ancestor enables
	// them for its children (runc does the same for the task's leaf).
	rel := strings.Split(strings.TrimPrefix(parent, "/"), "/")
	for i := range rel {
		anc := filepath.Join(append([]string{root}, rel[:i]...)...)
		if err := mkdir(filepath.Join(anc, rel[i])); err != nil {
			return nil, err
		}
		if err := write(filepath.Join(anc, "cgroup.subtree_control"), []byte("+cpu +memory +pids")); err != nil {
			return nil, err
		}
	}
	if err := write(filepath.Join(dir, "cgroup.subtree_control"), []byte("+cpu +memory +pids")); err != nil {
		return nil, err
	}
	var errs []error
	if limits.CPUQuota > 0 {
		errs = append(errs, write(filepath.Join(dir, "cpu.max"), fmt.Appendf(nil, "%d %d", limits.CPUQuota, limits.CPUPeriod)))
	}
	if limits.Memory > 0 {
		errs = append(errs, write(filepath.Join(dir, "memory.max"), itoa(limits.Memory)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := mkdir(leaf); err != nil {
		return nil, err
	}
	if err := write(filepath.Join(leaf, "cgroup.procs"), pid); err != nil {
		return nil, err
	}
	return func() error {
		err := errors.Join(write(filepath.Join(root, origin[""], "cgroup.procs"), pid), rmdir(leaf))
		_ = rmdir(dir) // busy while the task's leaf is there
		return err
	}, nil
}

// OwnParent returns the parent of the calling process's cgroup: on cgroup
// v1 in the memory hierarchy, on v2 in the unified one. In a Kubernetes pod
// the process's cgroup is its container's, and its parent the pod's
// (/kubepods/<qos>/pod<uid>): cgroups made below it count as the pod's, as
// the kubelet accounts and evicts.
func OwnParent() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read own cgroups: %w", err)
	}
	return parentIn(b, Unified())
}

// parentIn is OwnParent for the contents of /proc/self/cgroup.
func parentIn(procCgroup []byte, unified bool) (string, error) {
	own := parseCgroups(procCgroup)
	key, hierarchy := "memory", "the memory hierarchy"
	if unified {
		key, hierarchy = "", "the unified hierarchy"
	}
	p, ok := own[key]
	if !ok {
		return "", fmt.Errorf("cgroup: own cgroup in %s not found in /proc/self/cgroup", hierarchy)
	}
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("cgroup: own cgroup %q in %s is not an absolute path", p, hierarchy)
	}
	parent := filepath.Dir(filepath.Clean(p))
	if parent == "/" {
		// A private cgroup namespace shows "/", and a process at the
		// top has no parent of its own to share.
		return "", fmt.Errorf("cgroup: own cgroup %q in %s has no parent below the root (a private cgroup namespace?)", p, hierarchy)
	}
	return parent, nil
}

// ownCgroups reads /proc/self/cgroup: the calling process's cgroup path per
// v1 controller, and under "" the v2 one.
func ownCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read own cgroups: %w", err)
	}
	return parseCgroups(b), nil
}

// parseCgroups parses /proc/<pid>/cgroup lines (ID:controllers:path) into
// each v1 controller's path, and under "" the v2 one.
func parseCgroups(b []byte) map[string]string {
	out := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for c := range strings.SplitSeq(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out
}

func write(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("cgroup: write %q to %s: %w", data, path, err)
	}
	return nil
}

func rmdir(dir string) error {
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cgroup: remove %s: %w", dir, err)
	}
	return nil
}

func itoa(n int64) []byte { return strconv.AppendInt(nil, n, 10) }

// Hierarchies returns the mount points of every cgroup hierarchy under
// Root: on a v1 or hybrid host one per controller (and the named and
// unified ones), on a v2 host Root itself. The OCI runtime makes a task's
// cgroup in each, not only in those its limits use.
func Hierarchies() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cgroup: read mounts: %w", err)
	}
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		// ID parent major:minor root mount-point options... - fstype source super-options
		pre, post, ok := strings.Cut(line, " - ")
		f, fs := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(fs) < 1 || (fs[0] != "cgroup" && fs[0] != "cgroup2") {
			continue
		}
		if mp := f[4]; mp == Root || strings.HasPrefix(mp, Root+"/") {
			out = append(out, mp)
		}
	}
	return out, nil
}

// Children returns the names of dir's child cgroups (dir a path such as
// /fsb) found in any hierarchy, each once.
func Children(dir string) ([]string, error) {
	hiers, err := Hierarchies()
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool)
	var out []string
	for _, h := range hiers {
		entries, err := os.ReadDir(filepath.Join(h, dir))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("cgroup: list %s: %w", filepath.Join(h, dir), err)
		}
		for _, e := range entries {
			if e.IsDir() && !seen[e.Name()] {
				seen[e.Name()] = true
				out = append(out, e.Name())
			}
		}
	}
	return out, nil
}

// Remove removes the cgroup dir (a path such as /fsb/sb-1-1) and every
// cgroup below it from every hierarchy; what is gone already is skipped. A
// cgroup that still holds a process (a helper on its way out) is tried
// again until wait has passed, then named in the error; it is left as it
// is. removed says whether anything was there to remove.
func Remove(ctx context.Context, dir string, wait time.Duration) (removed bool, err error) {
	if !strings.HasPrefix(dir, "/") || filepath.Clean(dir) != dir || dir == "/" {
		return false, fmt.Errorf("cgroup %q: want an absolute, clean path below the root", dir)
	}
	hiers, err := Hierarchies()
	if err != nil {
		return false, err
	}
	deadline := time.Now().Add(wait)
	for {
		var busy []error
		for _, h := range hiers {
			found, err := removeTree(filepath.Join(h, dir))
			removed = removed || found
			if err != nil {
				busy = append(busy, err)
			}
		}
		if len(busy) == 0 {
			return removed, nil
		}
		// Only a cgroup that still holds a process may empty itself soon;
		// any other failure (a read-only or forbidden hierarchy) stays.
		if err := errors.Join(busy...); !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
			return removed, err
		}
		if !time.Now().Before(deadline) {
			return removed, errors.Join(busy...)
		}
		select {
		case <-ctx.Done():
			return removed, errors.Join(append(busy, ctx.Err())...)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// removeTree removes the cgroup dir and the cgroups below it, children
// first: rmdir refuses a cgroup with children, and ignores its control
// files. found says whether dir was there.
func removeTree(dir string) (found bool, err error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return true, fmt.Errorf("cgroup: list %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() {
			_, err := removeTree(filepath.Join(dir, e.Name()))
			errs = append(errs, err)
		}
	}
	errs = append(errs, rmdir(dir))
	return true, errors.Join(errs...)
}
