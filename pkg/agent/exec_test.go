package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// execResult is what one process stream brought.
type execResult struct {
	pid            int32
	stdout, stderr string
	exit           *fsbv1.ProcessExit
	err            error
}

// collect reads a process stream to its end.
func collect(next func() (*fsbv1.ExecEvent, bool), streamErr func() error) execResult {
	var r execResult
	var out, errb bytes.Buffer
	for {
		ev, ok := next()
		if !ok {
			break
		}
		switch e := ev.GetEvent().(type) {
		case *fsbv1.ExecEvent_Started:
			r.pid = e.Started.GetPid()
		case *fsbv1.ExecEvent_Stdout:
			out.Write(e.Stdout)
		case *fsbv1.ExecEvent_Stderr:
			errb.Write(e.Stderr)
		case *fsbv1.ExecEvent_Exit:
			r.exit = e.Exit
		}
	}
	r.stdout, r.stderr, r.err = out.String(), errb.String(), streamErr()
	return r
}

// execStream starts a process and returns its stream.
func (h *harness) execStream(ctx context.Context, id string, p *fsbv1.ProcessSpec) *connect.ServerStreamForClient[fsbv1.AgentServiceExecResponse] {
	h.t.Helper()
	s, err := h.client.Exec(ctx, connect.NewRequest(&fsbv1.AgentServiceExecRequest{SandboxId: id, Process: p}))
	if err != nil {
		h.t.Fatalf("Exec: %v", err)
	}
	return s
}

// run starts a process and reads its stream to the end.
func (h *harness) run(ctx context.Context, id string, p *fsbv1.ProcessSpec) execResult {
	h.t.Helper()
	s := h.execStream(ctx, id, p)
	defer s.Close()
	return collect(func() (*fsbv1.ExecEvent, bool) {
		if !s.Receive() {
			return nil, false
		}
		return s.Msg().GetEvent(), true
	}, s.Err)
}

