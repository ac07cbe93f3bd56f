package fastpath

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
)

// TestExecAndFilesValidatedAtTheEdge: what a user can get wrong is
// InvalidArgument saying what, before anything is looked up.
func TestExecAndFilesValidatedAtTheEdge(t *testing.T) {
	c := fsbv1connect.NewFastPathServiceClient(http.DefaultClient, edgeOnly(t))
	ctx := context.Background()
	exec := func(p *fsbv1.ProcessSpec) func() error {
		return func() error {
			s, err := c.Exec(ctx, connect.NewRequest(&fsbv1.ExecRequest{Name: "a", Process: p}))
			if err != nil {
				return err
			}
			defer s.Close()
			for s.Receive() {
			}
			return s.Err()
		}
	}
	read := func(path string) func() error {
		return func() error {
			s, err := c.ReadFile(ctx, connect.NewRequest(&fsbv1.ReadFileRequest{Name: "a", Path: path}))
			if err != nil {
				return err
			}
			defer s.Close()
			for s.Receive() {
			}
			return s.Err()
		}
	}
	write := func(msgs ...*fsbv1.WriteFileRequest) func() error {
		return func() error {
			s := c.WriteFile(ctx)
			for _, m := range msgs {
				if err := s.Send(m); err != nil {
					break
				}
			}
			_, err := s.CloseAndReceive()
			return err
		}
	}
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"Exec without a name", func() error {
			s, err := c.Exec(ctx, connect.NewRequest(&fsbv1.ExecRequest{Process: &fsbv1.ProcessSpec{Command: []string{"ls"}}}))
			if err != nil {
				return err
			}
			defer s.Close()
			for s.Receive() {
			}
			return s.Err()
		}, "name is required"},
		{"Exec without a process", exec(nil), "process.command is required"},
		{"Exec empty program", exec(&fsbv1.ProcessSpec{Command: []string{""}}), "process.command[0] is empty"},
		{"Exec NUL in an argument", exec(&fsbv1.ProcessSpec{Command: []string{"ls", "a\x00b"}}), "process.command[1]: holds a NUL"},
		{"Exec too many arguments", exec(&fsbv1.ProcessSpec{Command: make([]string, v1alpha1.MaxCommandEntries+1)}), "entries, at most"},
		{"Exec env name with =", exec(&fsbv1.ProcessSpec{Command: []string{"ls"}, Envs: map[string]string{"A=B": "c"}}), "not a variable name"},
		{"Exec relative working dir", exec(&fsbv1.ProcessSpec{Command: []string{"ls"}, WorkingDir: "tmp"}), "process.working_dir \"tmp\": want an absolute path"},
		{"Exec pty size 0 rows", exec(&fsbv1.ProcessSpec{Command: []string{"sh"}, Pty: true, PtySize: &fsbv1.PtySize{Cols: 80}}), "process.pty_size 0x80"},
		{"Exec negative timeout", exec(&fsbv1.ProcessSpec{Command: []string{"ls"}, TimeoutSeconds: -1}), "timeout_seconds -1"},
		{"AttachProcess pid 0", func() error {
			s, err := c.AttachProcess(ctx, connect.NewRequest(&fsbv1.AttachProcessRequest{Name: "a"}))
			if err != nil {
				return err
			}
			defer s.Close()
			for s.Receive() {
			}
			return s.Err()
		}, "pid 0"},
		{"SignalProcess no signal", func() error {
			_, err := c.SignalProcess(ctx, connect.NewRequest(&fsbv1.SignalProcessRequest{Name: "a", Pid: 3}))
			return err
		}, "signal \"\""},
		{"ResizePty 70000 cols", func() error {
			_, err := c.ResizePty(ctx, connect.NewRequest(&fsbv1.ResizePtyRequest{Name: "a", Pid: 3, Size: &fsbv1.PtySize{Rows: 3, Cols: 70000}}))
			return err
		}, "size 3x70000"},
		{"SendInput bad namespace", func() error {
			_, err := c.SendInput(ctx, connect.NewRequest(&fsbv1.SendInputRequest{Name: "a", Namespace: "Bad_NS", Pid: 3}))
			return err
		}, `namespace "Bad_NS"`},
		{"ReadFile relative path", read("etc/passwd"), `path "etc/passwd": want an absolute path`},
		{"ReadFile unclean path", read("/tmp/../etc/passwd"), `want a clean path ("/etc/passwd")`},
		{"ReadFile trailing slash", read("/tmp/"), "want a clean path"},
		{"ReadFile NUL", read("/tmp/a\x00"), "NUL"},
		{"ReadFile no path", read(""), "path is required"},
		{"WriteFile no message", write(), "WriteFile: no message"},
		{"WriteFile mode past 07777", write(&fsbv1.WriteFileRequest{Name: "a", Path: "/x", Mode: 0o10000}), "mode 010000"},
		{"WriteFile relative", write(&fsbv1.WriteFileRequest{Name: "a", Path: "x"}), `path "x"`},
		{"ListDir negative depth", func() error {
			_, err := c.ListDir(ctx, connect.NewRequest(&fsbv1.ListDirRequest{Name: "a", Path: "/", Depth: -1}))
			return err
		}, "depth -1"},
		{"Move relative destination", func() error {
			_, err := c.Move(ctx, connect.NewRequest(&fsbv1.MoveRequest{Name: "a", Source: "/a", Destination: "b"}))
			return err
		}, `destination "b"`},
		{"Remove the root", func() error {
			_, err := c.Remove(ctx, connect.NewRequest(&fsbv1.RemoveRequest{Name: "a", Path: "/", Recursive: true}))
			return err
		}, "root cannot be removed"},
		{"MakeDir relative", func() error {
			_, err := c.MakeDir(ctx, connect.NewRequest(&fsbv1.MakeDirRequest{Name: "a", Path: "./d"}))
			return err
		}, `path "./d"`},
		{"Stat no name", func() error {
			_, err := c.Stat(ctx, connect.NewRequest(&fsbv1.StatRequest{Path: "/"}))
			return err
		}, "name is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want InvalidArgument saying %q", err, tc.want)
			}
		})
	}
}

