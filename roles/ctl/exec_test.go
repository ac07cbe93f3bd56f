package ctl

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// execRecorder answers every exec with the exit code the command's first
// word names ("exit3": 3) and keeps the last request.
type execRecorder struct {
	fsbv1connect.UnimplementedFastPathServiceHandler
	mu   sync.Mutex
	last *fsbv1.ExecRequest
}

func (r *execRecorder) answer(req *fsbv1.ExecRequest) *fsbv1.ExecEvent {
	r.mu.Lock()
	r.last = proto.Clone(req).(*fsbv1.ExecRequest)
	r.mu.Unlock()
	code := int32(0)
	if req.GetProcess().GetCommand()[0] == "exit3" {
		code = 3
	}
	return &fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Exit{Exit: &fsbv1.ProcessExit{ExitCode: code}}}
}

func (r *execRecorder) Exec(_ context.Context, req *connect.Request[fsbv1.ExecRequest], s *connect.ServerStream[fsbv1.ExecResponse]) error {
	return s.Send(&fsbv1.ExecResponse{Event: r.answer(req.Msg)})
}

func (r *execRecorder) ExecInteractive(_ context.Context, s *connect.BidiStream[fsbv1.ExecInteractiveRequest, fsbv1.ExecInteractiveResponse]) error {
	first, err := s.Receive()
	if err != nil {
		return err
	}
	if err := s.Send(&fsbv1.ExecInteractiveResponse{Event: &fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Started{Started: &fsbv1.ProcessStarted{Pid: 7}}}}); err != nil {
		return err
	}
	return s.Send(&fsbv1.ExecInteractiveResponse{Event: r.answer(first.GetStart())})
}

// TestExecCommandLine: flags anywhere before the command, -it as one
// word, the command taken verbatim after NAME, and the process's exit
// status as fsb ctl's.
func TestExecCommandLine(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	r := &execRecorder{}
	mux := http.NewServeMux()
	path, api := fsbv1connect.NewFastPathServiceHandler(r)
	mux.Handle(path, auth.Middleware(auth.Tokens{token}.As(auth.RoleUser), auth.FastPathPolicy, nil, api))
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)

	_, _, err := runCtl("--server", srv.URL, "--token", token, "exec", "-it", "-u", "nobody", "-e", "A=1,2",
		"--timeout", "3s", "box", "exit3", "-c", "--not-a-flag")
	if got := exitCode(err); got != 3 {
		t.Fatalf("exit status %d (%v), want 3", got, err)
	}
	want := &fsbv1.ExecRequest{Name: "box", Namespace: "default", Process: &fsbv1.ProcessSpec{
		Command: []string{"exit3", "-c", "--not-a-flag"}, User: "nobody", Envs: map[string]string{"A": "1,2"},
		Pty: true, TimeoutSeconds: 3, Stdin: true,
	}}
	r.mu.Lock()
	got := r.last
	r.mu.Unlock()
	// Stdin depends on whether the test's input is a terminal.
	if got != nil {
		got.Process.Stdin = true
	}
	if !proto.Equal(got, want) {
		t.Errorf("request %v, want %v", got, want)
	}
	if _, _, err := runCtl("--server", srv.URL, "--token", token, "exec", "box", "--", "ok"); err != nil {
		t.Errorf("exit 0: %v", err)
	}
	if _, _, err := runCtl("--server", srv.URL, "--token", token, "exec", "box"); exitCode(err) != 2 {
		t.Errorf("exec without a command: %v, want a usage error", err)
	}
}
