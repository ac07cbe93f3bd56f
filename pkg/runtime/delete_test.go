package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// TestReadyForSIGTERM: a stop sends SIGTERM to fsb init only once it took
// its ready name (before, the signal would be lost or end init with 2),
// and to any other PID 1 once it catches the signal.
func TestReadyForSIGTERM(t *testing.T) {
	for _, tc := range []struct {
		name, script   string
		want, starting bool
	}{
		{"fsb init, ready", `printf fsb-init > /proc/$$/comm; trap "exit 0" TERM; echo up; sleep 30 & wait`, true, false},
		{"fsb init, starting (catches, but not ready)", `printf init > /proc/$$/comm; trap "exit 0" TERM; echo up; sleep 30 & wait`, false, true},
		{"another PID 1 that catches SIGTERM", `trap "exit 0" TERM; echo up; sleep 30 & wait`, true, false},
		{"another PID 1 without a handler", `echo up; exec sleep 30`, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("sh", "-c", tc.script)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			// "up" comes after the name and the trap are set.
			if _, err := out.Read(make([]byte, 3)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // the exec of the last case
			got, starting := readyFor(uint32(cmd.Process.Pid), syscall.SIGTERM)
			if got != tc.want || starting != tc.starting {
				t.Errorf("readyFor = %v, %v; want %v, %v", got, starting, tc.want, tc.starting)
			}
		})
	}
	if ready, _ := readyFor(1<<30, syscall.SIGTERM); !ready {
		t.Error("a process that cannot be read should count as ready (nothing to wait for)")
	}
}

// TestSIGTERMRightAfterInitStarts: a stop's SIGTERM to fsb init as PID 1
// of a PID namespace of its own (as in a sandbox), started under the name
// it has in a sandbox, goes on to the main process (143) once
// awaitHandler says init is ready, however soon after init's start. Init's
// Go runtime catches SIGTERM from its first instructions, but until init
// subscribes that handler ends init with status 2: waiting for a handler
// alone lost the race in most runs on a busy node.
func TestSIGTERMRightAfterInitStarts(t *testing.T) {
	// Named as InitPath is in a sandbox: its process name is initComm.
	initPath := filepath.Join(t.TempDir(), initComm)
	if err := os.Symlink(rig.HelperBinary(t), initPath); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		cmd := exec.Command(initPath, "init", "--", "sleep", "300")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start init as PID 1 of a new PID namespace (as root): %v", err)
		}
		pid := cmd.Process.Pid
		awaitHandler(context.Background(), uint32(pid), syscall.SIGTERM, HandlerWait)
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		timer := time.AfterFunc(5*time.Second, func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
		_ = cmd.Wait()
		timer.Stop()
		if code := cmd.ProcessState.ExitCode(); code != 143 {
			t.Fatalf("run %d: init exited %d (%v), want 143: the SIGTERM did not go on to the main process", i, code, cmd.ProcessState)
		}
	}
}
