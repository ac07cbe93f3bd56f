package pid1

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

const testToken = "test-token-0123456789"

// fakeAgent is the agent's side of the link for a test: it listens where
// init dials, checks each hello, and hands out the idle connections.
type fakeAgent struct {
	t         testing.TB
	dir       string
	ln        *net.UnixListener
	accepting sync.WaitGroup
	conns     chan net.Conn
	mu        sync.Mutex
	hellos    []string
	init      *exec.Cmd
	stderr    *rig.Buffer
	done      chan struct{} // closed when init exited
	status    int
}

// startInit starts the test binary as fsb init with a link to a fake agent,
// running main (sleep by default) as the main process.
func startInit(t testing.TB, token string, main ...string) *fakeAgent {
	t.Helper()
	return startInitUnder(t, nil, token, main...)
}

// startInitUnder is startInit with init started through the command wrap.
func startInitUnder(t testing.TB, wrap []string, token string, main ...string) *fakeAgent {
	t.Helper()
	if len(main) == 0 {
		main = []string{"sleep", "1000"}
	}
	dir, err := os.MkdirTemp("", "fsb-link-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	a := &fakeAgent{t: t, dir: dir, conns: make(chan net.Conn, 2*initlink.MaxConns), done: make(chan struct{})}
	a.listen()
	argv := append(append(append([]string{}, wrap...), os.Args[0], "--"), main...)
	cmd := exec.Command(argv[0], argv[1:]...)
	// In "/", as a sandbox's init runs by default: processes of other
	// users start in init's directory, which they could not enter when
	// the checkout lies in a private directory (mktemp -d).
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "FSB_PID1_TEST=1", "FSB_PID1_TEST_LINK="+dir, "FOO_FROM_INIT=yes")
	if token != "" {
		cmd.Env = append(cmd.Env, initlink.TokenEnv+"="+token)
	}
	a.stderr = &rig.Buffer{}
	cmd.Stderr = a.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.init = cmd
	go func() {
		err := cmd.Wait()
		a.status = exitCodeOf(err)
		close(a.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-a.done
		}
		a.stop()
	})
	return a
}

// listen listens where init dials and accepts until stop.
func (a *fakeAgent) listen() {
	a.t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(a.dir, initlink.SocketName), Net: "unix"})
	if err != nil {
		a.t.Fatal(err)
	}
	a.ln = ln
	a.accepting.Add(1)
	go func() {
		defer a.accepting.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			ft, b, err := initlink.ReadFrame(c, nil)
			_ = c.SetReadDeadline(time.Time{})
			var h initlink.Hello
			if err != nil || ft != initlink.FrameHello || initlink.Decode(b, &h) != nil {
				_ = c.Close()
				continue
			}
			a.mu.Lock()
			a.hellos = append(a.hellos, h.Token)
			a.mu.Unlock()
			a.conns <- c
		}
	}()
}

// stop stops listening (the socket goes) and closes the idle connections,
// as an agent that stops does.
func (a *fakeAgent) stop() {
	_ = a.ln.Close()
	a.accepting.Wait()
	for {
		select {
		case c := <-a.conns:
			_ = c.Close()
		default:
			return
		}
	}
}

