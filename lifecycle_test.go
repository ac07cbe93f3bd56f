//go:build !fsbhelper

package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// Short lifecycle settings, so that the tests see Lost, back-off and
// expiry in seconds.
var fastLifecycle = []string{
	"--agent-lost-timeout", "2s", "--agent-heartbeat-interval", "200ms",
	"--recreate-backoff", "300ms", "--recreate-backoff-max", "2s",
}

// plane is a controller process over one or more agents, driven through
// its API and through `fsb ctl`.
type plane struct {
	t       *testing.T
	ctrl    *controllerProc
	server  string
	metrics string // the controller's /metrics URL
	api     fsbv1connect.FastPathServiceClient
}

// startPlane is startPlaneOn with the embedded store.
func startPlane(t *testing.T, dir string, agents []*agentProc, extra ...string) *plane {
	t.Helper()
	return startPlaneOn(t, embeddedStore, dir, agents, extra...)
}

// startPlaneOn starts a controller with a store of kind over agents, with
// the short lifecycle settings and extra flags, and waits until it is
// ready.
func startPlaneOn(t *testing.T, kind storeKind, dir string, agents []*agentProc, extra ...string) *plane {
	t.Helper()
	ctrl, server := newControllerProcOn(t, kind, dir, agents[0], append(append([]string{}, fastLifecycle...), extra...)...)
	var addrs []string
	for _, a := range agents {
		addrs = append(addrs, strings.TrimPrefix(a.base, "http://"))
	}
	for i, arg := range ctrl.args {
		if arg == "--agents" {
			ctrl.args[i+1] = strings.Join(addrs, ",")
		}
	}
	ctrl.start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s", ctrl.log.String())
			for _, a := range agents {
				t.Logf("agent %s log:\n%s", a.base, a.stderr.String())
			}
		}
	})
	return &plane{t: t, ctrl: ctrl, server: server, metrics: ctrl.metrics,
		api: fsbv1connect.NewFastPathServiceClient(http.DefaultClient, server, connect.WithInterceptors(auth.Bearer("user-token-1")))}
}

// ctl runs `fsb ctl ARGS...` against the plane.
func (p *plane) ctl(args ...string) (stdout, stderr string, code int) {
	p.t.Helper()
	return runCtl(p.t, p.server, "user-token-1", args...)
}

func (p *plane) mustCtl(args ...string) string {
	p.t.Helper()
	return mustRunCtl(p.t, p.server, "user-token-1", args...)
}

// get returns the sandbox, or nil when it does not exist.
func (p *plane) get(name string) *fsbv1.Sandbox {
	p.t.Helper()
	resp, err := p.api.GetSandbox(context.Background(), connect.NewRequest(&fsbv1.GetSandboxRequest{Name: name}))
	if connect.CodeOf(err) == connect.CodeNotFound {
		return nil
	}
	if err != nil {
		p.t.Fatalf("get %s: %v", name, err)
	}
	return resp.Msg.GetSandbox()
}

