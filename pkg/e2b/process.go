package e2b

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	"github.com/fast-sandbox/fast-sandbox/pkg/ctxerr"
	processpb "github.com/fast-sandbox/fast-sandbox/pkg/gen/e2b/process"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/e2b/process/processconnect"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// envd's process service (process.Process) over the FastPathService: a
// process E2B starts is an exec of the sandbox, which fsb init runs and
// keeps a record of, pid, tag and all. Nothing is held here between
// requests, so a controller that restarts loses no process: Connect
// attaches to it again, List finds it by its tag.
//
// How envd answers, and so how this service does:
//   - Start streams a start event (the pid), the output (stdout, stderr,
//     or pty for a process in a terminal), then an end event: exit_code
//     (-1 when a signal ended it), exited (false then), status ("exit
//     status 3", "signal: killed") and error (the status, unless the
//     exit was 0). While nothing else is sent, a keepalive event goes out
//     every Keepalive-Ping-Interval seconds (the SDK asks for 50). The
//     request's deadline (the SDK's timeoutMs) is the process's too: it
//     is killed then, as envd kills it. A client that goes away leaves
//     the process running.
//     A process that does not start is InvalidArgument (its program, user
//     or directory is missing), or Unavailable when the sandbox no longer
//     runs, which the SDK reads as "sandbox is probably not running".
//   - Connect streams the same for a running process: start, output (what
//     fsb init kept while no stream was attached, then new output), end.
//     An unknown or exited process is NotFound. fsb init gives output to
//     the newest attached stream only: an older one (a Start still
//     streaming) gets no more output, but still its end (afterTakeover).
//   - SendInput, StreamInput, CloseStdin, SendSignal and Update name the
//     process by pid or tag: NotFound when there is no such running
//     process, which is what the SDK's kill reads as "not found" (false).
//   - List names the running processes (cmd and args; their envs and cwd
//     are not kept, so not listed).

// NewProcessHandler returns the path and handler of envd's process.Process
// service, driving api. Every request needs the sandbox in its context
// (WithSandbox); its user is UserFrom's.
func NewProcessHandler(api API, opts ...connect.HandlerOption) (string, http.Handler) {
	return processconnect.NewProcessHandler(&processService{api: api}, opts...)
}

// processService implements processconnect.ProcessHandler.
type processService struct {
	processconnect.UnimplementedProcessHandler
	api API
}

const (
	// procKeepaliveHeader is the header the SDK names its keep-alive
	// interval in, in seconds.
	procKeepaliveHeader = "Keepalive-Ping-Interval"
	// procDefaultKeepalive is the interval without that header, envd's.
	procDefaultKeepalive = 90 * time.Second
)

// processSandbox returns the sandbox the router put in ctx, or
// Unauthenticated when there is none.
func processSandbox(ctx context.Context) (*Sandbox, error) {
	sb := SandboxFrom(ctx)
	if sb == nil {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("no sandbox: the request did not come through the E2B router"))
	}
	return sb, nil
}

// Start implements process.Process.Start.
func (s *processService) Start(ctx context.Context, req *connect.Request[processpb.StartRequest], stream *connect.ServerStream[processpb.StartResponse]) error {
	sb, err := processSandbox(ctx)
	if err != nil {
		return err
	}
	spec, err := processSpec(ctx, sb, UserFrom(req.Header()), req.Msg)
	if err != nil {
		return err
	}
	// Ending callCtx ends the exec's stream, which detaches: the process
	// goes on, as envd's does when its client goes.
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	in, err := s.api.Exec(callCtx, connect.NewRequest(&fsbv1.ExecRequest{Name: sb.ID, Namespace: sb.Namespace, Process: spec}))
	if err != nil {
		return processError(err)
	}
	defer in.Close()
	event := func() *fsbv1.ExecEvent { return in.Msg().GetEvent() }
	var pid uint32
	interval := keepaliveOf(req.Header())
	send := func(ev *processpb.ProcessEvent) error {
		if start := ev.GetStart(); start != nil {
			pid = start.GetPid()
		}
		return stream.Send(&processpb.StartResponse{Event: ev})
	}
	err = relayProcess(ctx, callCtx, cancel, in, event, spec.GetPty(), interval, send)
	if err != nil && pid == 0 {
		return s.startFailed(ctx, sb, err)
	}
	return s.afterTakeover(ctx, sb, int32(pid), interval, err, send)
}

