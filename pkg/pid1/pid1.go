// Package pid1 is what every sandbox runs as its first process: it starts the
// sandbox's main process, forwards signals to it, reaps every orphan that the
// kernel hands to it, and ends with the main process's exit status.
//
// When the agent gave it a link (package initlink: a token in its
// environment, the link directory mounted), init also starts processes and
// does file work inside the sandbox on the agent's behalf, once the main
// process runs: a Link keeps connections to the agent, a Manager serves
// their requests, and the reaper tells the Manager about every exit.
package pid1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
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
	return run(argv, stderr, initlink.MountPath)
}

// WarmFlag is the argument that starts init warm (see Main).
const WarmFlag = "--warm"

// linkStartDelay is how long after starting the main process init waits
// before it dials the agent: an exec this early waits for it.
const linkStartDelay = 20 * time.Millisecond

// run is Run with the link directory's place, which tests choose.
func run(argv []string, stderr io.Writer, linkDir string) int {
	// Signals first: until now one would end init (its Go runtime's
	// default for SIGTERM, exit 2) or be dropped (no handler at all); and
	// subscribed before the child exists, or an early SIGCHLD could be
	// lost. The name says so to the agent, whose stop waits for it.
	sigs := make(chan os.Signal, 128)
	// Never stopped: init exits right after run returns, and a SIGTERM in
	// between, with nobody subscribed, would turn the main process's
	// status into the Go runtime's 2.
	notifyAll(sigs)
	// /proc/self/comm is the process's name (its main thread's), which
	// prctl would set only for whichever thread runs this goroutine. A
	// /proc that refuses it costs only a slower stop: not worth a line in
	// the sandbox's log.
	_ = os.WriteFile("/proc/self/comm", []byte(initlink.ReadyName), 0)

	// The token is for init alone: neither the main process nor any exec'd
	// one inherits it, and a non-dumpable init keeps other processes of the
	// sandbox out of /proc/1/environ and /proc/1/mem (root inside has none
	// of CAP_SYS_PTRACE, CAP_SYS_ADMIN and CAP_PERFMON, which would pass).
	token := takeToken(stderr)
	if len(argv) == 0 {
		fmt.Fprintln(stderr, "fsb init: no command to run")
		return ExitNotFound
	}
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
	// After the main process started, so that its first output does not
	// wait for them.
	go reserveThreads(reservedThreads)

	// The link starts after the main process, so that it costs the
	// sandbox's start nothing; without a token or a link directory there
	// is none.
	var mgr *Manager
	if token != "" {
		if st, err := os.Stat(linkDir); err == nil && st.IsDir() {
			dir, _ := os.Getwd()
			mgr = NewManager(os.Environ(), dir)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				// Not while the main process starts: on a small node the
				// dials and the agent's answers to them took CPU from the
				// sandbox's first output, which a create waits for.
				if sleep(ctx, linkStartDelay) {
					NewLink(filepath.Join(linkDir, initlink.SocketName), token, mgr).Serve(ctx)
				}
			}()
		}
	}
	exited := func(int, unix.WaitStatus) {}
	if mgr != nil {
		exited = mgr.Exited
	}

	for sig := range sigs {
		switch sig {
		case unix.SIGCHLD:
			if status, done := reap(mainPID, exited); done {
				if mgr != nil {
					mgr.Shutdown(status)
				}
				return status
			}
		case unix.SIGURG:
			// The Go runtime preempts goroutines with SIGURG; it is not for the child.
		case unix.SIGPIPE:
			// Init's own writes to a socket or pipe whose reader is gone
			// raise it (and fail with EPIPE); it is not for the child.
		default:
			_ = unix.Kill(mainPID, sig.(unix.Signal))
		}
	}
	return 0
}

// notifyAll subscribes sigs to every signal. Never stopped: init exits
// right after its loop returns, and a SIGTERM in between, with nobody
// subscribed, would turn the main process's status into the Go runtime's 2.
func notifyAll(sigs chan<- os.Signal) { signal.Notify(sigs) }

// takeToken removes the link token from init's environment and returns it.
// The token is for init alone: neither the main process nor any exec'd one
// inherits it, and a non-dumpable init keeps other processes of the
// sandbox out of /proc/1/environ and /proc/1/mem.
func takeToken(stderr io.Writer) string {
	token := os.Getenv(initlink.TokenEnv)
	if token != "" {
		scrubEnviron(initlink.TokenEnv, os.Environ())
	}
	_ = os.Unsetenv(initlink.TokenEnv)
	if token != "" {
		if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
			fmt.Fprintf(stderr, "fsb init: make init non-dumpable: %v\n", err)
		}
	}
	return token
}

// reap collects every child that has exited and tells exited about each but
// the main process. It reports the exit status of the main process once that
// one is among them.
func reap(mainPID int, exited func(int, unix.WaitStatus)) (status int, mainExited bool) {
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
		} else {
			exited(pid, ws)
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
// optional leading "--"; "--warm" alone starts init warm, without a main
// process, until the agent starts one (initlink.OpStartMain). It returns
// the status to exit with.
func Main(args []string) int {
	if len(args) == 1 && args[0] == WarmFlag {
		return runWarm(os.Stderr, initlink.MountPath)
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	return Run(args, os.Stderr)
}
