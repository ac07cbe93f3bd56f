//go:build !fsbhelper

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// execPlane is one `fsb agent` and one `fsb controller`, real processes on
// the rig, that the exec and files tests share: each test makes its own
// sandbox on it.
type execPlane struct {
	// What the agent was started with, to start it again.
	ns, dir   string
	agentArgs []string
	agent     *agentProc
	ctrl      *controllerProc
	server    string
	// api speaks cleartext HTTP/2, which the client streams (WriteFile)
	// and ExecInteractive need.
	api fsbv1connect.FastPathServiceClient
}

// startExecPlane starts an agent with room for capacity sandboxes and a
// controller over it.
func startExecPlane(t *testing.T, capacity int) *execPlane {
	t.Helper()
	_, ns := rig.Containerd(t)
	// A short directory of the agent's own: the per-sandbox link sockets
	// and the runsc wrapper live under it, and a unix socket's path must
	// stay under 108 bytes (t.TempDir's would not).
	state, err := os.MkdirTemp("", "fsb-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	dir := t.TempDir()
	agentArgs := []string{"--capacity", fmt.Sprint(capacity), "--state-dir", state, "--link-dir", filepath.Join(state, "link")}
	a := startAgent(t, ns, "agent-exec", dir, agentArgs...)
	ctrl, server := newControllerProc(t, dir, a)
	ctrl.start()
	p := &execPlane{ns: ns, dir: dir, agentArgs: agentArgs, agent: a, ctrl: ctrl, server: server}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s\nagent log:\n%s", ctrl.log.String(), p.agent.stderr.String())
		}
	})
	h2c := h2cClient()
	t.Cleanup(h2c.CloseIdleConnections)
	p.api = fsbv1connect.NewFastPathServiceClient(h2c, server, connect.WithInterceptors(auth.Bearer("user-token-1")))
	return p
}

// h2cClient speaks HTTP/2 without TLS, as gRPC clients do.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// controllerPID is the controller process's PID.
func (p *execPlane) controllerPID() int {
	p.ctrl.mu.Lock()
	defer p.ctrl.mu.Unlock()
	return p.ctrl.cmd.Process.Pid
}

// sandbox creates a long-running sandbox with the runtime (empty: the
// default) and returns once it runs.
func (p *execPlane) sandbox(t *testing.T, name, runtime string, envs ...*fsbv1.EnvVar) {
	t.Helper()
	p.create(t, name, &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "3600"}, Runtime: runtime, Envs: envs})
}

func (p *execPlane) create(t *testing.T, name string, spec *fsbv1.SandboxSpec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := p.api.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: name, Spec: spec}))
	if err != nil {
		t.Fatalf("create sandbox %s: %v", name, err)
	}
	if ph := resp.Msg.GetSandbox().GetStatus().GetPhase(); ph != fsbv1.Phase_PHASE_RUNNING {
		t.Fatalf("sandbox %s is %v after its create, want running", name, ph)
	}
}

// execResult is what one process's stream said.
type execResult struct {
	pid int32
	// started: the stream's started event has been read (an Exec's comes
	// first; an attach may send one too).
	started        bool
	stdout, stderr []byte
	exit           *fsbv1.ProcessExit
}

// execEvents is the part of a server stream of exec events the tests read.
type execEvents interface {
	Receive() bool
	Err() error
}

// event returns the current message's event of an Exec, AttachProcess or
// ExecInteractive stream.
func event(s execEvents) *fsbv1.ExecEvent {
	switch s := s.(type) {
	case *connect.ServerStreamForClient[fsbv1.ExecResponse]:
		return s.Msg().GetEvent()
	case *connect.ServerStreamForClient[fsbv1.AttachProcessResponse]:
		return s.Msg().GetEvent()
	}
	panic(fmt.Sprintf("not an exec stream: %T", s))
}

