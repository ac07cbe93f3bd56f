package pid1

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readUntil reads a stream's output until it contains want.
func (c *agentConn) readUntil(want string) string {
	c.t.Helper()
	var out strings.Builder
	for !strings.Contains(out.String(), want) {
		t, b := c.next()
		if t != initlink.FrameStdout && t != initlink.FrameStderr {
			c.t.Fatalf("frame type %d (%s) before %q; output so far %q", t, b, want, out.String())
		}
		out.Write(b)
	}
	return out.String()
}

func (a *fakeAgent) process(pid int) initlink.ProcessInfo {
	a.t.Helper()
	r, e := a.call(initlink.Request{Op: initlink.OpList})
	if e != nil {
		a.t.Fatalf("list: %+v", e)
	}
	for _, p := range r.Processes {
		if p.PID == pid {
			return p
		}
	}
	a.t.Fatalf("process %d is not listed: %+v", pid, r.Processes)
	return initlink.ProcessInfo{}
}

func TestStdin(t *testing.T) {
	a := startInit(t, testToken)
	t.Run("stream", func(t *testing.T) {
		c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"cat"}, Stdin: true}})
		c.send(initlink.FrameStdin, []byte("hello\n"))
		c.send(initlink.FrameStdin, []byte("world\n"))
		c.send(initlink.FrameCloseStdin, nil)
		r := c.collect()
		if r.err != nil || r.exit.Code != 0 || r.stdout != "hello\nworld\n" {
			t.Errorf("got %+v %+v stdout %q", r.err, r.exit, r.stdout)
		}
	})
	t.Run("requests", func(t *testing.T) {
		c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sh", "-c", "read x; echo got $x; cat"}, Stdin: true}})
		pid := c.started()
		if _, e := a.call(initlink.Request{Op: initlink.OpInput, PID: pid, Data: []byte("abc\n")}); e != nil {
			t.Fatalf("input: %+v", e)
		}
		c.readUntil("got abc\n")
		if _, e := a.call(initlink.Request{Op: initlink.OpCloseInput, PID: pid}); e != nil {
			t.Fatalf("close input: %+v", e)
		}
		if r := c.collect(); r.err != nil || r.exit.Code != 0 {
			t.Errorf("got %+v %+v", r.err, r.exit)
		}
	})
	t.Run("no input", func(t *testing.T) {
		// Without Stdin the process reads /dev/null, and input is refused.
		c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sh", "-c", "cat; echo eof; sleep 1000"}}})
		pid := c.started()
		c.readUntil("eof\n")
		_, e := a.call(initlink.Request{Op: initlink.OpInput, PID: pid, Data: []byte("x")})
		if e == nil || e.Code != initlink.CodeFailedPrecondition {
			t.Errorf("input to a process without stdin: %+v, want failed_precondition", e)
		}
		if _, e := a.call(initlink.Request{Op: initlink.OpSignal, PID: pid, Signal: int(unix.SIGKILL)}); e != nil {
			t.Fatal(e)
		}
		if r := c.collect(); r.exit == nil || r.exit.Code != 137 {
			t.Errorf("after SIGKILL: %+v %+v", r.err, r.exit)
		}
	})
}

// A process that never reads its input makes a write fail after
// inputTimeout, and init goes on serving.
func TestInputNotRead(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the input timeout (10 s)")
	}
	a := startInit(t, testToken)
	c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sleep", "1000"}, Stdin: true}})
	pid := c.started()
	start := time.Now()
	_, e := a.call(initlink.Request{Op: initlink.OpInput, PID: pid, Data: make([]byte, 512<<10)})
	if e == nil || e.Code != initlink.CodeResourceExhausted || !strings.Contains(e.Message, "does not read its input") {
		t.Fatalf("input never read: %+v, want resource_exhausted", e)
	}
	if d := time.Since(start); d < inputTimeout-time.Second {
		t.Errorf("gave up after %v, want about %v", d, inputTimeout)
	}
	if r := a.exec(initlink.Process{Args: []string{"echo", "still here"}}); r.stdout != "still here\n" {
		t.Errorf("after the input timeout: %+v %q", r.err, r.stdout)
	}
}