// takeoverPoll is how often a stream whose process another attach took
// over asks whether the process has ended.
const takeoverPoll = time.Second

// afterTakeover ends a stream whose relay ended with err. fsb init gives
// a process's output to one attached stream, the newest: an older one
// ends Aborted when another attaches (a Connect to a process whose Start
// still streams), where envd would give both the output. The older one
// then waits for the process's end, which fsb init keeps on record, and
// sends it: the SDK's wait() on it still gets the exit, without the
// output it missed. Any other err is returned as it is.
func (s *processService) afterTakeover(ctx context.Context, sb *Sandbox, pid int32, interval time.Duration, err error, send func(*processpb.ProcessEvent) error) error {
	if connect.CodeOf(err) != connect.CodeAborted || pid == 0 {
		return err
	}
	poll := time.NewTicker(takeoverPoll)
	defer poll.Stop()
	quiet := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctxerr.Ended(ctx)
		case <-poll.C:
		}
		resp, lerr := s.api.ListProcesses(ctx, connect.NewRequest(&fsbv1.ListProcessesRequest{Name: sb.ID, Namespace: sb.Namespace}))
		if lerr != nil {
			return sandboxError(sb, processError(lerr))
		}
		var p *fsbv1.ProcessInfo
		for _, info := range resp.Msg.GetProcesses() {
			if info.GetPid() == pid {
				p = info
			}
		}
		switch {
		case p == nil:
			// Its record is gone: its end is not known.
			return err
		case !p.GetRunning():
			return send(&processpb.ProcessEvent{Event: &processpb.ProcessEvent_End{End: endEvent(p.GetExit())}})
		case time.Since(quiet) >= interval:
			if serr := send(&processpb.ProcessEvent{Event: &processpb.ProcessEvent_Keepalive{Keepalive: &processpb.ProcessEvent_KeepAlive{}}}); serr != nil {
				return serr
			}
			quiet = time.Now()
		}
	}
}

// startFailed answers a process that did not start, err, as envd does: a
// sandbox that no longer runs is Unavailable (the SDK's "sandbox is
// probably not running anymore"); a process the sandbox cannot start (its
// program, its user or its directory is missing) is InvalidArgument.
func (s *processService) startFailed(ctx context.Context, sb *Sandbox, err error) error {
	switch connect.CodeOf(err) {
	case connect.CodeNotFound, connect.CodeFailedPrecondition, connect.CodePermissionDenied:
	default:
		return err
	}
	msg := procMessage(err)
	resp, gerr := s.api.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: sb.ID, Namespace: sb.Namespace}))
	switch {
	case connect.CodeOf(gerr) == connect.CodeNotFound:
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("sandbox %s is gone: %s", sb.ID, msg))
	case gerr == nil && resp.Msg.GetSandbox().GetStatus().GetPhase() != fsbv1.Phase_PHASE_RUNNING:
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("sandbox %s is not running: %s", sb.ID, msg))
	case gerr != nil:
		return err
	}
	return connect.NewError(connect.CodeInvalidArgument, errors.New(msg))
}