func exitCodeOf(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// open takes an idle connection and sends req on it.
func (a *fakeAgent) open(req initlink.Request) *agentConn {
	a.t.Helper()
	select {
	case c := <-a.conns:
		a.t.Cleanup(func() { _ = c.Close() })
		if err := initlink.WriteJSON(c, initlink.FrameRequest, req); err != nil {
			a.t.Fatalf("send request: %v", err)
		}
		return &agentConn{t: a.t, c: c}
	case <-time.After(10 * time.Second):
		a.t.Fatalf("init kept no idle connection; its stderr: %s", a.stderr)
		return nil
	}
}

// call sends a unary request and returns its answer or its error.
func (a *fakeAgent) call(req initlink.Request) (*initlink.Response, *initlink.Error) {
	a.t.Helper()
	c := a.open(req)
	defer c.c.Close()
	t, b := c.next()
	switch t {
	case initlink.FrameResponse:
		var r initlink.Response
		c.decode(b, &r)
		return &r, nil
	case initlink.FrameError:
		var e initlink.Error
		c.decode(b, &e)
		return nil, &e
	}
	a.t.Fatalf("%s: answer frame type %d", req.Op, t)
	return nil, nil
}

type agentConn struct {
	t testing.TB
	c net.Conn
}

// next reads the next frame, failing the test after 20 s.
func (c *agentConn) next() (initlink.FrameType, []byte) {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	t, b, err := initlink.ReadFrame(c.c, nil)
	if err != nil {
		c.t.Fatalf("read a frame: %v", err)
	}
	return t, b
}

func (c *agentConn) decode(b []byte, v any) {
	c.t.Helper()
	if err := initlink.Decode(b, v); err != nil {
		c.t.Fatal(err)
	}
}

func (c *agentConn) send(t initlink.FrameType, b []byte) {
	c.t.Helper()
	if err := initlink.WriteFrame(c.c, t, b); err != nil {
		c.t.Fatalf("send frame %d: %v", t, err)
	}
}

// result is what a process stream carried.
type result struct {
	pid    int
	stdout string
	stderr string
	exit   *initlink.Exit
	err    *initlink.Error
}

// collect reads a process stream to its end.
func (c *agentConn) collect() result {
	c.t.Helper()
	var r result
	var out, errb strings.Builder
	for {
		t, b := c.next()
		switch t {
		case initlink.FrameStarted:
			var s initlink.Started
			c.decode(b, &s)
			r.pid = s.PID
		case initlink.FrameStdout:
			out.Write(b)
		case initlink.FrameStderr:
			errb.Write(b)
		case initlink.FrameExit:
			r.exit = &initlink.Exit{}
			c.decode(b, r.exit)
		case initlink.FrameError:
			r.err = &initlink.Error{}
			c.decode(b, r.err)
		default:
			c.t.Fatalf("unexpected frame type %d on a process stream", t)
		}
		if r.exit != nil || r.err != nil {
			r.stdout, r.stderr = out.String(), errb.String()
			return r
		}
	}
}

// started reads the FrameStarted that opens a process stream.
func (c *agentConn) started() int {
	c.t.Helper()
	t, b := c.next()
	if t != initlink.FrameStarted {
		c.t.Fatalf("first frame type %d (%s), want started", t, b)
	}
	var s initlink.Started
	c.decode(b, &s)
	return s.PID
}

func (a *fakeAgent) exec(p initlink.Process) result {
	a.t.Helper()
	return a.open(initlink.Request{Op: initlink.OpExec, Process: &p}).collect()
}

func TestExec(t *testing.T) {
	a := startInit(t, testToken)
	for _, tc := range []struct {
		name       string
		proc       initlink.Process
		stdout     string
		stderr     string
		code       int
		signal     string
		errCode    string
		errMessage string
	}{
		{name: "exit 0", proc: initlink.Process{Args: []string{"true"}}},
		{name: "exit 3", proc: initlink.Process{Args: []string{"sh", "-c", "exit 3"}}, code: 3},
		{name: "killed", proc: initlink.Process{Args: []string{"sh", "-c", "kill -KILL $$"}}, code: 137, signal: "KILL"},
		{name: "stdout and stderr apart", proc: initlink.Process{Args: []string{"sh", "-c", "echo out; echo err >&2; echo out2"}},
			stdout: "out\nout2\n", stderr: "err\n"},
		{name: "env, with init's own and an override", proc: initlink.Process{Args: []string{"sh", "-c", `echo "$FOO_FROM_INIT $BAR ${` + initlink.TokenEnv + `-no-token}"`},
			Env: []string{"BAR=bar"}}, stdout: "yes bar no-token\n"},
		{name: "env override wins", proc: initlink.Process{Args: []string{"sh", "-c", `echo $FOO_FROM_INIT`}, Env: []string{"FOO_FROM_INIT=over"}},
			stdout: "over\n"},
		{name: "working dir", proc: initlink.Process{Args: []string{"pwd"}, Dir: "/usr"}, stdout: "/usr\n"},
		{name: "user by number", proc: initlink.Process{Args: []string{"sh", "-c", "id -u; id -g"}, User: "65534"}, stdout: "65534\n"},
		{name: "user and group by number", proc: initlink.Process{Args: []string{"sh", "-c", "id -u; id -g"}, User: "65534:65534"}, stdout: "65534\n65534\n"},
		{name: "user by name", proc: initlink.Process{Args: []string{"sh", "-c", "id -un; id -u"}, User: "nobody"}, stdout: "nobody\n65534\n"},
		{name: "missing command", proc: initlink.Process{Args: []string{"no-such-command"}}, errCode: initlink.CodeNotFound, errMessage: "no-such-command: not found"},
		{name: "missing working dir", proc: initlink.Process{Args: []string{"true"}, Dir: "/no/such/dir"}, errCode: initlink.CodeNotFound, errMessage: "/no/such/dir"},
		{name: "missing user", proc: initlink.Process{Args: []string{"true"}, User: "no-such-user"}, errCode: initlink.CodeNotFound, errMessage: "no-such-user"},
		{name: "no command", proc: initlink.Process{}, errCode: initlink.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.exec(tc.proc)
			if tc.errCode != "" {
				if r.err == nil || r.err.Code != tc.errCode || !strings.Contains(r.err.Message, tc.errMessage) {
					t.Fatalf("got %+v / %+v, want error %s with %q", r.exit, r.err, tc.errCode, tc.errMessage)
				}
				return
			}
			if r.err != nil {
				t.Fatalf("error %+v", r.err)
			}
			if r.pid <= 0 {
				t.Errorf("pid %d", r.pid)
			}
			if r.exit.Code != tc.code || r.exit.Signal != tc.signal {
				t.Errorf("exit %+v, want code %d signal %q", r.exit, tc.code, tc.signal)
			}
			if tc.name == "user by number" {
				// A uid alone takes its group from /etc/passwd.
				tc.stdout = "65534\n" + groupOf(t, "65534") + "\n"
			}
			if r.stdout != tc.stdout || r.stderr != tc.stderr {
				t.Errorf("stdout %q stderr %q, want %q and %q", r.stdout, r.stderr, tc.stdout, tc.stderr)
			}
		})
	}
}