func TestPTY(t *testing.T) {
	a := startInit(t, testToken)
	r := a.exec(initlink.Process{Args: []string{"sh", "-c", "tty; stty size; echo err >&2"}, PTY: true, Rows: 30, Cols: 100})
	if r.err != nil || r.exit.Code != 0 {
		t.Fatalf("got %+v %+v", r.err, r.exit)
	}
	if !strings.Contains(r.stdout, "/dev/pts/") || !strings.Contains(r.stdout, "30 100") || !strings.Contains(r.stdout, "err") || r.stderr != "" {
		t.Errorf("stdout %q stderr %q, want a /dev/pts name, 30 100 and err on the terminal", r.stdout, r.stderr)
	}

	c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sh", "-c", "stty size; read x; stty size"}, PTY: true}})
	pid := c.started()
	c.readUntil("24 80")
	if _, e := a.call(initlink.Request{Op: initlink.OpResize, PID: pid, Rows: 40, Cols: 120}); e != nil {
		t.Fatalf("resize: %+v", e)
	}
	c.send(initlink.FrameStdin, []byte("\n"))
	if r := c.collect(); !strings.Contains(r.stdout, "40 120") || r.exit == nil || r.exit.Code != 0 {
		t.Errorf("after resize: %+v %+v stdout %q, want 40 120", r.err, r.exit, r.stdout)
	}
	// A process without a terminal has nothing to resize.
	c = a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sleep", "1000"}, TimeoutMillis: 5000}})
	pid = c.started()
	if _, e := a.call(initlink.Request{Op: initlink.OpResize, PID: pid, Rows: 1, Cols: 1}); e == nil || e.Code != initlink.CodeFailedPrecondition {
		t.Errorf("resize without a terminal: %+v, want failed_precondition", e)
	}
}

func TestReattach(t *testing.T) {
	a := startInit(t, testToken)
	c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sh", "-c", "echo before; read x; echo after $x; echo err >&2"}, Stdin: true}})
	pid := c.started()
	c.readUntil("before\n")
	_ = c.c.Close() // detach
	waitFor(t, "the stream to detach", func() bool { return !a.process(pid).Attached })
	if _, e := a.call(initlink.Request{Op: initlink.OpInput, PID: pid, Data: []byte("x\n")}); e != nil {
		t.Fatal(e)
	}
	waitFor(t, "the process to exit", func() bool { return !a.process(pid).Running })
	if p := a.process(pid); p.Exit == nil || p.Exit.Code != 0 {
		t.Errorf("listed %+v, want exited 0", p)
	}
	r := a.open(initlink.Request{Op: initlink.OpAttach, PID: pid}).collect()
	if r.pid != pid || r.stdout != "after x\n" || r.stderr != "err\n" || r.exit == nil || r.exit.Code != 0 {
		t.Errorf("reattach: %+v, want the output made while detached", r)
	}

	t.Run("a newer attach takes over", func(t *testing.T) {
		c1 := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sleep", "1000"}}})
		pid := c1.started()
		c2 := a.open(initlink.Request{Op: initlink.OpAttach, PID: pid})
		c2.started()
		if r := c1.collect(); r.err == nil || r.err.Code != initlink.CodeDetached {
			t.Errorf("older stream: %+v, want detached", r)
		}
		if _, e := a.call(initlink.Request{Op: initlink.OpSignal, PID: pid, Signal: int(unix.SIGTERM)}); e != nil {
			t.Fatal(e)
		}
		if r := c2.collect(); r.exit == nil || r.exit.Code != 143 || r.exit.Signal != "TERM" {
			t.Errorf("newer stream: %+v %+v, want exit 143 TERM", r.err, r.exit)
		}
	})
	t.Run("unknown process", func(t *testing.T) {
		r := a.open(initlink.Request{Op: initlink.OpAttach, PID: 999999}).collect()
		if r.err == nil || r.err.Code != initlink.CodeNotFound {
			t.Errorf("attach to an unknown process: %+v, want not_found", r)
		}
		for _, op := range []string{initlink.OpInput, initlink.OpSignal, initlink.OpResize, initlink.OpCloseInput} {
			if _, e := a.call(initlink.Request{Op: op, PID: 999999, Signal: 15}); e == nil || e.Code != initlink.CodeNotFound {
				t.Errorf("%s to an unknown process: %+v, want not_found", op, e)
			}
		}
	})
}

