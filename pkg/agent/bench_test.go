package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/bench"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// BenchmarkAgentVsContainerd times, per runtime (runc, crun, gVisor), the agent's create -> first
// output and delete (a Connect call over loopback HTTP, fsb init, the log
// driver) beside the plainest raw containerd equivalent (DESIGN §8), the two
// interleaved so that both see the same noise. Run it with a fixed count:
//
//	make bench   (or: go test -run '^$' -bench AgentVsContainerd -benchtime 25x ./pkg/agent/)
func BenchmarkAgentVsContainerd(b *testing.B) {
	for _, rt := range []string{runtime.RuntimeRunc, runtime.RuntimeCrun, runtime.RuntimeGVisor} {
		b.Run(rt, func(b *testing.B) {
			var binary string
			h := newHarness(b, withCapacity(1), func(s *harnessSetup) { binary = s.runtime.Runtimes[rt] })
			base := bench.Baseline{
				Client:      h.cd,
				Image:       rig.ImageRef,
				Snapshotter: rig.Snapshotter,
				BinaryName:  binary,
				Command:     []string{"echo", "hello"},
				Dir:         b.TempDir(),
			}
			ctx := context.Background()
			var agentCreate, agentDelete, baseCreate, baseDelete []time.Duration
			b.ResetTimer()
			for i := range b.N {
				c, d, err := h.timeAgent(ctx, rt, i)
				if err != nil {
					b.Fatal(err)
				}
				agentCreate, agentDelete = append(agentCreate, c), append(agentDelete, d)
				c, d, err = base.Run(ctx, fmt.Sprintf("baseline-%s-%d-%d", rt, b.N, i))
				if err != nil {
					b.Fatal(err)
				}
				baseCreate, baseDelete = append(baseCreate, c), append(baseDelete, d)
			}
			b.StopTimer()
			ac, ad := bench.Summarize(agentCreate), bench.Summarize(agentDelete)
			bc, bd := bench.Summarize(baseCreate), bench.Summarize(baseDelete)
			b.ReportMetric(bench.Millis(ac.P50), "agent-create-p50-ms")
			b.ReportMetric(bench.Millis(ac.P90), "agent-create-p90-ms")
			b.ReportMetric(bench.Millis(bc.P50), "base-create-p50-ms")
			b.ReportMetric(bench.Millis(bc.P90), "base-create-p90-ms")
			b.ReportMetric(bench.Millis(ad.P50), "agent-delete-p50-ms")
			b.ReportMetric(bench.Millis(ad.P90), "agent-delete-p90-ms")
			b.ReportMetric(bench.Millis(bd.P50), "base-delete-p50-ms")
			b.ReportMetric(bench.Millis(bd.P90), "base-delete-p90-ms")
			b.ReportMetric(float64(ac.P50)/float64(bc.P50), "create-ratio-p50")
			b.ReportMetric(0, "ns/op")
			if b.N > 1 {
				fmt.Fprintf(os.Stdout, "\n%-5s n=%-3d            create p50   p90   |  delete p50   p90   (ms)\n", rt, b.N)
				fmt.Fprintf(os.Stdout, "      agent               %6.1f %6.1f  |  %6.1f %6.1f\n", bench.Millis(ac.P50), bench.Millis(ac.P90), bench.Millis(ad.P50), bench.Millis(ad.P90))
				fmt.Fprintf(os.Stdout, "      containerd baseline %6.1f %6.1f  |  %6.1f %6.1f\n", bench.Millis(bc.P50), bench.Millis(bc.P90), bench.Millis(bd.P50), bench.Millis(bd.P90))
				fmt.Fprintf(os.Stdout, "      ratio p50           %6.2f\n", float64(ac.P50)/float64(bc.P50))
			}
		})
	}
}

// timeAgent creates one sandbox through the API, waits for the first byte
// of its output in the log file on the host, then deletes it.
func (h *harness) timeAgent(ctx context.Context, rt string, i int) (create, del time.Duration, err error) {
	id := fmt.Sprintf("bench-%s-%d-%d", rt, time.Now().UnixNano()%1e6, i)
	req := &fsbv1.AgentServiceCreateSandboxRequest{
		SandboxId: id, Revision: 1, Namespace: "bench", Name: id,
		Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"echo", "hello"}, Runtime: rt},
	}
	logPath := filepath.Join(h.logDir, "bench", id, runtime.ContainerID(id, 1)+".log")
	start := time.Now()
	if _, err := h.client.CreateSandbox(ctx, connect.NewRequest(req)); err != nil {
		return 0, 0, fmt.Errorf("create: %w", err)
	}
	seen, err := bench.WaitForOutput(ctx, logPath)
	if err != nil {
		return 0, 0, err
	}
	create = seen.Sub(start)
	start = time.Now()
	grace := int32(10)
	if _, err := h.client.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{SandboxId: id, GracePeriodSeconds: &grace})); err != nil {
		return 0, 0, fmt.Errorf("delete: %w", err)
	}
	return create, time.Since(start), nil
}
