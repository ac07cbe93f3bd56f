package agent

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/runtime/v2/runc/options"
	"github.com/containerd/containerd/snapshots"
	"github.com/opencontainers/image-spec/identity"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// halfMake makes what a create cut short by a crash leaves: a sandbox
// container with this agent's labels and spec, and, when withTask, a task
// created but never started. It returns the container ID.
func (h *harness) halfMake(id, script string, withTask, withSpec bool) string {
	h.t.Helper()
	return h.halfMakeWith(id, script, withTask, withSpec, "")
}

// halfMakeWith is halfMake with the OCI runtime binary the runc shim runs
// (empty: runc).
func (h *harness) halfMakeWith(id, script string, withTask, withSpec bool, binary string) string {
	h.t.Helper()
	ctx := context.Background()
	sb := runtime.Sandbox{ID: id, Revision: 1, Namespace: "default", Name: id, Spec: spec(script)}
	cid := runtime.ContainerID(id, 1)
	img, err := h.cd.GetImage(ctx, rig.ImageRef)
	if err != nil {
		h.t.Fatal(err)
	}
	opts := []containerd.NewContainerOpts{
		containerd.WithContainerLabels(map[string]string{
			runtime.LabelID: id, runtime.LabelRevision: "1", runtime.LabelNamespace: "default",
			runtime.LabelName: id, runtime.LabelAgent: h.agentID, runtime.LabelLogPath: h.rt.LogPath(sb),
		}),
		containerd.WithNewSnapshot(cid, img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sh", "-c", script)),
	}
	if withSpec {
		opts = append(opts, containerd.WithContainerExtension(runtime.ExtensionSpec, sb.Spec))
	}
	if binary != "" {
		opts = append(opts, containerd.WithRuntime(rig.Runtime, &options.Options{BinaryName: binary}))
	}
	c, err := h.cd.NewContainer(ctx, cid, opts...)
	if err != nil {
		h.t.Fatal(err)
	}
	if withTask {
		drv := logfile.DriverConfig{Path: h.rt.LogPath(sb)}
		if _, err := c.NewTask(ctx, cio.BinaryIO(rig.HelperBinary(h.t), map[string]string{"log-driver": drv.Encode()})); err != nil {
			h.t.Fatal(err)
		}
	}
	return cid
}

func TestHalfMadeCreatesAreFinishedOrRolledBack(t *testing.T) {
	var noSpec string
	h := newHarness(t, beforeStart(func(h *harness) {
		h.halfMake("sb-no-task", "echo finished-no-task; exec sleep 300", false, true)
		h.halfMake("sb-not-started", "echo finished-not-started; exec sleep 300", true, true)
		noSpec = h.halfMake("sb-no-spec", "echo never", false, false)
	}))
	for _, id := range []string{"sb-no-task", "sb-not-started"} {
		sb := h.waitPhase(id, fsbv1.Phase_PHASE_RUNNING)
		h.waitLog(sb, "finished-"+strings.TrimPrefix(id, "sb-"))
	}
	if _, err := h.cd.LoadContainer(context.Background(), noSpec); !errdefs.IsNotFound(err) {
		t.Errorf("the half-made container without a spec was not rolled back: %v", err)
	}
	if h.get("sb-no-spec") != nil {
		t.Errorf("GetStatus lists the rolled-back sandbox")
	}
}

// TestSandboxWhoseTaskWentAfterItRanIsLost: a sandbox that ran and whose
// task is gone when the agent starts (a host reboot, a lost shim; here the
// task is deleted behind the stopped agent's back) is reported FAILED with
// reason Lost and exit code 0, and is not started again: not at start, not
// by a create retried for it. A create cut short before its start is still
// finished (TestHalfMadeCreatesAreFinishedOrRolledBack).
func TestSandboxWhoseTaskWentAfterItRanIsLost(t *testing.T) {
	h := newHarness(t)
	req := &fsbv1.AgentServiceCreateSandboxRequest{SandboxId: "sb-lost", Revision: 1, Namespace: "default", Name: "lost",
		Spec: spec("echo up; exec sleep 300")}
	sb := h.createReq(req)
	h.waitLog(sb, "up")
	h.restart(func() {
		if _, err := h.task(sb).Delete(context.Background(), containerd.WithProcessKill); err != nil {
			t.Fatalf("delete the task behind the agent's back: %v", err)
		}
	})

	lost := func(what string, got *fsbv1.AgentSandbox) {
		t.Helper()
		if got.GetPhase() != fsbv1.Phase_PHASE_FAILED || got.GetReason() != runtime.ReasonLost || got.GetExitCode() != 0 {
			t.Errorf("%s: %v, reason %q, exit code %d; want FAILED, Lost, 0", what, got.GetPhase(), got.GetReason(), got.GetExitCode())
		}
		c, err := h.cd.LoadContainer(context.Background(), sb.GetContainerId())
		if err != nil {
			t.Fatalf("%s: the container is gone: %v", what, err)
		}
		if _, err := c.Task(context.Background(), nil); !errdefs.IsNotFound(err) {
			t.Errorf("%s: the sandbox was started again (task: %v)", what, err)
		}
	}
	lost("after the agent's start", h.get(req.GetSandboxId()))
	lost("a create retried for it", h.createReq(req))
	lost("after the retry", h.get(req.GetSandboxId()))

	resp := h.delete(req.GetSandboxId(), 0)
	if len(resp.GetSandboxes()) != 1 || resp.GetSandboxes()[0].GetReason() != runtime.ReasonLost {
		t.Errorf("delete of the lost sandbox reported %v, want it ended Lost", resp.GetSandboxes())
	}
	h.assertGone(sb)
}

// TestLeftoverSnapshotsAreRemovedAtStart: a snapshot labelled with the
// agent's ID that no container uses, as an agent killed between preparing
// a sandbox's snapshot and creating its container leaves, is removed when
// the agent starts; unlabelled snapshots, other agents' and those of
// containers are kept.
func TestLeftoverSnapshotsAreRemovedAtStart(t *testing.T) {
	var running runtime.Info
	h := newHarness(t, beforeStart(func(h *harness) {
		h.prepareSnapshot("sb-leftover-1", map[string]string{runtime.LabelAgent: h.agentID})
		h.prepareSnapshot("sb-unlabelled-1", nil)
		h.prepareSnapshot("sb-foreign-1", map[string]string{runtime.LabelAgent: "another-agent"})
		var err error
		running, err = h.rt.Ensure(context.Background(), runtime.Sandbox{ID: "sb-running", Revision: 1, Namespace: "default",
			Name: "running", Spec: spec("exec sleep 300")})
		if err != nil {
			h.t.Fatal(err)
		}
	}))
	sn := h.cd.SnapshotService(rig.Snapshotter)
	for key, kept := range map[string]bool{
		"sb-leftover-1":     false,
		"sb-unlabelled-1":   true,
		"sb-foreign-1":      true,
		running.ContainerID: true,
	} {
		_, err := sn.Stat(context.Background(), key)
		switch {
		case kept && err != nil:
			t.Errorf("snapshot %s was removed (%v), want it kept", key, err)
		case !kept && !errdefs.IsNotFound(err):
			t.Errorf("leftover snapshot %s is still there (%v)", key, err)
		}
	}
	if got := h.get("sb-running"); got.GetPhase() != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("the sandbox whose snapshot is in use is %v, want RUNNING", got.GetPhase())
	}
	// The agent's own creates label their snapshots, so that a leftover of
	// theirs is found.
	info, err := sn.Stat(context.Background(), running.ContainerID)
	if err != nil || info.Labels[runtime.LabelAgent] != h.agentID {
		t.Errorf("a sandbox's snapshot has labels %v (%v), want %s=%s", info.Labels, err, runtime.LabelAgent, h.agentID)
	}
}

