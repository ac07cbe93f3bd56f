package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fast-sandbox/fast-sandbox/pkg/ctxerr"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// linkOf returns the link to the init of sandbox id's current revision
// (runningOf). One that runs without init is FailedPrecondition.
func (a *Agent) linkOf(id string) (*initlink.Link, error) {
	running, err := a.runningOf(id)
	if err != nil {
		return nil, err
	}
	name := running.Namespace + "/" + running.Name
	if running.Spec.GetNoInit() {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("sandbox %s runs without fsb init (--no-init): exec and files are unavailable", name))
	}
	l, ok := a.cfg.Runtime.Link(running.ContainerID)
	if !ok {
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("sandbox %s has no open link to its fsb init on agent %s", name, a.cfg.AgentID))
	}
	return l, nil
}

// runningOf returns sandbox id's current revision: its newest running
// one. A sandbox this agent does not hold is NotFound; one that does not
// run, FailedPrecondition.
func (a *Agent) runningOf(id string) (runtime.Info, error) {
	if err := validateID(id, 0); err != nil {
		return runtime.Info{}, connect.NewError(connect.CodeInvalidArgument, err)
	}
	infos, _ := a.cfg.Runtime.Sandboxes()
	var newest, running runtime.Info
	for _, info := range infos {
		if info.ID != id {
			continue
		}
		if info.Revision > newest.Revision {
			newest = info
		}
		if info.Phase == runtime.PhaseRunning && info.Revision > running.Revision {
			running = info
		}
	}
	if newest.ContainerID == "" {
		return runtime.Info{}, connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox %s is not on agent %s", id, a.cfg.AgentID))
	}
	if running.ContainerID == "" {
		return runtime.Info{}, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("sandbox %s/%s is not running: it is %s", newest.Namespace, newest.Name, phaseWords(newest)))
	}
	return running, nil
}

// phaseWords says a sandbox's phase as a user reads it.
func phaseWords(info runtime.Info) string {
	switch info.Phase {
	case runtime.PhaseCreated:
		return "pending"
	case runtime.PhaseExited:
		if info.Reason == runtime.ReasonLost {
			return "lost"
		}
		return fmt.Sprintf("exited (code %d)", info.ExitCode)
	}
	return "running"
}

// linkError turns what a call to init failed with into the API's error.
func linkError(err error) error {
	var ie *initlink.Error
	if errors.As(err, &ie) {
		return connect.NewError(initCode(ie.Code), errors.New(ie.Message))
	}
	if ce, ok := ctxerr.Of(err); ok {
		return ce
	}
	switch {
	case errors.Is(err, initlink.ErrProtocol):
		return connect.NewError(connect.CodeInternal, err)
	case errors.Is(err, initlink.ErrFrameTooLarge):
		// A request init's frame cannot hold (JSON grows some bytes
		// sixfold): the caller's to shorten, not a link that failed.
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("the request is too large to pass to fsb init: %w", err))
	}
	// No answer in time, or a connection that broke: init may be busy or
	// gone with its sandbox.
	return connect.NewError(connect.CodeUnavailable, err)
}

// initCode maps init's error codes to the API's.
func initCode(code string) connect.Code {
	switch code {
	case initlink.CodeNotFound:
		return connect.CodeNotFound
	case initlink.CodeInvalidArgument:
		return connect.CodeInvalidArgument
	case initlink.CodeAlreadyExists:
		return connect.CodeAlreadyExists
	case initlink.CodePermissionDenied:
		return connect.CodePermissionDenied
	case initlink.CodeResourceExhausted:
		return connect.CodeResourceExhausted
	case initlink.CodeFailedPrecondition, initlink.CodeSandboxExited:
		return connect.CodeFailedPrecondition
	case initlink.CodeDetached:
		return connect.CodeAborted
	}
	return connect.CodeInternal
}

// toProcess checks a ProcessSpec and turns it into init's Process.
func toProcess(p *fsbv1.ProcessSpec) (*initlink.Process, error) {
	if len(p.GetCommand()) == 0 || p.GetCommand()[0] == "" {
		return nil, errors.New("process.command: want the program to run and its arguments")
	}
	if d := p.GetWorkingDir(); d != "" && !filepath.IsAbs(d) {
		return nil, fmt.Errorf("process.working_dir %q: want an absolute path", d)
	}
	if p.GetTimeoutSeconds() < 0 {
		return nil, fmt.Errorf("process.timeout_seconds %d: want 0 (no limit) or more", p.GetTimeoutSeconds())
	}
	rows, cols, err := ptySize(p.GetPtySize())
	if err != nil {
		return nil, fmt.Errorf("process.%w", err)
	}
	if err := initlink.CheckTag(p.GetTag()); err != nil {
		return nil, fmt.Errorf("process.%w", err)
	}
	out := &initlink.Process{
		Args:          p.GetCommand(),
		Dir:           p.GetWorkingDir(),
		User:          p.GetUser(),
		PTY:           p.GetPty(),
		Rows:          rows,
		Cols:          cols,
		Stdin:         p.GetStdin(),
		TimeoutMillis: int64(p.GetTimeoutSeconds()) * 1000,
		Tag:           p.GetTag(),
	}
	for _, k := range slices.Sorted(maps.Keys(p.GetEnvs())) {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(p.GetEnvs()[k], 0) {
			return nil, fmt.Errorf("process.envs %q: want a name without '=' or NUL", k)
		}
		out.Env = append(out.Env, k+"="+p.GetEnvs()[k])
	}
	for _, arg := range out.Args {
		if strings.ContainsRune(arg, 0) {
			return nil, errors.New("process.command: an argument holds a NUL byte")
		}
	}
	return out, nil
}