// groupOf is uid's primary group in the host's /etc/passwd.
func groupOf(t *testing.T, uid string) string {
	e := findEntry("/etc/passwd", func(f []string) bool { return len(f) >= 6 && f[2] == uid })
	if e == nil {
		t.Fatalf("uid %s is not in /etc/passwd", uid)
	}
	return e[3]
}

// The token reaches init alone: hellos carry it, and neither the main
// process nor an exec'd one sees it.
func TestTokenStaysWithInit(t *testing.T) {
	a := startInit(t, testToken, "sh", "-c", `echo "main:${`+initlink.TokenEnv+`-none}" >&2; exec sleep 1000`)
	r := a.exec(initlink.Process{Args: []string{"sh", "-c", "tr '\\0' '\\n' < /proc/$$/environ | grep -c " + initlink.TokenEnv + " || true"}})
	if r.err != nil || r.stdout != "0\n" {
		t.Errorf("exec'd process: %+v, stdout %q, want no token in its environment", r.err, r.stdout)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(a.stderr.String(), "main:") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := a.stderr.String(); !strings.Contains(got, "main:none") {
		t.Errorf("main process printed %q, want main:none", got)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, h := range a.hellos {
		if h != testToken {
			t.Errorf("hello token %q, want %q", h, testToken)
		}
	}
}

// Without a token init never dials, so there is no link at all.
func TestNoTokenNoLink(t *testing.T) {
	a := startInit(t, "")
	select {
	case <-a.conns:
		t.Fatal("init dialed the agent without a token")
	case <-time.After(300 * time.Millisecond):
	}
}

// dockerCaps is Docker's default capability set, which sandboxes get.
const dockerCaps = "-all,+chown,+dac_override,+fsetid,+fowner,+mknod,+net_raw,+setgid,+setuid,+setfcap,+setpcap,+net_bind_service,+sys_chroot,+kill,+audit_write"

// A process of the sandbox running as root with the sandbox's capabilities
// (no CAP_SYS_PTRACE, CAP_SYS_ADMIN or CAP_PERFMON, any of which would let
// it read a non-dumpable process's memory) cannot read init's environment,
// which held the token: init is not dumpable. Init runs with the same
// capabilities, as in a sandbox: a process with fewer capabilities than
// its target is refused whatever the target's dumpability.
func TestInitEnvironIsClosed(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) is needed: %v", err)
	}
	a := startInitUnder(t, []string{"setpriv", "--bounding-set=" + dockerCaps}, testToken)
	r := a.exec(initlink.Process{Args: []string{"sh", "-c",
		`for f in environ auxv; do if cat /proc/$PPID/$f >/dev/null 2>&1; then echo "$f readable"; else echo "$f denied"; fi; done`}})
	if r.err != nil || r.stdout != "environ denied\nauxv denied\n" {
		t.Errorf("got %+v %q %q, want init's environ and auxv denied", r.err, r.stdout, r.stderr)
	}
}

