package fastpath

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/agentlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/controller"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// fakeAgent is an AgentService without containerd: enough of an agent for
// the fast path's exec and file relays to be tested on their own. Its
// processes are scripted by their command[0]:
//
//   - "echo": started (pid 42), one stdout and one stderr chunk, exit 0;
//   - "cat": started once gate is closed (nil: at once), then waits for
//     CloseInput and prints what SendInput gave it, exit 0;
//   - "flood": started, then stdout chunks of 32 random KiB until the
//     call ends, counted in flooded.
type fakeAgent struct {
	fsbv1connect.UnimplementedAgentServiceHandler
	id   string
	gate chan struct{}

	mu     sync.Mutex
	calls  []string // the process calls, in order: "stdin a", "close", "resize 30x100", "signal INT"
	early  bool     // a process call came before its started event
	input  strings.Builder
	closed chan struct{} // closed by CloseInput
	up     bool          // the started event was sent

	flooded atomic.Int64

	// The last write: its bytes' count and sha256, and how its stream
	// ended ("eof" once complete, else the error).
	written  atomic.Int64
	sum      hash.Hash
	writeEnd chan string
}

const fakePid = 42

func newFakeAgent(id string) *fakeAgent {
	return &fakeAgent{id: id, closed: make(chan struct{}), writeEnd: make(chan string, 1), sum: sha256.New()}
}

// GetSandboxUsage answers a fixed usage.
func (f *fakeAgent) GetSandboxUsage(_ context.Context, req *connect.Request[fsbv1.AgentServiceGetSandboxUsageRequest]) (*connect.Response[fsbv1.AgentServiceGetSandboxUsageResponse], error) {
	return connect.NewResponse(&fsbv1.AgentServiceGetSandboxUsageResponse{Usage: &fsbv1.SandboxUsage{
		Revision: 7, CpuPercent: 12.5, CpuCount: 2, MemoryUsedBytes: 4096,
	}}), nil
}

func (f *fakeAgent) WatchStatus(ctx context.Context, req *connect.Request[fsbv1.WatchStatusRequest], stream *connect.ServerStream[fsbv1.WatchStatusResponse]) error {
	if err := stream.Send(&fsbv1.WatchStatusResponse{Status: &fsbv1.AgentStatus{AgentId: f.id, Capacity: 5}}); err != nil {
		return err
	}
	tick := time.NewTicker(time.Duration(max(req.Msg.GetHeartbeatMillis(), 50)) * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := stream.Send(&fsbv1.WatchStatusResponse{}); err != nil {
				return err
			}
		}
	}
}

func (f *fakeAgent) Exec(ctx context.Context, req *connect.Request[fsbv1.AgentServiceExecRequest], stream *connect.ServerStream[fsbv1.AgentServiceExecResponse]) error {
	send := func(ev *fsbv1.ExecEvent) error { return stream.Send(&fsbv1.AgentServiceExecResponse{Event: ev}) }
	started := &fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Started{Started: &fsbv1.ProcessStarted{Pid: fakePid}}}
	exit0 := &fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Exit{Exit: &fsbv1.ProcessExit{}}}
	switch cmd := req.Msg.GetProcess().GetCommand(); cmd[0] {
	case "echo":
		for _, ev := range []*fsbv1.ExecEvent{
			started,
			{Event: &fsbv1.ExecEvent_Stdout{Stdout: []byte(strings.Join(cmd[1:], " ") + "\n")}},
			{Event: &fsbv1.ExecEvent_Stderr{Stderr: []byte("to stderr\n")}},
			exit0,
		} {
			if err := send(ev); err != nil {
				return err
			}
		}
		return nil
	case "cat":
		if f.gate != nil {
			select {
			case <-f.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		f.mu.Lock()
		err := send(started)
		f.up = true
		f.mu.Unlock()
		if err != nil {
			return err
		}
		select {
		case <-f.closed:
		case <-ctx.Done():
			return ctx.Err()
		}
		f.mu.Lock()
		out := f.input.String()
		f.mu.Unlock()
		if err := send(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Stdout{Stdout: []byte(out)}}); err != nil {
			return err
		}
		return send(exit0)
	case "flood":
		if err := send(started); err != nil {
			return err
		}
		// Random bytes: a compressed stream (gzip, which Connect clients
		// accept) would carry gigabytes of zeros in a full window.
		chunk := make([]byte, 32<<10)
		_, _ = rand.Read(chunk)
		for ctx.Err() == nil {
			if err := send(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Stdout{Stdout: chunk}}); err != nil {
				return err
			}
			f.flooded.Add(int64(len(chunk)))
		}
		return ctx.Err()
	}
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("exec %q: executable file not found in $PATH", req.Msg.GetProcess().GetCommand()[0]))
}

// call records a process call, in order.
func (f *fakeAgent) call(pid int32, what string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pid != fakePid {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("no process %d", pid))
	}
	if !f.up {
		f.early = true
	}
	f.calls = append(f.calls, what)
	return nil
}

