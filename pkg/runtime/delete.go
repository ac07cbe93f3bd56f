package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// Delete stops every container of the sandbox (one revision, or all when
// revision is 0) and removes its task, container and snapshot. Stopping
// sends SIGTERM (to fsb init, which passes it on), waits up to grace, then
// sends SIGKILL to every process of the sandbox. It returns how each
// revision ended. Deleting what is gone succeeds and returns nothing.
func (r *Runtime) Delete(ctx context.Context, sandboxID string, revision int64, grace time.Duration) ([]Info, error) {
	var found []containerd.Container
	if revision > 0 {
		// A claimed sandbox's container has a warm sandbox's ID.
		id, ok := r.SandboxContainer(sandboxID, revision)
		if !ok {
			id = ContainerID(sandboxID, revision)
		}
		c, err := r.cfg.Client.LoadContainer(ctx, id)
		if errdefs.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("load sandbox %s: %w", sandboxID, err)
		}
		found = append(found, c)
	} else {
		// Claims under way first: containerd then has their labels.
		if err := r.settleClaimsOf(ctx, sandboxID); err != nil {
			return nil, err
		}
		cs, err := r.cfg.Client.Containers(ctx, fmt.Sprintf("labels.%q==%s,labels.%q==%s", LabelAgent, r.cfg.AgentID, LabelID, sandboxID))
		if err != nil {
			return nil, fmt.Errorf("find sandbox %s: %w", sandboxID, err)
		}
		found = cs
	}
	var ended []Info
	for _, c := range found {
		info, err := r.deleteOne(ctx, c, grace)
		if err != nil {
			return ended, err
		}
		if info.ContainerID != "" {
			ended = append(ended, info)
		}
	}
	return ended, nil
}

func (r *Runtime) deleteOne(ctx context.Context, c containerd.Container, grace time.Duration) (Info, error) {
	// A delete runs to its end whatever its caller does, so one with a
	// shorter grace period brings the kill of one under way forward,
	// rather than wait behind it for the lock.
	r.hurryStop(c.ID(), grace)
	unlock := r.locks.lock(c.ID())
	defer unlock()
	stop := r.beginStop(c.ID(), grace)
	defer r.endStop(c.ID(), stop)
	cinfo, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if errdefs.IsNotFound(err) {
		return Info{}, nil
	}
	if err != nil {
		return Info{}, fmt.Errorf("inspect %s: %w", c.ID(), err)
	}
	info := infoFromContainer(r.throughClaims(cinfo))
	if info.agent != r.cfg.AgentID {
		// Another agent's sandbox: not ours to stop.
		return Info{}, nil
	}
	task, status, err := stopTask(ctx, c, grace, stop.now)
	if err != nil {
		return Info{}, err
	}
	if task == nil {
		setNoTask(&info)
	} else {
		setPhase(&info, status)
	}
	if err := r.remove(ctx, c, task, status.Status, runtimeName(info.Spec.GetRuntime())); err != nil {
		return Info{}, err
	}
	if known, ok := r.Sandbox(c.ID()); ok {
		info.oom = known.oom
	}
	r.forget(c.ID())
	return withReason(info), nil
}

// pendingStop is a delete's stop under way: its kill comes at killAt, or
// as soon as now is closed.
type pendingStop struct {
	killAt time.Time
	now    chan struct{}
	once   sync.Once
}

func (p *pendingStop) kill() { p.once.Do(func() { close(p.now) }) }

// beginStop records the stop of container id that a delete with grace
// starts; endStop forgets it.
func (r *Runtime) beginStop(id string, grace time.Duration) *pendingStop {
	p := &pendingStop{killAt: time.Now().Add(grace), now: make(chan struct{})}
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	r.stops[id] = p
	return p
}

func (r *Runtime) endStop(id string, p *pendingStop) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	if r.stops[id] == p {
		delete(r.stops, id)
	}
}

// hurryStop brings the kill of a stop under way of container id forward
// to grace from now, when that is sooner.
func (r *Runtime) hurryStop(id string, grace time.Duration) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	p := r.stops[id]
	if p == nil || !time.Now().Add(grace).Before(p.killAt) {
		return
	}
	p.killAt = time.Now().Add(grace)
	if grace <= 0 {
		p.kill()
		return
	}
	time.AfterFunc(grace, p.kill)
}