// processSpec turns a Start request into the exec's process: the user's,
// in the user's home unless the request says where, with the sandbox's
// envs under the request's, and the request's deadline as its own.
func processSpec(ctx context.Context, sb *Sandbox, user string, msg *processpb.StartRequest) (*fsbv1.ProcessSpec, error) {
	cfg := msg.GetProcess()
	if cfg.GetCmd() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("process.cmd is required: the program to run"))
	}
	if err := initlink.CheckTag(msg.GetTag()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	dir, err := workingDir(user, cfg.GetCwd())
	if err != nil {
		return nil, err
	}
	envs := map[string]string{"USER": user, "LOGNAME": user}
	if home := knownHome(user); home != "" {
		envs["HOME"] = home
	}
	for k, v := range sb.EnvVars {
		envs[k] = v
	}
	for k, v := range cfg.GetEnvs() {
		envs[k] = v
	}
	spec := &fsbv1.ProcessSpec{
		Command:    append([]string{cfg.GetCmd()}, cfg.GetArgs()...),
		Envs:       envs,
		WorkingDir: dir,
		User:       user,
		// envd before 0.3.0 always kept stdin open; the SDK always says.
		Stdin: msg.Stdin == nil || msg.GetStdin(),
		Tag:   msg.GetTag(),
	}
	if msg.Pty != nil {
		spec.Pty = true
		if sz := msg.GetPty().GetSize(); sz.GetRows() > 0 || sz.GetCols() > 0 {
			spec.PtySize = &fsbv1.PtySize{Rows: sz.GetRows(), Cols: sz.GetCols()}
		}
	}
	if deadline, ok := ctx.Deadline(); ok {
		// Whole seconds, rounded up: the process never dies before
		// its client gives up on it.
		secs := math.Ceil(time.Until(deadline).Seconds())
		spec.TimeoutSeconds = int32(min(max(secs, 1), math.MaxInt32))
	}
	return spec, nil
}

// workingDir resolves a request's cwd for user as envd does: empty is the
// user's home; "~" and a relative path are in it. Empty for a user whose
// home is not known here means the sandbox's working directory.
func workingDir(user, cwd string) (string, error) {
	home := knownHome(user)
	switch {
	case path.IsAbs(cwd):
		return path.Clean(cwd), nil
	case cwd == "":
		return home, nil
	case home == "":
		return "", connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("cwd %q: relative, and the home of user %q is not known here: give an absolute path", cwd, user))
	case cwd == "~":
		return home, nil
	default:
		return path.Join(home, strings.TrimPrefix(cwd, "~/")), nil
	}
}

// keepaliveOf is the keep-alive interval a request asks for.
func keepaliveOf(h http.Header) time.Duration {
	if n, err := strconv.Atoi(h.Get(procKeepaliveHeader)); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return procDefaultKeepalive
}

// execStream is the stream of an Exec or an AttachProcess.
type execStream interface {
	Receive() bool
	Err() error
}

// relayProcess sends in's events (event returns the one Receive read) to
// send as envd's, one at a time, with a keepalive event whenever nothing
// was sent for interval, until the process's end (then nil) or in's
// error. callCtx is in's context, which cancel ends, and with it Receive.
func relayProcess(ctx, callCtx context.Context, cancel context.CancelFunc, in execStream, event func() *fsbv1.ExecEvent, pty bool, interval time.Duration, send func(*processpb.ProcessEvent) error) error {
	// One goroutine reads in, handing each event over unbuffered: the
	// relay still reads no faster than send writes (back-pressure), and
	// the keepalive timer runs beside the read.
	events := make(chan *fsbv1.ExecEvent)
	ended := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for in.Receive() {
			select {
			case events <- event():
			case <-callCtx.Done():
				ended <- callCtx.Err()
				return
			}
		}
		ended <- in.Err()
	}()
	defer func() {
		cancel()
		<-done
	}()
	keepalive := time.NewTimer(interval)
	defer keepalive.Stop()
	for {
		var out *processpb.ProcessEvent
		select {
		case <-ctx.Done():
			return ctxerr.Ended(ctx)
		case err := <-ended:
			if err == nil {
				return connect.NewError(connect.CodeInternal, errors.New("the process's stream ended before its end"))
			}
			return processError(err)
		case <-keepalive.C:
			out = &processpb.ProcessEvent{Event: &processpb.ProcessEvent_Keepalive{Keepalive: &processpb.ProcessEvent_KeepAlive{}}}
		case ev := <-events:
			out = processEvent(ev, pty)
			if out == nil {
				continue
			}
		}
		if err := send(out); err != nil {
			return err
		}
		if out.GetEnd() != nil {
			return nil
		}
		keepalive.Reset(interval)
	}
}

