package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// TestHugeWorkingDirRefused: a 5 MiB working dir once crashed containerd
// (its ttrpc client panicked) and left a container holding a slot. Now it
// is InvalidArgument naming the field and the limit, nothing is made, and
// containerd still serves: a normal create works after it.
func TestHugeWorkingDirRefused(t *testing.T) {
	h := newHarness(t)
	s := spec("echo never")
	s.WorkingDir = "/" + strings.Repeat("a", 5<<20)
	_, err := h.tryCreate(s)
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("create with a 5 MiB working dir: %.300v, want InvalidArgument", err)
	}
	for _, w := range []string{"spec.workingDir", "at most 4096"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %.300q does not say %q", err, w)
		}
	}
	if len(err.Error()) > 1024 {
		t.Errorf("error is %d bytes: the working dir must not be echoed whole", len(err.Error()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.rt.Ping(ctx); err != nil {
		t.Fatalf("containerd after the refused create: %v", err)
	}
	cs, err := h.cd.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 0 {
		t.Errorf("the refused create left %d containers", len(cs))
	}
	sb := h.create(spec("echo still-works"))
	h.waitLog(sb, "still-works")
	if got := h.waitPhase(sb.GetSandboxId(), fsbv1.Phase_PHASE_SUCCEEDED); got.GetExitCode() != 0 {
		t.Errorf("the create after it exited %d", got.GetExitCode())
	}
}
