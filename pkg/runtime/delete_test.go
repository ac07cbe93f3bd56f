package runtime

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestReadyForSIGTERM: a stop sends SIGTERM to fsb init only once it took
// its ready name (before, the signal would be lost or end init with 2),
// and to any other PID 1 once it catches the signal.
func TestReadyForSIGTERM(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		want         bool
	}{
		{"fsb init, ready", `printf fsb-init > /proc/$$/comm; trap "exit 0" TERM; echo up; sleep 30 & wait`, true},
		{"fsb init, starting (catches, but not ready)", `printf init > /proc/$$/comm; trap "exit 0" TERM; echo up; sleep 30 & wait`, false},
		{"another PID 1 that catches SIGTERM", `trap "exit 0" TERM; echo up; sleep 30 & wait`, true},
		{"another PID 1 without a handler", `echo up; exec sleep 30`, false},
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
			if got := readyFor(uint32(cmd.Process.Pid), syscall.SIGTERM); got != tc.want {
				t.Errorf("readyFor = %v, want %v", got, tc.want)
			}
		})
	}
	if !readyFor(1<<30, syscall.SIGTERM) {
		t.Error("a process that cannot be read should count as ready (nothing to wait for)")
	}
}