// TestExecNeedsARunningSandboxWithInit: a missing sandbox is NotFound; one
// that does not run, or runs without fsb init, FailedPrecondition saying
// why — for exec and files alike.
func TestExecNeedsARunningSandboxWithInit(t *testing.T) {
	p := newFakePlane(t)
	p.seed("failed", v1alpha1.PhaseFailed, false)
	p.seed("pending", v1alpha1.PhasePending, false)
	p.seed("bare", v1alpha1.PhaseRunning, true)
	c := p.client()
	ctx := context.Background()
	calls := map[string]func(name string) error{
		"Exec": func(name string) error {
			s, err := c.Exec(ctx, connect.NewRequest(&fsbv1.ExecRequest{Name: name, Process: &fsbv1.ProcessSpec{Command: []string{"echo"}}}))
			if err != nil {
				return err
			}
			defer s.Close()
			for s.Receive() {
			}
			return s.Err()
		},
		"ListProcesses": func(name string) error {
			_, err := c.ListProcesses(ctx, connect.NewRequest(&fsbv1.ListProcessesRequest{Name: name}))
			return err
		},
		"WriteFile": func(name string) error {
			s := c.WriteFile(ctx)
			_ = s.Send(&fsbv1.WriteFileRequest{Name: name, Path: "/x", Data: []byte("x")})
			_, err := s.CloseAndReceive()
			return err
		},
		"GET /files": func(name string) error {
			req, _ := http.NewRequest(http.MethodGet, p.url+"/files/default/"+name+"?path=/big", nil)
			req.Header.Set("Authorization", "Bearer "+userToken)
			code, msg, _ := httpCall(t, p.h1, req)
			if code == "" {
				return nil
			}
			return connect.NewError(codeOf(code), errors.New(msg))
		},
	}
	for _, tc := range []struct {
		sandbox string
		code    connect.Code
		want    string
	}{
		{"missing", connect.CodeNotFound, "sandbox missing not found in namespace default"},
		{"failed", connect.CodeFailedPrecondition, "sandbox default/failed is Failed, not Running"},
		{"pending", connect.CodeFailedPrecondition, "sandbox default/pending is Pending, not Running"},
		{"bare", connect.CodeFailedPrecondition, "sandbox default/bare runs without fsb init (--no-init): exec and files are unavailable"},
	} {
		for rpc, call := range calls {
			t.Run(tc.sandbox+"/"+rpc, func(t *testing.T) {
				err := call(tc.sandbox)
				if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%v, want %v saying %q", err, tc.code, tc.want)
				}
			})
		}
	}
}

