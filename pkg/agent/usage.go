package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	goruntime "runtime"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/fast-sandbox/fast-sandbox/pkg/ctxerr"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// CPUWindow is how far apart the two CPU readings of a usage are: its CPU
// percentage is the sandbox's CPU time over this window. Long enough that
// the cgroup's counter moves by many scheduler ticks (a busy core adds
// 200 ms), short enough for a call a user waits on.
const CPUWindow = 200 * time.Millisecond

// GetSandboxUsage implements AgentService.GetSandboxUsage: two readings of
// the running revision's cgroup CPUWindow apart, then its memory from the
// second and its snapshot's size.
func (a *Agent) GetSandboxUsage(ctx context.Context, req *connect.Request[fsbv1.AgentServiceGetSandboxUsageRequest]) (*connect.Response[fsbv1.AgentServiceGetSandboxUsageResponse], error) {
	info, err := a.runningOf(req.Msg.GetSandboxId())
	if err != nil {
		return nil, err
	}
	first, err := a.cfg.Runtime.TaskUsage(ctx, info.ContainerID)
	if err != nil {
		return nil, usageError(ctx, info, err)
	}
	select {
	case <-ctx.Done():
		return nil, ctxerr.Ended(ctx)
	case <-time.After(CPUWindow):
	}
	second, err := a.cfg.Runtime.TaskUsage(ctx, info.ContainerID)
	if err != nil {
		return nil, usageError(ctx, info, err)
	}
	cores := coresOf(info.Spec.GetResources().GetCpu(), goruntime.NumCPU())
	u := &fsbv1.SandboxUsage{
		Time:             timestamppb.New(second.Time),
		Revision:         info.Revision,
		CpuUsedNanos:     second.CPUNanos,
		CpuPercent:       cpuPercent(first, second, cores),
		CpuCount:         int32(cores),
		CpuWindowMillis:  int32(second.Time.Sub(first.Time).Milliseconds()),
		MemoryUsedBytes:  second.MemoryUsed,
		MemoryCacheBytes: second.MemoryCache,
		MemoryLimitBytes: memoryLimitOf(info.Spec.GetResources().GetMemory()),
		NodeMemoryBytes:  nodeMemory(),
	}
	// Best effort: a snapshotter that cannot say (or is slow to walk a
	// large layer) costs the figure, not the answer.
	if disk, err := a.cfg.Runtime.DiskUsage(ctx, info.ContainerID); err != nil {
		a.cfg.Logger.Debug("sandbox disk usage unknown", slog.String("sandbox", info.ID), slog.Any("err", err))
	} else {
		u.DiskUsedBytes = &disk
	}
	return connect.NewResponse(&fsbv1.AgentServiceGetSandboxUsageResponse{Usage: u}), nil
}

// usageError is the API's error for a reading of info's cgroup that failed.
func usageError(ctx context.Context, info runtime.Info, err error) error {
	name := info.Namespace + "/" + info.Name
	switch {
	case errors.Is(err, runtime.ErrNoTask):
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("sandbox %s is not running: its task ended", name))
	case ctx.Err() != nil:
		return ctxerr.Ended(ctx)
	}
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("usage of sandbox %s: %w", name, err))
}

// cpuPercent is the share of cores the CPU time between two readings
// takes of the time between them, from 0 to 100.
func cpuPercent(first, second runtime.TaskUsage, cores int) float64 {
	elapsed := second.Time.Sub(first.Time)
	if elapsed <= 0 || cores <= 0 || second.CPUNanos < first.CPUNanos {
		return 0
	}
	pct := float64(second.CPUNanos-first.CPUNanos) / float64(elapsed.Nanoseconds()) / float64(cores) * 100
	// The kernel charges time in ticks, which can put a little more in a
	// short window than it held.
	return math.Min(pct, 100)
}

// coresOf is how many cores a sandbox may use: its CPU limit (a quantity
// the agent validated at create) rounded up, or the node's.
func coresOf(cpu string, node int) int {
	if q, err := resource.ParseQuantity(cpu); cpu != "" && err == nil && q.Sign() > 0 {
		return int((q.MilliValue() + 999) / 1000)
	}
	return node
}

// memoryLimitOf is a sandbox's memory limit in bytes, 0 for none.
func memoryLimitOf(memory string) uint64 {
	if q, err := resource.ParseQuantity(memory); memory != "" && err == nil && q.Sign() > 0 {
		return uint64(q.Value())
	}
	return 0
}

// nodeMemory is the node's memory in bytes, 0 when the kernel will not say.
func nodeMemory() uint64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return uint64(si.Totalram) * uint64(si.Unit)
}
