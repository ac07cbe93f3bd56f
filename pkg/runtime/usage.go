package runtime

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
)

// TaskUsage is one reading of a sandbox task's cgroup, as containerd's shim
// reports it (task.Metrics): the same figures on cgroup v1 and v2.
type TaskUsage struct {
	// Time is when the shim read the cgroup.
	Time time.Time
	// CPUNanos is the CPU time the task's processes used since it started.
	CPUNanos uint64
	// MemoryUsed is memory in use without the inactive page cache the
	// kernel reclaims first, as docker stats counts it: what the sandbox
	// holds, not what it happened to read once.
	MemoryUsed uint64
	// MemoryCache is the page cache charged to the task.
	MemoryCache uint64
}

// ErrNoTask marks a usage asked of a container whose task is gone (it
// exited, or was deleted, between the caller's look and the reading).
var ErrNoTask = errors.New("the sandbox's task is gone")

// TaskUsage reads the cgroup of container id's task.
func (r *Runtime) TaskUsage(ctx context.Context, id string) (TaskUsage, error) {
	c, err := r.cfg.Client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return TaskUsage{}, fmt.Errorf("%w: container %s", ErrNoTask, id)
	}
	if err != nil {
		return TaskUsage{}, fmt.Errorf("load container %s: %w", id, err)
	}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return TaskUsage{}, fmt.Errorf("%w: container %s", ErrNoTask, id)
	}
	if err != nil {
		return TaskUsage{}, fmt.Errorf("load task %s: %w", id, err)
	}
	m, err := task.Metrics(ctx)
	if errdefs.IsNotFound(err) {
		return TaskUsage{}, fmt.Errorf("%w: container %s", ErrNoTask, id)
	}
	if err != nil {
		return TaskUsage{}, fmt.Errorf("metrics of task %s: %w", id, err)
	}
	if m.GetData() == nil {
		return TaskUsage{}, fmt.Errorf("metrics of task %s: the shim sent no data", id)
	}
	stats, err := typeurl.UnmarshalAny(m.GetData())
	if err != nil {
		return TaskUsage{}, fmt.Errorf("metrics of task %s: %w", id, err)
	}
	u, err := taskUsageOf(stats)
	if err != nil {
		return TaskUsage{}, fmt.Errorf("metrics of task %s: %w", id, err)
	}
	u.Time = time.Now()
	if ts := m.GetTimestamp(); ts != nil && ts.IsValid() && !ts.AsTime().IsZero() {
		// The shim's time of reading, not the answer's arrival: a CPU
		// rate over two readings is then not skewed by the calls' latency.
		u.Time = ts.AsTime()
	}
	return u, nil
}

// taskUsageOf converts the cgroup stats a shim sends (v1 or v2) to a
// TaskUsage without its time.
func taskUsageOf(stats any) (TaskUsage, error) {
	switch s := stats.(type) {
	case *v1.Metrics:
		return taskUsageV1(s), nil
	case *v2.Metrics:
		return taskUsageV2(s), nil
	}
	return TaskUsage{}, fmt.Errorf("cgroup stats of type %T: want cgroup v1 or v2 metrics", stats)
}

// taskUsageV1 reads cgroup v1 stats. Usage counts the page cache, so the
// inactive file pages, which the kernel reclaims first, are taken off
// (docker's "usage minus cache"); the total_ counters include child
// cgroups, and the plain ones are read when a kernel leaves those out.
func taskUsageV1(s *v1.Metrics) TaskUsage {
	var u TaskUsage
	u.CPUNanos = s.GetCPU().GetUsage().GetTotal()
	mem := s.GetMemory()
	inactive := cmp.Or(mem.GetTotalInactiveFile(), mem.GetInactiveFile())
	u.MemoryUsed = minusFloor(mem.GetUsage().GetUsage(), inactive)
	u.MemoryCache = cmp.Or(mem.GetTotalCache(), mem.GetCache())
	return u
}

// taskUsageV2 reads cgroup v2 stats: memory.current less inactive_file,
// as docker counts it, and the file pages as the cache.
func taskUsageV2(s *v2.Metrics) TaskUsage {
	var u TaskUsage
	u.CPUNanos = s.GetCPU().GetUsageUsec() * 1000
	mem := s.GetMemory()
	u.MemoryUsed = minusFloor(mem.GetUsage(), mem.GetInactiveFile())
	u.MemoryCache = mem.GetFile()
	return u
}

// minusFloor is a-b, or 0 when b is larger: counters read one after the
// other can cross.
func minusFloor(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// DiskUsage returns how many bytes container id's root file system
// snapshot holds, as its snapshotter counts them: with overlayfs the
// sandbox's own writable layer, what it wrote (the image's layers are
// shared and not counted); with the native snapshotter the whole copy.
func (r *Runtime) DiskUsage(ctx context.Context, id string) (uint64, error) {
	c, err := r.cfg.Client.LoadContainer(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("load container %s: %w", id, err)
	}
	info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return 0, fmt.Errorf("inspect container %s: %w", id, err)
	}
	if info.Snapshotter == "" || info.SnapshotKey == "" {
		return 0, fmt.Errorf("container %s has no snapshot", id)
	}
	u, err := r.cfg.Client.SnapshotService(info.Snapshotter).Usage(ctx, info.SnapshotKey)
	if err != nil {
		return 0, fmt.Errorf("usage of snapshot %s (%s): %w", info.SnapshotKey, info.Snapshotter, err)
	}
	if u.Size < 0 {
		return 0, nil
	}
	return uint64(u.Size), nil
}
