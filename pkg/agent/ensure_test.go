package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"google.golang.org/protobuf/proto"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// TestCreateRetryAfterTransientErrorLeavesSandboxRunning: a create retried
// for a running sandbox fails when its task cannot be looked up in time (its
// shim is frozen past the call's deadline), and the sandbox runs on: the
// retry rolls back nothing it did not make.
func TestCreateRetryAfterTransientErrorLeavesSandboxRunning(t *testing.T) {
	h := newHarness(t)
	sb := h.create(spec("echo up; exec sleep 300"))
	h.waitLog(sb, "up")
	task := h.task(sb)
	pid := int(task.Pid())
	shim := parentPID(t, pid)

	if err := syscall.Kill(shim, syscall.SIGSTOP); err != nil {
		t.Fatalf("freeze the shim: %v", err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			if err := syscall.Kill(shim, syscall.SIGCONT); err != nil {
				t.Errorf("thaw the shim: %v", err)
			}
		}
	}
	t.Cleanup(thaw)

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := h.rt.Ensure(ctx, sandboxOf(sb))
		done <- err
	}()
	// Past the deadline the retry has failed its look-up; whatever it does
	// next meets a live shim.
	<-ctx.Done()
	thaw()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the retry succeeded although its task look-up could not answer")
		}
		t.Logf("the retry failed as it should: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the retry did not return within 30s of its deadline")
	}

	st, err := task.Status(context.Background())
	if err != nil || st.Status != containerd.Running {
		t.Errorf("after the failed retry the task is %v (%v), want running", st.Status, err)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Errorf("the sandbox's process is gone after the failed retry: %v", err)
	}
	if got := h.get(sb.GetSandboxId()); got.GetPhase() != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("the agent reports %v after the failed retry, want RUNNING", got.GetPhase())
	}
	// And a retry that can reach the task returns the running sandbox.
	info, err := h.rt.Ensure(context.Background(), sandboxOf(sb))
	if err != nil || info.Phase != runtime.PhaseRunning {
		t.Errorf("a later retry: %v, phase %v; want the running sandbox", err, info.Phase)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Errorf("the later retry replaced the sandbox's process: %v", err)
	}
}

// TestCreateWithAnotherSpecUnderSameRevisionIsAlreadyExists: a create that
// repeats a sandbox ID and revision with another spec is refused with
// AlreadyExists, and the sandbox that runs is neither touched nor reported
// as if it ran the new spec; the same spec again is answered with it.
func TestCreateWithAnotherSpecUnderSameRevisionIsAlreadyExists(t *testing.T) {
	h := newHarness(t)
	req := &fsbv1.AgentServiceCreateSandboxRequest{SandboxId: "sb-respec", Revision: 1, Namespace: "default", Name: "respec",
		Spec: spec("echo first; exec sleep 300")}
	first := h.createReq(req)
	h.waitLog(first, "first")
	pid := h.task(first).Pid()

	for name, change := range map[string]func(*fsbv1.SandboxSpec){
		"command":   func(s *fsbv1.SandboxSpec) { s.Command = []string{"sh", "-c", "echo second; exec sleep 300"} },
		"env":       func(s *fsbv1.SandboxSpec) { s.Envs = []*fsbv1.EnvVar{{Name: "A", Value: "b"}} },
		"resources": func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Memory: "64Mi"} },
		"ports":     func(s *fsbv1.SandboxSpec) { s.ExposedPorts = []int32{8080} },
	} {
		changed := proto.Clone(req).(*fsbv1.AgentServiceCreateSandboxRequest)
		change(changed.Spec)
		_, err := h.client.CreateSandbox(context.Background(), connect.NewRequest(changed))
		if connect.CodeOf(err) != connect.CodeAlreadyExists || !strings.Contains(err.Error(), "another spec") {
			t.Errorf("%s changed: %v, want AlreadyExists saying the sandbox exists with another spec", name, err)
		}
	}

	got := h.get(req.GetSandboxId())
	if got.GetPhase() != fsbv1.Phase_PHASE_RUNNING || !proto.Equal(got.GetSpec(), req.GetSpec()) {
		t.Errorf("after the refused creates the agent reports %v with spec %v, want RUNNING with the first spec", got.GetPhase(), got.GetSpec())
	}
	if now := h.task(first).Pid(); now != pid {
		t.Errorf("the sandbox's task changed: pid %d, was %d", now, pid)
	}
	again := h.createReq(req)
	if again.GetContainerId() != first.GetContainerId() || again.GetPhase() != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("the same spec again: %v, want the running sandbox %s", again, first.GetContainerId())
	}
	if cs, err := h.cd.Containers(context.Background()); err != nil || len(cs) != 1 {
		t.Errorf("%d containers (%v), want 1", len(cs), err)
	}
}

