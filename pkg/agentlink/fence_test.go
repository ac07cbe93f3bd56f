package agentlink

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/fence"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
)

// headerAgent records the fence header of every call it gets.
type headerAgent struct {
	fsbv1connect.UnimplementedAgentServiceHandler
	mu    sync.Mutex
	seen  []string // "Method=fence"
	watch chan struct{}
}

func (h *headerAgent) record(method string, hdr http.Header) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, method+"="+hdr.Get(fence.Header))
}

func (h *headerAgent) GetStatus(_ context.Context, req *connect.Request[fsbv1.GetStatusRequest]) (*connect.Response[fsbv1.GetStatusResponse], error) {
	h.record("GetStatus", req.Header())
	return connect.NewResponse(&fsbv1.GetStatusResponse{Status: &fsbv1.AgentStatus{AgentId: "agent-1", Capacity: 1}}), nil
}

func (h *headerAgent) DeleteSandbox(_ context.Context, req *connect.Request[fsbv1.AgentServiceDeleteSandboxRequest]) (*connect.Response[fsbv1.AgentServiceDeleteSandboxResponse], error) {
	h.record("DeleteSandbox", req.Header())
	return connect.NewResponse(&fsbv1.AgentServiceDeleteSandboxResponse{}), nil
}

func (h *headerAgent) WatchStatus(ctx context.Context, req *connect.Request[fsbv1.WatchStatusRequest], stream *connect.ServerStream[fsbv1.WatchStatusResponse]) error {
	h.record("WatchStatus", req.Header())
	if err := stream.Send(&fsbv1.WatchStatusResponse{Status: &fsbv1.AgentStatus{AgentId: "agent-1", Capacity: 1}}); err != nil {
		return err
	}
	select {
	case h.watch <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return nil
}

// TestEveryCallCarriesTheCurrentFence: with a fence source, every call to
// an agent (unary, streaming, and RaiseFence's) carries the fence of the
// term current when the call starts; at 0 (no term) none; without a source
// (no election) never one.
func TestEveryCallCarriesTheCurrentFence(t *testing.T) {
	agent := &headerAgent{watch: make(chan struct{}, 1)}
	path, handler := fsbv1connect.NewAgentServiceHandler(agent)
	mux := http.NewServeMux()
	mux.Handle(path, handler)
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	var current atomic.Int64
	s := New(Config{Addresses: []string{addr}, Registry: registry.New(), Logger: log, Fence: current.Load})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	<-agent.watch // the standby's stream: no term, no fence
	<-s.Synced()

	current.Store(4)
	if failed := s.RaiseFence(context.Background()); len(failed) != 0 {
		t.Fatalf("RaiseFence: %v", failed)
	}
	client, err := s.Client("agent-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.DeleteSandbox(context.Background(), connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{SandboxId: "sb-1"})); err != nil {
		t.Fatal(err)
	}
	current.Store(0) // the term is over
	if _, err := client.DeleteSandbox(context.Background(), connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{SandboxId: "sb-1"})); err != nil {
		t.Fatal(err)
	}

	// A leader's stream carries its fence too.
	leader := New(Config{Addresses: []string{addr}, Registry: registry.New(), Logger: log, Fence: func() int64 { return 7 }})
	wg.Add(1)
	go func() { defer wg.Done(); leader.Run(ctx) }()
	<-agent.watch

	unfenced := New(Config{Addresses: []string{addr}, Registry: registry.New(), Logger: log})
	if failed := unfenced.RaiseFence(context.Background()); len(failed) != 0 {
		t.Fatalf("RaiseFence without a fence source: %v", failed)
	}

	agent.mu.Lock()
	defer agent.mu.Unlock()
	want := []string{"WatchStatus=", "GetStatus=4", "DeleteSandbox=4", "DeleteSandbox=", "WatchStatus=7", "GetStatus="}
	if strings.Join(agent.seen, " ") != strings.Join(want, " ") {
		t.Errorf("the agent saw %v, want %v", agent.seen, want)
	}
}