// groupAlive reports whether any process is left in process group pgid.
func groupAlive(pgid int) bool {
	return !errors.Is(unix.Kill(-pgid, 0), unix.ESRCH)
}

func TestTimeoutKillsTheGroup(t *testing.T) {
	a := startInit(t, testToken)
	start := time.Now()
	r := a.exec(initlink.Process{Args: []string{"sh", "-c", "sleep 1000 & sleep 1000"}, TimeoutMillis: 300})
	if r.err != nil || r.exit.Code != 137 || !r.exit.TimedOut || r.exit.Signal != "KILL" {
		t.Fatalf("got %+v %+v, want a timed-out exit 137", r.err, r.exit)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("ended after %v, want about 300ms", d)
	}
	waitFor(t, "the group's sleeps to be gone", func() bool { return !groupAlive(r.pid) })
	if p := a.process(r.pid); !p.Exit.TimedOut {
		t.Errorf("listed %+v, want timed out", p)
	}
}

// A grandchild that keeps the output pipes open does not hold the exit back
// for longer than drainAfterExit.
func TestExitWhileAGrandchildHoldsTheOutput(t *testing.T) {
	a := startInit(t, testToken)
	start := time.Now()
	r := a.exec(initlink.Process{Args: []string{"sh", "-c", "sleep 1000 & echo hi"}})
	if r.err != nil || r.exit.Code != 0 || r.stdout != "hi\n" {
		t.Fatalf("got %+v %+v %q", r.err, r.exit, r.stdout)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("exit came after %v", d)
	}
	_ = unix.Kill(-r.pid, unix.SIGKILL)
}

func TestConcurrentExecs(t *testing.T) {
	a := startInit(t, testToken)
	const n = 20
	var wg sync.WaitGroup
	results := make([]result, n)
	conns := make([]*agentConn, n)
	for i := range n {
		conns[i] = a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sh", "-c", "sleep 0.3; echo $0", strconv.Itoa(i)}}})
	}
	start := time.Now()
	for i := range n {
		wg.Go(func() { results[i] = conns[i].collect() })
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil || r.exit == nil || r.exit.Code != 0 || r.stdout != fmt.Sprintf("%d\n", i) {
			t.Errorf("exec %d: %+v", i, r)
		}
	}
	// They ran side by side, not one after another.
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("20 execs of 0.3 s took %v", d)
	}
}

// rssKiB is a process's resident set.
func rssKiB(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}

// groupWchans returns where each process of group pgid waits.
func groupWchans(pgid int) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := unix.Getpgid(pid); err != nil || g != pgid {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
		out = append(out, string(b))
	}
	return out
}

