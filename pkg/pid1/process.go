package pid1

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

const (
	// outputLimit bounds the output init keeps for one process; its pipes
	// are not read while the buffer is full, so the process blocks on its
	// writes instead of init's memory growing.
	outputLimit = 1 << 20
	// drainAfterExit is how long init still waits for a process's pipes
	// to end once it exited: an orphaned grandchild may hold them open.
	drainAfterExit = 100 * time.Millisecond
	// inputTimeout bounds one write to a process's input.
	inputTimeout = 10 * time.Second
	// shutdownNotice bounds the time init spends telling attached streams
	// that the sandbox's main process exited.
	shutdownNotice = 100 * time.Millisecond
)

// Manager starts and keeps track of the processes exec'd through the link.
// Run's reaper reports every exited child to Exited; Shutdown ends them all
// when the sandbox's main process exits.
type Manager struct {
	// baseMu guards env and dir, which a warm init's start of the main
	// process sets to the main process's.
	baseMu sync.Mutex
	env    []string // init's environment, the token removed
	dir    string   // init's working directory

	// mainStatus is the main process's exit status once it exited, else -1.
	mainStatus atomic.Int64

	// warm is set in an init started warm, whose main process OpStartMain
	// starts (startMain). mainMu serializes those requests and guards
	// mainPID, the main process once started.
	warm    bool
	mainMu  sync.Mutex
	mainPID int

	mu      sync.Mutex
	procs   map[int]*process
	seq     uint64
	streams map[*stream]struct{}
}

// NewManager returns a Manager whose processes inherit env (plus their own
// overrides) and start in dir unless told otherwise.
func NewManager(env []string, dir string) *Manager {
	m := &Manager{env: env, dir: dir, procs: map[int]*process{}, streams: map[*stream]struct{}{}}
	m.mainStatus.Store(-1)
	return m
}

// base returns the environment and directory exec'd processes start from.
func (m *Manager) base() ([]string, string) {
	m.baseMu.Lock()
	defer m.baseMu.Unlock()
	return m.env, m.dir
}

// setBase makes env and dir what exec'd processes start from: a warm init
// gives them its main process's, as a cold init's are (its OCI spec's).
func (m *Manager) setBase(env []string, dir string) {
	m.baseMu.Lock()
	defer m.baseMu.Unlock()
	m.env, m.dir = env, dir
}

// process is the record of one exec'd process.
type process struct {
	pid   int
	args  []string
	pty   bool
	tag   string
	start time.Time
	seq   uint64

	// inMu serializes writes to the input, which may block (inputTimeout).
	inMu sync.Mutex

	mu        sync.Mutex
	cond      sync.Cond
	in        *os.File // stdin's write end or the PTY's master; nil once closed
	term      *os.File // the PTY's master; nil without a PTY or once closed
	pipes     []*os.File
	out       []chunk
	outSize   int
	open      int // output pipes still being read
	exit      *initlink.Exit
	timer     *time.Timer
	timedOut  bool
	drainNow  bool // exited drainAfterExit ago: read what is left, then stop
	dropped   bool // the record was evicted or init is going
	attached  uint64
	attaches  uint64
	delivered bool // an attached stream received the exit
}

type chunk struct {
	t initlink.FrameType
	b []byte
}

// finished reports whether the process exited and its pipes are done.
// Callers hold p.mu.
func (p *process) finished() bool { return p.exit != nil && p.open == 0 }

// Serve answers req on f, the request's own connection.
func (m *Manager) Serve(f *os.File, req *initlink.Request) {
	var err error
	switch req.Op {
	case initlink.OpExec:
		err = m.exec(f, req)
	case initlink.OpAttach:
		err = m.attach(f, req.PID)
	case initlink.OpInput, initlink.OpCloseInput, initlink.OpSignal, initlink.OpResize:
		if err = m.control(req); err == nil {
			err = initlink.WriteJSON(f, initlink.FrameResponse, initlink.Response{})
		}
	case initlink.OpStartMain:
		err = m.startMain(f, req)
	case initlink.OpList:
		err = initlink.WriteJSON(f, initlink.FrameResponse, initlink.Response{Processes: m.list()})
	case initlink.OpReadFile, initlink.OpWriteFile, initlink.OpListDir, initlink.OpStat,
		initlink.OpMkdir, initlink.OpMove, initlink.OpRemove:
		err = serveFile(f, req)
	default:
		err = errorf(initlink.CodeInvalidArgument, "unknown operation %q", req.Op)
	}
	if err != nil {
		_ = writeError(f, err)
	}
}

