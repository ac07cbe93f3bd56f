//go:build !fsbhelper

package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/bench"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// BenchmarkCreateToFirstOutput times create -> first byte of output in the
// sandbox's log file on the host, for the same sandbox (busybox `echo
// hello`, runc) four ways in one run, interleaved so that all see the same
// noise: `fsb ctl run` in FAST and STRONG mode (a process start, the
// controller, the agent), the controller's API called directly in FAST
// mode, and the agent's API alone. Run it with a fixed count:
//
//	go test -run '^$' -bench CreateToFirstOutput -benchtime 25x .
func BenchmarkCreateToFirstOutput(b *testing.B) {
	c := startCluster(b, "fast")
	ctx := context.Background()
	fp := fsbv1connect.NewFastPathServiceClient(http.DefaultClient, c.server, connect.WithInterceptors(auth.Bearer(c.token)))
	ag := fsbv1connect.NewAgentServiceClient(http.DefaultClient, c.agent.base, connect.WithInterceptors(auth.Bearer(c.agent.token)))
	logDir := filepath.Join(c.dir, "logs", "default")
	waitLog := func(name string) (time.Time, error) {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return bench.WaitForLog(ctx, filepath.Join(logDir, name))
	}
	del := func(name string) {
		if _, err := fp.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{Name: name})); err != nil {
			b.Fatal(err)
		}
	}
	ways := []struct {
		name   string
		create func(name string) error
		clean  func(name string)
	}{
		{"ctl-fast", func(name string) error {
			return c.ctlRun(name, "--mode", "fast", "--image", rig.ImageRef, "--", "echo", "hello")
		}, del},
		{"ctl-strong", func(name string) error {
			return c.ctlRun(name, "--mode", "strong", "--image", rig.ImageRef, "--", "echo", "hello")
		}, del},
		{"api-fast", func(name string) error {
			_, err := fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: name,
				Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"echo", "hello"}, ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST}}))
			return err
		}, del},
		{"agent-only", func(name string) error {
			_, err := ag.CreateSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{SandboxId: "sb-" + name, Revision: 1, Namespace: "default", Name: name,
				Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"echo", "hello"}}}))
			return err
		}, func(name string) {
			if _, err := ag.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{SandboxId: "sb-" + name})); err != nil {
				b.Fatal(err)
			}
		}},
	}
	times := make([][]time.Duration, len(ways))
	b.ResetTimer()
	for i := range b.N {
		for w, way := range ways {
			name := fmt.Sprintf("%s-%d-%d", way.name, b.N, i)
			start := time.Now()
			if err := way.create(name); err != nil {
				b.Fatalf("%s: %v", way.name, err)
			}
			seen, err := waitLog(name)
			if err != nil {
				b.Fatal(err)
			}
			times[w] = append(times[w], seen.Sub(start))
			way.clean(name)
		}
	}
	b.StopTimer()
	if b.N > 1 {
		fmt.Printf("\ncreate -> first output, n=%d        p50     p90   (ms)\n", b.N)
	}
	for w, way := range ways {
		s := bench.Summarize(times[w])
		b.ReportMetric(bench.Millis(s.P50), way.name+"-p50-ms")
		b.ReportMetric(bench.Millis(s.P90), way.name+"-p90-ms")
		if b.N > 1 {
			fmt.Printf("  %-28s %7.1f %7.1f\n", way.name, bench.Millis(s.P50), bench.Millis(s.P90))
		}
	}
	b.ReportMetric(0, "ns/op")
}

// ctlRun runs `fsb ctl run NAME ARGS...`.
func (c *cluster) ctlRun(name string, args ...string) error {
	cmd := exec.Command(c.fsb, append([]string{"ctl", "run", name}, args...)...)
	cmd.Env = append(os.Environ(), "FSB_SERVER="+c.server, "FSB_TOKEN="+c.token)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("fsb ctl run %s: %v: %s", name, err, out)
	}
	return nil
}
