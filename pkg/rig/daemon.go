package rig

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Daemon is a containerd of one test's own, for tests that kill it: other
// tests never feel it. It is started and stopped by scripts/rig.sh, like the
// shared rig.
type Daemon struct {
	t      testing.TB
	script string
	// Dir holds the daemon's config, state and socket.
	Dir string
	// Socket is the daemon's gRPC address.
	Socket string
}

// PrivateContainerd starts a containerd private to the test and stops it,
// with everything it ran, when the test ends.
func PrivateContainerd(t testing.TB) *Daemon {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("find scripts/rig.sh: %v", err)
	}
	// Socket paths must stay short: not t.TempDir.
	dir, err := os.MkdirTemp("/tmp", "fsbd.")
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{t: t, script: filepath.Join(root, "scripts", "rig.sh"), Dir: dir, Socket: filepath.Join(dir, "containerd.sock")}
	t.Cleanup(func() {
		if out, err := exec.Command(d.script, "down", dir).CombinedOutput(); err != nil {
			t.Errorf("stop private containerd: %v\n%s", err, out)
		}
	})
	d.Start()
	return d
}

// Start starts the daemon (again, after Kill).
func (d *Daemon) Start() {
	d.t.Helper()
	if out, err := exec.Command(d.script, "up", d.Dir).CombinedOutput(); err != nil {
		d.t.Fatalf("start private containerd: %v\n%s", err, out)
	}
}

// Kill kills the daemon with SIGKILL and waits until it is gone. Its shims,
// and so the tasks they run, live on.
func (d *Daemon) Kill() {
	d.t.Helper()
	b, err := os.ReadFile(filepath.Join(d.Dir, "containerd.pid"))
	if err != nil {
		d.t.Fatalf("private containerd pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		d.t.Fatalf("private containerd pid: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		d.t.Fatalf("kill -9 containerd: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			d.t.Fatalf("containerd %d still alive 10s after SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// repoRoot finds the module root above the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
