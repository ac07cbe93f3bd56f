package e2b

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	processpb "github.com/fast-sandbox/fast-sandbox/pkg/gen/e2b/process"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/e2b/process/processconnect"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// procRun is what a Start or Connect stream said.
type procRun struct {
	pid                 uint32
	stdout, stderr, pty string
	keepalives          int
	end                 *processpb.ProcessEvent_EndEvent
}

// procEvents is a Start or Connect stream, as the client sees it.
type procEvents interface {
	Receive() bool
	Err() error
}

// procRead reads a stream's events into r until until(r) holds or the
// stream ends; the error is the stream's.
func procRead(s procEvents, ev func() *processpb.ProcessEvent, r *procRun, until func(*procRun) bool) error {
	for !until(r) && s.Receive() {
		switch e := ev().GetEvent().(type) {
		case *processpb.ProcessEvent_Start:
			r.pid = e.Start.GetPid()
		case *processpb.ProcessEvent_Data:
			r.stdout += string(e.Data.GetStdout())
			r.stderr += string(e.Data.GetStderr())
			r.pty += string(e.Data.GetPty())
		case *processpb.ProcessEvent_Keepalive:
			r.keepalives++
		case *processpb.ProcessEvent_End:
			r.end = e.End
		}
	}
	return s.Err()
}

func procEnded(r *procRun) bool { return r.end != nil }

// procStart starts a process and reads its stream until until holds.
func procStart(ctx context.Context, t *testing.T, c processconnect.ProcessClient, req *processpb.StartRequest, until func(*procRun) bool) (*procRun, *connect.ServerStreamForClient[processpb.StartResponse], error) {
	t.Helper()
	r := connect.NewRequest(req)
	procAsRoot(r.Header())
	run := &procRun{}
	s, err := c.Start(ctx, r)
	if err != nil {
		return run, nil, err
	}
	err = procRead(s, func() *processpb.ProcessEvent { return s.Msg().GetEvent() }, run, until)
	return run, s, err
}

// procAsRoot names root as the request's user: the test image has no
// "user".
func procAsRoot(h http.Header) {
	h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("root:")))
}

func procCmd(cmd string, args ...string) *processpb.ProcessConfig {
	return &processpb.ProcessConfig{Cmd: cmd, Args: args}
}

func procPid(pid uint32) *processpb.ProcessSelector {
	return &processpb.ProcessSelector{Selector: &processpb.ProcessSelector_Pid{Pid: pid}}
}

func procTag(tag string) *processpb.ProcessSelector {
	return &processpb.ProcessSelector{Selector: &processpb.ProcessSelector_Tag{Tag: tag}}
}

func procPtr[T any](v T) *T { return &v }