// A flood of output to a client that does not read blocks the process
// instead of growing init's memory; nothing is lost once it reads.
func TestBackPressure(t *testing.T) {
	a := startInit(t, testToken)
	const total = 50 << 20
	c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sh", "-c", fmt.Sprintf("head -c %d /dev/zero; echo done >&2", total)}}})
	pid := c.started()
	before := rssKiB(t, a.init.Process.Pid)
	// The writer blocks once the socket, init's buffer and the pipe are full.
	var state string
	waitFor(t, "the writer to block", func() bool {
		state = strings.Join(groupWchans(pid), " ")
		return strings.Contains(state, "pipe_write")
	})
	time.Sleep(200 * time.Millisecond) // a grown buffer would show by now
	after := rssKiB(t, a.init.Process.Pid)
	if after-before > 8<<10 {
		t.Errorf("init's RSS grew from %d KiB to %d KiB while its client did not read", before, after)
	}
	t.Logf("init's RSS %d KiB -> %d KiB with the writer blocked (%s)", before, after, state)
	r := c.collect()
	if r.err != nil || r.exit.Code != 0 || len(r.stdout) != total || r.stderr != "done\n" {
		t.Errorf("got %+v %+v, %d bytes of stdout, stderr %q", r.err, r.exit, len(r.stdout), r.stderr)
	}
}

// When the main process exits, init kills every exec'd process and ends
// each attached stream saying so.
func TestMainExitEndsProcesses(t *testing.T) {
	a := startInit(t, testToken)
	c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sleep", "1000"}}})
	pid := c.started()
	if err := a.init.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := c.collect()
	want := fmt.Sprintf("the sandbox's main process exited (code 143); process %d was killed with it", pid)
	if r.err == nil || r.err.Code != initlink.CodeSandboxExited || r.err.Message != want {
		t.Errorf("stream ended with %+v, want sandbox_exited %q", r.err, want)
	}
	<-a.done
	if a.status != 143 {
		t.Errorf("init exited %d, want the main process's 143", a.status)
	}
	waitFor(t, "the exec'd sleep to be gone", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || strings.Contains(string(b), ") Z ")
	})
}

func TestList(t *testing.T) {
	a := startInit(t, testToken)
	r := a.exec(initlink.Process{Args: []string{"sh", "-c", "exit 7"}})
	c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sleep", "1000"}, PTY: true, Tag: "server-1"}})
	pid := c.started()
	got, e := a.call(initlink.Request{Op: initlink.OpList})
	if e != nil {
		t.Fatal(e)
	}
	if len(got.Processes) != 2 {
		t.Fatalf("listed %+v, want 2", got.Processes)
	}
	done, running := got.Processes[0], got.Processes[1]
	if done.PID != r.pid || done.Running || done.Exit == nil || done.Exit.Code != 7 || done.Args[2] != "exit 7" {
		t.Errorf("finished process listed as %+v", done)
	}
	if running.PID != pid || !running.Running || !running.PTY || !running.Attached || running.StartUnix < done.StartUnix || running.Tag != "server-1" || done.Tag != "" {
		t.Errorf("running process listed as %+v", running)
	}
	if _, e := a.call(initlink.Request{Op: initlink.OpSignal, PID: r.pid, Signal: 15}); e == nil || e.Code != initlink.CodeFailedPrecondition {
		t.Errorf("signal to an exited process: %+v, want failed_precondition", e)
	}
	if _, e := a.call(initlink.Request{Op: initlink.OpSignal, PID: pid, Signal: 0}); e == nil || e.Code != initlink.CodeInvalidArgument {
		t.Errorf("signal 0: %+v, want invalid_argument", e)
	}
	bad := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"true"}, Tag: "a<b"}})
	if ft, b := bad.next(); ft != initlink.FrameError || !strings.Contains(string(b), initlink.CodeInvalidArgument) {
		t.Errorf("exec with the tag \"a<b\": frame %d %s, want invalid_argument", ft, b)
	}
}

