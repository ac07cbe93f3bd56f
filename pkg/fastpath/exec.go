package fastpath

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/agentlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/ctxerr"
	"github.com/fast-sandbox/fast-sandbox/pkg/fault"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// Exec and the files API relay each call to the agent of the sandbox it
// names, which has the sandbox's fsb init do the work. The edge checks
// what a user can get wrong (names, paths, sizes) and which sandbox is
// meant; the agent's answers, codes and words, pass on as they are. A
// stream is relayed one message at a time, never buffered: a client that
// reads slowly slows the agent, which slows init, which stops reading the
// process's output (back-pressure all the way).

// Limits of a process spec, beside the sandbox spec's (v1alpha1).
const (
	// maxUserBytes bounds process.user: a name of /etc/passwd or uid[:gid].
	maxUserBytes = 256
	// maxSignalBytes bounds a signal's name or number.
	maxSignalBytes = 32
	// maxPtySide bounds a terminal's rows and columns (the kernel's
	// winsize holds 16 bits).
	maxPtySide = 1<<16 - 1
	// auditCommandBytes bounds the command an audit line shows.
	auditCommandBytes = 512
)

// target is a running sandbox an exec or file call goes to.
type target struct {
	namespace, name string
	sandboxID       string
	agentID         string
	// noInit: the sandbox runs without fsb init.
	noInit bool
}

func (t *target) String() string { return t.namespace + "/" + t.name }

// startingWait bounds how long an exec or file call waits for a sandbox
// that is starting (placed, not yet seen running) before it is refused.
const startingWait = 10 * time.Second

// startingPoll is how often a starting sandbox is looked at again.
const startingPoll = 20 * time.Millisecond

// target resolves the sandbox namespace/name (validated already) to its
// sandbox ID and agent (placed), and refuses one that runs without fsb
// init, which exec and files need.
func (s *Server) target(ctx context.Context, namespace, name string) (*target, error) {
	t, err := s.placed(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	if t.noInit {
		return nil, connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("sandbox %s/%s runs without fsb init (--no-init): exec and files are unavailable", namespace, name))
	}
	return t, nil
}

// placed resolves the sandbox namespace/name (validated already) to its
// sandbox ID and agent: NotFound when there is none, FailedPrecondition
// when it does not run. A sandbox that is starting is waited for, up to
// startingWait: a FAST create answers once the agent runs it, and the
// controller's view can lag behind that answer (it records the agent's
// "created" before its "running"), so a call made right after the create
// must not be refused for it.
func (s *Server) placed(ctx context.Context, namespace, name string) (*target, error) {
	sb := s.lookup(namespace, name)
	if sb == nil {
		return nil, notFound(namespace, name)
	}
	if starting(sb) {
		sb = s.awaitStarted(ctx, namespace, name, sb)
		if sb == nil {
			return nil, notFound(namespace, name)
		}
	}
	if sb.DeletionTimestamp != nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("sandbox %s/%s is being deleted", namespace, name))
	}
	if phase := phaseOf(sb); phase != v1alpha1.PhaseRunning {
		if phase == "" {
			phase = v1alpha1.PhasePending
		}
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("sandbox %s/%s is %s, not Running", namespace, name, phase))
	}
	agentID, id, _ := v1alpha1.Placement(sb)
	if agentID == "" || id == "" {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("sandbox %s/%s is not placed yet", namespace, name))
	}
	return &target{namespace: namespace, name: name, sandboxID: id, agentID: agentID, noInit: sb.Spec.NoInit}, nil
}

// starting reports whether sb is on its way to running: written but not
// yet observed, or placed (Bound). A Pending sandbox waits for room, which
// may take any time: it is not waited for.
func starting(sb *v1alpha1.Sandbox) bool {
	return sb.DeletionTimestamp == nil && (sb.Status.Phase == "" || sb.Status.Phase == v1alpha1.PhaseBound)
}

