package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/fast-sandbox/fast-sandbox/pkg/fault"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// ExecOptions are the arguments of `fsb ctl exec`.
type ExecOptions struct {
	Name    string
	Command []string
	// Stdin passes fsb ctl's input to the process (-i). Input that is not
	// a terminal is passed without it.
	Stdin bool
	// TTY runs the process in a pseudo-terminal (-t); with Stdin and a
	// terminal as input, that terminal is put in raw mode for the time of
	// the exec, and its size follows the local one.
	TTY bool
	// User, WorkDir and Env (NAME=VALUE each) override the sandbox's.
	User, WorkDir string
	Env           []string
	// Timeout, when set, kills the process's group after it (rounded up
	// to whole seconds).
	Timeout time.Duration
	// Signals carries the signals fsb ctl receives (SIGINT, SIGTERM,
	// SIGHUP): the first is passed to the process; a second ends the exec
	// and leaves the process running.
	Signals <-chan os.Signal
	// Resizes ticks when the local terminal's size changed (SIGWINCH).
	Resizes <-chan os.Signal
}

// ExitError is a process's non-zero exit status: the CLI exits with it.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("the process exited with status %d", e.Code) }

// Exec runs a process in a running sandbox: its stdout goes to Out, its
// stderr to Err, fsb ctl's input to it (see ExecOptions.Stdin). It returns
// nil for an exit status of 0, an *ExitError for another (128+signal for a
// process a signal ended: 137 for SIGKILL), or the error that stopped the
// exec. Leaving early (ctx ends, a second signal) detaches: the process
// goes on in the sandbox.
func (c *Client) Exec(ctx context.Context, o ExecOptions) error {
	spec, err := c.processSpec(o)
	if err != nil {
		return err
	}
	inFile, _ := c.in.(*os.File)
	inTerminal := inFile != nil && term.IsTerminal(int(inFile.Fd()))
	passInput := o.Stdin || !inTerminal
	spec.Stdin = passInput
	if o.TTY && inTerminal {
		if cols, rows, err := term.GetSize(int(inFile.Fd())); err == nil {
			spec.PtySize = &fsbv1.PtySize{Rows: uint32(rows), Cols: uint32(cols)}
		}
	}
	if o.TTY && o.Stdin && inTerminal {
		state, err := term.MakeRaw(int(inFile.Fd()))
		if err != nil {
			return fmt.Errorf("put the terminal in raw mode: %w", err)
		}
		// Every way out of Exec passes here; a signal reaches the
		// process through o.Signals and ends in a return, too.
		defer func() { _ = term.Restore(int(inFile.Fd()), state) }()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := &fsbv1.ExecRequest{Name: o.Name, Namespace: c.namespace, Process: spec}
	var conn procConn
	if passInput {
		conn, err = c.startInteractive(ctx, req)
	} else {
		conn, err = c.startExec(ctx, req)
	}
	if err != nil {
		return c.execError(ctx, err, o.Name)
	}
	defer conn.Close()

	events := make(chan eventOrErr)
	go func() {
		defer close(events)
		for {
			ev, err := conn.Next()
			select {
			case events <- eventOrErr{ev, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	inputDone := make(chan error, 1)
	var pid int32
	signals := 0
	for {
		select {
		case r := <-events:
			if r.err != nil {
				if errors.Is(r.err, io.EOF) {
					return fmt.Errorf("the controller ended the stream of the process before it exited")
				}
				return c.execError(ctx, r.err, o.Name)
			}
			switch ev := r.ev.GetEvent().(type) {
			case *fsbv1.ExecEvent_Started:
				pid = ev.Started.GetPid()
				if passInput {
					go func() { inputDone <- copyInput(conn, c.in) }()
				}
			case *fsbv1.ExecEvent_Stdout:
				if _, err := c.out.Write(ev.Stdout); err != nil {
					return err
				}
			case *fsbv1.ExecEvent_Stderr:
				if _, err := c.err.Write(ev.Stderr); err != nil {
					return err
				}
			case *fsbv1.ExecEvent_Exit:
				return c.exited(ev.Exit, o.Timeout)
			}
		case err := <-inputDone:
			// A stream that ended (io.EOF) is said by the next event:
			// the exit, or the error that ended it.
			if err != nil && !errors.Is(err, io.EOF) {
				fmt.Fprintf(c.err, "fsb ctl: input to the process stopped: %v\n", c.execError(ctx, err, o.Name))
			}
		case sig := <-o.Signals:
			signals++
			if signals > 1 || pid == 0 {
				return fmt.Errorf("interrupted: the process (PID %d) goes on in sandbox %s", pid, o.Name)
			}
			name := "INT"
			if n, ok := sig.(syscall.Signal); ok {
				name = unix.SignalName(n)
			}
			if err := conn.Signal(name); err != nil {
				return fmt.Errorf("pass %s to the process: %w", name, c.execError(ctx, err, o.Name))
			}
		case <-o.Resizes:
			if o.TTY && inTerminal && pid != 0 {
				if cols, rows, err := term.GetSize(int(inFile.Fd())); err == nil {
					// A lost resize leaves the old size: not worth
					// ending the session for.
					_ = conn.Resize(&fsbv1.PtySize{Rows: uint32(rows), Cols: uint32(cols)})
				}
			}
		case <-ctx.Done():
			return c.describe(ctx.Err(), target{})
		}
	}
}

type eventOrErr struct {
	ev  *fsbv1.ExecEvent
	err error
}

// processSpec checks o and turns it into a ProcessSpec.
func (c *Client) processSpec(o ExecOptions) (*fsbv1.ProcessSpec, error) {
	switch {
	case o.Name == "":
		return nil, usagef("exec needs a sandbox name: fsb ctl exec NAME -- COMMAND [ARG...]")
	case len(o.Command) == 0:
		return nil, usagef("exec needs a command after the sandbox's name: fsb ctl exec %s -- COMMAND [ARG...]", o.Name)
	case o.Timeout < 0:
		return nil, usagef("--timeout %s: want a positive duration such as 30s", o.Timeout)
	case o.Timeout > time.Duration(1<<31-1)*time.Second:
		return nil, usagef("--timeout %s is too long", o.Timeout)
	case o.WorkDir != "" && !strings.HasPrefix(o.WorkDir, "/"):
		return nil, usagef("--workdir %q: want an absolute path inside the sandbox", o.WorkDir)
	}
	spec := &fsbv1.ProcessSpec{
		Command:        o.Command,
		WorkingDir:     o.WorkDir,
		User:           o.User,
		Pty:            o.TTY,
		TimeoutSeconds: int32((o.Timeout + time.Second - 1) / time.Second),
	}
	if len(o.Env) > 0 {
		spec.Envs = make(map[string]string, len(o.Env))
		for _, e := range o.Env {
			k, v, ok := strings.Cut(e, "=")
			if !ok || k == "" {
				return nil, usagef("-e %q: want NAME=VALUE", e)
			}
			spec.Envs[k] = v
		}
	}
	return spec, nil
}

// exited turns a process's exit into Exec's result.
func (c *Client) exited(exit *fsbv1.ProcessExit, timeout time.Duration) error {
	if exit.GetTimedOut() {
		fmt.Fprintf(c.err, "fsb ctl: the process ran past its timeout (%s): its process group was killed\n", timeout)
	}
	if code := exit.GetExitCode(); code != 0 {
		return &ExitError{Code: int(code)}
	}
	return nil
}

// brokeOverHTTP2 reports whether err, which no server sent, is HTTP/2
// failing: an http2 error, or the connection of an HTTP/2-only call
// (ExecInteractive, WriteFile) reset or closed as a server that speaks only
// HTTP/1.1 does on the HTTP/2 preface, which one error or the other shows
// depending on timing.
func brokeOverHTTP2(err error) bool {
	msg := err.Error()
	if strings.Contains(msg, "http2") {
		return true
	}
	h2only := strings.Contains(msg, fsbv1connect.FastPathServiceExecInteractiveProcedure) ||
		strings.Contains(msg, fsbv1connect.FastPathServiceWriteFileProcedure)
	return h2only && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF))
}

// execError words an error of exec or of a file call. NotFound may be
// about the sandbox or about what the call names (a path, a process): the
// sandbox is looked up to tell which.
func (c *Client) execError(ctx context.Context, err error, name string) error {
	var ce *connect.Error
	if errors.As(err, &ce) && !connect.IsWireError(err) && brokeOverHTTP2(err) {
		// ExecInteractive and WriteFile need HTTP/2, which a proxy in
		// between may not pass on.
		return fmt.Errorf("cannot speak HTTP/2 with the controller at %s, which exec with input or a terminal and cp need "+
			"(a proxy in between that speaks only HTTP/1.1?): %s", c.server, message(err))
	}
	if connect.CodeOf(err) == connect.CodeNotFound && connect.IsWireError(err) {
		_, gerr := c.api.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: name, Namespace: c.namespace}))
		if connect.CodeOf(gerr) == connect.CodeNotFound {
			return fmt.Errorf("sandbox %s not found in namespace %s", name, c.namespace)
		}
		return errors.New(message(err))
	}
	if connect.CodeOf(err) == connect.CodeUnavailable && connect.IsWireError(err) {
		if part, _ := fault.Of(err); part == "" {
			// Not a part of the path the controller could not reach:
			// the sandbox's init did not answer, in the server's words.
			return errors.New(message(err))
		}
	}
	return c.describe(err, target{})
}

