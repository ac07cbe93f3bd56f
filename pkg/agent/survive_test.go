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