// sh runs a shell script in the sandbox and fails the test unless it
// exits 0; it returns its stdout.
func (h *harness) sh(id, script string) string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := h.run(ctx, id, &fsbv1.ProcessSpec{Command: []string{"sh", "-c", script}})
	if r.err != nil || r.exit.GetExitCode() != 0 {
		h.t.Fatalf("%q: exit %v, err %v\nstdout: %s\nstderr: %s", script, r.exit, r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

// rest reads the rest of an exec stream.
func rest(s *connect.ServerStreamForClient[fsbv1.AgentServiceExecResponse]) execResult {
	return collect(func() (*fsbv1.ExecEvent, bool) {
		ok := s.Receive()
		return s.Msg().GetEvent(), ok
	}, s.Err)
}

// firstPID reads a stream's Started event.
func firstPID(t *testing.T, s *connect.ServerStreamForClient[fsbv1.AgentServiceExecResponse]) int32 {
	t.Helper()
	if !s.Receive() {
		t.Fatalf("no started event: %v", s.Err())
	}
	pid := s.Msg().GetEvent().GetStarted().GetPid()
	if pid <= 0 {
		t.Fatalf("first event %v, want started", s.Msg().GetEvent())
	}
	return pid
}

// execRuntimes are the runtimes the exec tests run on: every one the rig
// offers (the harness configures runc, crun and gVisor).
var execRuntimes = []string{runtime.RuntimeRunc, runtime.RuntimeCrun, runtime.RuntimeGVisor}

func runtimeSpec(rt, script string) *fsbv1.SandboxSpec {
	s := spec(script)
	s.Runtime = rt
	return s
}

// TestExec runs the exec and files API against a sandbox of every
// runtime: the cases share one sandbox per runtime, and run in parallel.
func TestExec(t *testing.T) {
	t.Parallel()
	for _, rt := range execRuntimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			sb := h.create(runtimeSpec(rt, "exec tail -f /dev/null"))
			id := sb.GetSandboxId()
			// The cases run in parallel, after this function returns.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			t.Cleanup(cancel)

			t.Run("exit codes", func(t *testing.T) {
				t.Parallel()
				for _, tc := range []struct {
					cmd  []string
					code int32
				}{{[]string{"true"}, 0}, {[]string{"sh", "-c", "exit 3"}, 3}} {
					r := h.run(ctx, id, &fsbv1.ProcessSpec{Command: tc.cmd})
					if r.err != nil || r.exit.GetExitCode() != tc.code || r.pid <= 0 {
						t.Errorf("%v: pid %d, exit %v, err %v; want code %d", tc.cmd, r.pid, r.exit, r.err, tc.code)
					}
				}
				s := h.execStream(ctx, id, &fsbv1.ProcessSpec{Command: []string{"sleep", "1000"}})
				defer s.Close()
				pid := firstPID(t, s)
				if _, err := h.client.SignalProcess(ctx, connect.NewRequest(&fsbv1.AgentServiceSignalProcessRequest{SandboxId: id, Pid: pid, Signal: "KILL"})); err != nil {
					t.Fatalf("SignalProcess: %v", err)
				}
				r := rest(s)
				if r.exit.GetExitCode() != 137 || r.exit.GetSignal() != "KILL" {
					t.Errorf("killed: exit %v, err %v; want 137 KILL", r.exit, r.err)
				}
			})

			t.Run("stdout and stderr apart", func(t *testing.T) {
				t.Parallel()
				r := h.run(ctx, id, &fsbv1.ProcessSpec{Command: []string{"sh", "-c", "echo out; echo err >&2; echo out2"}})
				if r.stdout != "out\nout2\n" || r.stderr != "err\n" || r.exit.GetExitCode() != 0 {
					t.Errorf("stdout %q, stderr %q, exit %v, err %v", r.stdout, r.stderr, r.exit, r.err)
				}
			})

			t.Run("stdin round trip", func(t *testing.T) {
				t.Parallel()
				s := h.execStream(ctx, id, &fsbv1.ProcessSpec{Command: []string{"cat"}, Stdin: true})
				defer s.Close()
				pid := firstPID(t, s)
				for _, part := range []string{"hello ", "world\n"} {
					if _, err := h.client.SendInput(ctx, connect.NewRequest(&fsbv1.AgentServiceSendInputRequest{SandboxId: id, Pid: pid, Data: []byte(part)})); err != nil {
						t.Fatalf("SendInput: %v", err)
					}
				}
				if _, err := h.client.CloseInput(ctx, connect.NewRequest(&fsbv1.AgentServiceCloseInputRequest{SandboxId: id, Pid: pid})); err != nil {
					t.Fatalf("CloseInput: %v", err)
				}
				r := rest(s)
				if r.stdout != "hello world\n" || r.exit.GetExitCode() != 0 {
					t.Errorf("cat: stdout %q, exit %v, err %v", r.stdout, r.exit, r.err)
				}
			})

			t.Run("env cwd user", func(t *testing.T) {
				t.Parallel()
				r := h.run(ctx, id, &fsbv1.ProcessSpec{
					Command:    []string{"sh", "-c", `echo "$FOO|$(pwd)|$(id -u):$(id -g)|${FSB_LINK_TOKEN:-none}"`},
					Envs:       map[string]string{"FOO": "bar baz"},
					WorkingDir: "/tmp",
					User:       "65534:65534",
				})
				if want := "bar baz|/tmp|65534:65534|none\n"; r.stdout != want {
					t.Errorf("stdout %q, want %q (stderr %q, err %v)", r.stdout, want, r.stderr, r.err)
				}
			})

			t.Run("pty", func(t *testing.T) {
				t.Parallel()
				s := h.execStream(ctx, id, &fsbv1.ProcessSpec{
					Command: []string{"sh", "-c", "tty; stty size; read x; stty size"},
					Pty:     true, PtySize: &fsbv1.PtySize{Rows: 24, Cols: 80},
				})
				defer s.Close()
				pid := firstPID(t, s)
				var out strings.Builder
				readUntil := func(want string) {
					t.Helper()
					for !strings.Contains(out.String(), want) {
						if !s.Receive() {
							t.Fatalf("stream ended before %q: %v; output %q", want, s.Err(), out.String())
						}
						out.Write(s.Msg().GetEvent().GetStdout())
					}
				}
				readUntil("24 80")
				if !strings.Contains(out.String(), "/dev/pts/") {
					t.Errorf("tty said %q: not a terminal", out.String())
				}
				if _, err := h.client.ResizePty(ctx, connect.NewRequest(&fsbv1.AgentServiceResizePtyRequest{SandboxId: id, Pid: pid, Size: &fsbv1.PtySize{Rows: 40, Cols: 100}})); err != nil {
					t.Fatalf("ResizePty: %v", err)
				}
				if _, err := h.client.SendInput(ctx, connect.NewRequest(&fsbv1.AgentServiceSendInputRequest{SandboxId: id, Pid: pid, Data: []byte("\n")})); err != nil {
					t.Fatalf("SendInput: %v", err)
				}
				readUntil("40 100")
			})

			t.Run("reattach", func(t *testing.T) {
				t.Parallel()
				sctx, scancel := context.WithCancel(ctx)
				s := h.execStream(sctx, id, &fsbv1.ProcessSpec{Command: []string{"sh", "-c", "read x; echo after-$x; echo err-$x >&2"}, Stdin: true})
				pid := firstPID(t, s)
				scancel() // detach: the process goes on
				s.Close()
				// The detach reaches init on its own time: output before it
				// would go to the stream that is closing.
				h.waitDetached(ctx, id, pid)
				if _, err := h.client.SendInput(ctx, connect.NewRequest(&fsbv1.AgentServiceSendInputRequest{SandboxId: id, Pid: pid, Data: []byte("go\n")})); err != nil {
					t.Fatalf("SendInput: %v", err)
				}
				a, err := h.client.AttachProcess(ctx, connect.NewRequest(&fsbv1.AgentServiceAttachProcessRequest{SandboxId: id, Pid: pid}))
				if err != nil {
					t.Fatal(err)
				}
				defer a.Close()
				r := collect(func() (*fsbv1.ExecEvent, bool) {
					ok := a.Receive()
					return a.Msg().GetEvent(), ok
				}, a.Err)
				if r.stdout != "after-go\n" || r.stderr != "err-go\n" || r.exit.GetExitCode() != 0 {
					t.Errorf("reattached: stdout %q, stderr %q, exit %v, err %v", r.stdout, r.stderr, r.exit, r.err)
				}
			})

			t.Run("timeout kills the group", func(t *testing.T) {
				t.Parallel()
				r := h.run(ctx, id, &fsbv1.ProcessSpec{Command: []string{"sh", "-c", "sleep 1001 & sleep 1001"}, TimeoutSeconds: 1})
				if !r.exit.GetTimedOut() || r.exit.GetExitCode() != 137 {
					t.Errorf("exit %v, err %v; want timed out, 137", r.exit, r.err)
				}
				deadline := time.Now().Add(10 * time.Second)
				for {
					ps := h.sh(id, "ps -o args")
					if !strings.Contains(ps, "sleep 1001") {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("a sleep outlived the timeout:\n%s", ps)
					}
					time.Sleep(50 * time.Millisecond)
				}
			})

			t.Run("20 concurrent", func(t *testing.T) {
				t.Parallel()
				var wg sync.WaitGroup
				errs := make(chan error, 20)
				for i := range 20 {
					wg.Go(func() {
						r := h.run(ctx, id, &fsbv1.ProcessSpec{Command: []string{"sh", "-c", "echo n$0", fmt.Sprint(i)}})
						if r.err != nil || r.exit.GetExitCode() != 0 || r.stdout != fmt.Sprintf("n%d\n", i) {
							errs <- fmt.Errorf("exec %d: stdout %q, exit %v, err %v", i, r.stdout, r.exit, r.err)
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			})

			t.Run("files", func(t *testing.T) {
				t.Parallel()
				testFiles(ctx, t, h, id)
			})

			t.Run("dev shm full", func(t *testing.T) {
				t.Parallel()
				// Most of the sandbox's 64 MiB /dev/shm is filled from
				// inside (quick), the rest through WriteFile.
				h.sh(id, "dd if=/dev/zero of=/dev/shm/pad bs=1M count=60 2>/dev/null")
				_, err := h.writeFile(ctx, id, "/dev/shm/fill", 0, 8, make([]byte, 1<<20))
				if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "no space left on device") {
					t.Fatalf("filling /dev/shm: %v; want ResourceExhausted, no space left on device", err)
				}
				// The temporary file went with the failed write.
				if ls := h.sh(id, "ls -A /dev/shm; rm /dev/shm/pad"); ls != "pad\n" {
					t.Errorf("/dev/shm holds %q after the failed write, want pad alone", ls)
				}
			})

			t.Run("hijack", func(t *testing.T) {
				t.Parallel()
				testHijack(ctx, t, h, id)
			})

			t.Run("init's environment", func(t *testing.T) {
				t.Parallel()
				testInitEnviron(ctx, t, h, id)
			})
		})
	}
}

// waitDetached waits until init lists process pid as having no client.
func (h *harness) waitDetached(ctx context.Context, id string, pid int32) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := h.client.ListProcesses(ctx, connect.NewRequest(&fsbv1.AgentServiceListProcessesRequest{SandboxId: id}))
		if err != nil {
			h.t.Fatalf("ListProcesses: %v", err)
		}
		for _, p := range resp.Msg.GetProcesses() {
			if p.GetPid() == pid && !p.GetAttached() {
				return
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("process %d still attached: %v", pid, resp.Msg.GetProcesses())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeFile writes n copies of chunk to path through WriteFile.
func (h *harness) writeFile(ctx context.Context, id, path string, mode uint32, n int, chunk []byte) (*fsbv1.FileInfo, error) {
	s := h.client.WriteFile(ctx)
	first := &fsbv1.AgentServiceWriteFileRequest{SandboxId: id, Path: path, Mode: mode}
	if err := s.Send(first); err != nil {
		resp, err := s.CloseAndReceive()
		return resp.Msg.GetInfo(), err
	}
	for range n {
		if err := s.Send(&fsbv1.AgentServiceWriteFileRequest{Data: chunk}); err != nil {
			break // the answer says why
		}
	}
	resp, err := s.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetInfo(), nil
}

// readFile reads a whole file through ReadFile.
func (h *harness) readFile(ctx context.Context, id, path string) (*fsbv1.FileInfo, []byte, error) {
	s, err := h.client.ReadFile(ctx, connect.NewRequest(&fsbv1.AgentServiceReadFileRequest{SandboxId: id, Path: path}))
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	var info *fsbv1.FileInfo
	var data []byte
	for s.Receive() {
		if s.Msg().GetInfo() != nil {
			info = s.Msg().GetInfo()
		}
		data = append(data, s.Msg().GetData()...)
	}
	return info, data, s.Err()
}

func testFiles(ctx context.Context, t *testing.T, h *harness, id string) {
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB: two frames to init each
	info, err := h.writeFile(ctx, id, "/tmp/f/data.bin", 0o600, 5, chunk)
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("write into a missing directory without make_parents: %v, want NotFound", err)
	}
	if _, err := h.client.MakeDir(ctx, connect.NewRequest(&fsbv1.AgentServiceMakeDirRequest{SandboxId: id, Path: "/tmp/f"})); err != nil {
		t.Fatalf("MakeDir: %v", err)
	}
	info, err = h.writeFile(ctx, id, "/tmp/f/data.bin", 0o600, 5, chunk)
	if err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	if info.GetSize() != int64(5*len(chunk)) || info.GetMode() != 0o600 || info.GetType() != fsbv1.FileType_FILE_TYPE_FILE {
		t.Errorf("written: %v", info)
	}
	_, data, err := h.readFile(ctx, id, "/tmp/f/data.bin")
	if err != nil || !bytes.Equal(data, bytes.Repeat(chunk, 5)) {
		t.Fatalf("read back %d bytes, err %v; want %d the same", len(data), err, 5*len(chunk))
	}
	if got := h.sh(id, "md5sum < /tmp/f/data.bin | cut -d' ' -f1"); strings.TrimSpace(got) == "" {
		t.Errorf("the file is not where the sandbox sees it")
	}
	if _, err := h.client.Move(ctx, connect.NewRequest(&fsbv1.AgentServiceMoveRequest{SandboxId: id, Source: "/tmp/f/data.bin", Destination: "/tmp/f/moved.bin"})); err != nil {
		t.Fatalf("Move: %v", err)
	}
	ls, err := h.client.ListDir(ctx, connect.NewRequest(&fsbv1.AgentServiceListDirRequest{SandboxId: id, Path: "/tmp/f"}))
	if err != nil || len(ls.Msg.GetEntries()) != 1 || ls.Msg.GetEntries()[0].GetName() != "moved.bin" {
		t.Fatalf("ListDir: %v, %v", ls, err)
	}
	if _, err := h.client.Remove(ctx, connect.NewRequest(&fsbv1.AgentServiceRemoveRequest{SandboxId: id, Path: "/tmp/f", Recursive: true})); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	_, err = h.client.Stat(ctx, connect.NewRequest(&fsbv1.AgentServiceStatRequest{SandboxId: id, Path: "/tmp/f"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("stat of a removed directory: %v, want NotFound", err)
	}
	for _, p := range []string{"tmp/x", "/tmp/../etc", "/tmp/", ""} {
		_, err := h.client.Stat(ctx, connect.NewRequest(&fsbv1.AgentServiceStatRequest{SandboxId: id, Path: p}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("stat %q: %v, want InvalidArgument", p, err)
		}
	}
}

var probe struct {
	once sync.Once
	bin  []byte
	err  error
}

// linkProbe builds testdata/linkprobe, static, for the sandbox.
func linkProbe(t *testing.T) []byte {
	probe.once.Do(func() {
		dir, err := os.MkdirTemp("", "linkprobe")
		if err != nil {
			probe.err = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "linkprobe")
		cmd := exec.Command("go", "build", "-o", out, "./testdata/linkprobe")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			probe.err = fmt.Errorf("build linkprobe: %v: %s", err, b)
			return
		}
		probe.bin, probe.err = os.ReadFile(out)
	})
	if probe.err != nil {
		t.Fatal(probe.err)
	}
	return probe.bin
}

// testInitEnviron: neither another user (b) nor root (c) inside reads the
// token from init's environment, nor opens init's memory, where it lives
// too.
func testInitEnviron(ctx context.Context, t *testing.T, h *harness, id string) {
	for _, user := range []string{"65534", "0"} {
		r := h.run(ctx, id, &fsbv1.ProcessSpec{Command: []string{"sh", "-c", "cat /proc/1/environ"}, User: user})
		if strings.Contains(r.stdout, "FSB_LINK_TOKEN") {
			t.Errorf("uid %s inside read the token from /proc/1/environ: %q", user, r.stdout)
		}
		r = h.run(ctx, id, &fsbv1.ProcessSpec{Command: []string{"sh", "-c", "dd if=/proc/1/mem of=/dev/null bs=1 count=1 skip=4194304"}, User: user})
		if r.err != nil || r.exit.GetExitCode() == 0 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("uid %s inside opened /proc/1/mem: exit %v, err %v, stderr %q; want Permission denied", user, r.exit, r.err, r.stderr)
		}
	}
}

// testHijack tries, from inside the sandbox, to drive or read the link:
// what only fsb init may do.
func testHijack(ctx context.Context, t *testing.T, h *harness, id string) {
	if _, err := h.writeFile(ctx, id, "/tmp/linkprobe", 0o755, 1, linkProbe(t)); err != nil {
		t.Fatalf("copy the probe in: %v", err)
	}
	sock := "/.fsb/link/s"
	// (a) root inside reaches the socket, but a wrong token or no hello
	// is refused, and nothing runs.
	for _, arg := range []string{"0000000000000000000000000000000000000000000000000000000000000000", "nohello"} {
		if got := h.sh(id, "/tmp/linkprobe "+sock+" "+arg); strings.TrimSpace(got) != "closed" {
			t.Errorf("root inside, %s: the probe says %q, want closed", arg[:7], got)
		}
	}
	// (b) another user cannot even connect.
	r := h.run(ctx, id, &fsbv1.ProcessSpec{Command: []string{"/tmp/linkprobe", sock, "nohello"}, User: "65534"})
	if !strings.Contains(r.stdout, "connect: permission denied") {
		t.Errorf("uid 65534 inside: the probe says %q, want connect: permission denied", r.stdout)
	}
	// (d) nothing inside can replace the socket: the mount is read-only.
	for _, script := range []string{"rm -f /.fsb/link/s", "mv /.fsb/link/s /.fsb/link/t", "ln -s /tmp/x /.fsb/link/y", "touch /.fsb/link/s", "chmod 777 /.fsb/link"} {
		r := h.run(ctx, id, &fsbv1.ProcessSpec{Command: []string{"sh", "-c", script}})
		if r.exit.GetExitCode() == 0 {
			t.Errorf("%q inside succeeded", script)
		}
	}
	if out := h.sh(id, "ls -A /.fsb/link"); out != "s\n" {
		t.Errorf("/.fsb/link holds %q, want s alone", out)
	}
	// Exec still works after every try.
	if out := h.sh(id, "echo still"); out != "still\n" {
		t.Errorf("exec after the hijack attempts: %q", out)
	}
}

func TestExecUnavailable(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	noInit := spec("exec sleep 1000")
	noInit.NoInit = true
	sb := h.create(noInit)
	done := h.create(spec("true"))
	h.waitPhase(done.GetSandboxId(), fsbv1.Phase_PHASE_SUCCEEDED)
	cases := []struct {
		name string
		id   string
		code connect.Code
		msg  string
	}{
		{"no init", sb.GetSandboxId(), connect.CodeFailedPrecondition, "runs without fsb init (--no-init): exec and files are unavailable"},
		{"ended", done.GetSandboxId(), connect.CodeFailedPrecondition, "is not running: it is exited (code 0)"},
		{"missing", "sb-nowhere", connect.CodeNotFound, "is not on agent"},
	}
	for _, tc := range cases {
		r := h.run(ctx, tc.id, &fsbv1.ProcessSpec{Command: []string{"true"}})
		if connect.CodeOf(r.err) != tc.code || !strings.Contains(r.err.Error(), tc.msg) {
			t.Errorf("%s: exec: %v; want %v %q", tc.name, r.err, tc.code, tc.msg)
		}
		_, err := h.client.Stat(ctx, connect.NewRequest(&fsbv1.AgentServiceStatRequest{SandboxId: tc.id, Path: "/"}))
		if connect.CodeOf(err) != tc.code {
			t.Errorf("%s: stat: %v; want %v", tc.name, err, tc.code)
		}
	}
}

// TestExecEndsWithSandbox: the exec'd processes end with the sandbox's
// main process, their streams with a clear error.
func TestExecEndsWithSandbox(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sb := h.create(spec("while [ ! -e /tmp/stop ]; do sleep 0.05; done; exit 5"))
	id := sb.GetSandboxId()
	s := h.execStream(ctx, id, &fsbv1.ProcessSpec{Command: []string{"sleep", "1000"}})
	defer s.Close()
	firstPID(t, s)
	// The touch's own answer races the main process's exit, which it
	// causes: it ends either way, with its exit or with the sandbox's.
	if r := h.run(ctx, id, &fsbv1.ProcessSpec{Command: []string{"touch", "/tmp/stop"}}); r.err != nil && !strings.Contains(r.err.Error(), "main process exited") {
		t.Fatalf("touch /tmp/stop: exit %v, err %v", r.exit, r.err)
	}
	r := rest(s)
	if connect.CodeOf(r.err) != connect.CodeFailedPrecondition || !strings.Contains(r.err.Error(), "main process exited") {
		t.Fatalf("stream of an exec'd process when the sandbox ended: exit %v, err %v", r.exit, r.err)
	}
	h.waitPhase(id, fsbv1.Phase_PHASE_FAILED)
}

// TestExecAfterAgentRestart: init dials the new agent's listener, which
// opened with the token the container's spec keeps.
func TestExecAfterAgentRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	sb := h.create(spec("exec sleep 1000"))
	id := sb.GetSandboxId()
	if out := h.sh(id, "echo before"); out != "before\n" {
		t.Fatalf("exec before the restart: %q", out)
	}
	// The exec is counted, and its output's bytes.
	rec := httptest.NewRecorder()
	h.agent.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`fsb_agent_execs_total{result="started"} 1`, `fsb_agent_exec_bytes_total{kind="exec_output"} 7`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The link dirs' parent is root's alone, whatever mode it had (the
	// harness makes it 0755).
	if st, err := os.Stat(h.rcfg.LinkDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("link dir's parent: %v, %v; want mode 0700", st.Mode(), err)
	}
	// A link dir that no container owns (its sandbox went while no agent
	// ran) is removed at the restart; the running sandbox's is kept.
	stale := filepath.Join(h.rcfg.LinkDir, "0123456789abcdef")
	if err := os.Mkdir(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	// One another agent (of another containerd) listens in is kept.
	other := filepath.Join(h.rcfg.LinkDir, "fedcba9876543210")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(other, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h.restart(nil)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("a leftover link dir survived the restart: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("the link dir another agent listens in was removed: %v", err)
	}
	ln.Close()
	os.RemoveAll(other)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r := h.run(ctx, id, &fsbv1.ProcessSpec{Command: []string{"echo", "after"}})
		cancel()
		if r.err == nil && r.stdout == "after\n" {
			break
		}
		if time.Now().After(deadline) || (r.err != nil && !errors.Is(r.err, context.DeadlineExceeded) && connect.CodeOf(r.err) != connect.CodeUnavailable) {
			t.Fatalf("exec after the agent restarted: stdout %q, err %v", r.stdout, r.err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Deleting removes the sandbox's link directory.
	h.delete(id, 0)
	entries, err := os.ReadDir(h.rcfg.LinkDir)
	if err != nil || len(entries) != 0 {
		t.Errorf("link dir after the delete: %v, %v; want empty", entries, err)
	}
}

// TestExecThroughAgentsRunscWrapper: the runsc wrapper the agent writes
// for itself (not the rig's) lets init dial out of gVisor.
func TestExecThroughAgentsRunscWrapper(t *testing.T) {
	t.Parallel()
	wrapper := filepath.Join(t.TempDir(), "runsc-fsb")
	if err := runtime.WriteRunscWrapper(wrapper, "runsc"); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(s *harnessSetup) { s.runtime.Runtimes[runtime.RuntimeGVisor] = wrapper })
	sb := h.create(runtimeSpec(runtime.RuntimeGVisor, "exec sleep 1000"))
	if out := h.sh(sb.GetSandboxId(), "echo through-gvisor"); out != "through-gvisor\n" {
		t.Errorf("exec in gVisor: %q", out)
	}
}

// TestInitTakesItsReadyName: fsb init, subscribed to every signal, names
// itself initlink.ReadyName, which a stop waits for before its SIGTERM.
func TestInitTakesItsReadyName(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	id := h.create(spec("exec sleep 300")).GetSandboxId()
	if got := h.sh(id, "cat /proc/1/comm"); got != initlink.ReadyName+"\n" {
		t.Errorf("PID 1 is named %q, want %q", got, initlink.ReadyName)
	}
}

// TestExecCountsAgainstLimits shows that exec'd processes live in the
// sandbox, under its pids and memory limits: past the pids limit a fork
// fails, and a process that holds more memory than the sandbox may have is
// killed by the OOM killer.
func TestExecCountsAgainstLimits(t *testing.T) {
	t.Parallel()
	for _, rt := range []string{runtime.RuntimeRunc, runtime.RuntimeCrun} {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			s := runtimeSpec(rt, "exec tail -f /dev/null")
			s.Resources = &fsbv1.Resources{Pids: 24, Memory: "48Mi"}
			id := h.create(s).GetSandboxId()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			// 60 background sleeps cannot all start under a limit of 24:
			// the shell fails and exits, and the timeout then ends the
			// sleeps it left.
			r := h.run(ctx, id, &fsbv1.ProcessSpec{
				Command:        []string{"sh", "-c", "i=0; while [ $i -lt 60 ]; do sleep 60 & i=$((i+1)); done; wait"},
				TimeoutSeconds: 3,
			})
			if r.err != nil || !strings.Contains(r.stderr, "fork") {
				t.Errorf("60 processes under a pids limit of 24: exit %v, err %v, stderr %q; want a fork refused", r.exit, r.err, r.stderr)
			}
			// Until the timeout has ended the sleeps, an exec is refused
			// as the limit's (or init, itself short of pids, drops the
			// request: Unavailable — a CI run saw it once on crun); then
			// the pids are free again, and init answers (checked below:
			// it must have survived).
			for deadline := time.Now().Add(15 * time.Second); ; {
				r = h.run(ctx, id, &fsbv1.ProcessSpec{Command: []string{"sh", "-c", "true & true & wait"}})
				if r.err == nil && r.exit.GetExitCode() == 0 {
					break
				}
				refused := connect.CodeOf(r.err) == connect.CodeResourceExhausted || connect.CodeOf(r.err) == connect.CodeUnavailable
				if r.err != nil && !refused || time.Now().After(deadline) {
					t.Fatalf("exec after the fork bomb: exit %v, err %v; want ResourceExhausted or a failed fork until the timeout ends the sleeps, then success", r.exit, r.err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if out := h.sh(id, "ps -o comm | grep -c sleep || true"); out != "0\n" {
				t.Errorf("sleeps left after the exec's timeout: %q", out)
			}

			// An exec'd process is the OOM killer's first pick in the
			// sandbox, before init and the main process.
			if out := h.sh(id, "sleep 0.1; cat /proc/$$/oom_score_adj"); out != "1000\n" {
				t.Errorf("an exec'd process's oom_score_adj: %q, want 1000", out)
			}
			// 100 MB in a shell variable, in a sandbox of 48 MiB.
			r = h.run(ctx, id, &fsbv1.ProcessSpec{Command: []string{"sh", "-c", `x=$(head -c 100000000 /dev/zero | tr '\0' a); echo ${#x}`}})
			if r.err != nil || r.exit.GetExitCode() != 137 {
				t.Errorf("100 MB held in a 48 MiB sandbox: exit %v, err %v, stdout %q, stderr %q; want 137 (OOM kill)", r.exit, r.err, r.stdout, r.stderr)
				// How the sandbox ended (a CI run saw it OOMKilled before
				// exec'd processes were the first pick) and the end of its
				// log (init's own errors go there) tell why.
				time.Sleep(time.Second)
				lines, err := h.logs(&fsbv1.AgentServiceStreamLogsRequest{SandboxId: id})
				if n := len(lines); n > 40 {
					lines = lines[n-40:]
				}
				t.Logf("the sandbox now: %v\nthe end of its log (%v):\n%s", h.get(id), err, strings.Join(lines, "\n"))
			}
			// The sandbox itself goes on.
			if out := h.sh(id, "echo alive"); out != "alive\n" {
				t.Errorf("after the OOM kill: %q", out)
			}
		})
	}
}