// copyInput sends everything r yields to the process, then closes its
// input. In raw mode the terminal never ends: the copy then lasts until
// the process exits, and a read it is blocked in is left behind when
// fsb ctl returns.
func copyInput(conn procConn, r io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if serr := conn.Input(buf[:n]); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) {
			return conn.CloseInput()
		}
		if err != nil {
			return fmt.Errorf("read input: %w", err)
		}
	}
}

// procConn is a running exec as Exec drives it: through ExecInteractive
// (one HTTP/2 stream both ways) or through Exec and unary calls naming the
// process.
type procConn interface {
	// Next returns the next event; io.EOF when the stream ended.
	Next() (*fsbv1.ExecEvent, error)
	Input([]byte) error
	CloseInput() error
	Resize(*fsbv1.PtySize) error
	Signal(string) error
	// Close ends the stream: the process, if it still runs, goes on.
	Close()
}

// interactiveConn drives ExecInteractive. Its sends come from the input
// copy and from Exec's loop: a stream takes one at a time.
type interactiveConn struct {
	stream *connect.BidiStreamForClient[fsbv1.ExecInteractiveRequest, fsbv1.ExecInteractiveResponse]
	mu     sync.Mutex
}

func (c *Client) startInteractive(ctx context.Context, req *fsbv1.ExecRequest) (procConn, error) {
	stream := c.stream.ExecInteractive(ctx)
	if err := stream.Send(&fsbv1.ExecInteractiveRequest{Request: &fsbv1.ExecInteractiveRequest_Start{Start: req}}); err != nil && !errors.Is(err, io.EOF) {
		_ = stream.CloseRequest()
		_ = stream.CloseResponse()
		return nil, err
	}
	// A refused start shows as the first Receive's error (a Send that
	// found the stream ended returns io.EOF, and Receive says why).
	return &interactiveConn{stream: stream}, nil
}