// stopTask ends c's task: SIGTERM, up to grace (or until sooner is closed),
// then SIGKILL to every process. It returns the task (nil when c has none)
// and its final status; a container without a task reports Unknown.
// sooner may be nil.
func stopTask(ctx context.Context, c containerd.Container, grace time.Duration, sooner <-chan struct{}) (containerd.Task, containerd.Status, error) {
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil, containerd.Status{Status: containerd.Unknown}, nil
	}
	if err != nil {
		return nil, containerd.Status{}, fmt.Errorf("load task %s: %w", c.ID(), err)
	}
	status, err := task.Status(ctx)
	if err != nil {
		return nil, containerd.Status{}, fmt.Errorf("task %s status: %w", c.ID(), err)
	}
	if status.Status != containerd.Running && status.Status != containerd.Paused && status.Status != containerd.Pausing {
		return task, status, nil
	}
	status, err = terminate(ctx, task, grace, sooner)
	if err != nil {
		return nil, containerd.Status{}, fmt.Errorf("stop %s: %w", c.ID(), err)
	}
	return task, status, nil
}

// terminate sends SIGTERM, waits up to grace (or until sooner is closed),
// then sends SIGKILL to every process of the task, and returns its exit
// status.
func terminate(ctx context.Context, task containerd.Task, grace time.Duration, sooner <-chan struct{}) (containerd.Status, error) {
	exited, err := task.Wait(ctx)
	if err != nil {
		return containerd.Status{}, fmt.Errorf("wait: %w", err)
	}
	// A kill can lose the race with the task's own exit: runc then says
	// NotFound, runsc "sandbox is not running". Either way, an exit that
	// follows promptly is the answer.
	killed := func(sig syscall.Signal, err error) (containerd.Status, bool, error) {
		if err == nil || errdefs.IsNotFound(err) {
			return containerd.Status{}, false, nil
		}
		select {
		case es := <-exited:
			return exitStatus(es), true, nil
		case <-time.After(2 * time.Second):
			return containerd.Status{}, false, fmt.Errorf("send %v: %w", sig, err)
		}
	}
	if grace > 0 {
		start := time.Now()
		awaitHandler(ctx, task.Pid(), syscall.SIGTERM, grace)
		// A SIGTERM sent too early is lost; a sandbox that then outlives
		// the grace period is killed below, so it ends either way.
		if st, done, err := killed(syscall.SIGTERM, task.Kill(ctx, syscall.SIGTERM)); done || err != nil {
			return st, err
		}
		timer := time.NewTimer(max(grace-time.Since(start), 0))
		defer timer.Stop()
		select {
		case es := <-exited:
			return exitStatus(es), nil
		case <-timer.C:
		case <-sooner:
		case <-ctx.Done():
			return containerd.Status{}, ctx.Err()
		}
	}
	if st, done, err := killed(syscall.SIGKILL, task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll)); done || err != nil {
		return st, err
	}
	select {
	case es := <-exited:
		return exitStatus(es), nil
	case <-ctx.Done():
		return containerd.Status{}, ctx.Err()
	}
}

// HandlerWait bounds how long a stop waits for a sandbox's PID 1 other
// than fsb init to catch SIGTERM before sending it. The wait counts
// against the grace period, so a PID 1 that never catches it costs no
// more; 2 s was too short for a shell that traps TERM at once on a loaded
// machine (a CI run).
const HandlerWait = 5 * time.Second

// initComm is fsb init's process name until it is ready: the name of
// InitPath.
var initComm = path.Base(InitPath)

