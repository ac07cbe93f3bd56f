package agent

import (
	"context"
	"testing"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// TestExitEventWithoutPidDoesNotEndARunningSandbox: when containerd cleans
// up after a shim that went away, it publishes an exit with pid 0 and
// status 255 for the container — also when a create has meanwhile repaired
// the container with a new task (a task left without its process by a
// containerd restart mid-create). Such an exit names no process, so it must
// not end the sandbox whose task runs: containerd's view of the task
// decides. (The fault suite once saw an acknowledged sandbox turn Failed
// with code 255 after containerd was killed mid-create.)
func TestExitEventWithoutPidDoesNotEndARunningSandbox(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	running := h.create(spec("sleep 300"))
	h.waitPhase(running.GetSandboxId(), fsbv1.Phase_PHASE_RUNNING)
	ended := h.create(spec("exit 3"))
	h.waitPhase(ended.GetSandboxId(), fsbv1.Phase_PHASE_FAILED)

	publish := func(cid string) {
		t.Helper()
		err := h.cd.EventService().Publish(ctx, "/tasks/exit", &apievents.TaskExit{
			ContainerID: cid, ID: cid, Pid: 0, ExitStatus: 255, ExitedAt: timestamppb.Now(),
		})
		if err != nil {
			t.Fatalf("publish an exit for %s: %v", cid, err)
		}
	}
	publish(running.GetContainerId())
	publish(ended.GetContainerId())

	// Events are applied in order: once a later sandbox is seen running,
	// the exits above have been weighed.
	later := h.create(spec("sleep 300"))
	h.waitPhase(later.GetSandboxId(), fsbv1.Phase_PHASE_RUNNING)
	time.Sleep(100 * time.Millisecond) // the create's own answer may precede its event

	if sb := h.get(running.GetSandboxId()); sb.GetPhase() != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("a running sandbox after an exit event without a pid: %v (exit code %d), want RUNNING", sb.GetPhase(), sb.GetExitCode())
	}
	if sb := h.get(ended.GetSandboxId()); sb.GetPhase() != fsbv1.Phase_PHASE_FAILED || sb.GetExitCode() != 3 {
		t.Errorf("an ended sandbox after an exit event without a pid: %v with code %d, want FAILED with 3 (its own)", sb.GetPhase(), sb.GetExitCode())
	}
}