// startExec starts spec in sandbox name and returns its stream once the
// started event, which must come first, has arrived.
func (p *execPlane) startExec(t *testing.T, ctx context.Context, name string, spec *fsbv1.ProcessSpec) (*connect.ServerStreamForClient[fsbv1.ExecResponse], int32) {
	t.Helper()
	s, err := p.api.Exec(ctx, connect.NewRequest(&fsbv1.ExecRequest{Name: name, Process: spec}))
	if err != nil {
		t.Fatalf("exec %q in %s: %v", spec.GetCommand(), name, err)
	}
	if !s.Receive() {
		t.Fatalf("exec %q in %s: the stream ended before the start: %v", spec.GetCommand(), name, s.Err())
	}
	pid := s.Msg().GetEvent().GetStarted().GetPid()
	if pid <= 1 {
		t.Fatalf("exec %q in %s: first event %v, want started with a PID above 1", spec.GetCommand(), name, s.Msg().GetEvent())
	}
	return s, pid
}

// drain reads a stream's events up to the exit, which must come last.
func drain(s execEvents, r *execResult) error {
	for s.Receive() {
		ev := event(s)
		if r.exit != nil {
			return fmt.Errorf("event %v after the exit", ev)
		}
		switch e := ev.GetEvent().(type) {
		case *fsbv1.ExecEvent_Stdout:
			r.stdout = append(r.stdout, e.Stdout...)
		case *fsbv1.ExecEvent_Stderr:
			r.stderr = append(r.stderr, e.Stderr...)
		case *fsbv1.ExecEvent_Exit:
			r.exit = e.Exit
		case *fsbv1.ExecEvent_Started:
			if r.started || (r.pid != 0 && e.Started.GetPid() != r.pid) {
				return fmt.Errorf("a started event %v after the start of process %d", ev, r.pid)
			}
			r.pid, r.started = e.Started.GetPid(), true
		}
	}
	if err := s.Err(); err != nil {
		return err
	}
	if r.exit == nil {
		return errors.New("the stream ended without an exit")
	}
	return nil
}

// run execs spec in sandbox name and reads its stream to the end.
func (p *execPlane) run(t *testing.T, name string, spec *fsbv1.ProcessSpec) *execResult {
	t.Helper()
	r, err := p.runE(name, spec)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runE is run for any goroutine: it returns what went wrong.
func (p *execPlane) runE(name string, spec *fsbv1.ProcessSpec) (*execResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := p.api.Exec(ctx, connect.NewRequest(&fsbv1.ExecRequest{Name: name, Process: spec}))
	if err != nil {
		return nil, fmt.Errorf("exec %q in %s: %w", spec.GetCommand(), name, err)
	}
	defer s.Close()
	if !s.Receive() {
		return nil, fmt.Errorf("exec %q in %s: the stream ended before the start: %w", spec.GetCommand(), name, s.Err())
	}
	r := &execResult{pid: s.Msg().GetEvent().GetStarted().GetPid(), started: true}
	if r.pid <= 1 {
		return nil, fmt.Errorf("exec %q in %s: first event %v, want started with a PID above 1", spec.GetCommand(), name, s.Msg().GetEvent())
	}
	if err := drain(s, r); err != nil {
		return nil, fmt.Errorf("exec %q in %s: %w (stdout %q, stderr %q)", spec.GetCommand(), name, err, r.stdout, r.stderr)
	}
	return r, nil
}

// readUntil reads a stream's output (stdout and stderr) until it holds
// want, and returns it.
func readUntil(t *testing.T, s execEvents, want string) string {
	t.Helper()
	var out []byte
	for s.Receive() {
		ev := event(s)
		out = append(out, ev.GetStdout()...)
		out = append(out, ev.GetStderr()...)
		if bytes.Contains(out, []byte(want)) {
			return string(out)
		}
		if ev.GetExit() != nil {
			t.Fatalf("the process exited (%v) before its output held %q: %q", ev.GetExit(), want, out)
		}
	}
	t.Fatalf("the stream ended (%v) before its output held %q: %q", s.Err(), want, out)
	return ""
}

func sh(script string, args ...string) []string {
	return append([]string{"sh", "-c", script, "sh"}, args...)
}

// TestExec runs processes, terminals and file work in sandboxes of each
// runtime through the controller's API and through `fsb ctl`, on one
// shared plane (one agent, one controller).
func TestExec(t *testing.T) {
	t.Parallel()
	p := startExecPlane(t, 16)
	for _, rt := range []string{"runc", "crun", "gvisor"} {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			testExecRuntime(t, p, rt)
		})
	}
	t.Run("ctl-exec", func(t *testing.T) {
		t.Parallel()
		testCtlExec(t, p)
	})
	t.Run("ctl-exec-it", func(t *testing.T) {
		t.Parallel()
		testCtlExecTerminal(t, p)
	})
	t.Run("ctl-cp-malicious-tar", func(t *testing.T) {
		t.Parallel()
		testCtlCpMaliciousTar(t, p)
	})
	t.Run("files-over-http", func(t *testing.T) {
		t.Parallel()
		testFilesOverHTTP(t, p)
	})
	t.Run("shm-full", func(t *testing.T) {
		t.Parallel()
		testShmFull(t, p)
	})
	t.Run("exec-over-http1-json", func(t *testing.T) {
		t.Parallel()
		testExecOverCurl(t, p)
	})
	t.Run("main-process-exit-ends-execs", func(t *testing.T) {
		t.Parallel()
		testMainExitEndsExecs(t, p)
	})
	t.Run("errors", func(t *testing.T) {
		t.Parallel()
		testExecErrors(t, p)
	})
}