// TestTaskLeftByContainerdKilledMidCreateCountsAsProgress: containerd
// killed while a task is being created leaves, once it is back, a task it
// lists but cannot load: every create of it answers "already exists", every
// look-up "not found" (a user saw an agent log that ~57 times a second).
// The retry that follows counts the task as progress and starts the
// sandbox, at the first try.
func TestTaskLeftByContainerdKilledMidCreateCountsAsProgress(t *testing.T) {
	d := rig.PrivateContainerd(t)
	gate := newRuncGate(t, "create", true)
	h := newHarness(t, withContainerd(d.Socket), func(s *harnessSetup) { s.runtime.Runtimes[runtime.RuntimeRunc] = gate.wrapper })
	req := &fsbv1.AgentServiceCreateSandboxRequest{SandboxId: "sb-cut", Revision: 1, Namespace: "default", Name: "cut",
		Spec: spec("echo up; exec sleep 300")}
	first := make(chan error, 1)
	go func() {
		_, err := h.client.CreateSandbox(context.Background(), connect.NewRequest(req))
		first <- err
	}()
	gate.waitEntered()
	d.Kill()
	if err := <-first; err == nil {
		t.Fatal("the create survived containerd's death")
	}
	d.Start()
	h.waitContainerd()

	sb, err := h.client.CreateSandbox(context.Background(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("the retry after containerd came back: %v", err)
	}
	h.waitLog(sb.Msg.GetSandbox(), "up")
	if got := h.get(req.GetSandboxId()); got.GetPhase() != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("the agent reports %v, want RUNNING", got.GetPhase())
	}
}

// runcGate is a runc wrapper that fails the first `runc CMD` (with hold,
// only once the test lets it go, or containerd's death cancels it) and
// passes every other call to runc.
type runcGate struct {
	t       *testing.T
	dir     string
	wrapper string
}

func newRuncGate(t *testing.T, cmd string, hold bool) *runcGate {
	t.Helper()
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal(err)
	}
	g := &runcGate{t: t, dir: t.TempDir()}
	g.wrapper = filepath.Join(g.dir, "runc-gate")
	wait := ""
	if hold {
		wait = fmt.Sprintf("while [ ! -e %s/release ]; do sleep 0.05; done", g.dir)
	}
	script := fmt.Sprintf(`#!/bin/sh
for a in "$@"; do
	if [ "$a" = %[3]s ] && [ ! -e %[1]s/entered ]; then
		: > %[1]s/entered
		%[4]s
		echo "runc-gate: %[3]s refused" >&2
		exit 1
	fi
done
exec %[2]s "$@"
`, g.dir, runc, cmd, wait)
	if err := os.WriteFile(g.wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile(filepath.Join(g.dir, "release"), nil, 0o644) })
	return g
}

// waitEntered waits until the first create is held at the gate.
func (g *runcGate) waitEntered() {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(g.dir, "entered")); err == nil {
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatal("no runc create reached the gate in 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFailedStartLeavesContainerToFinish: a task that an earlier create's
// container gets and cannot start is deleted again, and the container is
// not taken for one that ran: the next create starts it.
func TestFailedStartLeavesContainerToFinish(t *testing.T) {
	gate := newRuncGate(t, "start", false)
	h := newHarness(t)
	const script = "echo up; exec sleep 300"
	cid := h.halfMakeWith("sb-restart", script, false, true, gate.wrapper)
	req := &fsbv1.AgentServiceCreateSandboxRequest{SandboxId: "sb-restart", Revision: 1, Namespace: "default", Name: "sb-restart",
		Spec: spec(script)}
	if _, err := h.client.CreateSandbox(context.Background(), connect.NewRequest(req)); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("create whose start the gate refuses: %v, want the start's error", err)
	}
	c, err := h.cd.LoadContainer(context.Background(), cid)
	if err != nil {
		t.Fatalf("the failed create removed a container it did not make: %v", err)
	}
	if labels, _ := c.Labels(context.Background()); labels[runtime.LabelStarted] != "" {
		t.Errorf("the container is marked started after its start failed")
	}
	sb := h.createReq(req)
	if sb.GetPhase() != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("the next create: %v %s, want RUNNING", sb.GetPhase(), sb.GetReason())
	}
	h.waitLog(sb, "up")
}

