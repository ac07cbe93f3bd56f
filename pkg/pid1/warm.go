package pid1

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// startMain serves OpStartMain: the first request starts the main process;
// every later one answers its PID, marked as already started. A Manager of
// an init that was not started warm refuses.
//
// It holds mainMu from the start to the answer, and the warm loop reaps
// under mainMu: so the loop knows the main process's PID before it can
// reap it (one that ends at once is not taken for an exec'd process), and
// the agent has its answer before init can end with it.
func (m *Manager) startMain(f *os.File, req *initlink.Request) error {
	if !m.warm {
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
	pid, err := m.startMainProcess(req.Process)
	if err != nil {
		return err
	}
	m.mainPID = pid
	return initlink.WriteJSON(f, initlink.FrameResponse, initlink.Response{PID: pid})
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
	mgr.warm = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		reserveThreads(reservedThreads)
		prime()
		NewLink(filepath.Join(linkDir, initlink.SocketName), token, mgr).Serve(ctx)
	}()
	return warmLoop(sigs, mgr)
}

// prime runs once, before init links to the agent, what a claim's start of
// the main process would otherwise run for the first time in this process,
// while the claim waits: os.StartProcess's one-time check that pidfds work
// (it clones a child), a start of a process up to its exec (the code and
// the kernel's paths of a fork are touched: the exec of a directory fails,
// so nothing runs), and encoding/json's building of the codecs of the
// request and its answer. A warm sandbox pays for it while it waits.
func prime() {
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		_ = p.Release()
	}
	if stdin, err := os.Open(os.DevNull); err == nil {
		p, err := os.StartProcess("/", []string{"fsb-prime"}, &os.ProcAttr{Dir: "/", Files: []*os.File{stdin, os.Stdout, os.Stderr}})
		if err == nil { // cannot be: a directory is not executable
			_ = p.Kill()
			_ = p.Release()
		}
		_ = stdin.Close()
	}
	var req initlink.Request
	_ = initlink.Decode([]byte(`{"op":"start_main","process":{"args":["true"],"env":["K=v"],"dir":"/"}}`), &req)
	_, _ = json.Marshal(initlink.Response{PID: 1})
}

// warmLoop reaps and handles signals until the main process is started
// and has exited, or a SIGTERM ends a warm init.
func warmLoop(sigs <-chan os.Signal, mgr *Manager) int {
	mainPID := func() int {
		mgr.mainMu.Lock()
		defer mgr.mainMu.Unlock()
		return mgr.mainPID
	}
	for sig := range sigs {
		switch sig {
		case unix.SIGCHLD:
			mgr.mainMu.Lock()
			status, done := reap(mgr.mainPID, mgr.Exited) // 0 before a start: none is main
			mgr.mainMu.Unlock()
			if done {
				mgr.Shutdown(status)
				return status
			}
		case unix.SIGURG, unix.SIGPIPE:
		case unix.SIGTERM, unix.SIGINT:
			pid := mainPID()
			if pid == 0 {
				mgr.Shutdown(0)
				return 0
			}
			_ = unix.Kill(pid, sig.(unix.Signal))
		default:
			if pid := mainPID(); pid != 0 {
				_ = unix.Kill(pid, sig.(unix.Signal))
			}
		}
	}
	return 0
}