// exec starts req.Process and streams it on f.
func (m *Manager) exec(f *os.File, req *initlink.Request) error {
	if req.Process == nil || len(req.Process.Args) == 0 || req.Process.Args[0] == "" {
		return errorf(initlink.CodeInvalidArgument, "exec: no command")
	}
	p, err := m.start(req.Process)
	if err != nil {
		return err
	}
	return m.stream(f, p)
}

// start starts spec and records it. The record exists before the reaper
// can report the process's exit: m.mu is held from the start to the
// record, and Exited takes it.
func (m *Manager) start(spec *initlink.Process) (*process, error) {
	if m.mainStatus.Load() >= 0 {
		return nil, errorf(initlink.CodeSandboxExited, "the sandbox's main process exited")
	}
	base, baseDir := m.base()
	env := mergeEnv(base, spec.Env)
	cred, home, err := lookupUser(spec.User)
	if err != nil {
		return nil, err
	}
	if home != "" && !hasKey(spec.Env, "HOME") {
		env = mergeEnv(env, []string{"HOME=" + home})
	}
	dir := spec.Dir
	if dir == "" {
		dir = baseDir
	}
	if !filepath.IsAbs(dir) {
		return nil, errorf(initlink.CodeInvalidArgument, "exec: working directory %q is not absolute", dir)
	}
	// The child's chdir failure would come back as a bare errno: say here
	// which directory is wrong.
	if st, err := os.Stat(dir); err != nil {
		return nil, errorf(codeOf(err), "exec: working directory %s: %v", dir, errors.Unwrap(err))
	} else if !st.IsDir() {
		return nil, errorf(initlink.CodeFailedPrecondition, "exec: working directory %s: not a directory", dir)
	}
	path, err := lookPath(spec.Args[0], envValue(env, "PATH"), dir)
	if err != nil {
		return nil, err
	}

	if err := initlink.CheckTag(spec.Tag); err != nil {
		return nil, errorf(initlink.CodeInvalidArgument, "exec: %v", err)
	}
	p := &process{args: spec.Args, pty: spec.PTY, tag: spec.Tag}
	p.cond.L = &p.mu
	attr := &os.ProcAttr{Dir: dir, Env: env, Sys: &syscall.SysProcAttr{Credential: cred}}
	// closeAfter are the child's ends, closed in init once it started.
	var closeAfter []*os.File
	defer func() {
		for _, f := range closeAfter {
			_ = f.Close()
		}
	}()
	fail := func(err error) (*process, error) {
		for _, f := range append(p.pipes, p.in) {
			if f != nil {
				_ = f.Close()
			}
		}
		return nil, err
	}
	if spec.PTY {
		master, slave, err := openPTY(spec.Rows, spec.Cols)
		if err != nil {
			return nil, err
		}
		closeAfter = append(closeAfter, slave)
		p.in, p.term, p.pipes = master, master, []*os.File{master}
		attr.Files = []*os.File{slave, slave, slave}
		// A session of its own, with the terminal as its controlling
		// terminal (fd 0 in the child).
		attr.Sys.Setsid, attr.Sys.Setctty, attr.Sys.Ctty = true, true, 0
	} else {
		stdin, err := os.Open(os.DevNull)
		if err != nil {
			return nil, fmt.Errorf("exec: open %s: %w", os.DevNull, err)
		}
		closeAfter = append(closeAfter, stdin)
		if spec.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				return fail(fmt.Errorf("exec: stdin pipe: %w", err))
			}
			closeAfter = append(closeAfter, r)
			stdin, p.in = r, w
		}
		attr.Files = []*os.File{stdin, nil, nil}
		for i := 1; i <= 2; i++ {
			r, w, err := os.Pipe()
			if err != nil {
				return fail(fmt.Errorf("exec: output pipe: %w", err))
			}
			closeAfter = append(closeAfter, w)
			p.pipes = append(p.pipes, r)
			attr.Files[i] = w
		}
		// A group of its own, so that a timeout kills what it started too.
		attr.Sys.Setpgid = true
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.makeRoom(); err != nil {
		return fail(err)
	}
	proc, err := os.StartProcess(path, spec.Args, attr)
	if err != nil {
		return fail(startError(spec.Args[0], err))
	}
	// The reaper collects the status, not proc.Wait.
	p.pid = proc.Pid
	_ = proc.Release()
	markOOMFirst(p.pid)
	p.start = time.Now()
	m.seq++
	p.seq = m.seq
	p.open = len(p.pipes)
	if old := m.procs[p.pid]; old != nil {
		// The PID of a finished process was reused: its record goes.
		old.mu.Lock()
		old.dropped, old.out, old.outSize = true, nil, 0
		old.cond.Broadcast()
		old.mu.Unlock()
	}
	m.procs[p.pid] = p
	if spec.TimeoutMillis > 0 {
		p.timer = time.AfterFunc(time.Duration(spec.TimeoutMillis)*time.Millisecond, p.timeout)
	}
	for i, r := range p.pipes {
		t := initlink.FrameStdout
		if i == 1 {
			t = initlink.FrameStderr
		}
		go p.pump(r, t)
	}
	return p, nil
}