// awaitStarted waits, up to startingWait or the end of ctx, until the
// sandbox namespace/name is no longer starting, and returns it as it is
// then (nil once it is gone).
func (s *Server) awaitStarted(ctx context.Context, namespace, name string, sb *v1alpha1.Sandbox) *v1alpha1.Sandbox {
	waitCtx, cancel := context.WithTimeout(ctx, startingWait)
	defer cancel()
	for starting(sb) && waitCtx.Err() == nil {
		// A change of the controller's cache ends a round early; the
		// pending view of a FAST create, which lookup also reads, does
		// not signal, so a round ends after startingPoll at the latest.
		roundCtx, endRound := context.WithTimeout(waitCtx, startingPoll)
		_, _ = s.cfg.Controller.Wait(roundCtx, namespace, name, func(cached *v1alpha1.Sandbox) bool {
			return cached != nil && !starting(cached)
		})
		endRound()
		if sb = s.lookup(namespace, name); sb == nil {
			return nil
		}
	}
	return sb
}

// resolve validates a sandbox reference and resolves it (see target).
func (s *Server) resolve(ctx context.Context, namespace, name string) (*target, error) {
	namespace = or(namespace, DefaultNamespace)
	if err := validateRef(namespace, name); err != nil {
		return nil, err
	}
	return s.target(ctx, namespace, name)
}

// reach returns the client of t's agent and a context for one call to it,
// which ends with ctx or when the agent goes down; cancel ends it.
func (s *Server) reach(ctx context.Context, t *target) (fsbv1connect.AgentServiceClient, context.Context, context.CancelFunc, error) {
	client, callCtx, cancel, err := s.cfg.Agents.Reach(ctx, t.agentID)
	if err != nil {
		return nil, nil, nil, s.agentUnreachable(t.agentID, err)
	}
	return client, callCtx, cancel, nil
}

// agentError is the answer to a call to t's agent that failed with err:
// the agent's own answer as it is (its code and words), else why the agent
// was not heard. callCtx is the call's context (reach), ctx the caller's.
func (s *Server) agentError(ctx, callCtx context.Context, t *target, err error) error {
	if err == nil {
		return nil
	}
	if ce := new(connect.Error); errors.As(err, &ce) && connect.IsWireError(ce) {
		return fault.Relay(ce)
	}
	if ctx.Err() != nil {
		// The caller went away, or its deadline passed: it hears nothing
		// more.
		return ctxerr.Ended(ctx)
	}
	if callCtx != nil && errors.Is(context.Cause(callCtx), agentlink.ErrAgentDown) {
		err = fmt.Errorf("%w: it stopped answering during a call for sandbox %s", agentlink.ErrAgentDown, t)
	}
	return s.agentUnreachable(t.agentID, err)
}