// TestSnapshotLeftUnderContainerIDCountsAsProgress: a create cut short
// after its snapshot was prepared and before its container was made (as
// containerd dying in between leaves it, with the lease that holds the
// snapshot never ended) does not block the retry: the leftover is removed
// and the sandbox starts. Another agent's snapshot under that key is not
// touched, and the create says whose it is.
func TestSnapshotLeftUnderContainerIDCountsAsProgress(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		id, owner string
		code      connect.Code
	}{
		{"sb-leftover", h.agentID, 0},
		{"sb-unlabelled", "", 0},
		{"sb-theirs", "another-agent", connect.CodeAlreadyExists},
	} {
		labels := map[string]string{}
		if tc.owner != "" {
			labels[runtime.LabelAgent] = tc.owner
		}
		h.prepareSnapshot(runtime.ContainerID(tc.id, 1), labels)
		resp, err := h.client.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{
			SandboxId: tc.id, Revision: 1, Namespace: "default", Name: tc.id, Spec: spec("echo up; exec sleep 300")}))
		if err != nil && connect.CodeOf(err) != tc.code || err == nil && tc.code != 0 {
			t.Errorf("%s: create over a snapshot left by %q: %v, want code %v", tc.id, tc.owner, err, tc.code)
			continue
		}
		if err != nil {
			if !strings.Contains(err.Error(), tc.owner) {
				t.Errorf("%s: %v does not name the snapshot's agent", tc.id, err)
			}
			if _, serr := h.cd.SnapshotService(rig.Snapshotter).Stat(context.Background(), runtime.ContainerID(tc.id, 1)); serr != nil {
				t.Errorf("%s: another agent's snapshot was removed: %v", tc.id, serr)
			}
			continue
		}
		h.waitLog(resp.Msg.GetSandbox(), "up")
	}
}

// waitContainerd waits until the client has reconnected to containerd.
func (h *harness) waitContainerd() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ok, err := h.cd.IsServing(ctx); !ok || err != nil {
		h.t.Fatalf("containerd is not back: %v", err)
	}
}

// createReq sends a create and fails the test on error.
func (h *harness) createReq(req *fsbv1.AgentServiceCreateSandboxRequest) *fsbv1.AgentSandbox {
	h.t.Helper()
	resp, err := h.client.CreateSandbox(context.Background(), connect.NewRequest(req))
	if err != nil {
		h.t.Fatalf("CreateSandbox %s revision %d: %v", req.GetSandboxId(), req.GetRevision(), err)
	}
	return resp.Msg.GetSandbox()
}

// task returns the containerd task of a sandbox.
func (h *harness) task(sb *fsbv1.AgentSandbox) containerd.Task {
	h.t.Helper()
	c, err := h.cd.LoadContainer(context.Background(), sb.GetContainerId())
	if err != nil {
		h.t.Fatal(err)
	}
	task, err := c.Task(context.Background(), nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return task
}

// sandboxOf is the runtime's form of a sandbox the agent reported.
func sandboxOf(sb *fsbv1.AgentSandbox) runtime.Sandbox {
	return runtime.Sandbox{ID: sb.GetSandboxId(), Revision: sb.GetRevision(), Namespace: sb.GetNamespace(),
		Name: sb.GetName(), Spec: sb.GetSpec(), Labels: sb.GetLabels(), Persisted: sb.GetPersisted()}
}

// parentPID reads the parent of a process from /proc: for a sandbox's
// first process, its shim.
func parentPID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			ppid, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return ppid
		}
	}
	t.Fatalf("no PPid in /proc/%d/status", pid)
	return 0
}

// TestCreateClearsAStaleBundle: a task create that containerd's death cut
// short can leave the task's bundle directory without a task or a shim,
// which containerd does not remove when it starts again; every later task
// of the container failed with "mkdir <bundle>: file exists". The create
// removes that bundle (nothing mounted in it, no process in it) and runs.
func TestCreateClearsAStaleBundle(t *testing.T) {
	h := newHarness(t)
	id := "sb-stalebundle"
	state := filepath.Join(filepath.Dir(rig.Env(t, rig.EnvSocket)), "state")
	bundle := filepath.Join(state, "io.containerd.runtime.v2.task", h.cd.DefaultNamespace(), runtime.ContainerID(id, 1))
	if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	sb := h.createReq(&fsbv1.AgentServiceCreateSandboxRequest{
		SandboxId: id, Revision: 1, Namespace: "default", Name: "stale", Spec: spec("echo up; sleep 300"),
	})
	h.waitPhase(sb.GetSandboxId(), fsbv1.Phase_PHASE_RUNNING)
	h.waitLog(sb, "up")
}