// makeRoom drops the oldest finished records, first those whose exit was
// delivered, so that one more fits in initlink.MaxProcesses. Callers hold
// m.mu.
func (m *Manager) makeRoom() error {
	for len(m.procs) >= initlink.MaxProcesses {
		var victim *process
		for _, delivered := range []bool{true, false} {
			for _, p := range m.procs {
				p.mu.Lock()
				ok := p.finished() && p.delivered == delivered && p.attached == 0
				p.mu.Unlock()
				if ok && (victim == nil || p.seq < victim.seq) {
					victim = p
				}
			}
			if victim != nil {
				break
			}
		}
		if victim == nil {
			return errorf(initlink.CodeResourceExhausted, "exec: %d processes are running or attached, at most %d", len(m.procs), initlink.MaxProcesses)
		}
		delete(m.procs, victim.pid)
		victim.mu.Lock()
		victim.dropped, victim.out, victim.outSize = true, nil, 0
		victim.cond.Broadcast()
		victim.mu.Unlock()
	}
	return nil
}

// timeout kills the process's group (or session: the same ID) once its
// time is up, also when the process itself has exited before and left
// members of its group running (a shell whose background jobs go on):
// the timeout bounds everything the exec started. The group's ID is not
// given to another process while a member lives, and Exited stops the
// timer once the group is empty.
func (p *process) timeout() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exit == nil {
		p.timedOut = true
	}
	_ = unix.Kill(-p.pid, unix.SIGKILL)
}

// pump reads one output pipe into the buffer, never more than outputLimit
// (plus one chunk) at a time.
func (p *process) pump(r *os.File, t initlink.FrameType) {
	defer func() {
		p.mu.Lock()
		p.open--
		if p.finished() {
			p.closeInput()
		}
		p.cond.Broadcast()
		p.mu.Unlock()
		_ = r.Close()
	}()
	buf := make([]byte, initlink.ChunkSize)
	drained := 0
	draining := false
	for {
		p.mu.Lock()
		for p.outSize >= outputLimit && !p.dropped {
			p.cond.Wait()
		}
		drain, dropped := p.drainNow, p.dropped
		p.mu.Unlock()
		if dropped {
			return
		}
		var n int
		var err error
		if drain {
			// What is in the pipe now is read; nothing more is waited for,
			// and a grandchild writing on is cut off after outputLimit.
			if !draining {
				draining = true
				_ = r.SetReadDeadline(time.Time{})
			}
			if drained >= outputLimit {
				return
			}
			n, err = readNow(r, buf)
			drained += n
		} else {
			n, err = r.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
		}
		if n > 0 {
			p.mu.Lock()
			p.out = append(p.out, chunk{t, append([]byte(nil), buf[:n]...)})
			p.outSize += n
			p.cond.Broadcast()
			p.mu.Unlock()
		}
		if err != nil {
			// io.EOF, or EIO from a PTY whose other side is closed.
			return
		}
	}
}

// readNow reads what r holds without waiting; io.EOF when it holds nothing.
func readNow(r *os.File, buf []byte) (int, error) {
	rc, err := r.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), buf)
		return true
	}); err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	if n <= 0 {
		return 0, io.EOF
	}
	return n, nil
}

// closeInput closes the process's input. Callers hold p.mu.
func (p *process) closeInput() {
	if p.in != nil {
		_ = p.in.Close()
		p.in, p.term = nil, nil
	}
}