// testExecRuntime is what a user sees of exec in a sandbox of runtime rt.
func testExecRuntime(t *testing.T, p *execPlane, rt string) {
	name := "exec-" + rt
	p.sandbox(t, name, rt, &fsbv1.EnvVar{Name: "FROM_SANDBOX", Value: "sandbox-env"})

	t.Run("exit-codes", func(t *testing.T) {
		for _, tc := range []struct {
			script string
			want   int32
		}{{"exit 0", 0}, {"exit 3", 3}} {
			if r := p.run(t, name, &fsbv1.ProcessSpec{Command: sh(tc.script)}); r.exit.GetExitCode() != tc.want || r.exit.GetSignal() != "" {
				t.Errorf("%q: exit %v, want code %d", tc.script, r.exit, tc.want)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s, pid := p.startExec(t, ctx, name, &fsbv1.ProcessSpec{Command: []string{"sleep", "1000"}})
		defer s.Close()
		if _, err := p.api.SignalProcess(ctx, connect.NewRequest(&fsbv1.SignalProcessRequest{Name: name, Pid: pid, Signal: "KILL"})); err != nil {
			t.Fatalf("SignalProcess KILL: %v", err)
		}
		r := &execResult{pid: pid, started: true}
		if err := drain(s, r); err != nil {
			t.Fatal(err)
		}
		if r.exit.GetExitCode() != 137 || r.exit.GetSignal() != "KILL" || r.exit.GetTimedOut() {
			t.Errorf("sleep killed with KILL: exit %v, want code 137, signal KILL", r.exit)
		}
	})

	t.Run("stdout-stderr", func(t *testing.T) {
		r := p.run(t, name, &fsbv1.ProcessSpec{Command: sh("echo to-out; echo to-err >&2; echo more-out; exit 0")})
		if string(r.stdout) != "to-out\nmore-out\n" || string(r.stderr) != "to-err\n" {
			t.Errorf("stdout %q, stderr %q; want the two streams apart", r.stdout, r.stderr)
		}
	})

	t.Run("stdin", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s, pid := p.startExec(t, ctx, name, &fsbv1.ProcessSpec{Command: []string{"cat"}, Stdin: true})
		defer s.Close()
		input := "line one\n" + strings.Repeat("x", 100<<10) + "\nlast line without newline"
		for chunk := range slicesOf(input, 16<<10) {
			if _, err := p.api.SendInput(ctx, connect.NewRequest(&fsbv1.SendInputRequest{Name: name, Pid: pid, Data: []byte(chunk)})); err != nil {
				t.Fatalf("SendInput: %v", err)
			}
		}
		if _, err := p.api.CloseInput(ctx, connect.NewRequest(&fsbv1.CloseInputRequest{Name: name, Pid: pid})); err != nil {
			t.Fatalf("CloseInput: %v", err)
		}
		r := &execResult{pid: pid, started: true}
		if err := drain(s, r); err != nil {
			t.Fatal(err)
		}
		if string(r.stdout) != input || r.exit.GetExitCode() != 0 {
			t.Errorf("cat gave back %d bytes (exit %v), want the %d sent", len(r.stdout), r.exit, len(input))
		}

		// The same through ExecInteractive, input on the stream itself.
		bidi := p.api.ExecInteractive(ctx)
		defer bidi.CloseResponse()
		start := &fsbv1.ExecInteractiveRequest{Request: &fsbv1.ExecInteractiveRequest_Start{Start: &fsbv1.ExecRequest{
			Name: name, Process: &fsbv1.ProcessSpec{Command: []string{"cat"}, Stdin: true}}}}
		for _, req := range []*fsbv1.ExecInteractiveRequest{
			start,
			{Request: &fsbv1.ExecInteractiveRequest_Stdin{Stdin: []byte("interactive ")}},
			{Request: &fsbv1.ExecInteractiveRequest_Stdin{Stdin: []byte("input\n")}},
			{Request: &fsbv1.ExecInteractiveRequest_CloseStdin{CloseStdin: true}},
		} {
			if err := bidi.Send(req); err != nil {
				t.Fatalf("ExecInteractive send: %v", err)
			}
		}
		var out []byte
		var exit *fsbv1.ProcessExit
		for {
			msg, err := bidi.Receive()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("ExecInteractive: %v (output so far %q)", err, out)
			}
			out = append(out, msg.GetEvent().GetStdout()...)
			if e := msg.GetEvent().GetExit(); e != nil {
				exit = e
			}
		}
		if string(out) != "interactive input\n" || exit.GetExitCode() != 0 {
			t.Errorf("ExecInteractive cat: %q, exit %v", out, exit)
		}
	})

	t.Run("env-cwd-user", func(t *testing.T) {
		for _, tc := range []struct {
			user, want string
		}{
			{"", "sandbox-env exec-env /tmp 0 0"},
			{"nobody", "sandbox-env exec-env /tmp 65534 65534"},
			{"1234:5678", "sandbox-env exec-env /tmp 1234 5678"},
		} {
			r := p.run(t, name, &fsbv1.ProcessSpec{
				Command:    sh(`echo "$FROM_SANDBOX $FROM_EXEC $(pwd) $(id -u) $(id -g)"`),
				Envs:       map[string]string{"FROM_EXEC": "exec-env"},
				WorkingDir: "/tmp", User: tc.user,
			})
			if got := strings.TrimSpace(string(r.stdout)); got != tc.want || r.exit.GetExitCode() != 0 {
				t.Errorf("user %q: %q (stderr %q, exit %v), want %q", tc.user, got, r.stderr, r.exit, tc.want)
			}
		}
	})

	t.Run("pty-resize", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s, pid := p.startExec(t, ctx, name, &fsbv1.ProcessSpec{
			Command: sh("tty; stty size; read x; stty size"), Pty: true, Stdin: true,
			PtySize: &fsbv1.PtySize{Rows: 24, Cols: 80},
		})
		defer s.Close()
		out := readUntil(t, s, "24 80")
		if !strings.Contains(out, "/dev/pts/") {
			t.Errorf("tty in a PTY said %q, want a /dev/pts path", out)
		}
		if _, err := p.api.ResizePty(ctx, connect.NewRequest(&fsbv1.ResizePtyRequest{Name: name, Pid: pid, Size: &fsbv1.PtySize{Rows: 40, Cols: 100}})); err != nil {
			t.Fatalf("ResizePty: %v", err)
		}
		if _, err := p.api.SendInput(ctx, connect.NewRequest(&fsbv1.SendInputRequest{Name: name, Pid: pid, Data: []byte("\n")})); err != nil {
			t.Fatalf("SendInput: %v", err)
		}
		r := &execResult{pid: pid, started: true}
		if err := drain(s, r); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(r.stdout), "40 100") || len(r.stderr) != 0 || r.exit.GetExitCode() != 0 {
			t.Errorf("stty size after ResizePty 40x100: stdout %q, stderr %q, exit %v", r.stdout, r.stderr, r.exit)
		}
	})

	t.Run("reattach", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		streamCtx, detach := context.WithCancel(ctx)
		s, pid := p.startExec(t, streamCtx, name, &fsbv1.ProcessSpec{
			Command: sh(`echo before; read x; echo "while detached: $x"; echo to-err >&2`), Stdin: true,
		})
		readUntil(t, s, "before")
		detach()
		s.Close()
		// Wait until the detach has reached init, so that what follows is
		// produced with nobody attached.
		waitProcess(t, p, name, pid, func(pi *fsbv1.ProcessInfo) bool { return !pi.GetAttached() })
		if _, err := p.api.SendInput(ctx, connect.NewRequest(&fsbv1.SendInputRequest{Name: name, Pid: pid, Data: []byte("input\n")})); err != nil {
			t.Fatalf("SendInput while detached: %v", err)
		}
		waitProcess(t, p, name, pid, func(pi *fsbv1.ProcessInfo) bool { return !pi.GetRunning() })
		as, err := p.api.AttachProcess(ctx, connect.NewRequest(&fsbv1.AttachProcessRequest{Name: name, Pid: pid}))
		if err != nil {
			t.Fatalf("AttachProcess: %v", err)
		}
		defer as.Close()
		r := &execResult{pid: pid}
		if err := drain(as, r); err != nil {
			t.Fatal(err)
		}
		if string(r.stdout) != "while detached: input\n" || string(r.stderr) != "to-err\n" || r.exit.GetExitCode() != 0 {
			t.Errorf("reattach: stdout %q, stderr %q, exit %v; want what was written while detached", r.stdout, r.stderr, r.exit)
		}
	})

	t.Run("timeout-kills-the-group", func(t *testing.T) {
		start := time.Now()
		r := p.run(t, name, &fsbv1.ProcessSpec{Command: sh("sleep 1000 & sleep 1000"), TimeoutSeconds: 1})
		if !r.exit.GetTimedOut() || r.exit.GetExitCode() != 137 {
			t.Errorf("exit %v after the timeout, want timed out with code 137", r.exit)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("a 1s timeout ended the process after %v", d)
		}
		procs, err := p.api.ListProcesses(context.Background(), connect.NewRequest(&fsbv1.ListProcessesRequest{Name: name}))
		if err != nil {
			t.Fatalf("ListProcesses: %v", err)
		}
		for _, pi := range procs.Msg.GetProcesses() {
			if pi.GetRunning() && strings.Contains(strings.Join(pi.GetCommand(), " "), "sleep 1000") {
				t.Errorf("ListProcesses still has %v running", pi)
			}
		}
		// The background sleep was in the group: ps inside finds no sleep
		// (killed at once; init may take a moment to reap it).
		deadline := time.Now().Add(10 * time.Second)
		for {
			ps := p.run(t, name, &fsbv1.ProcessSpec{Command: []string{"ps"}})
			if !strings.Contains(string(ps.stdout), "sleep 1000") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sleep 1000 still runs 10s after the timeout:\n%s", ps.stdout)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("20-concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				r, err := p.runE(name, &fsbv1.ProcessSpec{Command: sh(`sleep 0.2; echo "exec $1"`, fmt.Sprint(i))})
				if err != nil {
					t.Errorf("exec %d of 20: %v", i, err)
					return
				}
				if got := string(r.stdout); got != fmt.Sprintf("exec %d\n", i) || r.exit.GetExitCode() != 0 {
					t.Errorf("exec %d of 20: %q, exit %v", i, got, r.exit)
				}
			})
		}
		wg.Wait()
	})
}