func procCode(t *testing.T, what string, err error, want connect.Code) {
	t.Helper()
	if connect.CodeOf(err) != want {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
}

// TestProcessThroughTheFastPath drives envd's process service, as E2B's
// SDK does (Connect, JSON, and binary too), through a real controller,
// agent and sandbox.
func TestProcessThroughTheFastPath(t *testing.T) {
	plane := startPlane(t)
	sb := plane.sandbox(t, "e2b-proc", map[string]string{"SB_VAR": "sandbox", "OVER": "sandbox"})
	_, handler := NewProcessHandler(plane.api)
	srv := httptest.NewUnstartedServer(withSandbox(sb, handler))
	srv.EnableHTTP2 = true // StreamInput's client stream needs it
	srv.StartTLS()
	t.Cleanup(srv.Close)
	jsonClient := processconnect.NewProcessClient(srv.Client(), srv.URL, connect.WithProtoJSON())
	binClient := processconnect.NewProcessClient(srv.Client(), srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("output and exit", func(t *testing.T) {
		for name, c := range map[string]processconnect.ProcessClient{"json": jsonClient, "binary": binClient} {
			run, _, err := procStart(ctx, t, c, &processpb.StartRequest{
				Process: procCmd("sh", "-c", "echo out; echo err >&2; exit 3"), Stdin: procPtr(false),
			}, procEnded)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			end := run.end
			if run.pid == 0 || run.stdout != "out\n" || run.stderr != "err\n" || end == nil ||
				end.GetExitCode() != 3 || !end.GetExited() || end.GetStatus() != "exit status 3" || end.GetError() != "exit status 3" {
				t.Errorf("%s: got %+v, end %v; want pid, out, err, exit 3", name, run, end)
			}
		}
		run, _, err := procStart(ctx, t, jsonClient, &processpb.StartRequest{Process: procCmd("true")}, procEnded)
		if err != nil || run.end.GetExitCode() != 0 || run.end.Error != nil || run.end.GetStatus() != "exit status 0" {
			t.Errorf("true: %+v, end %v, %v; want exit 0, no error", run, run.end, err)
		}
	})

	t.Run("env and cwd", func(t *testing.T) {
		script := "echo $SB_VAR $OVER $REQ $USER $HOME; pwd"
		run, _, err := procStart(ctx, t, jsonClient, &processpb.StartRequest{Process: &processpb.ProcessConfig{
			Cmd: "sh", Args: []string{"-c", script}, Envs: map[string]string{"OVER": "request", "REQ": "r"}, Cwd: procPtr("/tmp"),
		}}, procEnded)
		if err != nil || run.stdout != "sandbox request r root /root\n/tmp\n" {
			t.Errorf("with cwd /tmp: %q, %v", run.stdout, err)
		}
		// No cwd: the user's home.
		run, _, err = procStart(ctx, t, jsonClient, &processpb.StartRequest{Process: procCmd("pwd")}, procEnded)
		if err != nil || run.stdout != "/root\n" {
			t.Errorf("without cwd: %q, %v; want root's home", run.stdout, err)
		}
	})

	t.Run("stdin", func(t *testing.T) {
		run, start, err := procStart(ctx, t, jsonClient, &processpb.StartRequest{
			Process: procCmd("cat"), Stdin: procPtr(true), Tag: procPtr("cat-1"),
		}, func(r *procRun) bool { return r.pid != 0 })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jsonClient.SendInput(ctx, connect.NewRequest(&processpb.SendInputRequest{
			Process: procPid(run.pid), Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Stdin{Stdin: []byte("hello\n")}},
		})); err != nil {
			t.Fatalf("SendInput: %v", err)
		}
		// StreamInput, selecting the process by its tag.
		in := jsonClient.StreamInput(ctx)
		for _, msg := range []*processpb.StreamInputRequest{
			{Event: &processpb.StreamInputRequest_Start{Start: &processpb.StreamInputRequest_StartEvent{Process: procTag("cat-1")}}},
			{Event: &processpb.StreamInputRequest_Keepalive{Keepalive: &processpb.StreamInputRequest_KeepAlive{}}},
			{Event: &processpb.StreamInputRequest_Data{Data: &processpb.StreamInputRequest_DataEvent{
				Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Stdin{Stdin: []byte("world\n")}}}}},
		} {
			if err := in.Send(msg); err != nil {
				t.Fatalf("StreamInput send: %v", err)
			}
		}
		if _, err := in.CloseAndReceive(); err != nil {
			t.Fatalf("StreamInput: %v", err)
		}
		if _, err := jsonClient.CloseStdin(ctx, connect.NewRequest(&processpb.CloseStdinRequest{Process: procPid(run.pid)})); err != nil {
			t.Fatalf("CloseStdin: %v", err)
		}
		if err := procRead(start, func() *processpb.ProcessEvent { return start.Msg().GetEvent() }, run, procEnded); err != nil {
			t.Fatal(err)
		}
		if run.stdout != "hello\nworld\n" || run.end.GetExitCode() != 0 {
			t.Errorf("cat said %q, end %v; want hello, world, exit 0", run.stdout, run.end)
		}
		// Without stdin, cat reads nothing and ends; then its pid is
		// no process any more.
		run, _, err = procStart(ctx, t, jsonClient, &processpb.StartRequest{Process: procCmd("cat"), Stdin: procPtr(false)}, procEnded)
		if err != nil || run.stdout != "" || run.end.GetExitCode() != 0 {
			t.Fatalf("cat without stdin: %+v, %v", run, err)
		}
		_, err = jsonClient.SendInput(ctx, connect.NewRequest(&processpb.SendInputRequest{
			Process: procPid(run.pid), Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Stdin{Stdin: []byte("x")}},
		}))
		procCode(t, "input to an exited process", err, connect.CodeNotFound)
	})

	t.Run("background, connect, list, kill", func(t *testing.T) {
		startCtx, stopStart := context.WithCancel(ctx)
		run, _, err := procStart(startCtx, t, jsonClient, &processpb.StartRequest{
			Process: procCmd("sh", "-c", "echo ready; exec sleep 600"), Tag: procPtr("bg"),
		}, func(r *procRun) bool { return strings.Contains(r.stdout, "ready") })
		if err != nil {
			t.Fatal(err)
		}
		stopStart() // the SDK's disconnect: the process goes on
		list, err := jsonClient.List(ctx, connect.NewRequest(&processpb.ListRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		var listed *processpb.ProcessInfo
		for _, p := range list.Msg.GetProcesses() {
			if p.GetPid() == run.pid {
				listed = p
			}
		}
		if listed == nil || listed.GetTag() != "bg" || listed.GetConfig().GetCmd() != "sh" || len(listed.GetConfig().GetArgs()) != 2 {
			t.Fatalf("listed %v, want pid %d tagged bg", list.Msg.GetProcesses(), run.pid)
		}

		conn, err := binClient.Connect(ctx, connect.NewRequest(&processpb.ConnectRequest{Process: procPid(run.pid)}))
		if err != nil {
			t.Fatal(err)
		}
		attached := &procRun{}
		if err := procRead(conn, func() *processpb.ProcessEvent { return conn.Msg().GetEvent() }, attached,
			func(r *procRun) bool { return r.pid != 0 }); err != nil || attached.pid != run.pid {
			t.Fatalf("Connect: start %d, %v; want %d", attached.pid, err, run.pid)
		}
		if _, err := jsonClient.SendSignal(ctx, connect.NewRequest(&processpb.SendSignalRequest{
			Process: procTag("bg"), Signal: processpb.Signal_SIGNAL_SIGKILL,
		})); err != nil {
			t.Fatalf("SendSignal: %v", err)
		}
		if err := procRead(conn, func() *processpb.ProcessEvent { return conn.Msg().GetEvent() }, attached, procEnded); err != nil {
			t.Fatal(err)
		}
		if end := attached.end; end.GetExitCode() != -1 || end.GetExited() || end.GetStatus() != "signal: killed" || end.GetError() != "signal: killed" {
			t.Errorf("a killed process ended with %v", end)
		}
		_, err = jsonClient.SendSignal(ctx, connect.NewRequest(&processpb.SendSignalRequest{Process: procPid(run.pid), Signal: processpb.Signal_SIGNAL_SIGKILL}))
		procCode(t, "signal to an exited process", err, connect.CodeNotFound)
		conn2, err := jsonClient.Connect(ctx, connect.NewRequest(&processpb.ConnectRequest{Process: procPid(run.pid)}))
		if err == nil {
			conn2.Receive()
			err = conn2.Err()
		}
		procCode(t, "connect to an exited process", err, connect.CodeNotFound)
		list, err = jsonClient.List(ctx, connect.NewRequest(&processpb.ListRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list.Msg.GetProcesses() {
			if p.GetPid() == run.pid {
				t.Errorf("an exited process is listed: %v", p)
			}
		}
	})

	t.Run("a connect while the start streams", func(t *testing.T) {
		run, start, err := procStart(ctx, t, jsonClient, &processpb.StartRequest{
			Process: procCmd("sh", "-c", "echo a; read x; echo b; exit 4"), Stdin: procPtr(true),
		}, func(r *procRun) bool { return strings.Contains(r.stdout, "a") })
		if err != nil {
			t.Fatal(err)
		}
		conn, err := binClient.Connect(ctx, connect.NewRequest(&processpb.ConnectRequest{Process: procPid(run.pid)}))
		if err != nil {
			t.Fatal(err)
		}
		attached := &procRun{}
		connEvent := func() *processpb.ProcessEvent { return conn.Msg().GetEvent() }
		if err := procRead(conn, connEvent, attached, func(r *procRun) bool { return r.pid != 0 }); err != nil {
			t.Fatal(err)
		}
		if _, err := jsonClient.SendInput(ctx, connect.NewRequest(&processpb.SendInputRequest{
			Process: procPid(run.pid), Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Stdin{Stdin: []byte("x\n")}},
		})); err != nil {
			t.Fatal(err)
		}
		if err := procRead(conn, connEvent, attached, procEnded); err != nil || !strings.Contains(attached.stdout, "b") || attached.end.GetExitCode() != 4 {
			t.Errorf("the connect's stream: %+v, end %v, %v; want b, exit 4", attached, attached.end, err)
		}
		// The start's stream lost the output to the connect, not the end.
		if err := procRead(start, func() *processpb.ProcessEvent { return start.Msg().GetEvent() }, run, procEnded); err != nil || run.end.GetExitCode() != 4 {
			t.Errorf("the start's stream: %+v, end %v, %v; want exit 4", run, run.end, err)
		}
	})

	t.Run("a tag outlives the controller", func(t *testing.T) {
		startCtx, stopStart := context.WithCancel(ctx)
		run, _, err := procStart(startCtx, t, jsonClient, &processpb.StartRequest{
			Process: procCmd("sh", "-c", "echo up; exec sleep 600"), Tag: procPtr("survivor"),
		}, func(r *procRun) bool { return strings.Contains(r.stdout, "up") })
		stopStart()
		if err != nil {
			t.Fatal(err)
		}
		plane.restartController()
		// The new controller answers once it knows the sandbox again.
		var pid uint32
		for pid == 0 {
			list, err := jsonClient.List(ctx, connect.NewRequest(&processpb.ListRequest{}))
			if ctx.Err() != nil {
				t.Fatalf("no listing after the controller's restart: %v", err)
			}
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for _, p := range list.Msg.GetProcesses() {
				if p.GetTag() == "survivor" {
					pid = p.GetPid()
				}
			}
			if pid == 0 {
				t.Fatalf("the tagged process is not listed after the controller's restart: %v", list.Msg.GetProcesses())
			}
		}
		if pid != run.pid {
			t.Errorf("tag survivor lists pid %d, started as %d", pid, run.pid)
		}
		if _, err := jsonClient.SendSignal(ctx, connect.NewRequest(&processpb.SendSignalRequest{Process: procTag("survivor"), Signal: processpb.Signal_SIGNAL_SIGKILL})); err != nil {
			t.Errorf("kill by tag after the controller's restart: %v", err)
		}
	})

	t.Run("pty", func(t *testing.T) {
		run, start, err := procStart(ctx, t, jsonClient, &processpb.StartRequest{
			Process: procCmd("sh"), Pty: &processpb.PTY{Size: &processpb.PTY_Size{Cols: 80, Rows: 24}},
		}, func(r *procRun) bool { return r.pid != 0 })
		if err != nil {
			t.Fatal(err)
		}
		input := func(s string) {
			t.Helper()
			if _, err := jsonClient.SendInput(ctx, connect.NewRequest(&processpb.SendInputRequest{
				Process: procPid(run.pid), Input: &processpb.ProcessInput{Input: &processpb.ProcessInput_Pty{Pty: []byte(s)}},
			})); err != nil {
				t.Fatalf("SendInput %q: %v", s, err)
			}
		}
		read := func(until func(*procRun) bool) {
			t.Helper()
			if err := procRead(start, func() *processpb.ProcessEvent { return start.Msg().GetEvent() }, run, until); err != nil {
				t.Fatal(err)
			}
		}
		// The shell's answers say the size; the markers are printed
		// split so that the echoed command line never matches them.
		input("stty size; echo A''1\n")
		read(func(r *procRun) bool { return strings.Contains(r.pty, "A1") || r.end != nil })
		if !strings.Contains(run.pty, "24 80") {
			t.Errorf("stty size before the resize: %q, want 24 80", run.pty)
		}
		if _, err := jsonClient.Update(ctx, connect.NewRequest(&processpb.UpdateRequest{
			Process: procPid(run.pid), Pty: &processpb.PTY{Size: &processpb.PTY_Size{Cols: 120, Rows: 40}},
		})); err != nil {
			t.Fatalf("Update: %v", err)
		}
		input("stty size; echo B''2; exit 5\n")
		read(procEnded)
		if !strings.Contains(run.pty, "40 120") || !strings.Contains(run.pty, "B2") || run.end.GetExitCode() != 5 {
			t.Errorf("after the resize: %q, end %v; want 40 120 and exit 5", run.pty, run.end)
		}
		if run.stdout != "" || run.stderr != "" {
			t.Errorf("a terminal's output came as stdout %q, stderr %q", run.stdout, run.stderr)
		}
	})

	t.Run("keepalive", func(t *testing.T) {
		r := connect.NewRequest(&processpb.StartRequest{Process: procCmd("sleep", "600"), Stdin: procPtr(false)})
		procAsRoot(r.Header())
		r.Header().Set("Keepalive-Ping-Interval", "1")
		s, err := jsonClient.Start(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		run := &procRun{}
		if err := procRead(s, func() *processpb.ProcessEvent { return s.Msg().GetEvent() }, run,
			func(r *procRun) bool { return r.keepalives > 0 || r.end != nil }); err != nil || run.keepalives == 0 {
			t.Fatalf("no keepalive on a quiet stream: %+v, %v", run, err)
		}
		if _, err := jsonClient.SendSignal(ctx, connect.NewRequest(&processpb.SendSignalRequest{Process: procPid(run.pid), Signal: processpb.Signal_SIGNAL_SIGTERM})); err != nil {
			t.Fatalf("SIGTERM: %v", err)
		}
		if err := procRead(s, func() *processpb.ProcessEvent { return s.Msg().GetEvent() }, run, procEnded); err != nil || run.end.GetStatus() != "signal: terminated" {
			t.Errorf("after SIGTERM: end %v, %v", run.end, err)
		}
	})

	t.Run("the request's deadline is the process's", func(t *testing.T) {
		short, stop := context.WithTimeout(ctx, 2*time.Second)
		defer stop()
		run, _, err := procStart(short, t, jsonClient, &processpb.StartRequest{Process: procCmd("sleep", "600"), Tag: procPtr("deadline")}, procEnded)
		procCode(t, "a stream past its deadline", err, connect.CodeDeadlineExceeded)
		if run.end != nil {
			t.Errorf("the stream ended with %v, want its deadline", run.end)
		}
		// The process is killed at its deadline (whole seconds, rounded
		// up): it leaves the list.
		wait, stopWait := context.WithTimeout(ctx, 30*time.Second)
		defer stopWait()
		for {
			list, err := jsonClient.List(wait, connect.NewRequest(&processpb.ListRequest{}))
			if err != nil {
				t.Fatalf("the process still runs past its request's deadline: %v", err)
			}
			gone := true
			for _, p := range list.Msg.GetProcesses() {
				gone = gone && p.GetTag() != "deadline"
			}
			if gone {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("errors", func(t *testing.T) {
		_, err := jsonClient.SendSignal(ctx, connect.NewRequest(&processpb.SendSignalRequest{Process: procPid(999999), Signal: processpb.Signal_SIGNAL_SIGKILL}))
		procCode(t, "signal to an unknown pid", err, connect.CodeNotFound)
		_, err = jsonClient.SendSignal(ctx, connect.NewRequest(&processpb.SendSignalRequest{Process: procPid(1), Signal: processpb.Signal_SIGNAL_UNSPECIFIED}))
		procCode(t, "an unspecified signal", err, connect.CodeInvalidArgument)
		_, err = jsonClient.CloseStdin(ctx, connect.NewRequest(&processpb.CloseStdinRequest{Process: procTag("no-such-tag")}))
		procCode(t, "an unknown tag", err, connect.CodeNotFound)
		_, err = jsonClient.SendInput(ctx, connect.NewRequest(&processpb.SendInputRequest{Process: &processpb.ProcessSelector{}}))
		procCode(t, "no selector", err, connect.CodeInvalidArgument)
		_, _, err = procStart(ctx, t, jsonClient, &processpb.StartRequest{Process: &processpb.ProcessConfig{}}, procEnded)
		procCode(t, "no cmd", err, connect.CodeInvalidArgument)
		_, _, err = procStart(ctx, t, jsonClient, &processpb.StartRequest{Process: procCmd("true"), Tag: procPtr("a<b")}, procEnded)
		procCode(t, "a tag JSON escapes", err, connect.CodeInvalidArgument)

		// A process the sandbox cannot start is envd's InvalidArgument.
		_, _, err = procStart(ctx, t, jsonClient, &processpb.StartRequest{Process: procCmd("/no/such/program")}, procEnded)
		procCode(t, "a missing program", err, connect.CodeInvalidArgument)
		_, _, err = procStart(ctx, t, jsonClient, &processpb.StartRequest{Process: &processpb.ProcessConfig{Cmd: "true", Cwd: procPtr("/no/such/dir")}}, procEnded)
		procCode(t, "a missing cwd", err, connect.CodeInvalidArgument)

		// No user named: E2B's "user", whom the test image lacks.
		noUser, err := jsonClient.Start(ctx, connect.NewRequest(&processpb.StartRequest{Process: procCmd("true")}))
		if err == nil {
			noUser.Receive()
			err = noUser.Err()
		}
		procCode(t, "a user the sandbox lacks", err, connect.CodeInvalidArgument)

		// A sandbox that is gone: Unavailable, which the SDK reads as
		// "sandbox is probably not running anymore".
		gone := plane.sandbox(t, "e2b-proc-gone", nil)
		if _, err := plane.api.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{Name: gone.ID, Namespace: gone.Namespace, GracePeriodSeconds: procPtr(int32(0))})); err != nil {
			t.Fatal(err)
		}
		_, goneHandler := NewProcessHandler(plane.api)
		goneSrv := httptest.NewServer(withSandbox(gone, goneHandler))
		defer goneSrv.Close()
		goneClient := processconnect.NewProcessClient(goneSrv.Client(), goneSrv.URL, connect.WithProtoJSON())
		_, _, err = procStart(ctx, t, goneClient, &processpb.StartRequest{Process: procCmd("true")}, procEnded)
		procCode(t, "start in a deleted sandbox", err, connect.CodeUnavailable)
		_, err = goneClient.List(ctx, connect.NewRequest(&processpb.ListRequest{}))
		procCode(t, "list in a deleted sandbox", err, connect.CodeUnavailable)

		// Without the router's sandbox: unauthenticated.
		_, bare := NewProcessHandler(plane.api)
		srv := httptest.NewServer(bare)
		defer srv.Close()
		_, err = processconnect.NewProcessClient(srv.Client(), srv.URL, connect.WithProtoJSON()).List(ctx, connect.NewRequest(&processpb.ListRequest{}))
		procCode(t, "no sandbox", err, connect.CodeUnauthenticated)
	})
}

// TestEndEvent: an exit in envd's words (Go's os.ProcessState's).
func TestEndEvent(t *testing.T) {
	for _, c := range []struct {
		exit   *fsbv1.ProcessExit
		code   int32
		exited bool
		status string
	}{
		{&fsbv1.ProcessExit{ExitCode: 0}, 0, true, "exit status 0"},
		{&fsbv1.ProcessExit{ExitCode: 3}, 3, true, "exit status 3"},
		{&fsbv1.ProcessExit{ExitCode: 137, Signal: "KILL"}, -1, false, "signal: killed"},
		{&fsbv1.ProcessExit{ExitCode: 143, Signal: "TERM", TimedOut: false}, -1, false, "signal: terminated"},
		{&fsbv1.ProcessExit{ExitCode: 130, Signal: "INT"}, -1, false, "signal: interrupt"},
	} {
		end := endEvent(c.exit)
		wantErr := c.status
		if c.code == 0 {
			wantErr = ""
		}
		if end.GetExitCode() != c.code || end.GetExited() != c.exited || end.GetStatus() != c.status || end.GetError() != wantErr || (c.code == 0) != (end.Error == nil) {
			t.Errorf("endEvent(%v) = %v; want %d %v %q", c.exit, end, c.code, c.exited, c.status)
		}
	}
}

// TestWorkingDir: a request's cwd as envd resolves it.
func TestWorkingDir(t *testing.T) {
	for _, c := range []struct{ user, cwd, want string }{
		{DefaultUser, "", DefaultHome},
		{DefaultUser, "~", DefaultHome},
		{DefaultUser, "~/a/b", DefaultHome + "/a/b"},
		{DefaultUser, "a/../b", DefaultHome + "/b"},
		{"root", "", "/root"},
		{"root", "/tmp/", "/tmp"},
		{"other", "", ""},
		{"other", "/x", "/x"},
	} {
		if got, err := workingDir(c.user, c.cwd); err != nil || got != c.want {
			t.Errorf("workingDir(%q, %q) = %q, %v; want %q", c.user, c.cwd, got, err, c.want)
		}
	}
	if _, err := workingDir("other", "rel"); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("a relative cwd for a user whose home is unknown: %v, want InvalidArgument", err)
	}
}

// TestProcessErrorKeepsCodes: the FastPathService's answers keep their
// codes; an unreachable controller is Unavailable.
func TestProcessErrorKeepsCodes(t *testing.T) {
	if got := connect.CodeOf(processError(connect.NewError(connect.CodeNotFound, errors.New("x")))); got != connect.CodeNotFound {
		t.Errorf("NotFound became %v", got)
	}
	if got := connect.CodeOf(processError(errors.New("dial tcp: refused"))); got != connect.CodeUnavailable {
		t.Errorf("a transport error became %v, want Unavailable", got)
	}
}
