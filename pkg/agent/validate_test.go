package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
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

// TestOversizedRecordRefusedByRuntime: whatever reaches the runtime
// unvalidated, a container record past runtime.MaxRecordBytes is refused
// before containerd is sent it (ErrInvalid, so InvalidArgument), nothing
// is left, and containerd still serves.
func TestOversizedRecordRefusedByRuntime(t *testing.T) {
	h := newHarness(t)
	s := spec("echo never")
	// Past the bound, yet under the 4 MiB that broke containerd: the
	// bound is what refuses it.
	s.Envs = []*fsbv1.EnvVar{{Name: "BIG", Value: strings.Repeat("x", 2<<20)}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := h.rt.Ensure(ctx, runtime.Sandbox{ID: h.newID(), Revision: 1, Namespace: "default", Name: "big", Spec: s})
	if !errors.Is(err, runtime.ErrInvalid) {
		t.Fatalf("Ensure with a 2 MiB env: %.300v, want ErrInvalid", err)
	}
	if createCode(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "at most 1048576") {
		t.Errorf("error %.300q: want InvalidArgument naming the bound", err)
	}
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
}
