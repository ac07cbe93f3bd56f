package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// execFake holds sandboxes in memory, answers every exec with the
// command's words as output, and keeps written files in memory.
type execFake struct {
	fsbv1connect.UnimplementedFastPathServiceHandler

	// onExec, when set, runs at each exec with its number (from 1); an
	// error it returns is the exec's.
	onExec func(n int) error

	mu      sync.Mutex
	live    map[string]*fsbv1.CreateSandboxRequest
	deleted []string
	execs   int
	files   map[string][]byte
}

func newExecFake() *execFake {
	return &execFake{live: map[string]*fsbv1.CreateSandboxRequest{}, files: map[string][]byte{}}
}

// serve returns an HTTP/2 client of f over a real Connect server.
func (f *execFake) serve(t *testing.T) fsbv1connect.FastPathServiceClient {
	_, h := fsbv1connect.NewFastPathServiceHandler(f)
	srv := httptest.NewUnstartedServer(h)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{Protocols: &p}}
	t.Cleanup(client.CloseIdleConnections)
	return fsbv1connect.NewFastPathServiceClient(client, srv.URL)
}

func (f *execFake) CreateSandbox(_ context.Context, req *connect.Request[fsbv1.CreateSandboxRequest]) (*connect.Response[fsbv1.CreateSandboxResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.live[req.Msg.GetName()] = req.Msg
	return connect.NewResponse(&fsbv1.CreateSandboxResponse{Sandbox: &fsbv1.Sandbox{
		Name: req.Msg.GetName(), Namespace: req.Msg.GetNamespace(),
		Status: &fsbv1.SandboxStatus{Phase: fsbv1.Phase_PHASE_RUNNING, SandboxId: "id-" + req.Msg.GetName(), Revision: 1},
	}}), nil
}

func (f *execFake) DeleteSandbox(_ context.Context, req *connect.Request[fsbv1.DeleteSandboxRequest]) (*connect.Response[fsbv1.DeleteSandboxResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.live, req.Msg.GetName())
	f.deleted = append(f.deleted, req.Msg.GetName())
	return connect.NewResponse(&fsbv1.DeleteSandboxResponse{}), nil
}

func (f *execFake) Exec(_ context.Context, req *connect.Request[fsbv1.ExecRequest], stream *connect.ServerStream[fsbv1.ExecResponse]) error {
	f.mu.Lock()
	_, ok := f.live[req.Msg.GetName()]
	f.execs++
	n := f.execs
	f.mu.Unlock()
	if !ok {
		return connect.NewError(connect.CodeNotFound, errors.New("no such sandbox"))
	}
	if f.onExec != nil {
		if err := f.onExec(n); err != nil {
			return err
		}
	}
	for _, ev := range []*fsbv1.ExecEvent{
		{Event: &fsbv1.ExecEvent_Started{Started: &fsbv1.ProcessStarted{Pid: int32(n)}}},
		{Event: &fsbv1.ExecEvent_Stdout{Stdout: []byte(strings.Join(req.Msg.GetProcess().GetCommand(), " "))}},
		{Event: &fsbv1.ExecEvent_Exit{Exit: &fsbv1.ProcessExit{}}},
	} {
		if err := stream.Send(&fsbv1.ExecResponse{Event: ev}); err != nil {
			return err
		}
	}
	return nil
}

func (f *execFake) WriteFile(_ context.Context, stream *connect.ClientStream[fsbv1.WriteFileRequest]) (*connect.Response[fsbv1.WriteFileResponse], error) {
	var path string
	var buf bytes.Buffer
	for stream.Receive() {
		if path == "" {
			path = stream.Msg().GetName() + ":" + stream.Msg().GetPath()
		}
		buf.Write(stream.Msg().GetData())
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.files[path] = buf.Bytes()
	f.mu.Unlock()
	return connect.NewResponse(&fsbv1.WriteFileResponse{Info: &fsbv1.FileInfo{Size: int64(buf.Len())}}), nil
}

func (f *execFake) ReadFile(_ context.Context, req *connect.Request[fsbv1.ReadFileRequest], stream *connect.ServerStream[fsbv1.ReadFileResponse]) error {
	f.mu.Lock()
	data, ok := f.files[req.Msg.GetName()+":"+req.Msg.GetPath()]
	f.mu.Unlock()
	if !ok {
		return connect.NewError(connect.CodeNotFound, errors.New("no such file"))
	}
	if err := stream.Send(&fsbv1.ReadFileResponse{Info: &fsbv1.FileInfo{Size: int64(len(data))}}); err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(len(data), 50000)
		if err := stream.Send(&fsbv1.ReadFileResponse{Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func (f *execFake) liveCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.live)
}

func TestExecBench(t *testing.T) {
	f := newExecFake()
	api := f.serve(t)
	const size = 3<<20 + 17 // not a whole number of chunks or blocks
	r, err := ExecBench(context.Background(), api, ExecBenchOptions{
		N: 100, Image: "img", Command: []string{"echo", "hi"}, FileSize: size,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if len(r.Exec) != 100 || r.Baseline != nil {
		t.Errorf("%d execs timed, %d containerd ones; want 100 and none", len(r.Exec), len(r.Baseline))
	}
	if f.liveCount() != 0 || len(f.deleted) != 1 {
		t.Errorf("%d sandboxes left, %d deleted; want 0 and 1", f.liveCount(), len(f.deleted))
	}
	for _, data := range f.files {
		if len(data) != size {
			t.Errorf("uploaded %d bytes, want %d", len(data), size)
		}
	}
	var out bytes.Buffer
	if err := r.WriteJSON(&out); err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"exec_ms", "upload_mib_s", "download_mib_s", "host_cp_mib_s", "upload_ratio", "download_ratio"} {
		if rep[k] == nil {
			t.Errorf("%s missing or null in %s", k, out.String())
		}
	}
	for _, k := range []string{"p50", "p90", "p99", "max"} {
		if v, _ := rep["exec_ms"].(map[string]any)[k].(float64); v <= 0 {
			t.Errorf("exec_ms.%s = %v, want > 0", k, v)
		}
	}
	if _, ok := rep["baseline_exec_ms"]; !ok {
		t.Errorf("baseline_exec_ms missing (null without a baseline) in %s", out.String())
	}
	out.Reset()
	if err := r.WriteTable(&out); err != nil || !strings.Contains(out.String(), "exec -> first output") {
		t.Errorf("table %q (%v)", out.String(), err)
	}
}

// TestExecBenchCleansUp: the sandbox is deleted after an interrupt and
// after a failure, and fewer than MinExecN execs are refused.
func TestExecBenchCleansUp(t *testing.T) {
	t.Run("interrupt", func(t *testing.T) {
		f := newExecFake()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f.onExec = func(n int) error {
			if n == 10 {
				cancel()
			}
			return nil
		}
		_, err := ExecBench(ctx, f.serve(t), ExecBenchOptions{N: 100, Image: "img", Command: []string{"echo"}})
		if err == nil {
			t.Error("an interrupted bench returned no error")
		}
		if f.liveCount() != 0 {
			t.Error("the sandbox was left after an interrupt")
		}
	})
	t.Run("failure", func(t *testing.T) {
		f := newExecFake()
		f.onExec = func(int) error {
			return connect.NewError(connect.CodeFailedPrecondition, errors.New("runs without fsb init"))
		}
		_, err := ExecBench(context.Background(), f.serve(t), ExecBenchOptions{N: 100, Image: "img", Command: []string{"echo"}})
		if err == nil || !strings.Contains(err.Error(), "without fsb init") {
			t.Errorf("err %v, want the exec's", err)
		}
		if f.liveCount() != 0 {
			t.Error("the sandbox was left after a failure")
		}
	})
	t.Run("too few", func(t *testing.T) {
		f := newExecFake()
		if _, err := ExecBench(context.Background(), f.serve(t), ExecBenchOptions{N: 99, Command: []string{"echo"}}); err == nil {
			t.Error("99 execs accepted")
		}
		if len(f.live)+len(f.deleted) != 0 {
			t.Error("a sandbox was created for a refused bench")
		}
	})
}

func TestRound3(t *testing.T) {
	for in, want := range map[float64]float64{0.004756: 0.00476, 0.1234: 0.123, 1.23456: 1.23, 0: 0, 123.456: 123} {
		if got := *round3(in); got != want {
			t.Errorf("round3(%v) = %v, want %v", in, got, want)
		}
	}
}
