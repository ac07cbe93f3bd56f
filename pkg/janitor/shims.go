package janitor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"

	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// procRoot is where processes are read from.
const procRoot = "/proc"

// clockTicks is USER_HZ, the unit of a process's start time in
// /proc/<pid>/stat: 100 on every Linux architecture Go supports.
const clockTicks = 100

// shimExitTimeout bounds the wait for a killed shim to die.
const shimExitTimeout = 5 * time.Second

// findShims returns the shim processes of the containerd listening at
// containerdAddress, serving containerd namespace ns, whose task containerd
// no longer has.
//
// An agent killed in the middle of a delete leaves one: containerd removes
// the task from its list and then, the agent's call cancelled, never shuts
// the shim down. The shim lives on (through containerd restarts too) with
// its socket under containerd's shim socket dir and its bundle. Killing it
// is what containerd would have done: containerd, still holding its
// connection, then removes the bundle itself; the socket file stays, and
// Remove deletes it.
//
// containerd starts a shim before it registers its task, so a create in
// flight shows a shim without a task for a few tens of milliseconds: the
// orphan timeout counts from Created, the shim's start, and Remove asks for
// the task once more right before the kill.
func findShims(ctx context.Context, client *containerd.Client, ns, containerdAddress string) ([]Leftover, error) {
	ctx = namespaces.WithNamespace(ctx, ns)
	shims, err := listShims(procRoot)
	if err != nil {
		return nil, err
	}
	want := resolveAddress(containerdAddress)
	var out []Leftover
	for _, s := range shims {
		if s.namespace != ns || resolveAddress(s.address) != want {
			continue
		}
		gone, err := taskGone(ctx, client, s.id)
		if err != nil {
			return nil, fmt.Errorf("shim %d of %s: %w", s.pid, s.id, err)
		}
		if !gone {
			continue
		}
		l := Leftover{
			Kind:      KindShim,
			Namespace: ns,
			Name:      fmt.Sprintf("pid %d", s.pid),
			Created:   s.started,
			Reason:    fmt.Sprintf("shim of task %s, which containerd no longer has", s.id),
			Remove:    removeShim(client, s),
		}
		l.SandboxID, l.Revision, _ = parseContainerID(s.id)
		if c, err := client.ContainerService().Get(ctx, s.id); err == nil {
			l.AgentID = c.Labels[runtime.LabelAgent]
		}
		out = append(out, l)
	}
	return out, nil
}

// taskGone reports whether containerd has no task id in the context's
// namespace.
func taskGone(ctx context.Context, client *containerd.Client, id string) (bool, error) {
	_, err := client.TaskService().Get(ctx, &tasksapi.GetRequest{ContainerID: id})
	err = errdefs.FromGRPC(err)
	switch {
	case errdefs.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("get task %s: %w", id, err)
	}
	return false, nil
}

// shimProc is a running containerd shim, as its command line names it.
type shimProc struct {
	pid                    int
	namespace, id, address string
	// startTicks is the process's start in clock ticks since boot, as
	// /proc/<pid>/stat says it; with pid it names the process across PID
	// reuse (compared raw: a time made from it moves with the wall
	// clock's steps). started is the same as a time, for the age rule.
	startTicks uint64
	started    time.Time
	// bundle is the shim's working directory: containerd starts it in the
	// task's bundle.
	bundle string
	// socket is the path of the socket it serves.
	socket string
}

// removeShim kills a shim whose task is gone and removes its socket file.
func removeShim(client *containerd.Client, s shimProc) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx = namespaces.WithNamespace(ctx, s.namespace)
		if s.alive(procRoot) {
			gone, err := taskGone(ctx, client, s.id)
			if err != nil {
				return fmt.Errorf("shim %d: %w", s.pid, err)
			}
			if !gone {
				return fmt.Errorf("shim %d of %s: its task is there: %w", s.pid, s.id, errInUse)
			}
			if err := syscall.Kill(s.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("kill shim %d of %s: %w", s.pid, s.id, err)
			}
			deadline := time.Now().Add(shimExitTimeout)
			for s.alive(procRoot) {
				if time.Now().After(deadline) {
					return fmt.Errorf("shim %d of %s still alive %v after SIGKILL", s.pid, s.id, shimExitTimeout)
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("wait for shim %d to die: %w", s.pid, ctx.Err())
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
		return removeShimSocket(s)
	}
}

// shimSocket returns the path of the socket a shim serves, as its bundle's
// address file names it ("" when it cannot be read).
func shimSocket(bundle string) string {
	b, err := os.ReadFile(filepath.Join(bundle, "address"))
	if err != nil {
		return ""
	}
	p, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "unix://")
	if !ok || !filepath.IsAbs(p) {
		return ""
	}
	return p
}