func (f *fakeAgent) SendInput(_ context.Context, req *connect.Request[fsbv1.AgentServiceSendInputRequest]) (*connect.Response[fsbv1.AgentServiceSendInputResponse], error) {
	if err := f.call(req.Msg.GetPid(), "stdin "+string(req.Msg.GetData())); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.input.Write(req.Msg.GetData())
	f.mu.Unlock()
	return connect.NewResponse(&fsbv1.AgentServiceSendInputResponse{}), nil
}

func (f *fakeAgent) CloseInput(_ context.Context, req *connect.Request[fsbv1.AgentServiceCloseInputRequest]) (*connect.Response[fsbv1.AgentServiceCloseInputResponse], error) {
	if err := f.call(req.Msg.GetPid(), "close"); err != nil {
		return nil, err
	}
	close(f.closed)
	return connect.NewResponse(&fsbv1.AgentServiceCloseInputResponse{}), nil
}

func (f *fakeAgent) ResizePty(_ context.Context, req *connect.Request[fsbv1.AgentServiceResizePtyRequest]) (*connect.Response[fsbv1.AgentServiceResizePtyResponse], error) {
	if err := f.call(req.Msg.GetPid(), fmt.Sprintf("resize %dx%d", req.Msg.GetSize().GetRows(), req.Msg.GetSize().GetCols())); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.AgentServiceResizePtyResponse{}), nil
}

func (f *fakeAgent) SignalProcess(_ context.Context, req *connect.Request[fsbv1.AgentServiceSignalProcessRequest]) (*connect.Response[fsbv1.AgentServiceSignalProcessResponse], error) {
	if err := f.call(req.Msg.GetPid(), "signal "+req.Msg.GetSignal()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.AgentServiceSignalProcessResponse{}), nil
}

// fakeFileSize is the size of the fake agent's /big, whose bytes are
// fakeByte(i).
const fakeFileSize = 40<<20 + 123

func fakeByte(i int64) byte { return byte(i*7 + i>>13) }

// growingHead is what the fake's /growing file holds when opened, and
// growingTail what was written to it while it was read.
const growingHead, growingTail = "line 1\nline 2\n", "line 3\n"

func (f *fakeAgent) ReadFile(ctx context.Context, req *connect.Request[fsbv1.AgentServiceReadFileRequest], stream *connect.ServerStream[fsbv1.AgentServiceReadFileResponse]) error {
	switch req.Msg.GetPath() {
	case "/big":
	case "/growing", "/proc-like":
		// A log written on (more bytes than its size when opened), or a
		// /proc file (size 0, bytes all the same).
		size := int64(len(growingHead))
		if req.Msg.GetPath() == "/proc-like" {
			size = 0
		}
		for _, m := range []*fsbv1.AgentServiceReadFileResponse{
			{Info: &fsbv1.FileInfo{Path: req.Msg.GetPath(), Type: fsbv1.FileType_FILE_TYPE_FILE, Size: size, Mode: 0o644}},
			{Data: []byte(growingHead)}, {Data: []byte(growingTail)},
		} {
			if err := stream.Send(m); err != nil {
				return err
			}
		}
		return nil
	default:
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("open %s: no such file or directory", req.Msg.GetPath()))
	}
	if err := stream.Send(&fsbv1.AgentServiceReadFileResponse{Info: &fsbv1.FileInfo{
		Path: "/big", Name: "big", Type: fsbv1.FileType_FILE_TYPE_FILE, Size: fakeFileSize, Mode: 0o644,
	}}); err != nil {
		return err
	}
	buf := make([]byte, 32<<10)
	for off := int64(0); off < fakeFileSize; {
		n := min(int64(len(buf)), fakeFileSize-off)
		for i := range n {
			buf[i] = fakeByte(off + i)
		}
		if err := stream.Send(&fsbv1.AgentServiceReadFileResponse{Data: buf[:n]}); err != nil {
			return err
		}
		off += n
	}
	return nil
}

func (f *fakeAgent) WriteFile(ctx context.Context, stream *connect.ClientStream[fsbv1.AgentServiceWriteFileRequest]) (*connect.Response[fsbv1.AgentServiceWriteFileResponse], error) {
	var path string
	var mode uint32
	first := true
	for stream.Receive() {
		m := stream.Msg()
		if first {
			path, mode, first = m.GetPath(), m.GetMode(), false
			if path == "/full" {
				return nil, connect.NewError(connect.CodeResourceExhausted, errors.New("write /full: no space left on device"))
			}
		}
		f.written.Add(int64(len(m.GetData())))
		f.sum.Write(m.GetData())
	}
	if err := stream.Err(); err != nil {
		f.writeEnd <- err.Error()
		return nil, err
	}
	f.writeEnd <- "eof"
	return connect.NewResponse(&fsbv1.AgentServiceWriteFileResponse{Info: &fsbv1.FileInfo{
		Path: path, Type: fsbv1.FileType_FILE_TYPE_FILE, Size: f.written.Load(), Mode: mode,
	}}), nil
}

