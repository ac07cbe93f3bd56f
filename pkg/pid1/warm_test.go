package pid1

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// waitExit waits for a's init to exit and returns its status.
func waitExit(t *testing.T, a *fakeAgent) int {
	t.Helper()
	select {
	case <-a.done:
		return a.status
	case <-time.After(20 * time.Second):
		t.Fatalf("init did not exit; its stderr: %s", a.stderr)
		return -1
	}
}

func TestWarmStartMainOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	a := startInit(t, "tok", WarmFlag)
	main := &initlink.Process{
		// It waits for the test's go-ahead: a main that ended at once
		// would end init before the repeat below could ask (a CI run saw
		// the repeat's connection reset).
		Args: []string{"sh", "-c", `echo "$GREETING $(pwd)" >> ` + out + `; while [ ! -e go ]; do sleep 0.02; done; exit 7`},
		Env:  []string{"GREETING=hello"},
		Dir:  dir,
	}
	resp, lerr := a.call(initlink.Request{Op: initlink.OpStartMain, Process: main})
	if lerr != nil {
		t.Fatalf("start main: %v", lerr)
	}
	if resp.PID <= 0 || resp.AlreadyStarted {
		t.Fatalf("start main answered %+v, want a pid, not already started", resp)
	}
	// A repeat (a claim retried) answers the same process and starts none.
	again, lerr := a.call(initlink.Request{Op: initlink.OpStartMain, Process: main})
	if lerr != nil {
		t.Fatalf("start main again: %v", lerr)
	}
	if again.PID != resp.PID || !again.AlreadyStarted {
		t.Fatalf("repeat answered %+v, want pid %d already started", again, resp.PID)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := waitExit(t, a); got != 7 {
		t.Fatalf("init exited %d, want the main process's 7; stderr: %s", got, a.stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "hello "+dir+"\n"; got != want {
		t.Fatalf("main wrote %q, want %q (started exactly once, with its env and directory)", got, want)
	}
}

func TestWarmSIGTERMExitsZero(t *testing.T) {
	t.Parallel()
	a := startInit(t, "tok", WarmFlag)
	// Linked: it serves requests while warm.
	if _, lerr := a.call(initlink.Request{Op: initlink.OpList}); lerr != nil {
		t.Fatalf("list while warm: %v", lerr)
	}
	if err := a.init.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := waitExit(t, a); got != 0 {
		t.Fatalf("warm init exited %d on SIGTERM, want 0; stderr: %s", got, a.stderr)
	}
}

func TestWarmStartMainFailure(t *testing.T) {
	t.Parallel()
	a := startInit(t, "tok", WarmFlag)
	_, lerr := a.call(initlink.Request{Op: initlink.OpStartMain, Process: &initlink.Process{Args: []string{"no-such-command-here"}}})
	if lerr == nil || lerr.Code != initlink.CodeNotFound {
		t.Fatalf("start of a missing command: %v, want %s", lerr, initlink.CodeNotFound)
	}
	// Nothing started: a later request may still start one.
	resp, lerr := a.call(initlink.Request{Op: initlink.OpStartMain, Process: &initlink.Process{Args: []string{"true"}}})
	if lerr != nil || resp.AlreadyStarted {
		t.Fatalf("start after a failed one: %+v %v", resp, lerr)
	}
	if got := waitExit(t, a); got != 0 {
		t.Fatalf("init exited %d, want 0", got)
	}
}

func TestStartMainRefusedWhenNotWarm(t *testing.T) {
	t.Parallel()
	a := startInit(t, "tok")
	_, lerr := a.call(initlink.Request{Op: initlink.OpStartMain, Process: &initlink.Process{Args: []string{"true"}}})
	if lerr == nil || lerr.Code != initlink.CodeFailedPrecondition || !strings.Contains(lerr.Message, "warm") {
		t.Fatalf("start main in a cold init: %v, want %s", lerr, initlink.CodeFailedPrecondition)
	}
}

// TestWarmStartMainThatEndsAtOnceIsAnswered starts main processes that end
// at once (a claimed sandbox running `echo hello`): init ends with them,
// but only after the agent has its answer, which says the process started.
func TestWarmStartMainThatEndsAtOnceIsAnswered(t *testing.T) {
	t.Parallel()
	for i := range 20 {
		a := startInit(t, "tok", WarmFlag)
		resp, lerr := a.call(initlink.Request{Op: initlink.OpStartMain, Process: &initlink.Process{Args: []string{"true"}}})
		if lerr != nil || resp.PID <= 0 {
			t.Fatalf("start %d of a main process that ends at once: %+v %v", i, resp, lerr)
		}
		if got := waitExit(t, a); got != 0 {
			t.Fatalf("init exited %d, want 0", got)
		}
	}
}

// BenchmarkWarmStartMain times what a claim waits for in init: the start
// of the main process, from the request on the link to its answer.
func BenchmarkWarmStartMain(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		a := startInit(b, "tok", WarmFlag)
		if _, lerr := a.call(initlink.Request{Op: initlink.OpList}); lerr != nil {
			b.Fatalf("list: %v", lerr)
		}
		b.StartTimer()
		if _, lerr := a.call(initlink.Request{Op: initlink.OpStartMain, Process: &initlink.Process{Args: []string{"true"}}}); lerr != nil {
			b.Fatalf("start main: %v", lerr)
		}
		b.StopTimer()
		<-a.done
		b.StartTimer()
	}
}