// processEvent is ev as envd sends it: nil for an event it has no word
// for.
func processEvent(ev *fsbv1.ExecEvent, pty bool) *processpb.ProcessEvent {
	var data *processpb.ProcessEvent_DataEvent
	switch e := ev.GetEvent().(type) {
	case *fsbv1.ExecEvent_Started:
		return &processpb.ProcessEvent{Event: &processpb.ProcessEvent_Start{Start: &processpb.ProcessEvent_StartEvent{Pid: uint32(e.Started.GetPid())}}}
	case *fsbv1.ExecEvent_Stdout:
		if pty {
			// A terminal's output comes as stdout.
			data = &processpb.ProcessEvent_DataEvent{Output: &processpb.ProcessEvent_DataEvent_Pty{Pty: e.Stdout}}
		} else {
			data = &processpb.ProcessEvent_DataEvent{Output: &processpb.ProcessEvent_DataEvent_Stdout{Stdout: e.Stdout}}
		}
	case *fsbv1.ExecEvent_Stderr:
		data = &processpb.ProcessEvent_DataEvent{Output: &processpb.ProcessEvent_DataEvent_Stderr{Stderr: e.Stderr}}
	case *fsbv1.ExecEvent_Exit:
		return &processpb.ProcessEvent{Event: &processpb.ProcessEvent_End{End: endEvent(e.Exit)}}
	default:
		return nil
	}
	return &processpb.ProcessEvent{Event: &processpb.ProcessEvent_Data{Data: data}}
}

// endEvent describes an exit as envd does, in the words of Go's
// os.ProcessState: a signal's end is exit code -1, not exited, status
// "signal: killed"; an exit's is its code, exited, "exit status 3". The
// error is the status of a process that failed, absent for exit 0: the
// SDK throws CommandExitError on any exit code but 0.
func endEvent(exit *fsbv1.ProcessExit) *processpb.ProcessEvent_EndEvent {
	end := &processpb.ProcessEvent_EndEvent{ExitCode: exit.GetExitCode(), Exited: true}
	if sig := exit.GetSignal(); sig != "" {
		end.ExitCode, end.Exited = -1, false
		name := sig
		if n := unix.SignalNum("SIG" + sig); n != 0 {
			name = n.String() // "killed", "terminated"
		}
		end.Status = "signal: " + name
	} else {
		end.Status = "exit status " + strconv.Itoa(int(exit.GetExitCode()))
	}
	if end.ExitCode != 0 {
		end.Error = &end.Status
	}
	return end
}

// processError is err, from the FastPathService, as this service answers
// it: its code and message (envd's codes are the same words); a failure
// to reach the controller is Unavailable.
func processError(err error) error {
	if ce := new(connect.Error); errors.As(err, &ce) {
		if connect.IsWireError(ce) {
			return connect.NewError(ce.Code(), errors.New(ce.Message()))
		}
		return ce
	}
	if ce, ok := ctxerr.Of(err); ok {
		return ce
	}
	return connect.NewError(connect.CodeUnavailable, err)
}