// unary makes one unary call to the agent of the sandbox namespace/name,
// which must run fsb init.
func unary[Resp any](ctx context.Context, s *Server, namespace, name string, call func(context.Context, fsbv1connect.AgentServiceClient, *target) (*Resp, error)) (*Resp, error) {
	t, err := s.resolve(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return unaryTo(ctx, s, t, call)
}

// unaryTo makes one unary call to t's agent.
func unaryTo[Resp any](ctx context.Context, s *Server, t *target, call func(context.Context, fsbv1connect.AgentServiceClient, *target) (*Resp, error)) (*Resp, error) {
	client, callCtx, cancel, err := s.reach(ctx, t)
	if err != nil {
		return nil, err
	}
	defer cancel()
	resp, err := call(callCtx, client, t)
	if err != nil {
		return nil, s.agentError(ctx, callCtx, t, err)
	}
	return resp, nil
}

// validateProcess checks a process spec at the edge, saying what to fix.
func validateProcess(p *fsbv1.ProcessSpec) error {
	if p == nil || len(p.GetCommand()) == 0 {
		return invalid(errors.New("process.command is required: the program to run and its arguments"))
	}
	if n := len(p.GetCommand()); n > v1alpha1.MaxCommandEntries {
		return invalid(fmt.Errorf("process.command: %d entries, at most %d", n, v1alpha1.MaxCommandEntries))
	}
	if p.GetCommand()[0] == "" {
		return invalid(errors.New("process.command[0] is empty: name the program to run"))
	}
	total := 0
	for i, a := range p.GetCommand() {
		total += utf8.RuneCountInString(a)
		if strings.IndexByte(a, 0) >= 0 {
			return invalid(fmt.Errorf("process.command[%d]: holds a NUL byte, which no process argument can", i))
		}
	}
	if total > v1alpha1.MaxCommandChars {
		return invalid(fmt.Errorf("process.command: %d characters, at most %d", total, v1alpha1.MaxCommandChars))
	}
	if n := len(p.GetEnvs()); n > v1alpha1.MaxEnvs {
		return invalid(fmt.Errorf("process.envs: %d entries, at most %d", n, v1alpha1.MaxEnvs))
	}
	total = 0
	for k, v := range p.GetEnvs() {
		total += utf8.RuneCountInString(k) + utf8.RuneCountInString(v)
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return invalid(fmt.Errorf("process.envs: %s is not a variable name (empty, or holds '=' or NUL)", brief(k)))
		}
		if strings.IndexByte(v, 0) >= 0 {
			return invalid(fmt.Errorf("process.envs[%s]: the value holds a NUL byte, which no environment can", brief(k)))
		}
	}
	if total > v1alpha1.MaxEnvChars {
		return invalid(fmt.Errorf("process.envs: %d characters, at most %d", total, v1alpha1.MaxEnvChars))
	}
	if wd := p.GetWorkingDir(); wd != "" {
		if err := validatePath("process.working_dir", wd); err != nil {
			return err
		}
	}
	if u := p.GetUser(); len(u) > maxUserBytes || strings.IndexByte(u, 0) >= 0 {
		return invalid(fmt.Errorf("process.user %s: at most %d bytes, no NUL", brief(u), maxUserBytes))
	}
	if p.PtySize != nil {
		if err := validatePtySize("process.pty_size", p.GetPtySize()); err != nil {
			return err
		}
	}
	if p.GetTimeoutSeconds() < 0 {
		return invalid(fmt.Errorf("process.timeout_seconds %d: want 0 (no limit) or more", p.GetTimeoutSeconds()))
	}
	return nil
}

func validatePtySize(field string, sz *fsbv1.PtySize) error {
	if sz.GetRows() == 0 || sz.GetCols() == 0 || sz.GetRows() > maxPtySide || sz.GetCols() > maxPtySide {
		return invalid(fmt.Errorf("%s %dx%d: want rows and cols from 1 to %d", field, sz.GetRows(), sz.GetCols(), maxPtySide))
	}
	return nil
}

func validatePid(pid int32) error {
	if pid <= 0 {
		return invalid(fmt.Errorf("pid %d: want the process's ID, as Exec's started event gave it", pid))
	}
	return nil
}

func validateSignal(sig string) error {
	if sig == "" || len(sig) > maxSignalBytes || strings.IndexByte(sig, 0) >= 0 {
		return invalid(fmt.Errorf("signal %s: want a name (TERM, SIGKILL) or a number", brief(sig)))
	}
	return nil
}

// validatePath checks a path inside a sandbox: absolute and clean.
func validatePath(field, p string) error {
	switch {
	case p == "":
		return invalid(fmt.Errorf("%s is required: an absolute path inside the sandbox", field))
	case len(p) > v1alpha1.MaxWorkingDirBytes:
		return invalid(fmt.Errorf("%s: %d bytes, at most %d", field, len(p), v1alpha1.MaxWorkingDirBytes))
	case strings.IndexByte(p, 0) >= 0:
		return invalid(fmt.Errorf("%s: holds a NUL byte, which no path can", field))
	case !path.IsAbs(p):
		return invalid(fmt.Errorf("%s %s: want an absolute path", field, brief(p)))
	case path.Clean(p) != p:
		return invalid(fmt.Errorf("%s %s: want a clean path (%q)", field, brief(p), path.Clean(p)))
	}
	return nil
}