// ptySize checks a terminal size: unset is 0x0 (init's default).
func ptySize(s *fsbv1.PtySize) (uint16, uint16, error) {
	if s == nil {
		return 0, 0, nil
	}
	if s.GetRows() > 0xffff || s.GetCols() > 0xffff {
		return 0, 0, fmt.Errorf("pty_size %dx%d: want at most 65535x65535", s.GetRows(), s.GetCols())
	}
	return uint16(s.GetRows()), uint16(s.GetCols()), nil
}

// Exec implements AgentService.Exec.
func (a *Agent) Exec(ctx context.Context, req *connect.Request[fsbv1.AgentServiceExecRequest], stream *connect.ServerStream[fsbv1.AgentServiceExecResponse]) error {
	proc, err := toProcess(req.Msg.GetProcess())
	if err != nil {
		a.metrics.execs.WithLabelValues("invalid").Inc()
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	l, err := a.linkOf(req.Msg.GetSandboxId())
	if err != nil {
		a.metrics.execs.WithLabelValues("refused").Inc()
		return err
	}
	s, err := l.Open(ctx, initlink.Request{Op: initlink.OpExec, Process: proc})
	if err != nil {
		a.metrics.execs.WithLabelValues("error").Inc()
		return linkError(err)
	}
	return a.relay(ctx, s, true, func(ev *fsbv1.ExecEvent) error {
		return stream.Send(&fsbv1.AgentServiceExecResponse{Event: ev})
	})
}

// AttachProcess implements AgentService.AttachProcess.
func (a *Agent) AttachProcess(ctx context.Context, req *connect.Request[fsbv1.AgentServiceAttachProcessRequest], stream *connect.ServerStream[fsbv1.AgentServiceAttachProcessResponse]) error {
	if req.Msg.GetPid() <= 0 {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("pid %d: want a process ID", req.Msg.GetPid()))
	}
	l, err := a.linkOf(req.Msg.GetSandboxId())
	if err != nil {
		return err
	}
	s, err := l.Open(ctx, initlink.Request{Op: initlink.OpAttach, PID: int(req.Msg.GetPid())})
	if err != nil {
		return linkError(err)
	}
	return a.relay(ctx, s, false, func(ev *fsbv1.ExecEvent) error {
		return stream.Send(&fsbv1.AgentServiceAttachProcessResponse{Event: ev})
	})
}

// relay passes a process stream from init to send: started, output, exit.
// It closes s when done, which detaches from the process when the client
// went away first. exec says the stream is a new process's, counted in the
// metrics.
func (a *Agent) relay(ctx context.Context, s *initlink.Stream, exec bool, send func(*fsbv1.ExecEvent) error) error {
	defer s.Close()
	count := func(result string) {
		if exec {
			a.metrics.execs.WithLabelValues(result).Inc()
		}
	}
	var started initlink.Started
	if err := s.RecvJSON(initlink.FrameStarted, &started); err != nil {
		count("error")
		return linkError(err)
	}
	count("started")
	if err := send(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Started{Started: &fsbv1.ProcessStarted{Pid: int32(started.PID)}}}); err != nil {
		return err
	}
	for {
		// A process may be silent for as long as it likes.
		t, p, err := s.Recv(0)
		if err != nil {
			if ctx.Err() != nil {
				return nil // the client detached
			}
			return linkError(err)
		}
		var ev *fsbv1.ExecEvent
		switch t {
		case initlink.FrameStdout:
			ev = &fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Stdout{Stdout: p}}
		case initlink.FrameStderr:
			ev = &fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Stderr{Stderr: p}}
		case initlink.FrameExit:
			var exit initlink.Exit
			if err := initlink.Decode(p, &exit); err != nil {
				return linkError(fmt.Errorf("%w: %w", initlink.ErrProtocol, err))
			}
			return send(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Exit{Exit: toExit(&exit)}})
		default:
			return linkError(fmt.Errorf("%w: a frame of type %d in a process stream", initlink.ErrProtocol, t))
		}
		a.metrics.bytes.WithLabelValues("exec_output").Add(float64(len(p)))
		if err := send(ev); err != nil {
			return err
		}
	}
}

func toExit(e *initlink.Exit) *fsbv1.ProcessExit {
	return &fsbv1.ProcessExit{ExitCode: int32(e.Code), Signal: e.Signal, TimedOut: e.TimedOut}
}