func (s *interactiveConn) Next() (*fsbv1.ExecEvent, error) {
	resp, err := s.stream.Receive()
	if err != nil {
		return nil, err
	}
	return resp.GetEvent(), nil
}

func (s *interactiveConn) send(r *fsbv1.ExecInteractiveRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(r)
}

func (s *interactiveConn) Input(p []byte) error {
	return s.send(&fsbv1.ExecInteractiveRequest{Request: &fsbv1.ExecInteractiveRequest_Stdin{Stdin: p}})
}

func (s *interactiveConn) CloseInput() error {
	return s.send(&fsbv1.ExecInteractiveRequest{Request: &fsbv1.ExecInteractiveRequest_CloseStdin{CloseStdin: true}})
}

func (s *interactiveConn) Resize(size *fsbv1.PtySize) error {
	return s.send(&fsbv1.ExecInteractiveRequest{Request: &fsbv1.ExecInteractiveRequest_Resize{Resize: size}})
}

func (s *interactiveConn) Signal(sig string) error {
	return s.send(&fsbv1.ExecInteractiveRequest{Request: &fsbv1.ExecInteractiveRequest_Signal{Signal: sig}})
}

func (s *interactiveConn) Close() {
	s.mu.Lock()
	_ = s.stream.CloseRequest()
	s.mu.Unlock()
	_ = s.stream.CloseResponse()
}

// execConn drives Exec (a server stream, which HTTP/1.1 carries) and names
// the process in unary calls once it started.
type execConn struct {
	c         *Client
	ctx       context.Context
	name, ns  string
	stream    *connect.ServerStreamForClient[fsbv1.ExecResponse]
	pid       atomic.Int32
	closeOnce sync.Once
}

func (c *Client) startExec(ctx context.Context, req *fsbv1.ExecRequest) (procConn, error) {
	stream, err := c.api.Exec(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	return &execConn{c: c, ctx: ctx, name: req.GetName(), ns: req.GetNamespace(), stream: stream}, nil
}

func (s *execConn) Next() (*fsbv1.ExecEvent, error) {
	if !s.stream.Receive() {
		if err := s.stream.Err(); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
	ev := s.stream.Msg().GetEvent()
	if st := ev.GetStarted(); st != nil {
		s.pid.Store(st.GetPid())
	}
	return ev, nil
}

func (s *execConn) Input(p []byte) error {
	_, err := s.c.api.SendInput(s.ctx, connect.NewRequest(&fsbv1.SendInputRequest{Name: s.name, Namespace: s.ns, Pid: s.pid.Load(), Data: p}))
	return err
}

func (s *execConn) CloseInput() error {
	_, err := s.c.api.CloseInput(s.ctx, connect.NewRequest(&fsbv1.CloseInputRequest{Name: s.name, Namespace: s.ns, Pid: s.pid.Load()}))
	return err
}

func (s *execConn) Resize(size *fsbv1.PtySize) error {
	_, err := s.c.api.ResizePty(s.ctx, connect.NewRequest(&fsbv1.ResizePtyRequest{Name: s.name, Namespace: s.ns, Pid: s.pid.Load(), Size: size}))
	return err
}

func (s *execConn) Signal(sig string) error {
	_, err := s.c.api.SignalProcess(s.ctx, connect.NewRequest(&fsbv1.SignalProcessRequest{Name: s.name, Namespace: s.ns, Pid: s.pid.Load(), Signal: sig}))
	return err
}

func (s *execConn) Close() { s.closeOnce.Do(func() { _ = s.stream.Close() }) }
