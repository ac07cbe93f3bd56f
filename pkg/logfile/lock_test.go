package logfile

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLockDirIsOneAgents: a second claim of a log dir fails naming the
// holder, and a released dir can be claimed again. flock locks belong to
// open files, so a second open in this process stands for another agent.
func TestLockDirIsOneAgents(t *testing.T) {
	dir := t.TempDir()
	release, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockDir(dir)
	if err == nil || !strings.Contains(err.Error(), "in use by another agent") || !strings.Contains(err.Error(), "--log-dir") {
		t.Fatalf("second claim: %v, want in use by another agent", err)
	}
	release()
	release, err = LockDir(dir)
	if err != nil {
		t.Fatalf("claim after release: %v", err)
	}
	release()
}

// TestLockDirOfADeadHolderIsFree: a holder that died (its lock file left
// behind) does not keep the dir.
func TestLockDirOfADeadHolderIsFree(t *testing.T) {
	if os.Getenv("FSB_LOCK_CHILD") != "" {
		if _, err := LockDir(os.Getenv("FSB_LOCK_CHILD")); err != nil {
			os.Exit(2)
		}
		os.Exit(0) // exits holding the lock: the kernel drops it
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockDirOfADeadHolderIsFree$")
	cmd.Env = append(os.Environ(), "FSB_LOCK_CHILD="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	release, err := LockDir(dir)
	if err != nil {
		t.Fatalf("claim after the holder died: %v", err)
	}
	release()
}

// TestLockDirWaitsOutAProbe: a shared lock held briefly (the janitor's probe
// of whether an agent runs there) does not make a claim fail.
func TestLockDirWaitsOutAProbe(t *testing.T) {
	dir := t.TempDir()
	release, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	release()
	probe, err := os.Open(filepath.Join(dir, LockFile))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	fd := int(probe.Fd())
	if err := syscall.Flock(fd, syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	unlocked := make(chan struct{})
	time.AfterFunc(20*time.Millisecond, func() { _ = syscall.Flock(fd, syscall.LOCK_UN); close(unlocked) })
	release, err = LockDir(dir)
	<-unlocked
	if err != nil {
		t.Fatalf("claim during a probe: %v", err)
	}
	release()
}