// waitFor polls the sandbox until ok says yes, failing after timeout.
func (p *plane) waitFor(name string, timeout time.Duration, what string, ok func(*fsbv1.Sandbox) bool) *fsbv1.Sandbox {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	var last *fsbv1.Sandbox
	for time.Now().Before(deadline) {
		if last = p.get(name); ok(last) {
			return last
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("sandbox %s: not %s within %s; last: %v", name, what, timeout, last)
	return nil
}

func phaseIs(ph fsbv1.Phase) func(*fsbv1.Sandbox) bool {
	return func(sb *fsbv1.Sandbox) bool { return sb != nil && sb.GetStatus().GetPhase() == ph }
}

// revisions returns the revisions of a sandbox that containerd holds, by
// container ID, whichever agent made them.
func revisions(t *testing.T, cd *containerd.Client, ns, sandboxID string) map[string]containerd.ProcessStatus {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	cs, err := cd.Containers(ctx, fmt.Sprintf("labels.%q==%s", runtime.LabelID, sandboxID))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]containerd.ProcessStatus{}
	for _, c := range cs {
		out[c.ID()] = containerd.Unknown
		if task, err := c.Task(ctx, nil); err == nil {
			if st, err := task.Status(ctx); err == nil {
				out[c.ID()] = st.Status
			}
		}
	}
	return out
}

// TestFailurePoliciesFromTheCLI is the example: under AutoRecreate a
// sandbox that exits 3 comes back as revision 2 and the log of revision 1
// is kept; under Manual it stays Failed with exit code 3; exit 0 is
// Succeeded under either policy.
func TestFailurePoliciesFromTheCLI(t *testing.T) {
	onEachStore(t, testFailurePoliciesFromTheCLI)
}

func testFailurePoliciesFromTheCLI(t *testing.T, kind storeKind) {
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir)
	p := startPlaneOn(t, kind, dir, []*agentProc{a})

	p.mustCtl("run", "crash", "--image", rig.ImageRef, "--failure-policy", "auto-recreate", "--", "sh", "-c", "echo up; sleep 2; exit 3")
	p.mustCtl("run", "manual", "--image", rig.ImageRef, "--failure-policy", "manual", "--", "sh", "-c", "echo up; sleep 1; exit 3")
	p.mustCtl("run", "done-auto", "--image", rig.ImageRef, "--failure-policy", "auto-recreate", "--", "sh", "-c", "echo bye")
	p.mustCtl("run", "done-manual", "--image", rig.ImageRef, "--", "sh", "-c", "echo bye")

	sb := p.waitFor("crash", 20*time.Second, "at revision 2", func(sb *fsbv1.Sandbox) bool { return sb.GetStatus().GetRevision() >= 2 })
	if sb.GetStatus().GetSandboxId() == "" {
		t.Errorf("revision 2 has no sandbox ID: %v", sb)
	}
	if out := p.mustCtl("logs", "crash", "--revision", "1"); !strings.Contains(out, "up") {
		t.Errorf("logs --revision 1 = %q, want the line up", out)
	}
	got := p.waitFor("manual", 15*time.Second, "Failed", phaseIs(fsbv1.Phase_PHASE_FAILED))
	if got.GetStatus().GetExitCode() != 3 || got.GetStatus().GetRevision() != 1 {
		t.Errorf("manual: exit code %d revision %d, want 3 and 1", got.GetStatus().GetExitCode(), got.GetStatus().GetRevision())
	}
	for _, name := range []string{"done-auto", "done-manual"} {
		sb := p.waitFor(name, 15*time.Second, "Succeeded", phaseIs(fsbv1.Phase_PHASE_SUCCEEDED))
		if sb.GetStatus().GetRevision() != 1 {
			t.Errorf("%s: revision %d after exit 0, want 1", name, sb.GetStatus().GetRevision())
		}
	}
	// Manual never restarts: still revision 1 a back-off later.
	time.Sleep(time.Second)
	if sb := p.get("manual"); sb.GetStatus().GetRevision() != 1 || sb.GetStatus().GetPhase() != fsbv1.Phase_PHASE_FAILED {
		t.Errorf("manual sandbox moved on: %v", sb.GetStatus())
	}
}

// TestAutoRecreateLeavesAStoppedAgent stops (SIGSTOP) the agent of an
// AutoRecreate sandbox: revision 2 runs on the other agent; after SIGCONT
// revision 1 is removed, and from then on only one revision runs.
func TestAutoRecreateLeavesAStoppedAgent(t *testing.T) {
	onEachStore(t, testAutoRecreateLeavesAStoppedAgent)
}