// call sends a unary request to the init of sandbox id.
func (a *Agent) call(ctx context.Context, id string, req initlink.Request) (initlink.Response, error) {
	l, err := a.linkOf(id)
	if err != nil {
		return initlink.Response{}, err
	}
	resp, err := l.Call(ctx, req)
	if err != nil {
		return initlink.Response{}, linkError(err)
	}
	return resp, nil
}

func checkPID(pid int32) error {
	if pid <= 0 {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("pid %d: want a process ID", pid))
	}
	return nil
}

// SendInput implements AgentService.SendInput.
func (a *Agent) SendInput(ctx context.Context, req *connect.Request[fsbv1.AgentServiceSendInputRequest]) (*connect.Response[fsbv1.AgentServiceSendInputResponse], error) {
	if err := checkPID(req.Msg.GetPid()); err != nil {
		return nil, err
	}
	// One frame of init's request carries the data: JSON grows bytes by a
	// third (base64).
	if n := len(req.Msg.GetData()); n > maxInput {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("data of %d bytes: send at most %d at a time", n, maxInput))
	}
	if _, err := a.call(ctx, req.Msg.GetSandboxId(), initlink.Request{Op: initlink.OpInput, PID: int(req.Msg.GetPid()), Data: req.Msg.GetData()}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.AgentServiceSendInputResponse{}), nil
}

// maxInput bounds one SendInput's data so that init's request fits a frame.
const maxInput = 512 << 10

// CloseInput implements AgentService.CloseInput.
func (a *Agent) CloseInput(ctx context.Context, req *connect.Request[fsbv1.AgentServiceCloseInputRequest]) (*connect.Response[fsbv1.AgentServiceCloseInputResponse], error) {
	if err := checkPID(req.Msg.GetPid()); err != nil {
		return nil, err
	}
	if _, err := a.call(ctx, req.Msg.GetSandboxId(), initlink.Request{Op: initlink.OpCloseInput, PID: int(req.Msg.GetPid())}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.AgentServiceCloseInputResponse{}), nil
}

// SignalProcess implements AgentService.SignalProcess.
func (a *Agent) SignalProcess(ctx context.Context, req *connect.Request[fsbv1.AgentServiceSignalProcessRequest]) (*connect.Response[fsbv1.AgentServiceSignalProcessResponse], error) {
	if err := checkPID(req.Msg.GetPid()); err != nil {
		return nil, err
	}
	sig, err := parseSignal(req.Msg.GetSignal())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if _, err := a.call(ctx, req.Msg.GetSandboxId(), initlink.Request{Op: initlink.OpSignal, PID: int(req.Msg.GetPid()), Signal: sig}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.AgentServiceSignalProcessResponse{}), nil
}

// parseSignal reads a signal name ("TERM", "SIGKILL", any case) or number.
func parseSignal(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 64 {
			return 0, fmt.Errorf("signal %d: want 1 to 64", n)
		}
		return n, nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if n := unix.SignalNum(name); n != 0 {
		return int(n), nil
	}
	return 0, fmt.Errorf("signal %q: want a name such as TERM or KILL, or a number", s)
}

// ResizePty implements AgentService.ResizePty.
func (a *Agent) ResizePty(ctx context.Context, req *connect.Request[fsbv1.AgentServiceResizePtyRequest]) (*connect.Response[fsbv1.AgentServiceResizePtyResponse], error) {
	if err := checkPID(req.Msg.GetPid()); err != nil {
		return nil, err
	}
	rows, cols, err := ptySize(req.Msg.GetSize())
	if err == nil && (rows == 0 || cols == 0) {
		err = fmt.Errorf("size %dx%d: want rows and cols of 1 or more", rows, cols)
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if _, err := a.call(ctx, req.Msg.GetSandboxId(), initlink.Request{Op: initlink.OpResize, PID: int(req.Msg.GetPid()), Rows: rows, Cols: cols}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.AgentServiceResizePtyResponse{}), nil
}

// ListProcesses implements AgentService.ListProcesses.
func (a *Agent) ListProcesses(ctx context.Context, req *connect.Request[fsbv1.AgentServiceListProcessesRequest]) (*connect.Response[fsbv1.AgentServiceListProcessesResponse], error) {
	resp, err := a.call(ctx, req.Msg.GetSandboxId(), initlink.Request{Op: initlink.OpList})
	if err != nil {
		return nil, err
	}
	if len(resp.Processes) > initlink.MaxProcesses {
		return nil, linkError(fmt.Errorf("%w: %d processes listed, at most %d", initlink.ErrProtocol, len(resp.Processes), initlink.MaxProcesses))
	}
	out := &fsbv1.AgentServiceListProcessesResponse{}
	for _, p := range resp.Processes {
		info := &fsbv1.ProcessInfo{Pid: int32(p.PID), Command: p.Args, Pty: p.PTY, Running: p.Running, Attached: p.Attached, Tag: p.Tag}
		if p.Exit != nil {
			info.Exit = toExit(p.Exit)
		}
		if p.StartUnix > 0 {
			info.StartTime = timestamppb.New(time.Unix(0, p.StartUnix))
		}
		out.Processes = append(out.Processes, info)
	}
	return connect.NewResponse(out), nil
}
