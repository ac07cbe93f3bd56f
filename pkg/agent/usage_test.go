package agent

import (
	"context"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

const mib = 1 << 20

func (h *harness) usage(ctx context.Context, id string) (*fsbv1.SandboxUsage, error) {
	resp, err := h.client.GetSandboxUsage(ctx, connect.NewRequest(&fsbv1.AgentServiceGetSandboxUsageRequest{SandboxId: id}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetUsage(), nil
}

// TestSandboxUsage reads real cgroups through containerd: a busy loop
// shows on the CPU, memory a sandbox fills shows as used and cached, a
// file it writes on its root file system as disk used, and limits as they
// were asked for.
func TestSandboxUsage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// /dev/shm is a tmpfs: what is written there is memory the sandbox's
	// cgroup is charged for (shared memory, counted as cache, never
	// inactive file pages), and stays until the file goes.
	idleSpec := spec("echo ready; exec sleep 1000")
	idleSpec.Resources = &fsbv1.Resources{Memory: "256Mi", Cpu: "1500m"}
	idle := h.create(idleSpec)
	filled := h.create(spec("head -c 48m /dev/zero > /dev/shm/fill && head -c 8m /dev/urandom > /big && echo filled; exec sleep 1000"))
	h.waitLog(idle, "ready")
	h.waitLog(filled, "filled")

	// One runtime at a time: a busy loop each, not three at once on a
	// small machine.
	for _, rt := range []string{runtime.RuntimeRunc, runtime.RuntimeCrun, runtime.RuntimeGVisor} {
		t.Run("busy loop/"+rt, func(t *testing.T) {
			busy := h.create(runtimeSpec(rt, "while :; do :; done"))
			defer h.delete(busy.GetSandboxId(), 0)
			// One core busy: 100 % of one core, 50 % of two; on a machine
			// a whole test run keeps busy, much less in some windows. The
			// busiest of a few windows tells a busy loop (> 5 %) from an
			// idle sandbox (about 0).
			var u *fsbv1.SandboxUsage
			for range 10 {
				got, err := h.usage(ctx, busy.GetSandboxId())
				if err != nil {
					t.Fatal(err)
				}
				if u == nil || got.GetCpuPercent() > u.GetCpuPercent() {
					u = got
				}
				if u.GetCpuPercent() > 10 {
					break
				}
			}
			t.Logf("busy: %v", u)
			if u.GetCpuPercent() <= 5 || u.GetCpuPercent() > 100 {
				t.Errorf("cpu %.1f%% of %d cores at most in 10 windows, want a busy loop's (> 5%%)", u.GetCpuPercent(), u.GetCpuCount())
			}
			if u.GetCpuCount() != int32(goruntime.NumCPU()) {
				t.Errorf("cpu_count %d without a limit, want the node's %d", u.GetCpuCount(), goruntime.NumCPU())
			}
			if u.GetCpuUsedNanos() == 0 || u.GetMemoryUsedBytes() == 0 {
				t.Errorf("cpu used %d ns, memory used %d: want both above 0", u.GetCpuUsedNanos(), u.GetMemoryUsedBytes())
			}
			if w := u.GetCpuWindowMillis(); w < int32(CPUWindow/time.Millisecond)/2 || w > 5000 {
				t.Errorf("cpu window %d ms, want about %v", w, CPUWindow)
			}
			if u.GetMemoryLimitBytes() != 0 || u.GetNodeMemoryBytes() == 0 {
				t.Errorf("memory limit %d (want 0: none), node memory %d (want > 0)", u.GetMemoryLimitBytes(), u.GetNodeMemoryBytes())
			}
			if u.GetRevision() != 1 || u.GetTime() == nil || time.Since(u.GetTime().AsTime()).Abs() > time.Minute {
				t.Errorf("revision %d, time %v: want 1 and now", u.GetRevision(), u.GetTime().AsTime())
			}
		})
	}

	t.Run("memory and disk", func(t *testing.T) {
		base, err := h.usage(ctx, idle.GetSandboxId())
		if err != nil {
			t.Fatal(err)
		}
		full, err := h.usage(ctx, filled.GetSandboxId())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("idle: %v", base)
		t.Logf("filled: %v", full)
		if base.GetCpuPercent() > 10 {
			t.Errorf("an idle sandbox at %.1f%% cpu", base.GetCpuPercent())
		}
		if base.GetMemoryUsedBytes() == 0 {
			t.Error("an idle sandbox uses no memory")
		}
		if got, floor := full.GetMemoryUsedBytes(), base.GetMemoryUsedBytes()+40*mib; got < floor {
			t.Errorf("memory used %d after filling 48 MiB of /dev/shm, want at least %d (idle %d + 40 MiB)", got, floor, base.GetMemoryUsedBytes())
		}
		if got := full.GetMemoryCacheBytes(); got < 40*mib {
			t.Errorf("memory cache %d after filling 48 MiB of /dev/shm (shared memory is cache), want at least 40 MiB", got)
		}
		if full.DiskUsedBytes == nil || full.GetDiskUsedBytes() < 8*mib {
			t.Errorf("disk used %v after writing 8 MiB to /big, want at least 8 MiB", full.DiskUsedBytes)
		}
		if base.DiskUsedBytes == nil || base.GetDiskUsedBytes() >= 8*mib {
			t.Errorf("disk used %v by a sandbox that wrote nothing, want set and below 8 MiB", base.DiskUsedBytes)
		}
		if got := base.GetMemoryLimitBytes(); got != 256*mib {
			t.Errorf("memory limit %d, want 256Mi", got)
		}
		if got := base.GetCpuCount(); got != 2 {
			t.Errorf("cpu_count %d for a limit of 1500m, want 2 (rounded up)", got)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		noInit := spec("exec sleep 1000")
		noInit.NoInit = true
		bare := h.create(noInit)
		done := h.create(spec("true"))
		h.waitPhase(done.GetSandboxId(), fsbv1.Phase_PHASE_SUCCEEDED)
		if u, err := h.usage(ctx, bare.GetSandboxId()); err != nil || u.GetMemoryUsedBytes() == 0 {
			t.Errorf("a sandbox without fsb init: %v, %v; want its usage (no init needed)", u, err)
		}
		cases := []struct {
			name string
			id   string
			code connect.Code
			msg  string
		}{
			{"ended", done.GetSandboxId(), connect.CodeFailedPrecondition, "is not running: it is exited (code 0)"},
			{"missing", "sb-nowhere", connect.CodeNotFound, "is not on agent"},
			{"bad id", "Not An ID", connect.CodeInvalidArgument, ""},
		}
		for _, tc := range cases {
			_, err := h.usage(ctx, tc.id)
			if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("%s: %v; want %v %q", tc.name, err, tc.code, tc.msg)
			}
		}
	})
}