func testAutoRecreateLeavesAStoppedAgent(t *testing.T, kind storeKind) {
	cd, ns := rig.Containerd(t)
	dir1, dir2 := t.TempDir(), t.TempDir()
	agents := map[string]*agentProc{
		"agent-1": startAgent(t, ns, "agent-1", dir1),
		"agent-2": startAgent(t, ns, "agent-2", dir2),
	}
	// Both agents use one token; the controller reads it from dir1.
	p := startPlaneOn(t, kind, dir1, []*agentProc{agents["agent-1"], agents["agent-2"]})
	_, err := p.api.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "moving", Spec: &fsbv1.SandboxSpec{
		Image: rig.ImageRef, Command: []string{"sleep", "300"}, FailurePolicy: fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE,
	}}))
	if err != nil {
		t.Fatal(err)
	}
	first := p.waitFor("moving", 10*time.Second, "Running", phaseIs(fsbv1.Phase_PHASE_RUNNING))
	id, from := first.GetStatus().GetSandboxId(), first.GetStatus().GetAssignedPod()
	stopped := agents[from]
	if err := stopped.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	cont := func() { _ = stopped.cmd.Process.Signal(syscall.SIGCONT) }
	defer cont()

	second := p.waitFor("moving", 20*time.Second, "Running as revision 2 elsewhere", func(sb *fsbv1.Sandbox) bool {
		return sb.GetStatus().GetRevision() == 2 && sb.GetStatus().GetPhase() == fsbv1.Phase_PHASE_RUNNING
	})
	if second.GetStatus().GetAssignedPod() == from {
		t.Fatalf("revision 2 placed on the stopped agent %s", from)
	}
	old := runtime.ContainerID(id, 1)
	if revs := revisions(t, cd, ns, id); revs[old] != containerd.Running {
		t.Fatalf("revision 1 should still run on the stopped agent: %v", revs)
	}
	cont()
	// Once the agent is back its revision 1 goes.
	deadline := time.Now().Add(15 * time.Second)
	for {
		revs := revisions(t, cd, ns, id)
		if _, ok := revs[old]; !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revision 1 still there 15s after SIGCONT: %v", revs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// And it stays so: one revision, revision 2, running.
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		revs := revisions(t, cd, ns, id)
		if len(revs) != 1 || revs[runtime.ContainerID(id, 2)] != containerd.Running {
			t.Fatalf("after the reconnect: %v, want only revision 2 running", revs)
		}
	}
	if sb := p.get("moving"); sb.GetStatus().GetRevision() != 2 || sb.GetStatus().GetPhase() != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("after the reconnect the sandbox is %v", sb.GetStatus())
	}
}

// TestLostSandboxIsDeletedAndStaysDeleted kills the agent of a running
// sandbox with SIGKILL: the sandbox becomes Lost within the lost timeout,
// can be deleted at once, and once the agent runs again its container is
// removed and the sandbox does not come back.
func TestLostSandboxIsDeletedAndStaysDeleted(t *testing.T) {
	onEachStore(t, testLostSandboxIsDeletedAndStaysDeleted)
}

func testLostSandboxIsDeletedAndStaysDeleted(t *testing.T, kind storeKind) {
	cd, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir)
	p := startPlaneOn(t, kind, dir, []*agentProc{a})
	p.mustCtl("run", "doomed", "--image", rig.ImageRef, "--", "sleep", "300")
	sb := p.waitFor("doomed", 10*time.Second, "Running", phaseIs(fsbv1.Phase_PHASE_RUNNING))
	id := sb.GetStatus().GetSandboxId()
	// The controller marks the container persisted once it sees its
	// object; wait for that before the agent dies.
	waitPersisted(t, cd, ns, runtime.ContainerID(id, 1))

	a.kill()
	killed := time.Now()
	lost := p.waitFor("doomed", 2*time.Second+5*time.Second, "Lost", phaseIs(fsbv1.Phase_PHASE_LOST))
	t.Logf("Lost %s after the kill; message %q", time.Since(killed).Round(time.Millisecond), lost.GetStatus().GetMessage())
	p.mustCtl("delete", "doomed")
	if p.get("doomed") != nil {
		t.Fatal("a deleted Lost sandbox is still listed")
	}
	if revs := revisions(t, cd, ns, id); len(revs) != 1 {
		t.Fatalf("the container should outlive its agent until it returns: %v", revs)
	}

	restartAgent(t, a, ns, "agent-1", dir)
	deadline := time.Now().Add(15 * time.Second)
	for len(revisions(t, cd, ns, id)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the deleted sandbox's container is still in containerd 15s after its agent came back: %v", revisions(t, cd, ns, id))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if p.get("doomed") != nil || len(revisions(t, cd, ns, id)) > 0 {
			t.Fatal("the deleted sandbox came back")
		}
	}
}

