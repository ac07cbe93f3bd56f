package pid1

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// The test binary doubles as the init under test: with FSB_PID1_TEST set it
// runs Main on its arguments instead of the tests.
func TestMain(m *testing.M) {
	if os.Getenv("FSB_PID1_TEST") == "1" {
		args := os.Args[1:]
		if len(args) > 0 && args[0] == "--" {
			args = args[1:]
		}
		link := os.Getenv("FSB_PID1_TEST_LINK")
		if link == "" {
			link = initlink.MountPath
		}
		if len(args) == 1 && args[0] == WarmFlag {
			os.Exit(runWarm(os.Stderr, link))
		}
		os.Exit(run(args, os.Stderr, link))
	}
	os.Exit(m.Run())
}

func initCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append([]string{"--"}, args...)...)
	cmd.Env = append(os.Environ(), "FSB_PID1_TEST=1")
	return cmd
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	ee, ok := err.(*exec.ExitError)
	if !ok {
		t.Fatalf("run init: %v", err)
	}
	return ee.ExitCode()
}

func TestExitStatusIsPassedOn(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"true"}, 0},
		{[]string{"sh", "-c", "exit 3"}, 3},
		{[]string{"sh", "-c", "kill -TERM $$"}, 128 + 15},
		{[]string{"sh", "-c", "kill -KILL $$"}, 128 + 9},
		{[]string{"no-such-command-here"}, ExitNotFound},
		{[]string{"/etc/hostname"}, ExitNotExecutable},
	} {
		err := initCmd(tc.args...).Run()
		if got := exitCode(t, err); got != tc.want {
			t.Errorf("%v: exit %d, want %d", tc.args, got, tc.want)
		}
	}
}

func TestNoCommand(t *testing.T) {
	if got := Run(nil, os.Stderr); got != ExitNotFound {
		t.Errorf("Run(nil) = %d, want %d", got, ExitNotFound)
	}
}

func TestSignalsAreForwarded(t *testing.T) {
	cmd := initCmd("sh", "-c", `trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("first line %q, want ready", lines.Text())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() || lines.Text() != "got-term" {
		t.Errorf("after SIGTERM the child printed %q, want got-term", lines.Text())
	}
	if got := exitCode(t, cmd.Wait()); got != 42 {
		t.Errorf("exit %d, want the child's 42", got)
	}
}

func TestOrphansAreReaped(t *testing.T) {
	// The subshell exits at once and orphans its sleep, which init (a
	// subreaper here, PID 1 in a sandbox) adopts and must reap when it ends.
	cmd := initCmd("sh", "-c", "(sleep 0.1 &); sleep 1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	zombies := zombieChildren(t, cmd.Process.Pid)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if len(zombies) > 0 {
		t.Errorf("init left zombie children %v", zombies)
	}
}

// zombieChildren lists the zombie processes whose parent is pid.
func zombieChildren(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces.
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(fields) > 1 && fields[0] == "Z" && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// TestReserveThreads: the threads reserved stay, idle, after the call, so
// that as many goroutines holding a thread each later need no new one.
// Were they to end with their goroutines, every call would start eight.
func TestReserveThreads(t *testing.T) {
	reserveThreads(8)
	// A few more may come in between: the scheduler starts spinning
	// threads, and the race detector and the GC their own, when they
	// please. A loaded machine saw three once; three tries, then, each
	// allowing two.
	var before, after int
	for range 3 {
		before = threads(t)
		if before < 9 {
			t.Fatalf("%d threads after reserving 8", before)
		}
		reserveThreads(8)
		after = threads(t)
		if after <= before+2 {
			return
		}
	}
	t.Errorf("8 goroutines holding a thread each, after 8 were reserved: %d threads, were %d", after, before)
}

func threads(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