// find returns the running process sel names, NotFound when there is
// none: a tag names the newest running process that carries it.
func (s *processService) find(ctx context.Context, sb *Sandbox, sel *processpb.ProcessSelector) (*fsbv1.ProcessInfo, error) {
	if err := checkSelector(sel); err != nil {
		return nil, err
	}
	resp, err := s.api.ListProcesses(ctx, connect.NewRequest(&fsbv1.ListProcessesRequest{Name: sb.ID, Namespace: sb.Namespace}))
	if err != nil {
		return nil, sandboxError(sb, processError(err))
	}
	var found *fsbv1.ProcessInfo
	for _, p := range resp.Msg.GetProcesses() {
		if !p.GetRunning() {
			continue
		}
		switch v := sel.GetSelector().(type) {
		case *processpb.ProcessSelector_Pid:
			if uint32(p.GetPid()) == v.Pid {
				found = p
			}
		case *processpb.ProcessSelector_Tag:
			if p.GetTag() == v.Tag {
				found = p // listed oldest first: the last is the newest
			}
		}
	}
	if found == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process %s not found", describeSelector(sel)))
	}
	return found, nil
}

// sandboxError is err, an answer about the sandbox as a whole (a listing
// of its processes), as envd's proxy gives it: a sandbox that is gone or
// does not run is Unavailable.
func sandboxError(sb *Sandbox, err error) error {
	switch connect.CodeOf(err) {
	case connect.CodeNotFound, connect.CodeFailedPrecondition:
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("sandbox %s: %s", sb.ID, procMessage(err)))
	}
	return err
}

// procMessage is err's message without its code.
func procMessage(err error) string {
	if ce := new(connect.Error); errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// checkSelector checks that sel names a process.
func checkSelector(sel *processpb.ProcessSelector) error {
	switch v := sel.GetSelector().(type) {
	case *processpb.ProcessSelector_Pid:
		if v.Pid == 0 || v.Pid > math.MaxInt32 {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("process.pid %d: want a process's pid", v.Pid))
		}
	case *processpb.ProcessSelector_Tag:
		if v.Tag == "" {
			return connect.NewError(connect.CodeInvalidArgument, errors.New("process.tag is empty: name a process's tag"))
		}
	default:
		return connect.NewError(connect.CodeInvalidArgument, errors.New("process: select the process by pid or tag"))
	}
	return nil
}

func describeSelector(sel *processpb.ProcessSelector) string {
	if tag, ok := sel.GetSelector().(*processpb.ProcessSelector_Tag); ok {
		return fmt.Sprintf("with tag %q", tag.Tag)
	}
	return fmt.Sprintf("with pid %d", sel.GetPid())
}

// pidOf returns the pid sel names: a pid as it is (the call it is for
// says whether there is such a process), a tag's through find.
func (s *processService) pidOf(ctx context.Context, sb *Sandbox, sel *processpb.ProcessSelector) (int32, error) {
	if err := checkSelector(sel); err != nil {
		return 0, err
	}
	if tag := sel.GetTag(); tag != "" {
		p, err := s.find(ctx, sb, sel)
		if err != nil {
			return 0, err
		}
		return p.GetPid(), nil
	}
	return int32(sel.GetPid()), nil
}

// control makes a call about the process pid, and answers its error as
// envd would: a process that has exited is one it no longer knows, so a
// failed precondition of a process that no longer runs is NotFound.
func (s *processService) control(ctx context.Context, sb *Sandbox, pid int32, call func() error) error {
	err := call()
	if err == nil {
		return nil
	}
	err = processError(err)
	if connect.CodeOf(err) == connect.CodeFailedPrecondition {
		sel := &processpb.ProcessSelector{Selector: &processpb.ProcessSelector_Pid{Pid: uint32(pid)}}
		if _, ferr := s.find(ctx, sb, sel); connect.CodeOf(ferr) == connect.CodeNotFound {
			return connect.NewError(connect.CodeNotFound, fmt.Errorf("process with pid %d not found: it has exited", pid))
		}
	}
	return err
}