// TestExecWaitsForAStartingSandbox: an exec on a sandbox that is placed
// but not yet seen running (Bound: the controller records the agent's
// "created" before its "running", after a FAST create has answered) waits
// for it to run, rather than being refused.
func TestExecWaitsForAStartingSandbox(t *testing.T) {
	p := newFakePlane(t)
	p.seed("starting", v1alpha1.PhaseBound, false)
	go func() {
		time.Sleep(150 * time.Millisecond)
		p.fp.mu.Lock()
		pc := p.fp.pending[key(DefaultNamespace, "starting")]
		p.fp.mu.Unlock()
		pc.mu.Lock()
		pc.obj.Status.Phase = v1alpha1.PhaseRunning
		pc.mu.Unlock()
	}()
	begin := time.Now()
	s, err := p.client().Exec(context.Background(), connect.NewRequest(&fsbv1.ExecRequest{Name: "starting", Process: &fsbv1.ProcessSpec{Command: []string{"echo", "hi"}}}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out strings.Builder
	for s.Receive() {
		out.Write(s.Msg().GetEvent().GetStdout())
	}
	if err := s.Err(); err != nil {
		t.Fatalf("exec on a starting sandbox: %v", err)
	}
	if out.String() != "hi\n" {
		t.Errorf("stdout %q, want %q", out.String(), "hi\n")
	}
	if waited := time.Since(begin); waited < 100*time.Millisecond {
		t.Errorf("the exec answered after %v, before the sandbox ran", waited)
	}
}

// codeOf is the Connect code of its JSON name.
func codeOf(name string) connect.Code {
	var c connect.Code
	if err := c.UnmarshalText([]byte(name)); err != nil {
		return connect.CodeUnknown
	}
	return c
}

// httpCall makes a plain HTTP request and returns the Connect error's code
// and message ("" for a 2xx answer) and the body of a success.
func httpCall(t *testing.T, c *http.Client, req *http.Request) (code, message string, body []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read the answer: %v", req.Method, req.URL, err)
	}
	if resp.StatusCode/100 == 2 {
		return "", "", b
	}
	var e struct{ Code, Message string }
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%s %s: HTTP %d, body %.200q is no Connect error: %v", req.Method, req.URL, resp.StatusCode, b, err)
	}
	if got := connectHTTPStatus(codeOf(e.Code)); got != resp.StatusCode {
		t.Errorf("%s %s: HTTP %d for %s, Connect says %d", req.Method, req.URL, resp.StatusCode, e.Code, got)
	}
	return e.Code, e.Message, nil
}