func waitPersisted(t *testing.T, cd *containerd.Client, ns, containerID string) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := cd.LoadContainer(ctx, containerID)
		if err == nil {
			if labels, err := c.Labels(ctx); err == nil && labels[runtime.LabelPersisted] == "true" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s never marked persisted", containerID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestResetRevisionAndExpiry: update --reset-revision starts revision 2
// after stopping revision 1, and records it; a sandbox run with
// --expire-in becomes Expired and goes, and update --expire-in moves an
// expiry.
func TestResetRevisionAndExpiry(t *testing.T) {
	onEachStore(t, testResetRevisionAndExpiry)
}

func testResetRevisionAndExpiry(t *testing.T, kind storeKind) {
	cd, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir)
	p := startPlaneOn(t, kind, dir, []*agentProc{a})

	p.mustCtl("run", "reset-me", "--image", rig.ImageRef, "--", "sh", "-c", "echo first; exec sleep 300")
	sb := p.waitFor("reset-me", 10*time.Second, "Running", phaseIs(fsbv1.Phase_PHASE_RUNNING))
	id := sb.GetStatus().GetSandboxId()
	p.mustCtl("update", "reset-me", "--reset-revision")
	sb = p.waitFor("reset-me", 20*time.Second, "Running as revision 2", func(sb *fsbv1.Sandbox) bool {
		return sb.GetStatus().GetRevision() == 2 && sb.GetStatus().GetPhase() == fsbv1.Phase_PHASE_RUNNING
	})
	if sb.GetStatus().GetAcceptedResetRevision() == nil || !sb.GetStatus().GetAcceptedResetRevision().AsTime().Equal(sb.GetSpec().GetResetRevision().AsTime()) {
		t.Errorf("acceptedResetRevision %v, want the spec's %v", sb.GetStatus().GetAcceptedResetRevision(), sb.GetSpec().GetResetRevision())
	}
	if revs := revisions(t, cd, ns, id); len(revs) != 1 {
		t.Errorf("after the reset containerd holds %v, want revision 2 only", revs)
	}
	if out := p.mustCtl("logs", "reset-me", "--previous"); !strings.Contains(out, "first") {
		t.Errorf("logs --previous = %q", out)
	}

	p.mustCtl("run", "short", "--image", rig.ImageRef, "--expire-in", "3s", "--", "sleep", "300")
	p.mustCtl("run", "moved", "--image", rig.ImageRef, "--expire-in", "1h", "--", "sleep", "300")
	p.mustCtl("update", "moved", "--expire-in", "3s")
	ids := map[string]string{}
	for _, name := range []string{"short", "moved"} {
		sb := p.get(name)
		if sb.GetSpec().GetExpireTime() == nil || time.Until(sb.GetSpec().GetExpireTime().AsTime()) > 5*time.Second {
			t.Errorf("%s expires at %v, want within 3s", name, sb.GetSpec().GetExpireTime())
		}
		ids[name] = sb.GetStatus().GetSandboxId()
	}
	for name, id := range ids {
		p.waitFor(name, 20*time.Second, "gone after expiring", func(sb *fsbv1.Sandbox) bool { return sb == nil })
		if revs := revisions(t, cd, ns, id); len(revs) != 0 {
			t.Errorf("%s expired but containerd still holds %v", name, revs)
		}
	}
	if !strings.Contains(p.ctrl.log.String(), "sandbox expired") {
		t.Error("the controller did not log the expiry")
	}
}