// Init's writes to a client that went away, or to a process that closed
// its input, fail with EPIPE and raise SIGPIPE in init: that signal is not
// the main process's.
func TestBrokenPipesStayWithInit(t *testing.T) {
	a := startInit(t, testToken)
	c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"yes"}}})
	pid := c.started()
	c.next()
	_ = c.c.Close()
	waitFor(t, "init to see its client gone", func() bool { return !a.process(pid).Attached })

	c = a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sh", "-c", "exec <&-; echo closed; sleep 1000"}, Stdin: true}})
	pid2 := c.started()
	c.readUntil("closed")
	if _, e := a.call(initlink.Request{Op: initlink.OpInput, PID: pid2, Data: []byte("x")}); e == nil || e.Code != initlink.CodeFailedPrecondition {
		t.Errorf("input to a process that closed it: %+v, want failed_precondition", e)
	}
	if r := a.exec(initlink.Process{Args: []string{"echo", "alive"}}); r.stdout != "alive\n" {
		t.Errorf("after broken pipes: %+v %+v %q (init's stderr: %s)", r.err, r.exit, r.stdout, a.stderr)
	}
	select {
	case <-a.done:
		t.Errorf("init exited %d", a.status)
	default:
	}
	for _, p := range []int{pid, pid2} {
		_ = unix.Kill(-p, unix.SIGKILL)
	}
}

// A process that closed its output still gets its input: input is closed
// when the process exited, not when its output ended.
func TestInputOutlivesOutput(t *testing.T) {
	a := startInit(t, testToken)
	ready := filepath.Join(t.TempDir(), "ready")
	c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{
		Args:  []string{"sh", "-c", `exec >&- 2>&-; touch "$0"; read x; [ "$x" = hi ] && exit 5`, ready},
		Stdin: true,
	}})
	pid := c.started()
	waitFor(t, "the process to close its output", func() bool { _, err := os.Stat(ready); return err == nil })
	time.Sleep(100 * time.Millisecond) // init's reading of the output ends meanwhile
	if _, e := a.call(initlink.Request{Op: initlink.OpInput, PID: pid, Data: []byte("hi\n")}); e != nil {
		t.Fatalf("input after the output closed: %+v", e)
	}
	if r := c.collect(); r.exit == nil || r.exit.Code != 5 {
		t.Errorf("got %+v %+v, want exit 5 (it read hi)", r.err, r.exit)
	}
}

// Input on a stream that the process no longer reads is dropped; the
// stream goes on to the output and the exit.
func TestStreamInputToAClosedInput(t *testing.T) {
	a := startInit(t, testToken)
	c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sh", "-c", "exec <&-; echo closed; sleep 0.3; echo end"}, Stdin: true}})
	c.started()
	c.readUntil("closed\n")
	c.send(initlink.FrameStdin, []byte("ignored\n"))
	r := c.collect()
	if r.err != nil || r.exit == nil || r.exit.Code != 0 || r.stdout != "end\n" {
		t.Errorf("got %+v %+v %q, want end and exit 0", r.err, r.exit, r.stdout)
	}
}

// Init keeps at most MaxProcesses records, dropping the oldest finished
// ones whose exit was delivered, and keeps a running one.
func TestRecordsAreBounded(t *testing.T) {
	a := startInit(t, testToken)
	c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sleep", "1000"}}})
	running := c.started()
	_ = c.c.Close() // detached: its record must stay
	var first, last int
	for i := range initlink.MaxProcesses + 10 {
		r := a.exec(initlink.Process{Args: []string{"true"}})
		if r.exit == nil || r.exit.Code != 0 {
			t.Fatalf("exec %d: %+v", i, r)
		}
		if i == 0 {
			first = r.pid
		}
		last = r.pid
	}
	got, e := a.call(initlink.Request{Op: initlink.OpList})
	if e != nil {
		t.Fatal(e)
	}
	pids := map[int]bool{}
	for _, p := range got.Processes {
		pids[p.PID] = true
	}
	if len(got.Processes) != initlink.MaxProcesses || !pids[running] || !pids[last] || pids[first] {
		t.Errorf("listed %d processes (running one there: %v, last: %v, first: %v), want %d with the running and the last, not the first",
			len(got.Processes), pids[running], pids[last], pids[first], initlink.MaxProcesses)
	}
	_ = unix.Kill(running, unix.SIGKILL)
}

