package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// execFake adds exec to fakeFastPath: each process is a tiny program of
// its own, named by its command, so that a test sees what the CLI sent and
// what it made of the answer.
type execFake struct {
	*fakeFastPath

	mu      sync.Mutex
	nextPID int32
	procs   map[int32]*fakeProc
	specs   []*fsbv1.ProcessSpec
	// interactive counts the processes started through ExecInteractive.
	interactive int
}

type fakeProc struct {
	spec    *fsbv1.ProcessSpec
	stdin   chan []byte // closed by close_stdin
	signals chan string
	resizes chan *fsbv1.PtySize
	once    sync.Once
}

func (p *fakeProc) closeStdin() { p.once.Do(func() { close(p.stdin) }) }

func newExecFake() *execFake {
	return &execFake{fakeFastPath: newFake(), procs: map[int32]*fakeProc{}, nextPID: 100}
}

// start checks the sandbox and registers a process for spec.
func (f *execFake) start(req *fsbv1.ExecRequest, interactive bool) (int32, *fakeProc, error) {
	f.fakeFastPath.mu.Lock()
	_, ok := f.sandboxes[key(req.GetNamespace(), req.GetName())]
	f.fakeFastPath.mu.Unlock()
	if !ok {
		return 0, nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox %s/%s not found", req.GetNamespace(), req.GetName()))
	}
	spec := req.GetProcess()
	if spec.GetWorkingDir() == "/unlinked" {
		return 0, nil, connect.NewError(connect.CodeUnavailable, errors.New("sandbox default/box has no open link to its fsb init on agent a1"))
	}
	if spec.GetWorkingDir() == "/nope" {
		return 0, nil, connect.NewError(connect.CodeNotFound, errors.New("working directory /nope: no such file or directory"))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextPID++
	p := &fakeProc{spec: spec, stdin: make(chan []byte, 16), signals: make(chan string, 4), resizes: make(chan *fsbv1.PtySize, 4)}
	f.procs[f.nextPID] = p
	f.specs = append(f.specs, proto.Clone(spec).(*fsbv1.ProcessSpec))
	if interactive {
		f.interactive++
	}
	return f.nextPID, p, nil
}

func (f *execFake) lastSpec(t *testing.T) *fsbv1.ProcessSpec {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.specs) == 0 {
		t.Fatal("no exec reached the server")
	}
	return f.specs[len(f.specs)-1]
}

func (f *execFake) proc(pid int32) (*fakeProc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.procs[pid]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no process %d", pid))
	}
	return p, nil
}