// Connect implements process.Process.Connect.
func (s *processService) Connect(ctx context.Context, req *connect.Request[processpb.ConnectRequest], stream *connect.ServerStream[processpb.ConnectResponse]) error {
	sb, err := processSandbox(ctx)
	if err != nil {
		return err
	}
	// Listing first finds a tag's process, refuses an exited one (envd
	// knows none), and says whether its output is a terminal's.
	p, err := s.find(ctx, sb, req.Msg.GetProcess())
	if err != nil {
		return err
	}
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	in, err := s.api.AttachProcess(callCtx, connect.NewRequest(&fsbv1.AttachProcessRequest{Name: sb.ID, Namespace: sb.Namespace, Pid: p.GetPid()}))
	if err != nil {
		return processError(err)
	}
	defer in.Close()
	event := func() *fsbv1.ExecEvent { return in.Msg().GetEvent() }
	interval := keepaliveOf(req.Header())
	send := func(ev *processpb.ProcessEvent) error {
		return stream.Send(&processpb.ConnectResponse{Event: ev})
	}
	err = relayProcess(ctx, callCtx, cancel, in, event, p.GetPty(), interval, send)
	return s.afterTakeover(ctx, sb, p.GetPid(), interval, err, send)
}

// List implements process.Process.List.
func (s *processService) List(ctx context.Context, req *connect.Request[processpb.ListRequest]) (*connect.Response[processpb.ListResponse], error) {
	sb, err := processSandbox(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := s.api.ListProcesses(ctx, connect.NewRequest(&fsbv1.ListProcessesRequest{Name: sb.ID, Namespace: sb.Namespace}))
	if err != nil {
		return nil, sandboxError(sb, processError(err))
	}
	out := &processpb.ListResponse{Processes: []*processpb.ProcessInfo{}}
	for _, p := range resp.Msg.GetProcesses() {
		if !p.GetRunning() {
			continue
		}
		info := &processpb.ProcessInfo{Pid: uint32(p.GetPid()), Config: &processpb.ProcessConfig{}}
		if cmd := p.GetCommand(); len(cmd) > 0 {
			info.Config.Cmd, info.Config.Args = cmd[0], cmd[1:]
		}
		if tag := p.GetTag(); tag != "" {
			info.Tag = &tag
		}
		out.Processes = append(out.Processes, info)
	}
	return connect.NewResponse(out), nil
}

// SendInput implements process.Process.SendInput.
func (s *processService) SendInput(ctx context.Context, req *connect.Request[processpb.SendInputRequest]) (*connect.Response[processpb.SendInputResponse], error) {
	sb, err := processSandbox(ctx)
	if err != nil {
		return nil, err
	}
	pid, err := s.pidOf(ctx, sb, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	if err := s.input(ctx, sb, pid, req.Msg.GetInput()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&processpb.SendInputResponse{}), nil
}

// input writes in to the process pid: stdin and a terminal's input are
// the same to fsb init, the process's input.
func (s *processService) input(ctx context.Context, sb *Sandbox, pid int32, in *processpb.ProcessInput) error {
	var data []byte
	switch v := in.GetInput().(type) {
	case *processpb.ProcessInput_Stdin:
		data = v.Stdin
	case *processpb.ProcessInput_Pty:
		data = v.Pty
	default:
		return connect.NewError(connect.CodeInvalidArgument, errors.New("input: set stdin or pty"))
	}
	return s.control(ctx, sb, pid, func() error {
		_, err := s.api.SendInput(ctx, connect.NewRequest(&fsbv1.SendInputRequest{Name: sb.ID, Namespace: sb.Namespace, Pid: pid, Data: data}))
		return err
	})
}

// StreamInput implements process.Process.StreamInput: the first message
// selects the process, the data ones are its input, in order; keepalives
// are read and dropped.
func (s *processService) StreamInput(ctx context.Context, stream *connect.ClientStream[processpb.StreamInputRequest]) (*connect.Response[processpb.StreamInputResponse], error) {
	sb, err := processSandbox(ctx)
	if err != nil {
		return nil, err
	}
	var pid int32
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().(type) {
		case *processpb.StreamInputRequest_Start:
			if pid != 0 {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("StreamInput: start only once, first"))
			}
			if pid, err = s.pidOf(ctx, sb, ev.Start.GetProcess()); err != nil {
				return nil, err
			}
		case *processpb.StreamInputRequest_Data:
			if pid == 0 {
				return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("StreamInput: data before start: the first message selects the process"))
			}
			if err := s.input(ctx, sb, pid, ev.Data.GetInput()); err != nil {
				return nil, err
			}
		case *processpb.StreamInputRequest_Keepalive:
		default:
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("StreamInput: an empty message: set start, data or keepalive"))
		}
	}
	if err := stream.Err(); err != nil && !errors.Is(err, io.EOF) {
		return nil, processError(err)
	}
	return connect.NewResponse(&processpb.StreamInputResponse{}), nil
}

