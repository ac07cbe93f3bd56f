package agent

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// TestDeleteOutlivesItsCaller deletes a sandbox that ignores SIGTERM and
// goes away during the grace period, as a controller killed mid-delete
// does: the delete still runs to its end (SIGKILL, then task, container
// and snapshot removed) rather than stopping half-way, which left the
// sandbox running or a shim without its task.
func TestDeleteOutlivesItsCaller(t *testing.T) {
	h := newHarness(t)
	sb := h.create(spec("trap '' TERM; echo up; while :; do sleep 1; done"))
	h.waitLog(sb, "up")

	grace := int32(2)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := h.client.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{
		SandboxId: sb.GetSandboxId(), GracePeriodSeconds: &grace,
	}))
	if err == nil {
		t.Fatal("the delete answered within 300ms, before its grace period: the caller never went away")
	}
	deadline := time.Now().Add(time.Duration(grace)*time.Second + 15*time.Second)
	for h.get(sb.GetSandboxId()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the sandbox is still there past its grace period after its caller went away: %v", h.get(sb.GetSandboxId()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
