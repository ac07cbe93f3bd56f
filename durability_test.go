//go:build !fsbhelper

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
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
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// controllerProc is `fsb controller` as a process that a test can kill -9
// and start again on the same data directory.
type controllerProc struct {
	t       testing.TB
	args    []string
	health  string
	metrics string // its /metrics URL
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	log     *rig.Buffer
}

// newControllerProc is newControllerProcOn with the embedded store.
func newControllerProc(t testing.TB, dir string, agent *agentProc, extra ...string) (*controllerProc, string) {
	return newControllerProcOn(t, embeddedStore, dir, agent, extra...)
}

// newControllerProcOn prepares `fsb controller` over agent with a store of
// kind (kept under dir when embedded), and returns it with the URL of its
// API; start starts it.
func newControllerProcOn(t testing.TB, kind storeKind, dir string, agent *agentProc, extra ...string) (*controllerProc, string) {
	return newControllerProcWith(t, storeArgs(t, kind, dir), dir, agent, extra...)
}

// newControllerProcWith is newControllerProcOn with the store flags given.
func newControllerProcWith(t testing.TB, store []string, dir string, agent *agentProc, extra ...string) (*controllerProc, string) {
	userToken := filepath.Join(dir, "user-token")
	if err := os.WriteFile(userToken, []byte("user-token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port, health, metrics := freePort(t), freePort(t), freePort(t)
	c := &controllerProc{t: t, health: fmt.Sprintf("http://127.0.0.1:%d/readyz", health), log: &rig.Buffer{},
		metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics)}
	c.args = append([]string{"controller",
		"--fastpath-bind-address", fmt.Sprintf("127.0.0.1:%d", port),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", health),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metrics),
		"--agents", strings.TrimPrefix(agent.base, "http://"),
		"--user-token-file", userToken, "--agent-token-file", filepath.Join(dir, "token"),
		"--log-format", "json"}, append(store, extra...)...)
	t.Cleanup(c.kill)
	return c, fmt.Sprintf("http://127.0.0.1:%d", port)
}

func (c *controllerProc) start() {
	c.t.Helper()
	c.mu.Lock()
	c.cmd = exec.Command(rig.FsbBinary(c.t), c.args...)
	c.cmd.Stderr = c.log
	if err := c.cmd.Start(); err != nil {
		c.mu.Unlock()
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	c.done = done
	cmd := c.cmd
	c.mu.Unlock()
	go func() { cmd.Wait(); close(done) }()
	waitReady(c.t, http.DefaultClient, c.health, c.log)
}

// kill kills the controller with SIGKILL, as a crash would.
func (c *controllerProc) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Kill()
	<-c.done
	c.cmd = nil
}

// TestFastDurabilityUnderControllerKill9 runs a bounded create storm in
// both modes while the controller is killed with SIGKILL at random moments
// and started again. Afterwards every acknowledged sandbox is listed and
// running, none is placed twice, no slot or port is handed out twice, and,
// once the creates that failed have been cleaned up, no container is left
// without an object.
func TestFastDurabilityUnderControllerKill9(t *testing.T) {
	const (
		workers   = 4
		perWorker = 8
		capacity  = 40
	)
	cd, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir, "--capacity", fmt.Sprint(capacity))
	ctrl, server := newControllerProc(t, dir, a)
	ctrl.start()
	client := fsbv1connect.NewFastPathServiceClient(http.DefaultClient, server, connect.WithInterceptors(auth.Bearer("user-token-1")))

	var (
		mu           sync.Mutex
		acknowledged = map[string]string{} // name -> sandbox ID
		failures     int
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				name := fmt.Sprintf("storm-%d-%d", w, i)
				mode := fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST
				if i%2 == 1 {
					mode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG
				}
				spec := &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"}, ConsistencyMode: mode}
				if i%3 == 0 {
					// A few shared ports: a second sandbox on one must be refused.
					spec.ExposedPorts = []int32{int32(31000 + i%4)}
				}
				// Like any client, retry while the controller is away; a
				// create is idempotent by name and spec.
				var resp *connect.Response[fsbv1.CreateSandboxResponse]
				var err error
				for try := 0; try < 100 && ctx.Err() == nil; try++ {
					callCtx, callCancel := context.WithTimeout(ctx, 20*time.Second)
					resp, err = client.CreateSandbox(callCtx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: name, Spec: spec}))
					callCancel()
					if code := connect.CodeOf(err); err == nil || code == connect.CodeResourceExhausted || code == connect.CodeInvalidArgument {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				mu.Lock()
				if err == nil {
					acknowledged[name] = resp.Msg.GetSandbox().GetStatus().GetSandboxId()
				} else {
					failures++
					t.Logf("create %s: %v", name, err)
				}
				mu.Unlock()
			}
		}()
	}
	// The killer: three crashes at random moments during the storm.
	stormDone := make(chan struct{})
	go func() { wg.Wait(); close(stormDone) }()
	kills := 0
	for k := 0; k < 3; k++ {
		select {
		case <-stormDone:
		case <-time.After(time.Duration(150+rand.IntN(500)) * time.Millisecond):
			ctrl.kill()
			kills++
			ctrl.start()
		}
	}
	<-stormDone
	if kills == 0 {
		t.Fatal("the storm ended before any kill: nothing was tested")
	}
	// A last crash with everything settled or not, then a clean start.
	ctrl.kill()
	ctrl.start()
	t.Logf("storm: %d acknowledged, %d failed or refused, %d kills during it", len(acknowledged), failures, kills)
	if len(acknowledged) < workers*perWorker/3 {
		t.Fatalf("only %d of %d creates were acknowledged: the storm did not test much", len(acknowledged), workers*perWorker)
	}

	// Every acknowledged sandbox is listed, with its ID, and running.
	deadline := time.Now().Add(30 * time.Second)
	var listed map[string]*fsbv1.Sandbox
	for {
		resp, err := client.ListSandboxes(ctx, connect.NewRequest(&fsbv1.ListSandboxesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		listed = map[string]*fsbv1.Sandbox{}
		for _, sb := range resp.Msg.GetSandboxes() {
			listed[sb.GetName()] = sb
		}
		var missing []string
		for name, id := range acknowledged {
			sb := listed[name]
			if sb == nil || sb.GetStatus().GetSandboxId() != id || sb.GetStatus().GetPhase() != fsbv1.Phase_PHASE_RUNNING {
				missing = append(missing, fmt.Sprintf("%s(%v)", name, sb.GetStatus()))
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("acknowledged sandboxes not listed and running: %v\ncontroller log:\n%s", missing, ctrl.log.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Once failed creates are cleaned up, containerd holds exactly one
	// container per listed sandbox and none other; within capacity; no
	// port twice.
	time.Sleep(3 * time.Second)
	ids := map[string]bool{}
	for _, sb := range listed {
		if ids[sb.GetStatus().GetSandboxId()] {
			t.Errorf("two objects share sandbox ID %s", sb.GetStatus().GetSandboxId())
		}
		ids[sb.GetStatus().GetSandboxId()] = true
	}
	cs, err := cd.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) > capacity {
		t.Errorf("%d containers on an agent of capacity %d", len(cs), capacity)
	}
	perID := map[string]int{}
	ports := map[int32]string{}
	for _, c := range cs {
		labels, err := c.Labels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		id := labels[runtime.LabelID]
		perID[id]++
		if !ids[id] {
			t.Errorf("container %s has no object (an orphan)", c.ID())
		}
	}
	for id, n := range perID {
		if n != 1 {
			t.Errorf("sandbox %s has %d containers: placed twice", id, n)
		}
	}
	for _, sb := range listed {
		for _, p := range sb.GetSpec().GetExposedPorts() {
			if other, taken := ports[p]; taken {
				t.Errorf("port %d handed to both %s and %s", p, other, sb.GetName())
			}
			ports[p] = sb.GetName()
		}
	}
	// The registry agrees: the agent's used slots are the containers.
	agents, err := client.ListAgents(ctx, connect.NewRequest(&fsbv1.ListAgentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(agents.Msg.GetAgents()[0].GetSandboxes()); got != len(cs) {
		t.Errorf("the agent reports %d sandboxes, containerd holds %d", got, len(cs))
	}
}

// TestRecoveryRebuildsObjectsFromAgents leaves what a controller crash
// between a FAST answer and its object write leaves — a sandbox on the agent
// with no object — and a container whose name another sandbox has taken
// since. Started again, the controller re-creates the first's object from
// the agent (spec and labels) before it is Ready, and removes the second.
func TestRecoveryRebuildsObjectsFromAgents(t *testing.T) {
	onEachStore(t, testRecoveryRebuildsObjectsFromAgents)
}

func testRecoveryRebuildsObjectsFromAgents(t *testing.T, kind storeKind) {
	cd, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir)
	ctrl, server := newControllerProcOn(t, kind, dir, a)
	ctrl.start()
	ctx := context.Background()
	client := fsbv1connect.NewFastPathServiceClient(http.DefaultClient, server, connect.WithInterceptors(auth.Bearer("user-token-1")))
	// STRONG: its object is surely written before the kill.
	taken, err := client.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{
		Name: "taken", Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"},
			ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG},
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctrl.kill()

	agentClient := fsbv1connect.NewAgentServiceClient(http.DefaultClient, a.base, connect.WithInterceptors(auth.Bearer(a.token)))
	for _, req := range []*fsbv1.AgentServiceCreateSandboxRequest{
		{SandboxId: "sb-lost", Revision: 1, Namespace: "default", Name: "lost", Labels: map[string]string{"app": "lost"},
			Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"}, ExposedPorts: []int32{31500}}},
		{SandboxId: "sb-superseded", Revision: 1, Namespace: "default", Name: "taken",
			Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"}}},
		// Two lost sandboxes under one name: the newer keeps it.
		{SandboxId: "sb-dup-old", Revision: 1, Namespace: "default", Name: "dup",
			Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"}}},
		{SandboxId: "sb-dup-new", Revision: 1, Namespace: "default", Name: "dup",
			Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"}}},
	} {
		if _, err := agentClient.CreateSandbox(ctx, connect.NewRequest(req)); err != nil {
			t.Fatal(err)
		}
	}

	ctrl.start()
	// Ready means recovered: no waiting here.
	got, err := client.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "lost"}))
	if err != nil {
		t.Fatalf("the lost sandbox has no object after the restart: %v\n%s", err, ctrl.log.String())
	}
	if id := got.Msg.GetSandbox().GetStatus().GetSandboxId(); id != "sb-lost" || got.Msg.GetSandbox().GetLabels()["app"] != "lost" ||
		got.Msg.GetSandbox().GetSpec().GetExposedPorts()[0] != 31500 {
		t.Errorf("re-created object = %v", got.Msg.GetSandbox())
	}
	// Its port is held: another sandbox cannot take it.
	_, err = client.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{
		Name: "port-thief", Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"}, ExposedPorts: []int32{31500}},
	}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("a second sandbox on the recovered sandbox's port: %v, want ResourceExhausted", err)
	}
	if _, err := cd.LoadContainer(ctx, runtime.ContainerID("sb-superseded", 1)); err == nil {
		t.Errorf("the superseded container is still there")
	}
	dup, err := client.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "dup"}))
	if err != nil || dup.Msg.GetSandbox().GetStatus().GetSandboxId() != "sb-dup-new" {
		t.Errorf("of two lost sandboxes named dup, the object is %v (%v), want the newer sb-dup-new", dup, err)
	}
	if _, err := cd.LoadContainer(ctx, runtime.ContainerID("sb-dup-old", 1)); err == nil {
		t.Errorf("the older dup container is still there: it has no object")
	}
	kept, err := client.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "taken"}))
	if err != nil || kept.Msg.GetSandbox().GetStatus().GetSandboxId() != taken.Msg.GetSandbox().GetStatus().GetSandboxId() {
		t.Errorf("the sandbox that took the name: %v, %v", kept, err)
	}
}