func (f *fakeAgent) Stat(_ context.Context, req *connect.Request[fsbv1.AgentServiceStatRequest]) (*connect.Response[fsbv1.AgentServiceStatResponse], error) {
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("stat %s: no such file or directory", req.Msg.GetPath()))
}

// fakePlane is a fast path on a fake agent, served as the controller
// serves it: httpserver, the user token, the file route.
type fakePlane struct {
	fp       *Server
	agent    *fakeAgent
	agentSrv *httptest.Server
	metrics  *prometheus.Registry
	url      string
	logs     *rig.Buffer
	h2c      *http.Client // cleartext HTTP/2, for bidi and client streams
	h1       *http.Client // HTTP/1.1, as curl
}

const userToken = "user-token"

func newFakePlane(t *testing.T) *fakePlane {
	t.Helper()
	fa := newFakeAgent("fake-1")
	agentSrv := httptest.NewUnstartedServer(fa.handler())
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	agentSrv.Config.Protocols = &protocols
	agentSrv.Start()
	t.Cleanup(agentSrv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	logs := &rig.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := store.OpenEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New()
	metrics := prometheus.NewRegistry()
	set := agentlink.New(agentlink.Config{Addresses: []string{agentSrv.Listener.Addr().String()}, Registry: reg, Logger: logger})
	// The controller is not run: its cache stays empty, and the sandboxes
	// are seeded as pending FAST creates.
	ctrl := controller.New(controller.Config{Store: st, Registry: reg, Agents: set, NewID: NewID, Logger: logger})
	fp := New(ctx, Config{Store: st, Registry: reg, Agents: set, Controller: ctrl, Logger: logger, Metrics: NewMetrics(metrics)})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); set.Run(ctx) }()
	<-set.Synced()

	url := serveFastPath(t, ctx, fp, logger)
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		fp.Wait()
		st.Close()
		if t.Failed() {
			t.Logf("fast path log:\n%s", logs.String())
		}
	})
	return &fakePlane{fp: fp, agent: fa, agentSrv: agentSrv, metrics: metrics, url: url, logs: logs, h2c: h2cClient(), h1: h1Client()}
}

// serveFastPath serves fp as the controller does (httpserver, the user
// token, the file route) until ctx ends, and returns its URL.
func serveFastPath(t *testing.T, ctx context.Context, fp *Server, logger *slog.Logger) string {
	t.Helper()
	keys := auth.Tokens{userToken}.As(auth.RoleUser)
	mux := http.NewServeMux()
	path, api := fp.Handler(connect.WithReadMaxBytes(httpserver.DefaultMaxRequestBytes))
	mux.Handle(path, auth.Middleware(keys, auth.FastPathPolicy, logger, api))
	path, files := fp.FilesHandler()
	mux.Handle(path, auth.Route(keys, auth.FastPathPolicy, logger, auth.FilesRoute, files))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- httpserver.Serve(ctx, ln, httpserver.Config{Handler: mux, Logger: logger}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// h2cClient speaks cleartext HTTP/2 only, as bidi and client streams need.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// h1Client speaks HTTP/1.1 only, as curl does by default.
func h1Client() *http.Client {
	var p http.Protocols
	p.SetHTTP1(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

func (f *fakeAgent) handler() http.Handler {
	mux := http.NewServeMux()
	// The limit on a request message the agent role sets by default.
	mux.Handle(fsbv1connect.NewAgentServiceHandler(f, connect.WithReadMaxBytes(httpserver.DefaultMaxRequestBytes)))
	return mux
}

// seed makes a sandbox the fast path knows, as a pending FAST create: its
// phase, whether it runs without init, placed on the fake agent.
func (p *fakePlane) seed(name string, phase v1alpha1.Phase, noInit bool) {
	sb := &v1alpha1.Sandbox{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: DefaultNamespace, Annotations: map[string]string{
			v1alpha1.AnnotationID: "sb-" + name, v1alpha1.AnnotationAgent: p.agent.id, v1alpha1.AnnotationRevision: "1",
		}},
		Spec:   v1alpha1.SandboxSpec{Image: rig.ImageRef, NoInit: noInit},
		Status: v1alpha1.SandboxStatus{Phase: phase, SandboxID: "sb-" + name, AssignedPod: p.agent.id, Revision: 1},
	}
	pc := newPendingCreate("sb-"+name, sb)
	pc.agent = p.agent.id
	p.fp.mu.Lock()
	p.fp.pending[key(DefaultNamespace, name)] = pc
	p.fp.mu.Unlock()
}

// client is a FastPathService client with the user token, over h2c.
func (p *fakePlane) client() fsbv1connect.FastPathServiceClient {
	return fsbv1connect.NewFastPathServiceClient(p.h2c, p.url, connect.WithInterceptors(auth.Bearer(userToken)))
}