// A grandchild that writes on forever once the process exited holds the
// exit back by at most one more buffer of output, even for a client that
// reads slower than it writes.
func TestExitWhileAGrandchildFloods(t *testing.T) {
	a := startInit(t, testToken)
	c := a.open(initlink.Request{Op: initlink.OpExec, Process: &initlink.Process{Args: []string{"sh", "-c", "yes & echo started"}}})
	pid := c.started()
	defer unix.Kill(-pid, unix.SIGKILL)
	// The client reads nothing until the process exited and init's wait
	// for its pipes is over: the buffer is full, the pipe too.
	waitFor(t, "the process to exit", func() bool { return !a.process(pid).Running })
	time.Sleep(2 * drainAfterExit)
	n := 0
	for {
		ft, b := c.next()
		switch ft {
		case initlink.FrameStdout:
			n += len(b)
			time.Sleep(2 * time.Millisecond) // slower than yes writes
			if n > 8*outputLimit {
				t.Fatalf("%d bytes of output and no exit yet", n)
			}
			continue
		case initlink.FrameExit:
		default:
			t.Fatalf("frame type %d (%s)", ft, b)
		}
		break
	}
	t.Logf("%d bytes of stdout before the exit", n)
}

// A listing of processes whose commands together pass one frame still
// answers: every process is there, a short command whole, the long ones
// cut and marked so.
func TestListFitsLongCommands(t *testing.T) {
	a := startInit(t, testToken)
	short := a.exec(initlink.Process{Args: []string{"true", "short"}})
	long := strings.Repeat("x", 60<<10)
	const n = 10 // 1.2 MiB of commands
	for i := range n {
		if r := a.exec(initlink.Process{Args: []string{"true", long, long}}); r.exit == nil || r.exit.Code != 0 {
			t.Fatalf("exec %d: %+v", i, r)
		}
	}
	got, e := a.call(initlink.Request{Op: initlink.OpList})
	if e != nil {
		t.Fatalf("list: %+v", e)
	}
	if len(got.Processes) != n+1 {
		t.Fatalf("listed %d processes, want %d", len(got.Processes), n+1)
	}
	for _, p := range got.Processes {
		switch {
		case p.PID == short.pid:
			if strings.Join(p.Args, " ") != "true short" {
				t.Errorf("short command listed as %q", p.Args)
			}
		case len(p.Args) == 0 || p.Args[0] != "true" || !strings.HasSuffix(p.Args[len(p.Args)-1], "…"):
			t.Errorf("long command of %d listed as %d args, not cut and marked", p.PID, len(p.Args))
		}
	}
}

// The cut listing fits one frame at the worst: every record there, each
// with a command of the most bytes and args, all escaped sixfold by JSON.
func TestListWorstCaseFits(t *testing.T) {
	cases := map[string][]string{
		"escaped bytes": {strings.Repeat("<", 128<<10)},
		"empty args":    make([]string, 1024),
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			procs := make([]initlink.ProcessInfo, initlink.MaxProcesses)
			for i := range procs {
				procs[i] = initlink.ProcessInfo{PID: 1 << 22, Args: args, PTY: true, Running: true, Attached: true,
					Exit: &initlink.Exit{Code: 137, Signal: "KILL", TimedOut: true}, StartUnix: time.Now().UnixNano(),
					Tag: strings.Repeat("t", initlink.MaxTagBytes)}
			}
			limit := argsShare(procs, listArgsBudget)
			for i := range procs {
				procs[i].Args = cutArgs(procs[i].Args, limit)
			}
			b, err := json.Marshal(initlink.Response{Processes: procs})
			if err != nil || len(b) > initlink.MaxPayload {
				t.Errorf("%d bytes (%v), want at most %d", len(b), err, initlink.MaxPayload)
			}
		})
	}
}