// TestOneAgentIDAtTwoAddresses: two agent processes report one agent ID.
// Neither gets new sandboxes, what runs is untouched, and both the
// controller's log and `fsb ctl agents` name both addresses.
func TestOneAgentIDAtTwoAddresses(t *testing.T) {
	cd, ns := rig.Containerd(t)
	_, ns2 := rig.Containerd(t)
	dir1, dir2 := t.TempDir(), t.TempDir()
	first := startAgent(t, ns, "twin", dir1)
	p := startPlane(t, dir1, []*agentProc{first})
	p.mustCtl("run", "before", "--image", rig.ImageRef, "--", "sleep", "300")
	sb := p.waitFor("before", 10*time.Second, "Running", phaseIs(fsbv1.Phase_PHASE_RUNNING))
	// Past the FAST window: the controller has seen the object.
	waitPersisted(t, cd, ns, runtime.ContainerID(sb.GetStatus().GetSandboxId(), 1))
	p.ctrl.kill()

	second := startAgent(t, ns2, "twin", dir2)
	for i, arg := range p.ctrl.args {
		if arg == "--agents" {
			p.ctrl.args[i+1] = strings.TrimPrefix(first.base, "http://") + "," + strings.TrimPrefix(second.base, "http://")
		}
	}
	p.ctrl.start()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.ctrl.log.String(), "two agents report the same agent ID") {
		if time.Now().After(deadline) {
			t.Fatal("the controller never logged the duplicate agent ID")
		}
		time.Sleep(50 * time.Millisecond)
	}
	logText := p.ctrl.log.String()
	for _, a := range []*agentProc{first, second} {
		if !strings.Contains(logText, strings.TrimPrefix(a.base, "http://")) {
			t.Errorf("the controller's log does not name %s", a.base)
		}
	}
	out, errOut, _ := p.ctl("agents")
	for _, a := range []*agentProc{first, second} {
		if addr := strings.TrimPrefix(a.base, "http://"); !strings.Contains(out+errOut, addr) {
			t.Errorf("fsb ctl agents does not name %s:\n%s%s", addr, out, errOut)
		}
	}
	_, err := p.api.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "after", Spec: &fsbv1.SandboxSpec{
		Image: rig.ImageRef, Command: []string{"sleep", "300"},
	}}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("create on a duplicated agent: %v, want ResourceExhausted", err)
	}
	time.Sleep(500 * time.Millisecond) // well past a lost timeout's worth of heartbeats
	if sb := p.get("before"); sb.GetStatus().GetPhase() != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("the running sandbox changed: %v", sb.GetStatus())
	} else if !strings.Contains(fmt.Sprint(sb.GetStatus().GetConditions()), "AgentIDConflict") {
		t.Errorf("the sandbox's conditions do not say its agent is claimed twice: %v", sb.GetStatus().GetConditions())
	}
	if n := len(first.sandboxes()); n != 1 {
		t.Errorf("the first agent runs %d sandboxes, want its 1", n)
	}
}

// TestRestartedAgentIsBackWithinASecond kills an agent and starts it again
// on the same address: creates are accepted again about a second later.
func TestRestartedAgentIsBackWithinASecond(t *testing.T) {
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir)
	p := startPlane(t, dir, []*agentProc{a})
	p.mustCtl("run", "warmup", "--image", rig.ImageRef, "--", "true")
	a.kill()
	// Let the controller's reconnect back-off grow to its cap (its
	// spacing is tested in pkg/agentlink).
	time.Sleep(3 * time.Second)
	restartAgent(t, a, ns, "agent-1", dir)
	ready := time.Now()
	for i := 0; ; i++ {
		_, err := p.api.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "back", Spec: &fsbv1.SandboxSpec{
			Image: rig.ImageRef, Command: []string{"true"},
		}}))
		if err == nil {
			break
		}
		if connect.CodeOf(err) != connect.CodeResourceExhausted || time.Since(ready) > 5*time.Second {
			t.Fatalf("create %s after the agent was ready: %v", time.Since(ready), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(ready)
	t.Logf("creates accepted %s after the restarted agent was ready", took.Round(time.Millisecond))
	if took > 2500*time.Millisecond {
		t.Errorf("the restarted agent took %s to be seen; want about a second", took)
	}
}

// TestDeleteWhileContainerdIsDown deletes a sandbox while its agent's
// containerd is down: the message says what the delete waits for, and the
// delete completes by itself once containerd is back.
func TestDeleteWhileContainerdIsDown(t *testing.T) {
	onEachStore(t, testDeleteWhileContainerdIsDown)
}

func testDeleteWhileContainerdIsDown(t *testing.T, kind storeKind) {
	d := rig.PrivateContainerd(t)
	cd, ns := rig.ContainerdAt(t, d.Socket)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir, "--containerd-socket", d.Socket)
	p := startPlaneOn(t, kind, dir, []*agentProc{a})
	p.mustCtl("run", "stuck", "--image", rig.ImageRef, "--", "sleep", "300")
	sb := p.waitFor("stuck", 10*time.Second, "Running", phaseIs(fsbv1.Phase_PHASE_RUNNING))
	id := sb.GetStatus().GetSandboxId()

	d.Kill()
	if _, err := p.api.DeleteSandbox(context.Background(), connect.NewRequest(&fsbv1.DeleteSandboxRequest{Name: "stuck", NoWait: true})); err != nil {
		t.Fatal(err)
	}
	waiting := p.waitFor("stuck", 10*time.Second, "waiting with a message", func(sb *fsbv1.Sandbox) bool {
		return sb != nil && strings.Contains(sb.GetStatus().GetMessage(), "waiting for agent")
	})
	t.Logf("while containerd is down: phase %s, message %q", waiting.GetStatus().GetPhase(), waiting.GetStatus().GetMessage())
	d.Start()
	p.waitFor("stuck", 45*time.Second, "deleted once containerd is back", func(sb *fsbv1.Sandbox) bool { return sb == nil })
	if revs := revisions(t, cd, ns, id); len(revs) != 0 {
		t.Errorf("deleted, but containerd still holds %v", revs)
	}
}