// An agent that restarts (its socket gone a while, then back) gets init's
// connections again.
func TestLinkSurvivesAgentRestart(t *testing.T) {
	a := startInit(t, testToken)
	if r := a.exec(initlink.Process{Args: []string{"echo", "one"}}); r.stdout != "one\n" {
		t.Fatalf("before the restart: %+v", r)
	}
	a.stop()
	time.Sleep(300 * time.Millisecond) // init's dials fail meanwhile
	a.listen()
	if r := a.exec(initlink.Process{Args: []string{"echo", "two"}}); r.stdout != "two\n" {
		t.Fatalf("after the restart: %+v", r)
	}
}

// BenchmarkExec times an exec through init's link from its request to its
// first output byte (first-output/op, in ms) and to its exit.
func BenchmarkExec(b *testing.B) {
	a := startInit(b, testToken)
	var first time.Duration
	for b.Loop() {
		start := time.Now()
		c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"echo", "hi"}}})
		c.started()
		if t, _ := c.next(); t != initlink.FrameStdout {
			b.Fatalf("frame type %d, want stdout", t)
		}
		first += time.Since(start)
		if t, _ := c.next(); t != initlink.FrameExit {
			b.Fatalf("frame type %d, want exit", t)
		}
		_ = c.c.Close()
	}
	b.ReportMetric(float64(first.Microseconds())/1000/float64(b.N), "first-output-ms/op")
}

// Init holds at most MaxConns connections, busy ones included, and dials
// again once one is done.
func TestConnectionBound(t *testing.T) {
	a := startInit(t, testToken)
	var streams []*agentConn
	for range initlink.MaxConns {
		c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sleep", "1000"}, TimeoutMillis: 60000}})
		c.started()
		streams = append(streams, c)
	}
	select {
	case c := <-a.conns:
		_ = c.Close()
		t.Fatalf("init dialed connection %d", initlink.MaxConns+1)
	case <-time.After(300 * time.Millisecond):
	}
	_ = streams[0].c.Close()
	if r := a.exec(initlink.Process{Args: []string{"echo", "again"}}); r.stdout != "again\n" {
		t.Errorf("after a connection closed: %+v", r)
	}
	list, e := a.call(initlink.Request{Op: initlink.OpList})
	if e != nil {
		t.Fatal(e)
	}
	for _, p := range list.Processes {
		_ = syscall.Kill(-p.PID, syscall.SIGKILL)
	}
}