// brief quotes s for a message, cut short: a hostile value may be long.
func brief(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q… (%d bytes)", s[:max], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// startExec checks an exec request and resolves its sandbox.
func (s *Server) startExec(ctx context.Context, msg *fsbv1.ExecRequest) (*target, error) {
	namespace := or(msg.GetNamespace(), DefaultNamespace)
	if err := validateRef(namespace, msg.GetName()); err != nil {
		return nil, err
	}
	if err := validateProcess(msg.GetProcess()); err != nil {
		return nil, err
	}
	return s.target(ctx, namespace, msg.GetName())
}

// openExec starts a process through t's agent and waits for its first
// event, the started one, so that the exec is audited and counted once its
// outcome is known. The stream is nil when err is set.
func (s *Server) openExec(ctx, callCtx context.Context, client fsbv1connect.AgentServiceClient, t *target, p *fsbv1.ProcessSpec, rpc string) (*connect.ServerStreamForClient[fsbv1.AgentServiceExecResponse], *fsbv1.ExecEvent, error) {
	in, err := client.Exec(callCtx, connect.NewRequest(&fsbv1.AgentServiceExecRequest{SandboxId: t.sandboxID, Process: p}))
	var first *fsbv1.ExecEvent
	switch {
	case err != nil:
	case in.Receive():
		first = in.Msg().GetEvent()
	case in.Err() != nil:
		err = in.Err()
	default:
		err = connect.NewError(connect.CodeInternal, fmt.Errorf("agent %s ended the exec's stream before the process started", t.agentID))
	}
	if err != nil {
		err = s.agentError(ctx, callCtx, t, err)
		if in != nil {
			_ = in.Close()
		}
		in = nil
	}
	s.audit(ctx, rpc, t, p, first.GetStarted().GetPid(), err)
	return in, first, err
}

// audit writes the line of an exec: who, where, what, and how it went.
func (s *Server) audit(ctx context.Context, rpc string, t *target, p *fsbv1.ProcessSpec, pid int32, err error) {
	role := "none (--insecure-no-auth)"
	if r, ok := auth.RoleOf(ctx); ok {
		role = string(r)
	}
	attrs := []any{
		slog.String("rpc", rpc), slog.String("role", role), slog.String("sandbox", t.String()),
		slog.String("sandbox_id", t.sandboxID), slog.String("agent", t.agentID),
		slog.String("command", auditCommand(p.GetCommand())), slog.Bool("pty", p.GetPty()),
	}
	if u, ok := auth.UserOf(ctx); ok {
		attrs = append(attrs, slog.String("user", u.Name))
	}
	result := "started"
	if err != nil {
		result = connect.CodeOf(err).String()
		attrs = append(attrs, slog.String("err", err.Error()))
	} else {
		attrs = append(attrs, slog.Int("pid", int(pid)))
	}
	s.cfg.Metrics.execStarted(result)
	s.cfg.Logger.Info("exec", attrs...)
}

// auditCommand shows argv as a shell would quote it, cut at
// auditCommandBytes.
func auditCommand(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a != "" && !strings.ContainsAny(a, " \t\n\"'\\$`;&|<>(){}*?[]#~") {
			b.WriteString(a)
		} else {
			b.WriteString(strconv.Quote(a))
		}
		if b.Len() > auditCommandBytes {
			break
		}
	}
	if out := b.String(); len(out) > auditCommandBytes {
		n := auditCommandBytes
		for n > 0 && !utf8.RuneStart(out[n]) {
			n-- // cut between characters, not inside one
		}
		return out[:n] + fmt.Sprintf("… (%d arguments)", len(argv))
	}
	return b.String()
}

// relayEvents sends first and then every event of in to send, one at a
// time, until in ends: the agent's error, if any, is the answer.
func (s *Server) relayEvents(ctx, callCtx context.Context, t *target, in *connect.ServerStreamForClient[fsbv1.AgentServiceExecResponse], first *fsbv1.ExecEvent, send func(*fsbv1.ExecEvent) error) error {
	for ev := first; ; ev = in.Msg().GetEvent() {
		s.cfg.Metrics.moved(bytesExecOutput, len(ev.GetStdout())+len(ev.GetStderr()))
		if err := send(ev); err != nil {
			return err
		}
		if !in.Receive() {
			return s.agentError(ctx, callCtx, t, in.Err())
		}
	}
}