// TestCreateRetriesBackOffWhileContainerdIsDown makes a STRONG create while
// the agent's containerd is down: the controller retries with back-off (no
// hot loop), the cause shows in the Created condition, and the sandbox
// runs by itself once containerd is back.
func TestCreateRetriesBackOffWhileContainerdIsDown(t *testing.T) {
	d := rig.PrivateContainerd(t)
	_, ns := rig.ContainerdAt(t, d.Socket)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir, "--containerd-socket", d.Socket)
	p := startPlane(t, dir, []*agentProc{a})
	d.Kill()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := p.api.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "patient", Spec: &fsbv1.SandboxSpec{
		Image: rig.ImageRef, Command: []string{"sleep", "300"}, ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG,
	}}))
	if err == nil {
		t.Fatal("a STRONG create succeeded with containerd down")
	}
	sb := p.get("patient")
	cond := ""
	for _, c := range sb.GetStatus().GetConditions() {
		if c.GetType() == "Created" {
			cond = c.GetStatus() + " " + c.GetReason() + ": " + c.GetMessage()
		}
	}
	if !strings.HasPrefix(cond, "Unknown Unavailable") || !strings.Contains(cond, "retrying in") {
		t.Errorf("Created condition while containerd is down: %q, want Unknown Unavailable ... retrying in", cond)
	}
	attempts := agentCreates(t, a)
	// 3 s with a 300 ms back-off doubling to 2 s: a handful, not dozens.
	if attempts < 2 || attempts > 8 {
		t.Errorf("%d create attempts reached the agent in 3s, want a back-off's handful", attempts)
	}
	t.Logf("%d create attempts in 3s while containerd was down; condition %q", attempts, cond)
	d.Start()
	p.waitFor("patient", 20*time.Second, "Running once containerd is back", phaseIs(fsbv1.Phase_PHASE_RUNNING))
}

// agentCreates reads how many creates the agent has answered, from its
// /metrics.
func agentCreates(t *testing.T, a *agentProc) int {
	t.Helper()
	return metricSum(t, a.metrics, "fsb_agent_create_seconds_count{")
}

// metricSum adds up the samples at url whose line starts with prefix.
func metricSum(t *testing.T, url, prefix string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	n := 0
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, prefix) {
			var v int
			fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
			n += v
		}
	}
	return n
}

// TestLostSandboxRunsAgainWhenItsAgentReturns stops the agent of a Manual
// sandbox until it is Lost; once the agent answers again and the same
// revision still runs, the sandbox is Running again, nothing re-created.
func TestLostSandboxRunsAgainWhenItsAgentReturns(t *testing.T) {
	onEachStore(t, testLostSandboxRunsAgainWhenItsAgentReturns)
}