// waitProcess polls ListProcesses until process pid of sandbox name
// satisfies ok.
func waitProcess(t *testing.T, p *execPlane, name string, pid int32, ok func(*fsbv1.ProcessInfo) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last *fsbv1.ProcessInfo
	for {
		resp, err := p.api.ListProcesses(context.Background(), connect.NewRequest(&fsbv1.ListProcessesRequest{Name: name}))
		if err != nil {
			t.Fatalf("ListProcesses: %v", err)
		}
		for _, pi := range resp.Msg.GetProcesses() {
			if pi.GetPid() == pid {
				last = pi
				if ok(pi) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d never reached the state awaited; last listed as %v", pid, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slicesOf yields s in pieces of at most n bytes.
func slicesOf(s string, n int) func(func(string) bool) {
	return func(yield func(string) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}

// runCtlInput is runCtl with stdin read from input.
func runCtlInput(t testing.TB, server, token string, input io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(rig.FsbBinary(t), append([]string{"ctl"}, args...)...)
	cmd.Env = append(os.Environ(), "FSB_SERVER="+server, "FSB_TOKEN="+token, "HOME="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = input, &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// testCtlExec: `fsb ctl exec` passes the exit code, the two output streams
// and stdin through.
func testCtlExec(t *testing.T, p *execPlane) {
	const name = "ctl-exec"
	p.sandbox(t, name, "")
	for _, tc := range []struct {
		args                []string
		stdin               string
		trickle             bool // stdin never ends: a line every 10 ms
		code                int
		wantStdout, wantErr string
	}{
		{args: []string{"exec", name, "--", "sh", "-c", "exit 3"}, code: 3},
		{args: []string{"exec", name, "--", "sh", "-c", "echo out; echo err >&2"}, wantStdout: "out\n", wantErr: "err\n"},
		{args: []string{"exec", "-i", name, "--", "cat"}, stdin: "hello\nfrom stdin\n", wantStdout: "hello\nfrom stdin\n"},
		{args: []string{"exec", "-e", "K=v", "-w", "/tmp", "-u", "nobody", name, "--", "sh", "-c", "echo $K $(pwd) $(id -u)"}, wantStdout: "v /tmp 65534\n"},
		{args: []string{"exec", name, "--", "sh", "-c", "kill -9 $$"}, code: 137},
		// Input the process never reads, still coming when it has exited,
		// is no error of the CLI's.
		{args: []string{"exec", "-i", name, "--", "sh", "-c", "echo out; echo err >&2"}, trickle: true, wantStdout: "out\n", wantErr: "err\n"},
	} {
		var stdin io.Reader = strings.NewReader(tc.stdin)
		if tc.trickle {
			stdin = trickle{}
		}
		stdout, stderr, code := runCtlInput(t, p.server, "user-token-1", stdin, tc.args...)
		if code != tc.code || stdout != tc.wantStdout || (tc.wantErr != "" && stderr != tc.wantErr) {
			t.Errorf("fsb ctl %s: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr %q",
				strings.Join(tc.args, " "), code, stdout, stderr, tc.code, tc.wantStdout, tc.wantErr)
		}
	}
	// Input that ends (here at once) while the process exits is no
	// error either, however the two race: a few times over.
	for i := range 10 {
		if stdout, stderr, code := runCtlInput(t, p.server, "user-token-1", strings.NewReader(""), "exec", name, "--", "echo", "quick"); code != 0 || stdout != "quick\n" || stderr != "" {
			t.Errorf("run %d of fsb ctl exec %s -- echo quick, stdin empty: exit %d, stdout %q, stderr %q", i, name, code, stdout, stderr)
		}
	}
	if _, stderr, code := runCtl(t, p.server, "user-token-1", "exec", "no-such-sandbox", "--", "true"); code == 0 || !strings.Contains(stderr, "not found") {
		t.Errorf("exec in a missing sandbox: exit %d, %q; want a failure saying not found", code, stderr)
	}
}

// trickle is an input that never ends: a line every 10 ms.
type trickle struct{}

func (trickle) Read(b []byte) (int, error) {
	time.Sleep(10 * time.Millisecond)
	return copy(b, "more input\n"), nil
}

// testExecErrors: the errors a user meets, by code, through the API.
func testExecErrors(t *testing.T, p *execPlane) {
	p.create(t, "no-init", &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "3600"}, NoInit: true})
	p.sandbox(t, "errors", "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	execErr := func(name string, cmd ...string) error {
		s, err := p.api.Exec(ctx, connect.NewRequest(&fsbv1.ExecRequest{Name: name, Process: &fsbv1.ProcessSpec{Command: cmd}}))
		if err != nil {
			return err
		}
		defer s.Close()
		r := &execResult{}
		return drain(s, r)
	}
	for _, tc := range []struct {
		what string
		err  error
		code connect.Code
		want string
	}{
		{"exec in a missing sandbox", execErr("missing", "true"), connect.CodeNotFound, "missing"},
		{"exec in a --no-init sandbox", execErr("no-init", "true"), connect.CodeFailedPrecondition, "runs without fsb init (--no-init)"},
		{"exec of a missing command", execErr("errors", "/no/such/command"), connect.CodeNotFound, "/no/such/command"},
		{"signal to a missing process", func() error {
			_, err := p.api.SignalProcess(ctx, connect.NewRequest(&fsbv1.SignalProcessRequest{Name: "errors", Pid: 99999, Signal: "KILL"}))
			return err
		}(), connect.CodeNotFound, "99999"},
		{"stat of a relative path", func() error {
			_, err := p.api.Stat(ctx, connect.NewRequest(&fsbv1.StatRequest{Name: "errors", Path: "etc/passwd"}))
			return err
		}(), connect.CodeInvalidArgument, "etc/passwd"},
		{"stat of an unclean path", func() error {
			_, err := p.api.Stat(ctx, connect.NewRequest(&fsbv1.StatRequest{Name: "errors", Path: "/etc/../etc/passwd"}))
			return err
		}(), connect.CodeInvalidArgument, "/etc/../etc/passwd"},
		{"stat of a missing path", func() error {
			_, err := p.api.Stat(ctx, connect.NewRequest(&fsbv1.StatRequest{Name: "errors", Path: "/no/such/file"}))
			return err
		}(), connect.CodeNotFound, "/no/such/file"},
	} {
		if connect.CodeOf(tc.err) != tc.code || !strings.Contains(fmt.Sprint(tc.err), tc.want) {
			t.Errorf("%s: %v; want %v naming %q", tc.what, tc.err, tc.code, tc.want)
		}
	}
}

// testExecOverCurl drives Exec as curl would: Connect streaming with JSON
// envelopes over HTTP/1.1.
func testExecOverCurl(t *testing.T, p *execPlane) {
	const name = "exec-curl"
	p.sandbox(t, name, "")
	body, err := json.Marshal(map[string]any{"name": name, "process": map[string]any{
		"command": []string{"sh", "-c", "echo over http1; echo to stderr >&2; exit 5"}}})
	if err != nil {
		t.Fatal(err)
	}
	// An envelope: flags (0), the length (big-endian), the message.
	env := append([]byte{0, 0, 0, 0, 0}, body...)
	binary.BigEndian.PutUint32(env[1:5], uint32(len(body)))
	req, err := http.NewRequest(http.MethodPost, p.server+"/fsb.v1.FastPathService/Exec", bytes.NewReader(env))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/connect+json")
	req.Header.Set("Authorization", "Bearer user-token-1")
	var h1 http.Protocols
	h1.SetHTTP1(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &h1}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("Exec over %s: HTTP %d %s", resp.Proto, resp.StatusCode, b)
	}
	var events []string
	var stdout, stderr []byte
	var exitCode float64 = -1
	for {
		var head [5]byte
		if _, err := io.ReadFull(resp.Body, head[:]); err != nil {
			t.Fatalf("read an envelope: %v (events so far %v)", err, events)
		}
		msg := make([]byte, binary.BigEndian.Uint32(head[1:]))
		if _, err := io.ReadFull(resp.Body, msg); err != nil {
			t.Fatalf("read an envelope: %v", err)
		}
		if head[0]&2 != 0 { // end of stream: {} or {"error": ...}
			if string(msg) != "{}" {
				t.Errorf("the stream ended with %s", msg)
			}
			break
		}
		var m struct {
			Event struct {
				Started *struct{ Pid int32 }
				Stdout  []byte
				Stderr  []byte
				Exit    *struct{ ExitCode float64 }
			}
		}
		if err := json.Unmarshal(msg, &m); err != nil {
			t.Fatalf("an event %s: %v", msg, err)
		}
		switch ev := m.Event; {
		case ev.Started != nil:
			events = append(events, "started")
		case ev.Exit != nil:
			events = append(events, "exit")
			exitCode = ev.Exit.ExitCode
		default:
			stdout, stderr = append(stdout, ev.Stdout...), append(stderr, ev.Stderr...)
		}
	}
	// The exec's audit line: who, where, what. The controller's stderr
	// reaches the test through a pipe: it may come a moment later.
	audited := func() bool {
		for _, line := range p.ctrl.log.Lines(`"msg":"exec"`, "over http1") {
			var l map[string]any
			if json.Unmarshal([]byte(line), &l) == nil && l["role"] == "user" && l["sandbox"] == "default/"+name && l["rpc"] == "Exec" {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(5 * time.Second); !audited() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !audited() {
		t.Errorf("no audit line (role user, sandbox default/%s, rpc Exec) for the exec in the controller's log:\n%s", name, strings.Join(p.ctrl.log.Lines(`"msg":"exec"`), "\n"))
	}
	if len(events) != 2 || events[0] != "started" || events[1] != "exit" || exitCode != 5 ||
		string(stdout) != "over http1\n" || string(stderr) != "to stderr\n" {
		t.Errorf("Exec over HTTP/1.1 JSON: events %v, exit code %v, stdout %q, stderr %q", events, exitCode, stdout, stderr)
	}
}

// testMainExitEndsExecs: when the sandbox's main process exits, an exec
// still running in it is killed, and its stream, through the controller,
// ends with FailedPrecondition saying so.
func testMainExitEndsExecs(t *testing.T, p *execPlane) {
	const name = "main-exit"
	p.create(t, name, &fsbv1.SandboxSpec{Image: rig.ImageRef,
		Command: sh("while [ ! -e /tmp/stop ]; do sleep 0.05; done; exit 4")})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, pid := p.startExec(t, ctx, name, &fsbv1.ProcessSpec{Command: sh("echo running; exec sleep 1000")})
	defer s.Close()
	readUntil(t, s, "running")
	if _, err := p.writeFile(ctx, name, "/tmp/stop", 0, strings.NewReader("")); err != nil {
		t.Fatalf("write /tmp/stop: %v", err)
	}
	for s.Receive() {
		if e := s.Msg().GetEvent().GetExit(); e != nil {
			t.Logf("the exec's stream reported its exit %v", e)
		}
	}
	err := s.Err()
	want := fmt.Sprintf("the sandbox's main process exited (code 4); process %d was killed with it", pid)
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(fmt.Sprint(err), want) {
		t.Errorf("the exec's stream ended with %v; want FailedPrecondition saying %q", err, want)
	}
}

// TestExecAcrossAgentRestart: the agent is killed and started again while
// a process it started runs; the process goes on (fsb init, not the agent,
// runs it), and through the controller it takes input, is reattached to
// with what it wrote meanwhile, and new execs work.
//
// Not parallel: while the agent is down its port is free, and a test
// picking free ports meanwhile could be handed it.
func TestExecAcrossAgentRestart(t *testing.T) {
	p := startExecPlane(t, 2)
	const name = "survivor"
	p.sandbox(t, name, "runc")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	streamCtx, detach := context.WithCancel(ctx)
	s, pid := p.startExec(t, streamCtx, name, &fsbv1.ProcessSpec{
		Command: sh(`echo first; read x; echo "after the restart: $x"`), Stdin: true,
	})
	readUntil(t, s, "first")

	p.agent.kill()
	detach()
	s.Close()
	p.agent = restartAgent(t, p.agent, p.ns, "agent-exec", p.dir, p.agentArgs...)

	// The controller finds the agent again on its own: retry until the
	// input is taken.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := p.api.SendInput(ctx, connect.NewRequest(&fsbv1.SendInputRequest{Name: name, Pid: pid, Data: []byte("input\n")}))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SendInput after the agent's restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	as, err := p.api.AttachProcess(ctx, connect.NewRequest(&fsbv1.AttachProcessRequest{Name: name, Pid: pid}))
	if err != nil {
		t.Fatalf("AttachProcess after the agent's restart: %v", err)
	}
	defer as.Close()
	r := &execResult{pid: pid}
	if err := drain(as, r); err != nil {
		t.Fatalf("AttachProcess after the agent's restart: %v", err)
	}
	if string(r.stdout) != "after the restart: input\n" || r.exit.GetExitCode() != 0 {
		t.Errorf("reattached after the agent's restart: stdout %q, exit %v", r.stdout, r.exit)
	}
	if r := p.run(t, name, &fsbv1.ProcessSpec{Command: []string{"echo", "new exec"}}); string(r.stdout) != "new exec\n" {
		t.Errorf("a new exec after the agent's restart: %q", r.stdout)
	}
}