// connectHTTPStatus is the HTTP status Connect's protocol gives a code.
func connectHTTPStatus(c connect.Code) int {
	switch c {
	case connect.CodeCanceled:
		return 499
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

// connectStream posts one message as a Connect streaming request over
// HTTP/1.1, as curl does, and returns the messages of the answer and its
// end-of-stream error code ("" when it ended well).
func connectStream(t *testing.T, c *http.Client, url, procedure, body string) (msgs []string, code string) {
	t.Helper()
	var req bytes.Buffer
	req.WriteByte(0)
	_ = binary.Write(&req, binary.BigEndian, uint32(len(body)))
	req.WriteString(body)
	hr, err := http.NewRequest(http.MethodPost, url+procedure, &req)
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/connect+json")
	hr.Header.Set("Authorization", "Bearer "+userToken)
	resp, err := c.Do(hr)
	if err != nil {
		t.Fatalf("POST %s: %v", procedure, err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 1 {
		t.Errorf("answered over HTTP/%d, want HTTP/1.1", resp.ProtoMajor)
	}
	for {
		var head [5]byte
		if _, err := io.ReadFull(resp.Body, head[:]); err != nil {
			t.Fatalf("%s: the stream ended without its end message: %v", procedure, err)
		}
		msg := make([]byte, binary.BigEndian.Uint32(head[1:]))
		if _, err := io.ReadFull(resp.Body, msg); err != nil {
			t.Fatalf("%s: a cut message: %v", procedure, err)
		}
		if head[0]&2 == 0 {
			msgs = append(msgs, string(msg))
			continue
		}
		var end struct{ Error struct{ Code string } }
		if err := json.Unmarshal(msg, &end); err != nil {
			t.Fatalf("%s: end message %q: %v", procedure, msg, err)
		}
		return msgs, end.Error.Code
	}
}

// TestExecOverHTTP1RelaysEventsAndAudits: Exec as curl calls it (Connect
// JSON streaming over HTTP/1.1) gets the agent's events in order; the
// agent's refusal keeps its code and words; each exec has its audit line
// and is counted.
func TestExecOverHTTP1RelaysEventsAndAudits(t *testing.T) {
	p := newFakePlane(t)
	p.seed("web", v1alpha1.PhaseRunning, false)
	msgs, code := connectStream(t, p.h1, p.url, fsbv1connect.FastPathServiceExecProcedure,
		`{"name":"web","process":{"command":["echo","hi","there"]}}`)
	want := []string{
		`{"event":{"started":{"pid":42}}}`,
		`{"event":{"stdout":"aGkgdGhlcmUK"}}`,
		`{"event":{"stderr":"dG8gc3RkZXJyCg=="}}`,
		`{"event":{"exit":{}}}`,
	}
	if code != "" || !slices.Equal(msgs, want) {
		t.Errorf("events %q ending %q, want %q ending well", msgs, code, want)
	}
	_, code = connectStream(t, p.h1, p.url, fsbv1connect.FastPathServiceExecProcedure,
		`{"name":"web","process":{"command":["nosuch"]}}`)
	if code != "not_found" {
		t.Errorf("exec of a missing program ended %q, want the agent's not_found", code)
	}
	// The agent's words reach the caller.
	s, err := p.client().Exec(context.Background(), connect.NewRequest(&fsbv1.ExecRequest{Name: "web", Process: &fsbv1.ProcessSpec{Command: []string{"nosuch"}}}))
	if err != nil {
		t.Fatal(err)
	}
	for s.Receive() {
	}
	if err := s.Err(); connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), `exec "nosuch": executable file not found in $PATH`) {
		t.Errorf("%v, want the agent's NotFound and words", err)
	}
	s.Close()

	logs := p.logs.String()
	for _, line := range []string{
		`msg=exec rpc=Exec role=user sandbox=default/web sandbox_id=sb-web agent=fake-1 command="echo hi there" pty=false pid=42`,
		`msg=exec rpc=Exec role=user sandbox=default/web sandbox_id=sb-web agent=fake-1 command=nosuch pty=false err=`,
	} {
		if !strings.Contains(logs, line) {
			t.Errorf("no audit line %q in\n%s", line, logs)
		}
	}
	execs := p.fp.cfg.Metrics.execs
	if started, refused := counted(t, execs.WithLabelValues("started")), counted(t, execs.WithLabelValues("not_found")); started != 1 || refused != 2 {
		t.Errorf("execs counted: %v started, %v not_found; want 1 and 2", started, refused)
	}
	if n := counted(t, p.fp.cfg.Metrics.bytes.WithLabelValues(bytesExecOutput)); n != float64(len("hi there\nto stderr\n")) {
		t.Errorf("exec output bytes counted: %v, want %d", n, len("hi there\nto stderr\n"))
	}
}

// TestExecInteractiveInputWaitsForTheStart: input sent before the process
// has started waits for it and reaches the agent in its order, with the
// process's ID; the call ends with the process, even though the client
// never closes its side.
func TestExecInteractiveInputWaitsForTheStart(t *testing.T) {
	p := newFakePlane(t)
	p.seed("web", v1alpha1.PhaseRunning, false)
	p.agent.gate = make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := p.client().ExecInteractive(ctx)
	for _, m := range []*fsbv1.ExecInteractiveRequest{
		{Request: &fsbv1.ExecInteractiveRequest_Start{Start: &fsbv1.ExecRequest{Name: "web", Process: &fsbv1.ProcessSpec{Command: []string{"cat"}, Stdin: true}}}},
		{Request: &fsbv1.ExecInteractiveRequest_Stdin{Stdin: []byte("a")}},
		{Request: &fsbv1.ExecInteractiveRequest_Resize{Resize: &fsbv1.PtySize{Rows: 30, Cols: 100}}},
		{Request: &fsbv1.ExecInteractiveRequest_Stdin{Stdin: []byte("b")}},
		{Request: &fsbv1.ExecInteractiveRequest_Signal{Signal: "INT"}},
		{Request: &fsbv1.ExecInteractiveRequest_CloseStdin{CloseStdin: true}},
	} {
		if err := s.Send(m); err != nil {
			t.Fatalf("send %v: %v", m, err)
		}
	}
	// Let the input reach the controller while the process has not
	// started; nothing of it may reach the agent yet.
	time.Sleep(300 * time.Millisecond)
	p.agent.mu.Lock()
	early := slices.Clone(p.agent.calls)
	p.agent.mu.Unlock()
	if len(early) > 0 {
		t.Errorf("calls before the process started: %q", early)
	}
	close(p.agent.gate)
	var out []string
	for {
		resp, err := s.Receive()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("receive after %q: %v", out, err)
		}
		switch ev := resp.GetEvent().GetEvent().(type) {
		case *fsbv1.ExecEvent_Started:
			out = append(out, "started")
		case *fsbv1.ExecEvent_Stdout:
			out = append(out, "stdout "+string(ev.Stdout))
		case *fsbv1.ExecEvent_Exit:
			out = append(out, "exit")
		}
	}
	if want := []string{"started", "stdout ab", "exit"}; !slices.Equal(out, want) {
		t.Errorf("events %q, want %q", out, want)
	}
	p.agent.mu.Lock()
	defer p.agent.mu.Unlock()
	if want := []string{"stdin a", "resize 30x100", "stdin b", "signal INT", "close"}; !slices.Equal(p.agent.calls, want) || p.agent.early {
		t.Errorf("the agent got %q (early: %v), want %q after the start", p.agent.calls, p.agent.early, want)
	}
}

// TestExecInteractiveStartsWithStart: a first message other than start is
// refused.
func TestExecInteractiveStartsWithStart(t *testing.T) {
	p := newFakePlane(t)
	p.seed("web", v1alpha1.PhaseRunning, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := p.client().ExecInteractive(ctx)
	_ = s.Send(&fsbv1.ExecInteractiveRequest{Request: &fsbv1.ExecInteractiveRequest_Stdin{Stdin: []byte("ls\n")}})
	_, err := s.Receive()
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "the first message must be start") {
		t.Errorf("%v, want InvalidArgument: the first message must be start", err)
	}
}

// TestSlowReaderSlowsTheAgent: a client that stops reading an exec's
// output stops the agent's sending once the connections' windows are
// full; the fast path buffers nothing of its own.
func TestSlowReaderSlowsTheAgent(t *testing.T) {
	p := newFakePlane(t)
	p.seed("web", v1alpha1.PhaseRunning, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := p.client().Exec(ctx, connect.NewRequest(&fsbv1.ExecRequest{Name: "web", Process: &fsbv1.ProcessSpec{Command: []string{"flood"}}}))
	if err != nil {
		t.Fatal(err)
	}
	// A cancelled stream closes without draining what the agent sends.
	defer s.Close()
	defer cancel()
	for range 2 {
		if !s.Receive() {
			t.Fatalf("the flood's first events: %v", s.Err())
		}
	}
	// Stop reading; the agent must come to a stop.
	const bound = 32 << 20
	last, still := int64(-1), 0
	deadline := time.Now().Add(20 * time.Second)
	for still < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("the agent kept sending to a client that reads nothing: %d MiB", p.agent.flooded.Load()>>20)
		}
		time.Sleep(50 * time.Millisecond)
		n := p.agent.flooded.Load()
		if n == last {
			still++
		} else {
			last, still = n, 0
		}
		if n > bound {
			t.Fatalf("the agent sent %d MiB to a client that read 32 KiB: the output is buffered on the way", n>>20)
		}
	}
	t.Logf("the agent stopped after %d KiB, in %v", last>>10, time.Since(deadline.Add(-20*time.Second)))
}