// prepareSnapshot prepares an active snapshot of the test image under key,
// with labels, and no container: what a create cut short leaves. As
// containerd's NewContainer does, it holds the snapshot under a lease, which
// a killed agent never ends; without one the garbage collector would take
// the snapshot.
func (h *harness) prepareSnapshot(key string, labels map[string]string) {
	h.t.Helper()
	ctx, _, err := h.cd.WithLease(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	img, err := h.cd.GetImage(ctx, rig.ImageRef)
	if err != nil {
		h.t.Fatal(err)
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.cd.SnapshotService(rig.Snapshotter).Prepare(ctx, key, identity.ChainID(diffIDs).String(), snapshots.WithLabels(labels)); err != nil {
		h.t.Fatalf("prepare snapshot %s: %v", key, err)
	}
}

func TestAgentOnlyAdoptsItsOwn(t *testing.T) {
	h := newHarness(t, beforeStart(func(h *harness) {
		own := h.agentID
		h.agentID = "another-agent"
		h.halfMake("sb-foreign", "exec sleep 300", true, true)
		h.agentID = own
	}))
	if h.get("sb-foreign") != nil {
		t.Errorf("the agent adopted another agent's sandbox")
	}
	// Nor does it touch it: neither a create nor a delete of that ID.
	_, err := h.client.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{
		SandboxId: "sb-foreign", Revision: 1, Namespace: "default", Name: "sb-foreign", Spec: spec("exec sleep 300"),
	}))
	if connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Errorf("create over another agent's container: %v, want AlreadyExists", err)
	}
	h.delete("sb-foreign", 0)
	if _, err := h.cd.LoadContainer(context.Background(), runtime.ContainerID("sb-foreign", 1)); err != nil {
		t.Errorf("the agent deleted another agent's sandbox: %v", err)
	}
	c, _ := h.cd.LoadContainer(context.Background(), runtime.ContainerID("sb-foreign", 1))
	if task, err := c.Task(context.Background(), nil); err == nil {
		task.Delete(context.Background(), containerd.WithProcessKill)
	}
}