// awaitHandler waits until process pid is ready for sig, for up to grace.
// The kernel drops a signal sent to a PID 1 that has no handler for it,
// and fsb init's Go runtime, which catches every signal as it starts, ends
// init with status 2 on a SIGTERM that comes before init subscribed to
// it: a delete right after a create, on a busy node, would lose its
// SIGTERM (and wait out the grace period for the SIGKILL) or end the
// sandbox with 2 (CI runs saw both). fsb init says it is ready by taking
// the name initlink.ReadyName, and is waited for while it still has its
// starting name: it will be ready, and a CI run on a loaded machine saw
// it take longer than HandlerWait. Any other PID 1 (a --no-init sandbox,
// or gVisor's sandbox process) is ready once it catches sig, and is
// waited for up to HandlerWait only: it may never be. The wait counts
// against the grace period.
func awaitHandler(ctx context.Context, pid uint32, sig syscall.Signal, grace time.Duration) {
	start := time.Now()
	for {
		ready, starting := readyFor(pid, sig)
		limit := min(grace, HandlerWait)
		if starting {
			limit = grace
		}
		if ready || time.Since(start) >= limit {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// AwaitCatch waits, up to limit, until process pid catches sig: a stop's
// wait for a PID 1 other than fsb init, which the equivalent baseline of
// fsb ctl bench makes as the agent does (with limit min(grace,
// HandlerWait)).
func AwaitCatch(ctx context.Context, pid uint32, sig syscall.Signal, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for !catches(pid, sig) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// readyFor reports whether process pid is ready for sig (see
// awaitHandler), and whether it is fsb init still starting; a process it
// cannot read counts as ready.
func readyFor(pid uint32, sig syscall.Signal) (ready, initStarting bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return true, false
	}
	switch strings.TrimSpace(string(b)) {
	case initlink.ReadyName:
		return true, false
	case initComm:
		return false, true
	}
	return catches(pid, sig), false
}

// catches reports whether process pid has a handler for sig, from the
// SigCgt mask of /proc/<pid>/status; a process it cannot read (gone, or
// in no PID namespace it can see) counts as catching it.
func catches(pid uint32, sig syscall.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true
	}
	for line := range strings.Lines(string(b)) {
		if mask, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			bits, err := strconv.ParseUint(strings.TrimSpace(mask), 16, 64)
			return err != nil || bits&(1<<(uint(sig)-1)) != 0
		}
	}
	return true
}

func exitStatus(es containerd.ExitStatus) containerd.Status {
	return containerd.Status{Status: containerd.Stopped, ExitStatus: es.ExitCode(), ExitTime: es.ExitTime()}
}

// remove deletes c's task and its sandbox cgroup, then c and its snapshot;
// what is already gone is skipped. task may be nil (it is then looked up) and status empty (it is
// then asked for).
func (r *Runtime) remove(ctx context.Context, c containerd.Container, task containerd.Task, status containerd.ProcessStatus, runtimeName string) error {
	ns, err := r.namespace(ctx)
	if err != nil {
		return err
	}
	if err := removeSandbox(ctx, ns, c, task, status, runtimeName, r.cfg.Runtimes[RuntimeGVisor], r.cfg.Logger); err != nil {
		return err
	}
	// The task is gone: nothing dials the link any more.
	r.closeLink(c.ID())
	return nil
}

// removeSandbox is remove for a container in namespace ns; gvisor is the
// runsc (or wrapper) that clears a gVisor task runsc left behind.
func removeSandbox(ctx context.Context, ns string, c containerd.Container, task containerd.Task, status containerd.ProcessStatus, runtimeName, gvisor string, log *slog.Logger) error {
	// Read before the container goes: its spec names its cgroup.
	cgroupDir := sandboxCgroupOf(ctx, ns, c)
	if err := deleteTask(ctx, ns, c, task, status, runtimeName, gvisor); err != nil {
		return err
	}
	removeSandboxCgroup(ctx, cgroupDir, c.ID(), log)
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", c.ID(), err)
	}
	return nil
}

// removeTask deletes c's task: deleteTask in the runtime's namespace.
func (r *Runtime) removeTask(ctx context.Context, c containerd.Container, task containerd.Task, status containerd.ProcessStatus, runtimeName string) error {
	ns, err := r.namespace(ctx)
	if err != nil {
		return err
	}
	return deleteTask(ctx, ns, c, task, status, runtimeName, r.cfg.Runtimes[RuntimeGVisor])
}

// deleteTask deletes c's task; a task already gone is skipped. task may be
// nil (it is then looked up) and status empty (it is then asked for). A task
// that has exited is deleted as it is: gVisor refuses to kill an exited
// sandbox; any other is killed first. A gVisor task stuck in CREATED after a
// failed start is cleared with runsc's forced delete (gvisor names runsc or
// its wrapper).
func deleteTask(ctx context.Context, ns string, c containerd.Container, task containerd.Task, status containerd.ProcessStatus, runtimeName, gvisor string) error {
	var err error
	if task == nil {
		task, err = c.Task(ctx, nil)
	}
	switch {
	case errdefs.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("load task %s: %w", c.ID(), err)
	}
	if status == "" {
		if st, err := task.Status(ctx); err == nil {
			status = st.Status
		}
	}
	var opts []containerd.ProcessDeleteOpts
	if status != containerd.Stopped {
		opts = append(opts, containerd.WithProcessKill)
	}
	_, err = task.Delete(ctx, opts...)
	if err != nil && !errdefs.IsNotFound(err) && runtimeName == RuntimeGVisor {
		if ferr := forceDeleteGVisor(ctx, gvisor, ns, c.ID()); ferr != nil {
			err = errors.Join(err, ferr)
		} else {
			_, err = task.Delete(ctx)
		}
	}
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete task %s: %w", c.ID(), err)
	}
	return nil
}

// forceDeleteGVisor clears a gVisor sandbox that runsc left behind, as
// the runc shim keeps it: under /run/containerd/runc/<namespace>. runsc
// names runsc or its wrapper.
func forceDeleteGVisor(ctx context.Context, runsc, ns, id string) error {
	root := filepath.Join(runcRoot, ns)
	out, err := exec.CommandContext(ctx, runsc, "--root", root, "delete", "--force", id).CombinedOutput()
	if err != nil {
		return fmt.Errorf("runsc delete --force %s: %w: %s", id, err, bytes.TrimSpace(out))
	}
	return nil
}
