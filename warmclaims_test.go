//go:build !fsbhelper

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// warmPoolYAML is the default pool with one warm entry of the test image.
func warmPoolYAML(count int) string {
	return fmt.Sprintf(`apiVersion: sandbox.fast.io/v1alpha1
kind: SandboxPool
metadata:
  name: default
spec:
  warm:
  - image: %s
    count: %d
`, rig.ImageRef, count)
}

// applyYAML runs `fsb ctl apply -f` on doc.
func applyYAML(t *testing.T, server, doc string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "pool.yaml")
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRunCtl(t, server, "user-token-1", "apply", "-f", f)
}

// warmReady returns the ready warm sandboxes the agents report.
func warmReady(t *testing.T, client fsbv1connect.FastPathServiceClient) int {
	t.Helper()
	resp, err := client.ListAgents(context.Background(), connect.NewRequest(&fsbv1.ListAgentsRequest{}))
	if err != nil {
		return -1
	}
	n := 0
	for _, a := range resp.Msg.GetAgents() {
		for _, w := range a.GetWarm() {
			n += int(w.GetReady())
		}
	}
	return n
}

func waitWarm(t *testing.T, client fsbv1connect.FastPathServiceClient, want int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for warmReady(t, client) != want {
		if time.Now().After(deadline) {
			t.Fatalf("ready warm sandboxes: %d, want %d", warmReady(t, client), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startLine is what each sandbox's main process prints first, once.
func warmSpec(name string, mode fsbv1.ConsistencyMode) *fsbv1.SandboxSpec {
	return &fsbv1.SandboxSpec{
		Image: rig.ImageRef, Command: []string{"sh", "-c", "echo start $WHO in $(pwd); exec sleep 300"},
		Envs: []*fsbv1.EnvVar{{Name: "WHO", Value: name}}, WorkingDir: "/tmp", ConsistencyMode: mode,
	}
}

// TestWarmClaims: through the controller, a matching create claims one of
// the default pool's warm sandboxes and runs its own command, env and
// working dir; a create of another kind starts cold; a deleted sandbox is
// replaced in the pool. Then a claim storm with the controller killed with
// SIGKILL at random moments: every acknowledged sandbox runs, none shares
// a container with another, and each main process started exactly once.
func TestWarmClaims(t *testing.T) {
	const warm = 3
	cd, ns := rig.Containerd(t)
	_ = cd
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir, "--capacity", "16")
	ctrl, server := newControllerProc(t, dir, a)
	ctrl.start()
	client := fsbv1connect.NewFastPathServiceClient(http.DefaultClient, server, connect.WithInterceptors(auth.Bearer("user-token-1")))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	applyYAML(t, server, warmPoolYAML(warm))
	waitWarm(t, client, warm)

	create := func(name string, spec *fsbv1.SandboxSpec) *fsbv1.Sandbox {
		t.Helper()
		resp, err := client.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: name, Spec: spec}))
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		return resp.Msg.GetSandbox()
	}
	sb := create("hot", warmSpec("hot", fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST))
	if !sb.GetStatus().GetWarm() {
		t.Fatalf("a matching create was not claimed warm: %v", sb.GetStatus())
	}
	waitLogs(t, server, "hot", "start hot in /tmp\n")
	if out := mustRunCtl(t, server, "user-token-1", "exec", "hot", "--", "sh", "-c", "echo $WHO"); out != "hot\n" {
		t.Errorf("exec in a claimed sandbox: %q", out)
	}
	if out := mustRunCtl(t, server, "user-token-1", "get", "hot"); !strings.Contains(out, "warm") {
		t.Errorf("get does not say the sandbox was claimed warm:\n%s", out)
	}
	other := warmSpec("cold", fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG)
	other.Resources = &fsbv1.Resources{Pids: 64}
	if sb := create("cold", other); sb.GetStatus().GetWarm() {
		t.Errorf("a create of another kind was claimed warm")
	}
	mustRunCtl(t, server, "user-token-1", "delete", "hot")
	mustRunCtl(t, server, "user-token-1", "delete", "cold")
	waitWarm(t, client, warm)

	// The storm: 4 workers, 12 creates, 3 warm, kills at random.
	var (
		mu           sync.Mutex
		acknowledged = map[string]bool{}
		hits         int
	)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3 {
				name := fmt.Sprintf("storm-%d-%d", w, i)
				mode := fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST
				if i == 1 {
					mode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG
				}
				var resp *connect.Response[fsbv1.CreateSandboxResponse]
				var err error
				for try := 0; try < 100 && ctx.Err() == nil; try++ {
					callCtx, callCancel := context.WithTimeout(ctx, 20*time.Second)
					resp, err = client.CreateSandbox(callCtx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: name, Spec: warmSpec(name, mode)}))
					callCancel()
					if err == nil || connect.CodeOf(err) == connect.CodeInvalidArgument {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				mu.Lock()
				if err == nil {
					acknowledged[name] = true
					if resp.Msg.GetSandbox().GetStatus().GetWarm() {
						hits++
					}
				} else {
					t.Logf("create %s: %v", name, err)
				}
				mu.Unlock()
			}
		}()
	}
	stormDone := make(chan struct{})
	go func() { wg.Wait(); close(stormDone) }()
	kills := 0
	for range 2 {
		select {
		case <-stormDone:
		case <-time.After(time.Duration(20+rand.IntN(200)) * time.Millisecond):
			ctrl.kill()
			kills++
			ctrl.start()
		}
	}
	<-stormDone
	t.Logf("claim storm: %d acknowledged, %d answered warm, %d kills during it", len(acknowledged), hits, kills)
	if len(acknowledged) < 6 {
		t.Fatalf("only %d of 12 creates acknowledged", len(acknowledged))
	}
	// Every acknowledged sandbox runs; no two share a container; each
	// one's main process printed its start line exactly once.
	containers := map[string]string{}
	deadline := time.Now().Add(30 * time.Second)
	for name := range acknowledged {
		for {
			resp, err := client.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: name}))
			if err == nil && resp.Msg.GetSandbox().GetStatus().GetPhase() == fsbv1.Phase_PHASE_RUNNING {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("acknowledged sandbox %s is not running: %v, %v", name, resp, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		waitLogs(t, server, name, fmt.Sprintf("start %s in /tmp\n", name))
	}
	agents, err := client.ListAgents(ctx, connect.NewRequest(&fsbv1.ListAgentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, ag := range agents.Msg.GetAgents() {
		for _, s := range ag.GetSandboxes() {
			if other, dup := containers[s.GetContainerId()]; dup {
				t.Errorf("container %s serves both %s and %s", s.GetContainerId(), other, s.GetName())
			}
			containers[s.GetContainerId()] = s.GetName()
		}
	}
}

// waitLogs waits until a sandbox's log is exactly want (its main process's
// output and nothing else), then checks it stays so for a moment.
func waitLogs(t *testing.T, server, name, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, _, code := runCtl(t, server, "user-token-1", "logs", name)
		if code == 0 && out == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("logs of %s: %q (exit %d), want exactly %q", name, out, code, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
