package logfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// LockFile is the file in a log dir whose lock marks the dir as one
// agent's.
const LockFile = ".fsb-agent.lock"

// LockDir claims dir (made if missing) for one process until release: an
// agent removes the logs there that it does not run, so two agents must
// never share a log dir. A second claim, from any process, fails naming
// the holder. The lock is the kernel's (flock), so a holder that dies
// releases it.
func LockDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	if err := lockExclusive(f); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("log dir %s is in use by another agent (pid %s): give each agent its own --log-dir",
				dir, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("lock log dir %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "%d\n", os.Getpid())
	}
	return func() { f.Close() }, nil
}

// lockProbeWait is how long a claim waits out a shared lock: the janitor
// probes a log dir with one (held for microseconds) to learn whether an
// agent runs there, and that probe must never make an agent's start fail.
const lockProbeWait = 100 * time.Millisecond

// lockExclusive takes f's exclusive lock without blocking, retrying for
// lockProbeWait while a probe holds it; a lock another agent holds is
// still refused at once after that.
func lockExclusive(f *os.File) error {
	deadline := time.Now().Add(lockProbeWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Millisecond)
	}
}