// Exited records the exit of pid, when it is a process the Manager started.
// Run's reaper calls it for every child it reaps but the main process.
func (m *Manager) Exited(pid int, ws unix.WaitStatus) {
	m.mu.Lock()
	p := m.procs[pid]
	m.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exit != nil {
		// An orphan that got the PID of a process on record, which exited.
		return
	}
	exit := &initlink.Exit{Code: ws.ExitStatus(), TimedOut: p.timedOut}
	if ws.Signaled() {
		exit.Code = 128 + int(ws.Signal())
		exit.Signal = strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG")
	}
	p.exit = exit
	if p.timer != nil && errors.Is(unix.Kill(-pid, 0), unix.ESRCH) {
		// Nothing of its group is left for the timeout to end.
		p.timer.Stop()
	}
	if p.open > 0 {
		time.AfterFunc(drainAfterExit, p.drain)
	} else {
		p.closeInput()
	}
	p.cond.Broadcast()
}

// drain makes the pumps read what is left in the pipes and stop.
func (p *process) drain() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drainNow = true
	for _, r := range p.pipes {
		// Wakes a pump waiting in Read; a closed pipe just says so.
		_ = r.SetReadDeadline(time.Now())
	}
	p.cond.Broadcast()
}

// control serves the unary process requests.
func (m *Manager) control(req *initlink.Request) error {
	m.mu.Lock()
	p := m.procs[req.PID]
	m.mu.Unlock()
	if p == nil {
		return errorf(initlink.CodeNotFound, "no process %d (only processes started by exec are known)", req.PID)
	}
	switch req.Op {
	case initlink.OpInput:
		return p.input(req.Data)
	case initlink.OpCloseInput:
		return p.closeStdin()
	case initlink.OpSignal:
		if req.Signal <= 0 || req.Signal > 64 {
			return errorf(initlink.CodeInvalidArgument, "signal %d: want 1 to 64", req.Signal)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.exit != nil {
			return errorf(initlink.CodeFailedPrecondition, "process %d has exited", p.pid)
		}
		if err := unix.Kill(p.pid, unix.Signal(req.Signal)); err != nil {
			return fmt.Errorf("signal process %d: %w", p.pid, err)
		}
		return nil
	default: // OpResize
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.pty {
			return errorf(initlink.CodeFailedPrecondition, "process %d has no terminal to resize", p.pid)
		}
		if p.term == nil {
			return errorf(initlink.CodeFailedPrecondition, "process %d has exited", p.pid)
		}
		return resizePTY(p.term, req.Rows, req.Cols)
	}
}

// input writes b to the process's input, waiting at most inputTimeout.
func (p *process) input(b []byte) error {
	p.mu.Lock()
	in := p.in
	exited := p.exit != nil
	p.mu.Unlock()
	if in == nil {
		if exited {
			return errorf(initlink.CodeFailedPrecondition, "process %d has exited", p.pid)
		}
		return errorf(initlink.CodeFailedPrecondition, "process %d has no open input (start it with stdin, or its input was closed)", p.pid)
	}
	p.inMu.Lock()
	defer p.inMu.Unlock()
	_ = in.SetWriteDeadline(time.Now().Add(inputTimeout))
	if _, err := in.Write(b); err != nil {
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return errorf(initlink.CodeResourceExhausted, "process %d does not read its input", p.pid)
		case errors.Is(err, unix.EPIPE), errors.Is(err, os.ErrClosed):
			return errorf(initlink.CodeFailedPrecondition, "process %d closed its input", p.pid)
		}
		return fmt.Errorf("write to process %d: %w", p.pid, err)
	}
	return nil
}

// closeStdin closes the process's input: a pipe is closed, a terminal gets
// its end-of-file character (^D), as a user would type it.
func (p *process) closeStdin() error {
	p.mu.Lock()
	if p.term != nil {
		p.mu.Unlock()
		return p.input([]byte{4})
	}
	defer p.mu.Unlock()
	if p.in == nil && p.exit != nil {
		return errorf(initlink.CodeFailedPrecondition, "process %d has exited", p.pid)
	}
	p.closeInput()
	return nil
}