// run is the process's program: it emits events until it exits.
func (p *fakeProc) run(ctx context.Context, emit func(*fsbv1.ExecEvent) error) error {
	out := func(s string) error { return emit(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Stdout{Stdout: []byte(s)}}) }
	exit := func(e *fsbv1.ProcessExit) error { return emit(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Exit{Exit: e}}) }
	args := p.spec.GetCommand()
	switch args[0] {
	case "echo":
		if err := out(strings.Join(args[1:], " ") + "\n"); err != nil {
			return err
		}
	case "fail":
		code, _ := strconv.Atoi(args[1])
		if err := out("out\n"); err != nil {
			return err
		}
		if err := emit(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Stderr{Stderr: []byte("boom\n")}}); err != nil {
			return err
		}
		return exit(&fsbv1.ProcessExit{ExitCode: int32(code)})
	case "cat":
		for {
			select {
			case b, ok := <-p.stdin:
				if !ok {
					return exit(&fsbv1.ProcessExit{})
				}
				if err := out(string(b)); err != nil {
					return err
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	case "wait":
		if err := out("waiting\n"); err != nil {
			return err
		}
		select {
		case sig := <-p.signals:
			n := unix.SignalNum(sig)
			return exit(&fsbv1.ProcessExit{ExitCode: 128 + int32(n), Signal: strings.TrimPrefix(sig, "SIG")})
		case <-ctx.Done():
			return ctx.Err()
		}
	case "timeout":
		return exit(&fsbv1.ProcessExit{ExitCode: 137, Signal: "KILL", TimedOut: true})
	case "size":
		size := p.spec.GetPtySize()
		for {
			if err := out(fmt.Sprintf("%d %d\n", size.GetRows(), size.GetCols())); err != nil {
				return err
			}
			select {
			case size = <-p.resizes:
			case b, ok := <-p.stdin:
				if !ok || strings.Contains(string(b), "q") {
					return exit(&fsbv1.ProcessExit{})
				}
				size = nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return exit(&fsbv1.ProcessExit{})
}

func (f *execFake) Exec(ctx context.Context, req *connect.Request[fsbv1.ExecRequest], stream *connect.ServerStream[fsbv1.ExecResponse]) error {
	pid, p, err := f.start(req.Msg, false)
	if err != nil {
		return err
	}
	emit := func(ev *fsbv1.ExecEvent) error { return stream.Send(&fsbv1.ExecResponse{Event: ev}) }
	if err := emit(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Started{Started: &fsbv1.ProcessStarted{Pid: pid}}}); err != nil {
		return err
	}
	return p.run(ctx, emit)
}

func (f *execFake) ExecInteractive(ctx context.Context, stream *connect.BidiStream[fsbv1.ExecInteractiveRequest, fsbv1.ExecInteractiveResponse]) error {
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	if first.GetStart() == nil {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("the first message must start the process"))
	}
	pid, p, err := f.start(first.GetStart(), true)
	if err != nil {
		return err
	}
	go func() {
		for {
			msg, err := stream.Receive()
			if err != nil {
				return
			}
			switch r := msg.GetRequest().(type) {
			case *fsbv1.ExecInteractiveRequest_Stdin:
				p.stdin <- r.Stdin
			case *fsbv1.ExecInteractiveRequest_CloseStdin:
				p.closeStdin()
			case *fsbv1.ExecInteractiveRequest_Resize:
				p.resizes <- r.Resize
			case *fsbv1.ExecInteractiveRequest_Signal:
				p.signals <- r.Signal
			}
		}
	}()
	emit := func(ev *fsbv1.ExecEvent) error { return stream.Send(&fsbv1.ExecInteractiveResponse{Event: ev}) }
	if err := emit(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Started{Started: &fsbv1.ProcessStarted{Pid: pid}}}); err != nil {
		return err
	}
	return p.run(ctx, emit)
}

func (f *execFake) SignalProcess(_ context.Context, req *connect.Request[fsbv1.SignalProcessRequest]) (*connect.Response[fsbv1.SignalProcessResponse], error) {
	p, err := f.proc(req.Msg.GetPid())
	if err != nil {
		return nil, err
	}
	p.signals <- req.Msg.GetSignal()
	return connect.NewResponse(&fsbv1.SignalProcessResponse{}), nil
}

func (f *execFake) ResizePty(_ context.Context, req *connect.Request[fsbv1.ResizePtyRequest]) (*connect.Response[fsbv1.ResizePtyResponse], error) {
	p, err := f.proc(req.Msg.GetPid())
	if err != nil {
		return nil, err
	}
	p.resizes <- req.Msg.GetSize()
	return connect.NewResponse(&fsbv1.ResizePtyResponse{}), nil
}

// serveH2 serves h behind the controller's token check over HTTP/1.1 and
// cleartext HTTP/2, as the controller does, and returns its URL.
func serveH2(t *testing.T, h fsbv1connect.FastPathServiceHandler) string {
	t.Helper()
	mux := http.NewServeMux()
	path, api := fsbv1connect.NewFastPathServiceHandler(h)
	mux.Handle(path, auth.Middleware(auth.Tokens{testToken}.As(auth.RoleUser), auth.FastPathPolicy, nil, api))
	mux.Handle("/files/", filesHandler(h))
	srv := httptest.NewUnstartedServer(mux)
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// filesHandler is set by the cp tests' fake; exec's has none.
var filesHandler = func(fsbv1connect.FastPathServiceHandler) http.Handler { return http.NotFoundHandler() }

// execClient returns a client of f whose input is in.
func execClient(t *testing.T, f fsbv1connect.FastPathServiceHandler, in io.Reader) (*Client, *syncBuffer, *syncBuffer) {
	t.Helper()
	var out, errw syncBuffer
	c, err := New(Config{Server: serveH2(t, f), Token: testToken, Out: &out, Err: &errw, In: in})
	if err != nil {
		t.Fatal(err)
	}
	return c, &out, &errw
}

func exitCode(err error) int {
	var e *ExitError
	if errors.As(err, &e) {
		return e.Code
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestExec(t *testing.T) {
	tests := []struct {
		name    string
		opts    ExecOptions
		in      string
		code    int
		out     string
		errOut  string
		errText string
	}{
		{name: "output and status 0", opts: ExecOptions{Command: []string{"echo", "hello", "world"}}, out: "hello world\n"},
		{name: "stdout and stderr apart, status 3", opts: ExecOptions{Command: []string{"fail", "3"}}, code: 3, out: "out\n", errOut: "boom\n"},
		{name: "input passed through", opts: ExecOptions{Command: []string{"cat"}}, in: "line one\nline two\n", out: "line one\nline two\n"},
		{name: "timeout", opts: ExecOptions{Command: []string{"timeout"}, Timeout: 2 * time.Second}, code: 137, errOut: "ran past its timeout (2s): its process group was killed"},
		{name: "missing sandbox", opts: ExecOptions{Name: "ghost", Command: []string{"echo"}}, code: -1, errText: "sandbox ghost not found in namespace default"},
		{name: "init unreachable", opts: ExecOptions{Command: []string{"echo"}, WorkDir: "/unlinked"}, code: -1, errText: "sandbox default/box has no open link to its fsb init on agent a1"},
		{name: "missing working dir", opts: ExecOptions{Command: []string{"echo"}, WorkDir: "/nope"}, code: -1, errText: "working directory /nope: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newExecFake()
			f.add("default", "box", "busybox", time.Minute)
			c, out, errw := execClient(t, f, strings.NewReader(tt.in))
			if tt.opts.Name == "" {
				tt.opts.Name = "box"
			}
			err := c.Exec(context.Background(), tt.opts)
			if got := exitCode(err); got != tt.code {
				t.Fatalf("exit %d (%v), want %d", got, err, tt.code)
			}
			if tt.errText != "" && (err == nil || err.Error() != tt.errText) {
				t.Errorf("error %q, want %q", err, tt.errText)
			}
			if out.String() != tt.out {
				t.Errorf("stdout %q, want %q", out.String(), tt.out)
			}
			if !strings.Contains(errw.String(), tt.errOut) || (tt.errOut == "" && errw.String() != "") {
				t.Errorf("stderr %q, want %q", errw.String(), tt.errOut)
			}
		})
	}
}

// TestExecSpec: the flags reach the process's spec; input that is not a
// terminal is passed (through ExecInteractive) without -i.
func TestExecSpec(t *testing.T) {
	f := newExecFake()
	f.add("default", "box", "busybox", time.Minute)
	c, _, _ := execClient(t, f, strings.NewReader(""))
	err := c.Exec(context.Background(), ExecOptions{
		Name: "box", Command: []string{"echo", "x"}, User: "nobody", WorkDir: "/tmp",
		Env: []string{"A=1", "B=x=y"}, Timeout: 1500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &fsbv1.ProcessSpec{
		Command: []string{"echo", "x"}, User: "nobody", WorkingDir: "/tmp",
		Envs: map[string]string{"A": "1", "B": "x=y"}, TimeoutSeconds: 2, Stdin: true,
	}
	if got := f.lastSpec(t); !proto.Equal(got, want) {
		t.Errorf("spec %v, want %v", got, want)
	}
	if f.interactive != 1 {
		t.Errorf("%d processes started through ExecInteractive, want 1", f.interactive)
	}
}

// TestExecUsage: mistakes are said before any call.
func TestExecUsage(t *testing.T) {
	for _, o := range []ExecOptions{
		{Name: "box"},
		{Command: []string{"sh"}},
		{Name: "box", Command: []string{"sh"}, Env: []string{"NOEQUALS"}},
		{Name: "box", Command: []string{"sh"}, WorkDir: "relative"},
		{Name: "box", Command: []string{"sh"}, Timeout: -time.Second},
	} {
		f := newExecFake()
		c, _, _ := execClient(t, f, strings.NewReader(""))
		if err := c.Exec(context.Background(), o); !IsUsage(err) {
			t.Errorf("%+v: %v, want a usage error", o, err)
		}
	}
}

// TestExecSignal: a signal fsb ctl receives is passed to the process,
// whose status then says it; a second one leaves at once.
func TestExecSignal(t *testing.T) {
	for _, input := range []bool{false, true} {
		t.Run(fmt.Sprintf("input=%v", input), func(t *testing.T) {
			f := newExecFake()
			f.add("default", "box", "busybox", time.Minute)
			pr, pw := io.Pipe()
			t.Cleanup(func() { pw.Close() })
			var in io.Reader = pr
			if !input {
				in = ttyOrSkip(t)
			}
			c, out, _ := execClient(t, f, in)
			sigs := make(chan os.Signal, 1)
			done := make(chan error, 1)
			go func() {
				done <- c.Exec(context.Background(), ExecOptions{Name: "box", Command: []string{"wait"}, Signals: sigs})
			}()
			waitFor(t, func() bool { return strings.Contains(out.String(), "waiting") }, "the process's output")
			sigs <- syscall.SIGTERM
			if code := exitCode(<-done); code != 128+15 {
				t.Errorf("exit %d, want 143", code)
			}
		})
	}
}

// ttyOrSkip returns the slave of a new pseudo-terminal: input that is a
// terminal, so that exec passes none without -i.
func ttyOrSkip(t *testing.T) *os.File {
	t.Helper()
	_, slave := openPTY(t)
	return slave
}

// openPTY opens a pseudo-terminal pair, closed when the test ends.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("name the pseudo-terminal: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open the pseudo-terminal's slave: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

func setSize(t *testing.T, tty *os.File, rows, cols uint16) {
	t.Helper()
	if err := unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
}

func canonical(t *testing.T, tty *os.File) bool {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tio.Lflag&unix.ICANON != 0
}

// TestExecTTY runs `exec -it` on a real pseudo-terminal: the process gets
// its size, raw mode holds during the exec, a resize reaches the process,
// keys reach it, and the terminal is restored on the way out, on an exit
// and on an interruption alike.
func TestExecTTY(t *testing.T) {
	for _, how := range []string{"exit", "interrupted"} {
		t.Run(how, func(t *testing.T) {
			f := newExecFake()
			f.add("default", "box", "busybox", time.Minute)
			master, slave := openPTY(t)
			setSize(t, slave, 30, 100)
			if !canonical(t, slave) {
				t.Fatal("a new terminal is not in canonical mode")
			}
			c, out, _ := execClient(t, f, slave)
			sigs := make(chan os.Signal, 2)
			resizes := make(chan os.Signal, 1)
			done := make(chan error, 1)
			go func() {
				done <- c.Exec(context.Background(), ExecOptions{
					Name: "box", Command: []string{"size"}, Stdin: true, TTY: true, Signals: sigs, Resizes: resizes,
				})
			}()
			waitFor(t, func() bool { return strings.Contains(out.String(), "30 100\n") }, "the first size")
			if canonical(t, slave) {
				t.Error("the terminal is not in raw mode during the exec")
			}
			setSize(t, slave, 40, 120)
			resizes <- syscall.SIGWINCH
			waitFor(t, func() bool { return strings.Contains(out.String(), "40 120\n") }, "the new size")
			switch how {
			case "exit":
				if _, err := master.Write([]byte("q")); err != nil {
					t.Fatal(err)
				}
				if err := <-done; err != nil {
					t.Fatalf("exec: %v", err)
				}
			case "interrupted":
				sigs <- syscall.SIGHUP
				sigs <- syscall.SIGHUP
				if err := <-done; err == nil || !strings.Contains(err.Error(), "interrupted") {
					t.Fatalf("exec: %v, want interrupted", err)
				}
			}
			if !canonical(t, slave) {
				t.Error("the terminal was left in raw mode")
			}
			if spec := f.lastSpec(t); !spec.GetPty() || spec.GetPtySize().GetRows() != 30 || spec.GetPtySize().GetCols() != 100 {
				t.Errorf("spec %v, want a PTY of 30x100", spec)
			}
		})
	}
}

// TestExecNeedsHTTP2: a controller reached only over HTTP/1.1 (a proxy in
// between) cannot carry an exec with input: the error says why.
func TestExecNeedsHTTP2(t *testing.T) {
	f := newExecFake()
	f.add("default", "box", "busybox", time.Minute)
	var out, errw syncBuffer
	c, err := New(Config{Server: serve(t, f.fakeFastPath), Token: testToken, Out: &out, Err: &errw, In: strings.NewReader("x")})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Exec(context.Background(), ExecOptions{Name: "box", Command: []string{"cat"}})
	if err == nil || !strings.Contains(err.Error(), "cannot speak HTTP/2 with the controller") {
		t.Errorf("err %v, want one naming HTTP/2", err)
	}
}