// Exec implements FastPathService.Exec.
func (s *Server) Exec(ctx context.Context, req *connect.Request[fsbv1.ExecRequest], stream *connect.ServerStream[fsbv1.ExecResponse]) error {
	t, err := s.startExec(ctx, req.Msg)
	if err != nil {
		return err
	}
	client, callCtx, cancel, err := s.reach(ctx, t)
	if err != nil {
		return err
	}
	// Ending the agent's stream, as the caller's going does, detaches:
	// the process goes on.
	defer cancel()
	in, first, err := s.openExec(ctx, callCtx, client, t, req.Msg.GetProcess(), "Exec")
	if err != nil {
		return err
	}
	defer in.Close()
	return s.relayEvents(ctx, callCtx, t, in, first, func(ev *fsbv1.ExecEvent) error {
		return stream.Send(&fsbv1.ExecResponse{Event: ev})
	})
}

// AttachProcess implements FastPathService.AttachProcess.
func (s *Server) AttachProcess(ctx context.Context, req *connect.Request[fsbv1.AttachProcessRequest], stream *connect.ServerStream[fsbv1.AttachProcessResponse]) error {
	if err := validatePid(req.Msg.GetPid()); err != nil {
		return err
	}
	t, err := s.resolve(ctx, req.Msg.GetNamespace(), req.Msg.GetName())
	if err != nil {
		return err
	}
	client, callCtx, cancel, err := s.reach(ctx, t)
	if err != nil {
		return err
	}
	defer cancel()
	in, err := client.AttachProcess(callCtx, connect.NewRequest(&fsbv1.AgentServiceAttachProcessRequest{SandboxId: t.sandboxID, Pid: req.Msg.GetPid()}))
	if err != nil {
		return s.agentError(ctx, callCtx, t, err)
	}
	defer in.Close()
	for in.Receive() {
		ev := in.Msg().GetEvent()
		s.cfg.Metrics.moved(bytesExecOutput, len(ev.GetStdout())+len(ev.GetStderr()))
		if err := stream.Send(&fsbv1.AttachProcessResponse{Event: ev}); err != nil {
			return err
		}
	}
	return s.agentError(ctx, callCtx, t, in.Err())
}

// ExecInteractive implements FastPathService.ExecInteractive: the first
// message starts the process; the later ones become SendInput,
// CloseInput, ResizePty and SignalProcess calls to the agent, in their
// order, once the process has started (those that come before wait).
// Input that finds the process gone is dropped: its exit is on its way.
func (s *Server) ExecInteractive(ctx context.Context, stream *connect.BidiStream[fsbv1.ExecInteractiveRequest, fsbv1.ExecInteractiveResponse]) error {
	first, err := stream.Receive()
	if errors.Is(err, io.EOF) {
		return invalid(errors.New("ExecInteractive: the stream ended before its first message, start"))
	} else if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return invalid(errors.New("ExecInteractive: the first message must be start, naming the sandbox and the process"))
	}
	t, err := s.startExec(ctx, start)
	if err != nil {
		return err
	}
	// The input comes for as long as the session lasts: no bound on the
	// request body's time (the caller is authenticated).
	streamingBody(ctx)
	client, callCtx, cancel, err := s.reach(ctx, t)
	if err != nil {
		return err
	}
	defer cancel()
	// ioCtx ends the agent's stream when the input fails for good.
	ioCtx, stopIO := context.WithCancelCause(callCtx)
	defer stopIO(nil)
	in, ev, err := s.openExec(ctx, ioCtx, client, t, start.GetProcess(), "ExecInteractive")
	if err != nil {
		return err
	}
	defer in.Close()
	pid := ev.GetStarted().GetPid()
	if pid == 0 {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("agent %s sent no started event first", t.agentID))
	}
	inputDone := make(chan struct{})
	go func() {
		defer close(inputDone)
		if err := s.forwardInput(ioCtx, client, t, pid, stream); err != nil {
			stopIO(err)
		}
	}()
	// The input goroutine may wait in a read of the request body, which
	// only the end of the body breaks (Handler makes it closable).
	defer func() {
		stopIO(nil)
		if closeRequestBody(ctx) {
			<-inputDone
		}
	}()
	err = s.relayEvents(ctx, ioCtx, t, in, ev, func(ev *fsbv1.ExecEvent) error {
		return stream.Send(&fsbv1.ExecInteractiveResponse{Event: ev})
	})
	var inputErr *inputError
	if errors.As(context.Cause(ioCtx), &inputErr) {
		return inputErr.err
	}
	return err
}