// CloseStdin implements process.Process.CloseStdin. A terminal's input is
// not closed but gets ^D, as a user would type it.
func (s *processService) CloseStdin(ctx context.Context, req *connect.Request[processpb.CloseStdinRequest]) (*connect.Response[processpb.CloseStdinResponse], error) {
	sb, err := processSandbox(ctx)
	if err != nil {
		return nil, err
	}
	pid, err := s.pidOf(ctx, sb, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	err = s.control(ctx, sb, pid, func() error {
		_, err := s.api.CloseInput(ctx, connect.NewRequest(&fsbv1.CloseInputRequest{Name: sb.ID, Namespace: sb.Namespace, Pid: pid}))
		return err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&processpb.CloseStdinResponse{}), nil
}

// SendSignal implements process.Process.SendSignal.
func (s *processService) SendSignal(ctx context.Context, req *connect.Request[processpb.SendSignalRequest]) (*connect.Response[processpb.SendSignalResponse], error) {
	sb, err := processSandbox(ctx)
	if err != nil {
		return nil, err
	}
	var sig string
	switch req.Msg.GetSignal() {
	case processpb.Signal_SIGNAL_SIGKILL:
		sig = "KILL"
	case processpb.Signal_SIGNAL_SIGTERM:
		sig = "TERM"
	default:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("signal %v: want SIGNAL_SIGTERM or SIGNAL_SIGKILL", req.Msg.GetSignal()))
	}
	pid, err := s.pidOf(ctx, sb, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	err = s.control(ctx, sb, pid, func() error {
		_, err := s.api.SignalProcess(ctx, connect.NewRequest(&fsbv1.SignalProcessRequest{Name: sb.ID, Namespace: sb.Namespace, Pid: pid, Signal: sig}))
		return err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&processpb.SendSignalResponse{}), nil
}

// Update implements process.Process.Update: a terminal's resize. Without
// a pty there is nothing to change, once the process is found.
func (s *processService) Update(ctx context.Context, req *connect.Request[processpb.UpdateRequest]) (*connect.Response[processpb.UpdateResponse], error) {
	sb, err := processSandbox(ctx)
	if err != nil {
		return nil, err
	}
	if req.Msg.Pty == nil {
		if _, err := s.find(ctx, sb, req.Msg.GetProcess()); err != nil {
			return nil, err
		}
		return connect.NewResponse(&processpb.UpdateResponse{}), nil
	}
	pid, err := s.pidOf(ctx, sb, req.Msg.GetProcess())
	if err != nil {
		return nil, err
	}
	sz := req.Msg.GetPty().GetSize()
	err = s.control(ctx, sb, pid, func() error {
		_, err := s.api.ResizePty(ctx, connect.NewRequest(&fsbv1.ResizePtyRequest{Name: sb.ID, Namespace: sb.Namespace, Pid: pid,
			Size: &fsbv1.PtySize{Rows: sz.GetRows(), Cols: sz.GetCols()}}))
		return err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&processpb.UpdateResponse{}), nil
}