// list describes every process on record, oldest first.
func (m *Manager) list() []initlink.ProcessInfo {
	m.mu.Lock()
	procs := make([]*process, 0, len(m.procs))
	for _, p := range m.procs {
		procs = append(procs, p)
	}
	m.mu.Unlock()
	sort.Slice(procs, func(i, j int) bool { return procs[i].seq < procs[j].seq })
	out := make([]initlink.ProcessInfo, 0, len(procs))
	for _, p := range procs {
		p.mu.Lock()
		info := initlink.ProcessInfo{PID: p.pid, Args: p.args, PTY: p.pty, Running: p.exit == nil,
			Attached: p.attached != 0, StartUnix: p.start.UnixNano(), Tag: p.tag}
		if p.exit != nil {
			e := *p.exit
			info.Exit = &e
		}
		p.mu.Unlock()
		out = append(out, info)
	}
	if b, err := json.Marshal(initlink.Response{Processes: out}); err == nil && len(b) <= initlink.MaxPayload {
		return out
	}
	// The answer must fit one frame: MaxProcesses records of commands of
	// up to 128 KiB each do not. The commands share listArgsBudget, the
	// short ones whole, the long ones cut.
	limit := argsShare(out, listArgsBudget)
	for i := range out {
		out[i].Args = cutArgs(out[i].Args, limit)
	}
	return out
}

// listArgsBudget bounds what the commands of a listing that would not fit
// one frame may cost (argsCost): JSON writes a byte as at most six
// ("\u003c"), which leaves room for the rest of every record.
const listArgsBudget = initlink.MaxPayload / 8

// argsCost is what args cost of listArgsBudget: their bytes, and three
// for the quotes and comma of each.
func argsCost(args []string) int {
	n := 0
	for _, a := range args {
		n += len(a) + 3
	}
	return n
}

// argsShare returns the most each process's command may cost so that all
// of them together cost at most budget, with no command cut that costs
// less than that.
func argsShare(procs []initlink.ProcessInfo, budget int) int {
	costs := make([]int, len(procs))
	for i := range procs {
		costs[i] = argsCost(procs[i].Args)
	}
	sort.Ints(costs)
	for i, c := range costs {
		share := budget / (len(costs) - i)
		if c > share {
			return share
		}
		budget -= c
	}
	return budget
}

// cutArgs returns args cut to cost about limit at most; a command that
// was cut ends in "…".
func cutArgs(args []string, limit int) []string {
	if argsCost(args) <= limit {
		return args
	}
	var out []string
	left := limit - len("…") - 3
	for _, a := range args {
		if len(a)+3 <= left {
			out = append(out, a)
			left -= len(a) + 3
			continue
		}
		// The arg that does not fit is cut between characters, or, with
		// no room left for a part of it, stands as "…".
		n := left - 3
		for n > 0 && !utf8.RuneStart(a[n]) {
			n--
		}
		if n > 0 {
			return append(out, a[:n]+"…")
		}
		return append(out, "…")
	}
	return out
}

// Shutdown ends every exec'd process once the main one exited with status:
// their groups are killed and each attached stream ends with
// CodeSandboxExited, within shutdownNotice.
func (m *Manager) Shutdown(status int) {
	m.mainStatus.Store(int64(status))
	m.mu.Lock()
	procs := make([]*process, 0, len(m.procs))
	for _, p := range m.procs {
		procs = append(procs, p)
	}
	var dones []chan struct{}
	for s := range m.streams {
		dones = append(dones, s.done)
	}
	m.mu.Unlock()
	for _, p := range procs {
		_ = unix.Kill(-p.pid, unix.SIGKILL)
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	}
	deadline := time.NewTimer(shutdownNotice)
	defer deadline.Stop()
	for _, done := range dones {
		select {
		case <-done:
		case <-deadline.C:
			return
		}
	}
}

// execOOMScoreAdj is an exec'd process's oom_score_adj: the most there is.
// Init and the main process share the sandbox's score (the agent's
// runtime.TaskOOMScoreAdj) and the sandbox's memory limit with every
// process exec'd in it; when the limit is hit, the OOM killer picks by RSS
// among equal scores, and a CI run saw it take init or the main process
// (the sandbox ended OOMKilled) when an exec'd process held the memory. With the highest score
// an exec'd process (and what it starts from then on) goes first, and the
// sandbox outlives it. Raising a score needs no privilege.
const execOOMScoreAdj = "1000"

// markOOMFirst raises process pid's oom_score_adj to execOOMScoreAdj. A
// process that has already ended, or a /proc that refuses, leaves the
// score as it was: a worse pick under memory pressure, not an error.
func markOOMFirst(pid int) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid), []byte(execOOMScoreAdj), 0)
}