// inputError ends an interactive exec: its input could not be passed on.
type inputError struct{ err error }

func (e *inputError) Error() string { return e.err.Error() }

// forwardInput passes the messages of an interactive exec after its
// first on to the agent, in order, until the client ends its side or
// ctx ends. An error means the session must end.
func (s *Server) forwardInput(ctx context.Context, client fsbv1connect.AgentServiceClient, t *target, pid int32, stream *connect.BidiStream[fsbv1.ExecInteractiveRequest, fsbv1.ExecInteractiveResponse]) error {
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return nil // the client sends no more; the output goes on
		} else if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return &inputError{err}
		}
		id := t.sandboxID
		switch r := msg.GetRequest().(type) {
		case *fsbv1.ExecInteractiveRequest_Stdin:
			err = s.sendInput(ctx, client, id, pid, r.Stdin)
		case *fsbv1.ExecInteractiveRequest_CloseStdin:
			_, err = client.CloseInput(ctx, connect.NewRequest(&fsbv1.AgentServiceCloseInputRequest{SandboxId: id, Pid: pid}))
		case *fsbv1.ExecInteractiveRequest_Resize:
			if verr := validatePtySize("resize", r.Resize); verr != nil {
				return &inputError{verr}
			}
			_, err = client.ResizePty(ctx, connect.NewRequest(&fsbv1.AgentServiceResizePtyRequest{SandboxId: id, Pid: pid, Size: r.Resize}))
		case *fsbv1.ExecInteractiveRequest_Signal:
			if verr := validateSignal(r.Signal); verr != nil {
				return &inputError{verr}
			}
			_, err = client.SignalProcess(ctx, connect.NewRequest(&fsbv1.AgentServiceSignalProcessRequest{SandboxId: id, Pid: pid, Signal: r.Signal}))
		case *fsbv1.ExecInteractiveRequest_Start:
			return &inputError{invalid(errors.New("ExecInteractive: start only in the first message"))}
		default:
			return &inputError{invalid(errors.New("ExecInteractive: an empty message: set stdin, close_stdin, resize or signal"))}
		}
		switch code := connect.CodeOf(err); {
		case err == nil, ctx.Err() != nil:
		case code == connect.CodeNotFound, code == connect.CodeFailedPrecondition:
			// The process has ended (or is ending): what is left of its
			// output and its exit come on the stream.
			s.cfg.Logger.Debug("input of an ended process dropped", slog.String("sandbox", t.String()), slog.Int("pid", int(pid)), slog.Any("err", err))
		default:
			return &inputError{s.agentError(ctx, ctx, t, err)}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// SendInput implements FastPathService.SendInput.
func (s *Server) SendInput(ctx context.Context, req *connect.Request[fsbv1.SendInputRequest]) (*connect.Response[fsbv1.SendInputResponse], error) {
	msg := req.Msg
	if err := validatePid(msg.GetPid()); err != nil {
		return nil, err
	}
	_, err := unary(ctx, s, msg.GetNamespace(), msg.GetName(), func(ctx context.Context, c fsbv1connect.AgentServiceClient, t *target) (*fsbv1.AgentServiceSendInputResponse, error) {
		return &fsbv1.AgentServiceSendInputResponse{}, s.sendInput(ctx, c, t.sandboxID, msg.GetPid(), msg.GetData())
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.SendInputResponse{}), nil
}

// sendInput passes data on to a process's input, in calls of at most
// relayChunk bytes (stdin is a stream of bytes: cut anywhere, it stays the
// same).
func (s *Server) sendInput(ctx context.Context, c fsbv1connect.AgentServiceClient, sandboxID string, pid int32, data []byte) error {
	for first := true; first || len(data) > 0; first = false {
		n := min(len(data), relayChunk)
		if _, err := c.SendInput(ctx, connect.NewRequest(&fsbv1.AgentServiceSendInputRequest{SandboxId: sandboxID, Pid: pid, Data: data[:n]})); err != nil {
			return err
		}
		s.cfg.Metrics.moved(bytesExecInput, n)
		data = data[n:]
	}
	return nil
}

// CloseInput implements FastPathService.CloseInput.
func (s *Server) CloseInput(ctx context.Context, req *connect.Request[fsbv1.CloseInputRequest]) (*connect.Response[fsbv1.CloseInputResponse], error) {
	msg := req.Msg
	if err := validatePid(msg.GetPid()); err != nil {
		return nil, err
	}
	_, err := unary(ctx, s, msg.GetNamespace(), msg.GetName(), func(ctx context.Context, c fsbv1connect.AgentServiceClient, t *target) (*fsbv1.AgentServiceCloseInputResponse, error) {
		r, err := c.CloseInput(ctx, connect.NewRequest(&fsbv1.AgentServiceCloseInputRequest{SandboxId: t.sandboxID, Pid: msg.GetPid()}))
		return msgOf(r), err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.CloseInputResponse{}), nil
}

// SignalProcess implements FastPathService.SignalProcess.
func (s *Server) SignalProcess(ctx context.Context, req *connect.Request[fsbv1.SignalProcessRequest]) (*connect.Response[fsbv1.SignalProcessResponse], error) {
	msg := req.Msg
	if err := validatePid(msg.GetPid()); err != nil {
		return nil, err
	}
	if err := validateSignal(msg.GetSignal()); err != nil {
		return nil, err
	}
	_, err := unary(ctx, s, msg.GetNamespace(), msg.GetName(), func(ctx context.Context, c fsbv1connect.AgentServiceClient, t *target) (*fsbv1.AgentServiceSignalProcessResponse, error) {
		r, err := c.SignalProcess(ctx, connect.NewRequest(&fsbv1.AgentServiceSignalProcessRequest{SandboxId: t.sandboxID, Pid: msg.GetPid(), Signal: msg.GetSignal()}))
		return msgOf(r), err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.SignalProcessResponse{}), nil
}

// ResizePty implements FastPathService.ResizePty.
func (s *Server) ResizePty(ctx context.Context, req *connect.Request[fsbv1.ResizePtyRequest]) (*connect.Response[fsbv1.ResizePtyResponse], error) {
	msg := req.Msg
	if err := validatePid(msg.GetPid()); err != nil {
		return nil, err
	}
	if err := validatePtySize("size", msg.GetSize()); err != nil {
		return nil, err
	}
	_, err := unary(ctx, s, msg.GetNamespace(), msg.GetName(), func(ctx context.Context, c fsbv1connect.AgentServiceClient, t *target) (*fsbv1.AgentServiceResizePtyResponse, error) {
		r, err := c.ResizePty(ctx, connect.NewRequest(&fsbv1.AgentServiceResizePtyRequest{SandboxId: t.sandboxID, Pid: msg.GetPid(), Size: msg.GetSize()}))
		return msgOf(r), err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.ResizePtyResponse{}), nil
}

// ListProcesses implements FastPathService.ListProcesses.
func (s *Server) ListProcesses(ctx context.Context, req *connect.Request[fsbv1.ListProcessesRequest]) (*connect.Response[fsbv1.ListProcessesResponse], error) {
	msg := req.Msg
	r, err := unary(ctx, s, msg.GetNamespace(), msg.GetName(), func(ctx context.Context, c fsbv1connect.AgentServiceClient, t *target) (*fsbv1.AgentServiceListProcessesResponse, error) {
		r, err := c.ListProcesses(ctx, connect.NewRequest(&fsbv1.AgentServiceListProcessesRequest{SandboxId: t.sandboxID}))
		return msgOf(r), err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.ListProcessesResponse{Processes: r.GetProcesses()}), nil
}

// msgOf is a response's message, nil for a nil response.
func msgOf[T any](r *connect.Response[T]) *T {
	if r == nil {
		return nil
	}
	return r.Msg
}