// removeShimSocket removes a dead shim's socket file: a shim removes it only
// when it shuts down cleanly, and containerd never does. The path is the
// same for every shim of one task ID, so it stays while another shim of
// that ID runs (a create of the same sandbox revision, since).
func removeShimSocket(s shimProc) error {
	if s.socket == "" {
		return nil
	}
	fi, err := os.Lstat(s.socket)
	if err != nil || fi.Mode().Type() != os.ModeSocket {
		return nil
	}
	shims, err := listShims(procRoot)
	if err != nil {
		return fmt.Errorf("shim %d of %s: %w", s.pid, s.id, err)
	}
	for _, o := range shims {
		if o.namespace == s.namespace && o.id == s.id && resolveAddress(o.address) == resolveAddress(s.address) {
			return nil
		}
	}
	if err := os.Remove(s.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove socket of shim %d of %s: %w", s.pid, s.id, err)
	}
	return nil
}

// alive reports whether the shim still runs: its PID names a process, not a
// zombie, that started when the shim did.
func (s shimProc) alive(root string) bool {
	stat, err := os.ReadFile(filepath.Join(root, strconv.Itoa(s.pid), "stat"))
	if err != nil {
		return false
	}
	state, ticks, err := parseStat(stat)
	if err != nil || state == 'Z' || state == 'X' {
		return false
	}
	return ticks == s.startTicks
}

// listShims returns the containerd shim daemons running on the host: the
// processes whose executable is named containerd-shim* and whose command
// line names a namespace, a task ID and containerd's address. The short
// lived `start` and `delete` runs of the same binary are not daemons.
func listShims(root string) ([]shimProc, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	boot, err := bootTime(root)
	if err != nil {
		return nil, err
	}
	var out []shimProc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		dir := filepath.Join(root, e.Name())
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil {
			continue // gone meanwhile
		}
		s, ok := parseShimArgs(cmdline)
		if !ok {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue
		}
		state, ticks, err := parseStat(stat)
		if err != nil || state == 'Z' || state == 'X' {
			continue
		}
		s.pid = pid
		s.startTicks, s.started = ticks, startTime(boot, ticks)
		if cwd, err := os.Readlink(filepath.Join(dir, "cwd")); err == nil {
			s.bundle = cwd
			s.socket = shimSocket(cwd)
		}
		out = append(out, s)
	}
	return out, nil
}

// parseShimArgs reads a shim daemon's NUL-separated command line:
// containerd-shim-<runtime> -namespace NS -id ID -address ADDR [flags].
func parseShimArgs(cmdline []byte) (shimProc, bool) {
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
		return shimProc{}, false
	}
	var s shimProc
	for i := 1; i < len(args); i++ {
		name, value, hasValue := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !strings.HasPrefix(args[i], "-") {
			// A positional argument is an action (start, delete): not a
			// daemon.
			return shimProc{}, false
		}
		var field *string
		switch name {
		case "namespace":
			field = &s.namespace
		case "id":
			field = &s.id
		case "address":
			field = &s.address
		default:
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return shimProc{}, false
			}
			i++
			value = args[i]
		}
		*field = value
	}
	if s.namespace == "" || s.id == "" || s.address == "" {
		return shimProc{}, false
	}
	return s, true
}

// parseStat reads a process's state and start time (in clock ticks since
// boot) from /proc/<pid>/stat. The command name, in parentheses, may hold
// spaces and parentheses itself, so fields are counted from the last ')'.
func parseStat(stat []byte) (state byte, startTicks uint64, err error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed stat: no command name")
	}
	// Fields after the name start with the third, state; starttime is the
	// 22nd.
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 20 || len(fields[0]) != 1 {
		return 0, 0, errors.New("malformed stat: too few fields")
	}
	startTicks, err = strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("malformed stat: start time: %w", err)
	}
	return fields[0][0], startTicks, nil
}

// bootTime reads when the host booted from /proc/stat's btime.
func bootTime(root string) (time.Time, error) {
	b, err := os.ReadFile(filepath.Join(root, "stat"))
	if err != nil {
		return time.Time{}, fmt.Errorf("boot time: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			sec, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("boot time: %w", err)
			}
			return time.Unix(sec, 0), nil
		}
	}
	return time.Time{}, errors.New("boot time: no btime in stat")
}

// startTime converts a start time in clock ticks since boot to a time.
func startTime(boot time.Time, ticks uint64) time.Time {
	return boot.Add(time.Duration(ticks) * time.Second / clockTicks)
}

// resolveAddress turns a containerd address (a path, or unix://path) into a
// path with symbolic links resolved, so that two spellings of one socket
// compare equal.
func resolveAddress(addr string) string {
	p := strings.TrimPrefix(addr, "unix://")
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return filepath.Clean(p)
}
