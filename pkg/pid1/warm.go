package pid1

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// mainRequest asks the loop of a warm init, its only reaper, to start the
// main process: the loop starts it and knows its PID before it reaps
// again, so a main process that exits at once is never taken for an
// exec'd one.
type mainRequest struct {
	spec  *initlink.Process
	reply chan mainReply
}

type mainReply struct {
	pid int
	err error
}

// startMain serves OpStartMain: the first request starts the main process
// through the warm loop; every later one answers its PID, marked as
// already started. A Manager of an init that was not started warm refuses.
func (m *Manager) startMain(f *os.File, req *initlink.Request) error {
	if m.mainReqs == nil {
		return errorf(initlink.CodeFailedPrecondition, "start main: init was not started warm; its main process runs already")
	}
	if req.Process == nil || len(req.Process.Args) == 0 || req.Process.Args[0] == "" {
		return errorf(initlink.CodeInvalidArgument, "start main: no command")
	}
	m.mainMu.Lock()
	defer m.mainMu.Unlock()
	if m.mainPID != 0 {
		return initlink.WriteJSON(f, initlink.FrameResponse, initlink.Response{PID: m.mainPID, AlreadyStarted: true})
	}
	r := mainRequest{spec: req.Process, reply: make(chan mainReply, 1)}
	m.mainReqs <- r
	rep := <-r.reply
	if rep.err != nil {
		return rep.err
	}
	m.mainPID = rep.pid
	return initlink.WriteJSON(f, initlink.FrameResponse, initlink.Response{PID: rep.pid})
}

// startMainProcess starts spec as the main process: init's environment
// with spec's entries over it, spec's directory (else init's), init's own
// user, init's stdout and stderr, and /dev/null as stdin — what a cold
// init gives its main process, whose environment and directory the OCI
// spec set.
func (m *Manager) startMainProcess(spec *initlink.Process) (int, error) {
	base, baseDir := m.base()
	env := mergeEnv(base, spec.Env)
	dir := spec.Dir
	if dir == "" {
		dir = baseDir
	}
	if !filepath.IsAbs(dir) {
		return 0, errorf(initlink.CodeInvalidArgument, "start main: working directory %q is not absolute", dir)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return 0, errorf(initlink.CodeInvalidArgument, "start main: working directory %q does not exist", dir)
	}
	path, err := lookPath(spec.Args[0], envValue(env, "PATH"), dir)
	if err != nil {
		return 0, startError(spec.Args[0], err)
	}
	stdin, err := os.Open(os.DevNull)
	if err != nil {
		return 0, fmt.Errorf("start main: open %s: %w", os.DevNull, err)
	}
	defer stdin.Close()
	proc, err := os.StartProcess(path, spec.Args, &os.ProcAttr{Dir: dir, Env: env, Files: []*os.File{stdin, os.Stdout, os.Stderr}})
	if err != nil {
		return 0, startError(spec.Args[0], err)
	}
	pid := proc.Pid
	_ = proc.Release()
	// Exec'd processes start as the main one does.
	m.setBase(env, dir)
	return pid, nil
}

// runWarm is init started warm: no main process yet. It links to the agent
// at once and waits for OpStartMain; from then on it is init as run makes
// it. A SIGTERM (or SIGINT) before that ends it with status 0: a warm
// sandbox removed had nothing to stop.
func runWarm(stderr io.Writer, linkDir string) int {
	sigs := make(chan os.Signal, 128)
	notifyAll(sigs)
	_ = os.WriteFile("/proc/self/comm", []byte(initlink.ReadyName), 0)
	token := takeToken(stderr)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(stderr, "fsb init: become subreaper: %v\n", err)
	}
	if token == "" {
		fmt.Fprintln(stderr, "fsb init: started warm without a link token: nothing could start the main process")
		return ExitNotFound
	}
	if st, err := os.Stat(linkDir); err != nil || !st.IsDir() {
		fmt.Fprintf(stderr, "fsb init: started warm without the link directory %s\n", linkDir)
		return ExitNotFound
	}
	dir, _ := os.Getwd()
	mgr := NewManager(os.Environ(), dir)
	mgr.mainReqs = make(chan mainRequest)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go NewLink(filepath.Join(linkDir, initlink.SocketName), token, mgr).Serve(ctx)
	go reserveThreads(reservedThreads)
	return warmLoop(sigs, mgr)
}

// warmLoop reaps and handles signals until the main process is started
// and has exited, or a SIGTERM ends a warm init.
func warmLoop(sigs <-chan os.Signal, mgr *Manager) int {
	mainPID := 0
	for {
		select {
		case req := <-mgr.mainReqs:
			pid, err := mgr.startMainProcess(req.spec)
			if err == nil {
				mainPID = pid
			}
			req.reply <- mainReply{pid: pid, err: err}
		case sig := <-sigs:
			switch sig {
			case unix.SIGCHLD:
				if mainPID == 0 {
					reap(-1, mgr.Exited)
					continue
				}
				if status, done := reap(mainPID, mgr.Exited); done {
					mgr.Shutdown(status)
					return status
				}
			case unix.SIGURG, unix.SIGPIPE:
			case unix.SIGTERM, unix.SIGINT:
				if mainPID == 0 {
					mgr.Shutdown(0)
					return 0
				}
				_ = unix.Kill(mainPID, sig.(unix.Signal))
			default:
				if mainPID != 0 {
					_ = unix.Kill(mainPID, sig.(unix.Signal))
				}
			}
		}
	}
}
