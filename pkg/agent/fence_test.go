package agent

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/fast-sandbox/fast-sandbox/pkg/fence"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// fenced returns a request carrying fence n (none for n < 0).
func fenced[T any](msg *T, n int) *connect.Request[T] {
	req := connect.NewRequest(msg)
	if n >= 0 {
		req.Header().Set(fence.Header, strconv.Itoa(n))
	}
	return req
}

func (h *harness) metrics() string {
	rec := httptest.NewRecorder()
	h.agent.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// TestFenceRefusesDeposedControllers: an agent takes calls without a
// fence until it has seen one; from then on it refuses every call whose
// fence is lower than the highest it has seen, a call without any
// included, with FailedPrecondition naming both fences, and takes equal and
// higher ones. Status reads raise the fence but are never refused: every
// controller replica follows every agent.
func TestFenceRefusesDeposedControllers(t *testing.T) {
	h := newHarness(t, withCapacity(10))
	ctx := context.Background()
	create := func(n int) error {
		id := h.newID()
		_, err := h.client.CreateSandbox(ctx, fenced(&fsbv1.AgentServiceCreateSandboxRequest{
			SandboxId: id, Revision: 1, Namespace: "default", Name: "fence-" + id, Spec: spec("exec sleep 100"),
		}, n))
		return err
	}
	status := func(n int) error {
		_, err := h.client.GetStatus(ctx, fenced(&fsbv1.GetStatusRequest{}, n))
		return err
	}
	watch := func(n int) error {
		stream, err := h.client.WatchStatus(ctx, fenced(&fsbv1.WatchStatusRequest{}, n))
		if err != nil {
			return err
		}
		defer stream.Close()
		if !stream.Receive() {
			return stream.Err()
		}
		return nil
	}
	remove := func(n int) error {
		_, err := h.client.DeleteSandbox(ctx, fenced(&fsbv1.AgentServiceDeleteSandboxRequest{SandboxId: "sb-never-made"}, n))
		return err
	}
	const none = -1
	for _, step := range []struct {
		what string
		call func(int) error
		n    int
		// refused is the message of a FailedPrecondition; empty: taken.
		refused string
	}{
		{"create without a fence, none seen yet", create, none, ""},
		{"create with fence 0, none seen yet", create, 0, ""},
		{"status read raising the fence to 2", status, 2, ""},
		{"create with the fence seen", create, 2, ""},
		{"create with an older fence", create, 1, "fenced: a newer controller leads (fence 1 < 2)"},
		{"create without a fence once one was seen", create, none, "fenced: a newer controller leads (fence 0 < 2)"},
		{"delete with an older fence", remove, 1, "fenced: a newer controller leads (fence 1 < 2)"},
		{"status read with an older fence", status, 1, ""},
		{"status stream with an older fence", watch, 1, ""},
		{"delete with a higher fence", remove, 3, ""},
		{"create with the fence the delete raised it to", create, 3, ""},
		{"create with the fence before it", create, 2, "fenced: a newer controller leads (fence 2 < 3)"},
	} {
		err := step.call(step.n)
		switch {
		case step.refused == "" && err != nil:
			t.Errorf("%s: %v, want it taken", step.what, err)
		case step.refused != "" && (connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), step.refused)):
			t.Errorf("%s: %v, want FailedPrecondition %q", step.what, err, step.refused)
		}
	}
	if got := h.agent.fence.Highest(); got != 3 {
		t.Errorf("highest fence %d, want 3", got)
	}
	m := h.metrics()
	for _, want := range []string{`fsb_agent_fenced_calls_total{call="CreateSandbox"} 3`, `fsb_agent_fenced_calls_total{call="DeleteSandbox"} 1`, "fsb_agent_fence 3"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if _, err := h.client.GetStatus(ctx, func() *connect.Request[fsbv1.GetStatusRequest] {
		req := connect.NewRequest(&fsbv1.GetStatusRequest{})
		req.Header().Set(fence.Header, "x")
		return req
	}()); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("a call with fence %q: %v, want InvalidArgument", "x", err)
	}
}

// TestFenceRefusesAnInFlightCreate: a create that a leader started, and
// that waits for its image, is refused (and makes no container) when a
// newer leader speaks to the agent before the image arrives: a leader
// stopped past its lease and resumed cannot finish what it began.
func TestFenceRefusesAnInFlightCreate(t *testing.T) {
	release := make(chan struct{})
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.URL.Path, "/blobs/") && req.Method == http.MethodGet {
			select {
			case <-release:
			case <-req.Context().Done():
				return
			}
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before the server closes
	ref := strings.TrimPrefix(srv.URL, "http://") + "/fsb/busybox:fenced"
	// Pushing reads no blob: only the pull waits.
	pushImage(t, ref, markedImage(t, randomHex(t)))

	h := newHarness(t)
	ctx := context.Background()
	id := h.newID()
	done := make(chan error, 1)
	go func() {
		_, err := h.client.CreateSandbox(ctx, fenced(&fsbv1.AgentServiceCreateSandboxRequest{
			SandboxId: id, Revision: 1, Namespace: "default", Name: "in-flight", Spec: &fsbv1.SandboxSpec{Image: ref, Command: []string{"sleep", "100"}},
		}, 1))
		done <- err
	}()
	// The create has been let in with fence 1 once the agent has seen it.
	deadline := time.Now().Add(10 * time.Second)
	for h.agent.fence.Highest() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the create never reached the agent")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := h.client.GetStatus(ctx, fenced(&fsbv1.GetStatusRequest{}, 2)); err != nil {
		t.Fatalf("the new leader's status read: %v", err)
	}
	free()
	select {
	case err := <-done:
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "fence 1 < 2") {
			t.Errorf("the in-flight create answered %v, want FailedPrecondition naming fence 1 < 2", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the in-flight create never answered")
	}
	containers, err := h.cd.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(containers) != 0 {
		t.Errorf("the refused create left %d containers", len(containers))
	}
	if sb := h.get(id); sb != nil {
		t.Errorf("the agent reports the refused sandbox: %v", sb)
	}
}

// TestFenceOutlivesAnAgentRestart: the highest fence is kept with the
// agent's containerd namespace, so a restarted agent still refuses a
// deposed controller.
func TestFenceOutlivesAnAgentRestart(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if _, err := h.client.GetStatus(ctx, fenced(&fsbv1.GetStatusRequest{}, 5)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := h.rt.Fence(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fence kept is %d, want 5", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.restart(nil)
	if got := h.agent.fence.Highest(); got != 5 {
		t.Errorf("the restarted agent starts at fence %d, want 5", got)
	}
	_, err := h.client.DeleteSandbox(ctx, fenced(&fsbv1.AgentServiceDeleteSandboxRequest{SandboxId: "sb-never-made"}, 4))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "fence 4 < 5") {
		t.Errorf("a call with fence 4 after the restart: %v, want FailedPrecondition naming fence 4 < 5", err)
	}
}