func testLostSandboxRunsAgainWhenItsAgentReturns(t *testing.T, kind storeKind) {
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir)
	p := startPlaneOn(t, kind, dir, []*agentProc{a})
	p.mustCtl("run", "patient", "--image", rig.ImageRef, "--", "sleep", "300")
	p.waitFor("patient", 10*time.Second, "Running", phaseIs(fsbv1.Phase_PHASE_RUNNING))
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	cont := func() { _ = a.cmd.Process.Signal(syscall.SIGCONT) }
	defer cont()
	lost := p.waitFor("patient", 10*time.Second, "Lost", phaseIs(fsbv1.Phase_PHASE_LOST))
	if !strings.Contains(fmt.Sprint(lost.GetStatus().GetConditions()), "AgentLost") {
		t.Errorf("a Lost sandbox's conditions do not say why: %v", lost.GetStatus().GetConditions())
	}
	cont()
	back := p.waitFor("patient", 10*time.Second, "Running again", phaseIs(fsbv1.Phase_PHASE_RUNNING))
	if back.GetStatus().GetRevision() != 1 {
		t.Errorf("revision %d after the agent came back, want 1 (Manual re-creates nothing)", back.GetStatus().GetRevision())
	}
	if strings.Contains(fmt.Sprint(back.GetStatus().GetConditions()), "AgentLost") {
		t.Errorf("the sandbox still says its agent is lost: %v", back.GetStatus().GetConditions())
	}
	if n := metricSum(t, p.metrics, "fsb_sandboxes_lost_total "); n != 1 {
		t.Errorf("fsb_sandboxes_lost_total = %d, want 1", n)
	}
}

// TestAutoRecreateGivesUp: a sandbox that fails at once under
// AutoRecreate is re-created with back-off until recoveryTimeoutSeconds
// has passed, then stays Failed, its Recovering condition saying it gave up.
func TestAutoRecreateGivesUp(t *testing.T) {
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir)
	p := startPlane(t, dir, []*agentProc{a})
	p.mustCtl("run", "hopeless", "--image", rig.ImageRef, "--failure-policy", "auto-recreate", "--recovery-timeout", "2s", "--", "sh", "-c", "exit 1")
	sb := p.waitFor("hopeless", 20*time.Second, "given up", func(sb *fsbv1.Sandbox) bool {
		for _, c := range sb.GetStatus().GetConditions() {
			if c.GetType() == "Recovering" && c.GetStatus() == "False" && c.GetReason() == "GaveUp" {
				return true
			}
		}
		return false
	})
	if sb.GetStatus().GetPhase() != fsbv1.Phase_PHASE_FAILED || sb.GetStatus().GetRevision() < 2 {
		t.Errorf("after giving up: phase %s revision %d, want Failed after a few revisions", sb.GetStatus().GetPhase(), sb.GetStatus().GetRevision())
	}
	revision := sb.GetStatus().GetRevision()
	time.Sleep(2500 * time.Millisecond) // past the longest back-off
	if sb := p.get("hopeless"); sb.GetStatus().GetRevision() != revision {
		t.Errorf("a sandbox that gave up moved on to revision %d", sb.GetStatus().GetRevision())
	}
	if n := metricSum(t, p.metrics, `fsb_sandboxes_recreated_total{cause="failed"}`); int64(n) != revision-1 {
		t.Errorf("fsb_sandboxes_recreated_total{cause=failed} = %d, want %d", n, revision-1)
	}
	if n := metricSum(t, p.metrics, "fsb_sandboxes_recovery_given_up_total "); n != 1 {
		t.Errorf("fsb_sandboxes_recovery_given_up_total = %d, want 1", n)
	}
	// A reset brings it back from having given up.
	p.mustCtl("update", "hopeless", "--reset-revision")
	p.waitFor("hopeless", 10*time.Second, "at a new revision", func(sb *fsbv1.Sandbox) bool { return sb.GetStatus().GetRevision() > revision })
}
