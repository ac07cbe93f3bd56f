package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd/snapshots"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// refusedLeftNothing checks, after a refused create, that containerd still
// serves and holds no container and no active snapshot of the test.
func (h *harness) refusedLeftNothing() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.rt.Ping(ctx); err != nil {
		h.t.Fatalf("containerd after the refused create: %v", err)
	}
	cs, err := h.cd.Containers(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	if len(cs) != 0 {
		h.t.Errorf("the refused create left %d containers", len(cs))
	}
	if err := h.cd.SnapshotService(rig.Snapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindActive {
			h.t.Errorf("the refused create left snapshot %s", info.Name)
		}
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
}

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
	h.refusedLeftNothing()
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
	h.refusedLeftNothing()
	sb := h.create(spec("echo still-works"))
	h.waitLog(sb, "still-works")
}

// TestHostileRequestsRefusedByAgent: the bad values of issue 9, sent to
// the agent as Connect JSON over HTTP, are InvalidArgument naming the
// field and the limit; an unknown field
// is refused, not dropped; and nothing reaches containerd.
func TestHostileRequestsRefusedByAgent(t *testing.T) {
	h := newHarness(t)
	img := `"image":"` + rig.ImageRef + `"`
	ports := make([]string, 1000)
	for i := range ports {
		ports[i] = strconv.Itoa(1000 + i)
	}
	for _, tc := range []struct {
		name, spec string
		want       []string
	}{
		{"env value with NUL", img + `,"envs":[{"name":"A","value":"x\u0000y"}]`, []string{"spec.envs[0]", "NUL"}},
		{"env name with a space", img + `,"envs":[{"name":"A B"}]`, []string{"spec.envs", `"A B" is not a variable name`}},
		{"cpu 1e12", img + `,"resources":{"cpu":"1e12"}`, []string{"spec.resources.cpu", "at most 256 cores"}},
		{"memory 1Ki", img + `,"resources":{"memory":"1Ki"}`, []string{"spec.resources.memory", "at least 8Mi"}},
		{"memory 1000Ei", img + `,"resources":{"memory":"1000Ei"}`, []string{"spec.resources.memory", "at most 1Ti"}},
		{"pids 2^63-1", img + `,"resources":{"pids":"9223372036854775807"}`, []string{"spec.resources.pids", "4194304"}},
		{"1000 ports", img + `,"exposedPorts":[` + strings.Join(ports, ",") + `]`, []string{"spec.exposedPorts", "at most 64"}},
		{"failure policy 99", img + `,"failurePolicy":99`, []string{"spec.failurePolicy 99", "FAILURE_POLICY_MANUAL"}},
		{"consistency mode 99", img + `,"consistencyMode":99`, []string{"spec.consistencyMode 99", "CONSISTENCY_MODE_FAST"}},
		{"unknown field exposedPort", img + `,"exposedPort":[80]`, []string{`unknown field "exposedPort"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"sandboxId":"sb-hostile","revision":"1","namespace":"default","name":"hostile","spec":{` + tc.spec + `}}`
			req, err := http.NewRequest(http.MethodPost, h.url+fsbv1connect.AgentServiceCreateSandboxProcedure, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct{ Code, Message string }
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatalf("HTTP %d: no Connect error: %v", resp.StatusCode, err)
			}
			if e.Code != "invalid_argument" {
				t.Fatalf("answer %s: %.300q, want invalid_argument", e.Code, e.Message)
			}
			for _, w := range tc.want {
				if !strings.Contains(e.Message, w) {
					t.Errorf("message %.300q does not say %q", e.Message, w)
				}
			}
		})
	}
	cs, err := h.cd.Containers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 0 {
		t.Errorf("refused creates left %d containers", len(cs))
	}
}