// counted is a counter's value.
func counted(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestLargestMessagesPassTheAgentsLimit: a client's message at the
// controller's request limit reaches an agent with the same limit, though
// the agent's message names the sandbox by its (longer) ID.
func TestLargestMessagesPassTheAgentsLimit(t *testing.T) {
	p := newFakePlane(t)
	p.seed("web", v1alpha1.PhaseRunning, false)
	c := p.client()
	ctx := context.Background()
	const limit = httpserver.DefaultMaxRequestBytes
	// Each message is exactly at the limit: its other fields take the
	// bytes the data does not.
	write := &fsbv1.WriteFileRequest{Name: "web", Path: "/x"}
	write.Data = make([]byte, limit-proto.Size(write)-5)
	if n := proto.Size(write); n != limit {
		t.Fatalf("the write's message is %d bytes, want %d", n, limit)
	}
	s := c.WriteFile(ctx)
	if err := s.Send(write); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CloseAndReceive(); err != nil {
		t.Errorf("a write message at the limit: %v", err)
	} else if got := p.agent.written.Load(); got != int64(len(write.Data)) {
		t.Errorf("the agent got %d bytes, want %d", got, len(write.Data))
	}
	input := &fsbv1.SendInputRequest{Name: "web", Pid: fakePid}
	input.Data = make([]byte, limit-proto.Size(input)-5)
	if n := proto.Size(input); n != limit {
		t.Fatalf("the input's message is %d bytes, want %d", n, limit)
	}
	if _, err := c.SendInput(ctx, connect.NewRequest(input)); err != nil {
		t.Errorf("an input message at the limit: %v", err)
	}
	p.agent.mu.Lock()
	defer p.agent.mu.Unlock()
	if got := p.agent.input.Len(); got != len(input.Data) {
		t.Errorf("the agent got %d bytes of input, want %d", got, len(input.Data))
	}
}

// TestAgentGoneMidStreamIsUnavailable: an exec whose agent's connection
// breaks ends with Unavailable naming the agent, not with a bare transport
// error or a hang.
func TestAgentGoneMidStreamIsUnavailable(t *testing.T) {
	p := newFakePlane(t)
	p.seed("web", v1alpha1.PhaseRunning, false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := p.client().Exec(ctx, connect.NewRequest(&fsbv1.ExecRequest{Name: "web", Process: &fsbv1.ProcessSpec{Command: []string{"flood"}}}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 3 {
		if !s.Receive() {
			t.Fatalf("the flood's first events: %v", s.Err())
		}
	}
	p.agentSrv.CloseClientConnections()
	for s.Receive() {
	}
	err = s.Err()
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "agent fake-1 at") || !strings.Contains(err.Error(), "is unreachable") {
		t.Errorf("%v, want Unavailable saying agent fake-1 is unreachable", err)
	}
}

func TestAuditCommandIsBounded(t *testing.T) {
	long := make([]string, 2000)
	for i := range long {
		long[i] = "argument"
	}
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"ls", "-l", "/tmp"}, "ls -l /tmp"},
		{[]string{"sh", "-c", "echo a; rm -rf /"}, `sh -c "echo a; rm -rf /"`},
		{[]string{"printf", "", "a\nb"}, `printf "" "a\nb"`},
		{long, strings.Repeat("argument ", 57)[:auditCommandBytes] + "… (2000 arguments)"},
		{[]string{"a" + strings.Repeat("é", 400)}, "a" + strings.Repeat("é", 255) + "… (1 arguments)"},
	} {
		if got := auditCommand(tc.argv); got != tc.want {
			t.Errorf("auditCommand(%.40q…) = %q, want %q", tc.argv, got, tc.want)
		}
	}
}
