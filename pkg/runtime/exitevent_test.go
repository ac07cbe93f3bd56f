package runtime

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/containerd/containerd"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// TestExitWithoutPidDuringACreateIsLeftToIt: containerd's exit without a
// pid (its clean-up after a shim that went away) reaches the agent while a
// create of the same container is under way, between deleting the task
// left without its process and making its own, where containerd shows no
// task. Recorded then, the exit matched the task the create went on to
// start: the sandbox was reported Failed with 255 while it ran (the fault
// suite's containerd kill -9 caught it). The create's own result decides;
// once no call is under way, such an exit is recorded as before.
func TestExitWithoutPidDuringACreateIsLeftToIt(t *testing.T) {
	client, _ := rig.Containerd(t)
	ctx := context.Background()
	const id = "sb-exitevent-1"
	c, err := client.NewContainer(ctx, id, containerd.WithNewSpec())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background()) })
	r := &Runtime{cfg: Config{Client: client, AgentID: "agent-1", Logger: slog.New(slog.DiscardHandler)},
		state: map[string]Info{}, changed: make(chan struct{})}
	phase := func() (Phase, uint32) {
		info, ok := r.Sandbox(id)
		if !ok {
			t.Fatalf("%s is not in the state", id)
		}
		return info.Phase, info.ExitCode
	}

	r.record(Info{ContainerID: id, Phase: PhaseCreated}) // as its ContainerCreate event adopts it
	unlock := r.locks.lock(id)                           // the create, under way
	r.exitEvent(ctx, id, 0, 255, time.Now())
	if p, code := phase(); p != PhaseCreated {
		t.Fatalf("an exit without a pid, during a create, was recorded: phase %v, code %d", p, code)
	}
	r.record(Info{ContainerID: id, Phase: PhaseRunning, pid: 4242}) // the create's result
	unlock()
	if p, _ := phase(); p != PhaseRunning {
		t.Fatalf("the create's result was not recorded: phase %v", p)
	}

	// No call under way, and containerd shows no task: the exit stands.
	r.exitEvent(ctx, id, 0, 255, time.Now())
	if p, code := phase(); p != PhaseExited || code != 255 {
		t.Fatalf("an exit without a pid of a container with no task: phase %v, code %d; want exited with 255", p, code)
	}
}