func TestContainerdKill9(t *testing.T) {
	d := rig.PrivateContainerd(t)
	h := newHarness(t, withContainerd(d.Socket))
	w := h.watch()
	long := h.create(spec("echo up; exec sleep 300"))
	short := h.create(spec("sleep 4; exit 5"))
	h.waitLog(long, "up")
	c, err := h.cd.LoadContainer(context.Background(), long.GetContainerId())
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := int(task.Pid())

	d.Kill()
	time.Sleep(300 * time.Millisecond)
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("the sandbox died with containerd: %v", err)
	}
	// While containerd is away the agent still answers from its state.
	if got := h.get(long.GetSandboxId()); got.GetPhase() != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("while containerd is down the sandbox shows %v", got.GetPhase())
	}
	d.Start()

	// The agent reconnects: the short sandbox's exit, after the restart, is
	// reported; the long one never shows an exit.
	st, seen := w.until(30*time.Second, phaseIs(short.GetSandboxId(), fsbv1.Phase_PHASE_FAILED))
	if code := sandboxIn(st, short.GetSandboxId()).GetExitCode(); code != 5 {
		t.Errorf("exit code %d, want 5", code)
	}
	for _, s := range seen {
		if strings.HasPrefix(s, long.GetSandboxId()+":") && (strings.HasSuffix(s, "FAILED") || strings.HasSuffix(s, "SUCCEEDED") || strings.HasSuffix(s, "GONE")) {
			t.Errorf("false state for the running sandbox: %v", seen)
		}
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Errorf("the sandbox is gone after the restart: %v", err)
	}
	// And it works again: a new sandbox starts and an old one is deleted.
	fresh := h.create(spec("echo after-restart"))
	h.waitLog(fresh, "after-restart")
	resp := h.delete(long.GetSandboxId(), 5)
	if len(resp.GetSandboxes()) != 1 || resp.GetSandboxes()[0].GetExitCode() != 143 {
		t.Errorf("delete after the restart: %v", resp.GetSandboxes())
	}
}
