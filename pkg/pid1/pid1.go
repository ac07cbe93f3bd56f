// Package pid1 is what every sandbox runs as its first process: it starts the
// sandbox's main process, forwards signals to it, reaps every orphan that the
// kernel hands to it, and ends with the main process's exit status.
package pid1

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"

	"golang.org/x/sys/unix"
)

// Exit statuses for a main process that could not be started, as shells use them.
const (
	ExitNotExecutable = 126
	ExitNotFound      = 127
)

// Run starts argv as the main process and stays until it exits, then returns
// the status to exit with: its exit code, or 128+signal when a signal ended
// it. Every signal Run receives, except those the Go runtime or the reaping
// itself needs, goes on to the main process. Run also reaps orphans, as PID 1
// must, and marks itself a child subreaper so that it reaps them even when it
// is not PID 1.
func Run(argv []string, stderr io.Writer) int {
	if len(argv) == 0 {
		fmt.Fprintln(stderr, "fsb init: no command to run")
		return ExitNotFound
	}
	// Subscribe before the child exists, or an early SIGCHLD could be lost.
	sigs := make(chan os.Signal, 128)
	signal.Notify(sigs)
	defer signal.Stop(sigs)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(stderr, "fsb init: become subreaper: %v\n", err)
	}

	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(stderr, "fsb init: %v\n", err)
		return startFailure(err)
	}
	proc, err := os.StartProcess(path, argv, &os.ProcAttr{
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		fmt.Fprintf(stderr, "fsb init: start %s: %v\n", argv[0], err)
		return startFailure(err)
	}
	mainPID := proc.Pid
	// The status is collected by reap, not by proc.Wait: a wait for any child
	// would otherwise race with the wait for the main one.
	_ = proc.Release()

	for sig := range sigs {
		switch sig {
		case unix.SIGCHLD:
			if status, done := reap(mainPID); done {
				return status
			}
		case unix.SIGURG:
			// The Go runtime preempts goroutines with SIGURG; it is not for the child.
		default:
			_ = unix.Kill(mainPID, sig.(unix.Signal))
		}
	}
	return 0
}

// reap collects every child that has exited. It reports the exit status of
// the main process once that one is among them.
func reap(mainPID int) (status int, mainExited bool) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return status, mainExited
		}
		if pid == mainPID {
			status, mainExited = exitStatus(ws), true
		}
	}
}

func exitStatus(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func startFailure(err error) int {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
		return ExitNotFound
	}
	return ExitNotExecutable
}

// Main is the `init` role's entry: args are what follows "init", with an
// optional leading "--". It returns the status to exit with.
func Main(args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	return Run(args, os.Stderr)
}
