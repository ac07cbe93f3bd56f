package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd"
	apievents "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/typeurl/v2"
)

// Exit reasons, as Kubernetes names them.
const (
	ReasonCompleted = "Completed"
	ReasonError     = "Error"
	ReasonOOMKilled = "OOMKilled"
	// ReasonLost: the sandbox had started and its task is gone (a host
	// reboot, a lost shim); how it ended is unknown.
	ReasonLost = "Lost"
)

// ResyncInterval is how often Watch reloads the whole state from
// containerd even when its event stream is healthy, so that an event lost
// while a subscription was being set up is corrected within this time.
const ResyncInterval = 15 * time.Second

// Sandboxes returns the state of every sandbox of this agent, as the event
// stream has kept it, and a channel that is closed at the next change (of
// a sandbox or of a warm one). Warm sandboxes are not in it: WarmSandboxes.
func (r *Runtime) Sandboxes() ([]Info, <-chan struct{}) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	out := make([]Info, 0, len(r.state))
	for _, id := range slices.Sorted(maps.Keys(r.state)) {
		if r.state[id].Warm == "" {
			out = append(out, r.state[id])
		}
	}
	return out, r.changed
}

// WarmSandboxes returns the state of every warm sandbox of this agent (see
// LabelWarm), as Sandboxes does for sandboxes.
func (r *Runtime) WarmSandboxes() []Info {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	var out []Info
	for _, id := range slices.Sorted(maps.Keys(r.state)) {
		// One claimed is no warm sandbox, whatever a stale read said.
		if _, claimed := r.claims[id]; r.state[id].Warm != "" && !claimed {
			out = append(out, r.state[id])
		}
	}
	return out
}

// SandboxContainer returns the ID of the container the state holds for a
// sandbox revision: the derived one of a cold create, or a claimed warm
// container's.
func (r *Runtime) SandboxContainer(sandboxID string, revision int64) (string, bool) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	if info, ok := r.state[ContainerID(sandboxID, revision)]; ok && info.Warm == "" {
		return info.ContainerID, true
	}
	for id, info := range r.state {
		if info.Warm == "" && info.ID == sandboxID && info.Revision == revision {
			return id, true
		}
	}
	return "", false
}

// ImageNames returns the image names in the agent's namespace, as the event
// stream has kept them; a change closes the channel Sandboxes returned.
func (r *Runtime) ImageNames() []string {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	return slices.Clone(r.imageNames)
}

func (r *Runtime) setImages(names []string) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	if !slices.Equal(r.imageNames, names) {
		r.imageNames = names
		r.notifyLocked()
	}
}

// Sandbox returns the state of one container, as Sandboxes does.
func (r *Runtime) Sandbox(containerID string) (Info, bool) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	info, ok := r.state[containerID]
	return info, ok
}

// notifyLocked wakes everyone waiting for a change. stateMu must be held.
func (r *Runtime) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// record merges an observation of a sandbox into the state. A task's phase
// never goes back (an exit seen before the start's answer stays an exit),
// and an exit's reason, once known, is kept; a task other than the one the
// state knows starts afresh.
func (r *Runtime) record(info Info) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	old, ok := r.state[info.ContainerID]
	if ok && old.Phase > info.Phase && sameTask(old.pid, info.pid) {
		return
	}
	if ok {
		info.oom = info.oom || old.oom
		info.Persisted = info.Persisted || old.Persisted
	}
	r.state[info.ContainerID] = withReason(info)
	r.notifyLocked()
}

// forget drops a container from the state.
func (r *Runtime) forget(containerID string) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	delete(r.claims, containerID)
	if _, ok := r.state[containerID]; ok {
		delete(r.state, containerID)
		r.notifyLocked()
	}
}

// update applies fn to a known container's state; unknown ones are skipped.
func (r *Runtime) update(containerID string, fn func(*Info) bool) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	info, ok := r.state[containerID]
	if !ok {
		return
	}
	if fn(&info) {
		r.state[containerID] = info
		r.notifyLocked()
	}
}

// resync replaces the state with what containerd reports now. Only
// containerd's word makes an exit: a sandbox it still lists as running stays
// running, whatever was missed.
func (r *Runtime) resync(infos []Info) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	next := make(map[string]Info, len(infos))
	for _, info := range infos {
		if old, ok := r.state[info.ContainerID]; ok {
			info.oom = old.oom
		}
		next[info.ContainerID] = withReason(info)
	}
	for id := range r.claims {
		if _, ok := next[id]; !ok {
			delete(r.claims, id) // the container is gone
		}
	}
	if !maps.EqualFunc(r.state, next, sameInfo) {
		r.state = next
		r.notifyLocked()
	}
}

// withReason sets why an exited sandbox ended: OOMKilled when the kernel's
// OOM killer struck in it and its main process failed (a killed child
// whose parent carried on does not count), else by its exit code.
func withReason(info Info) Info {
	switch {
	case info.Phase != PhaseExited:
		info.Reason = ""
	case info.lost:
		info.Reason = ReasonLost
	case info.ExitCode == 0:
		info.Reason = ReasonCompleted
	case info.oom:
		info.Reason = ReasonOOMKilled
	default:
		info.Reason = ReasonError
	}
	return info
}

func sameInfo(a, b Info) bool {
	return a.ContainerID == b.ContainerID && a.Phase == b.Phase && a.ExitCode == b.ExitCode &&
		a.ExitTime.Equal(b.ExitTime) && a.Reason == b.Reason && a.oom == b.oom && a.Persisted == b.Persisted &&
		a.pid == b.pid && a.Warm == b.Warm && a.Claimed == b.Claimed && a.mainStarted == b.mainStarted && a.ID == b.ID
}

// sameTask reports whether two observations may be of the same task: their
// pids match, or one is unknown.
func sameTask(a, b uint32) bool {
	return a == 0 || b == 0 || a == b
}

// Watch keeps the state current from containerd's event stream until ctx
// ends. When the stream breaks (containerd restarting), it reconnects with
// back-off, reloads the whole state and resumes; it never takes a broken
// stream for an exit. synced is closed after the first full load.
func (r *Runtime) Watch(ctx context.Context, synced chan<- struct{}) {
	backoff := 100 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		err := r.watchOnce(ctx, func() {
			backoff = 100 * time.Millisecond
			if first {
				first = false
				close(synced)
			}
		})
		if ctx.Err() != nil {
			return
		}
		r.cfg.Logger.Warn("containerd event stream broken; reconnecting", slog.Any("err", err), slog.Duration("in", backoff))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (r *Runtime) watchOnce(ctx context.Context, loaded func()) error {
	ns, err := r.namespace(ctx)
	if err != nil {
		return err
	}
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Subscribe first, then load: what happens in between arrives as events.
	evs, errs := r.cfg.Client.Subscribe(subCtx,
		fmt.Sprintf(`namespace==%s,topic~="^/tasks/"`, ns),
		fmt.Sprintf(`namespace==%s,topic~="^/containers/"`, ns),
		fmt.Sprintf(`namespace==%s,topic~="^/images/"`, ns))
	reloadImages := func() error {
		names, err := r.listImages(ctx)
		if err != nil {
			return err
		}
		r.setImages(names)
		return nil
	}
	reload := func() error {
		r.retryRollbacks(ctx)
		if _, err := r.settleClaims(ctx, false); err != nil {
			r.cfg.Logger.Warn("finishing a claim cut short failed; retrying at the next reload", slog.Any("err", err))
		}
		infos, err := r.List(ctx)
		if err != nil {
			return fmt.Errorf("reload sandboxes: %w", err)
		}
		r.resync(infos)
		return reloadImages()
	}
	if err := reload(); err != nil {
		return err
	}
	loaded()
	tick := time.NewTicker(ResyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			if err == nil {
				err = fmt.Errorf("event stream closed")
			}
			return err
		case <-tick.C:
			if err := reload(); err != nil {
				return err
			}
		case e := <-evs:
			if strings.HasPrefix(e.Topic, "/images/") {
				// Image events are rare (pulls, imports, removals): the
				// list is read again rather than patched.
				if err := reloadImages(); err != nil {
					return err
				}
				continue
			}
			r.apply(ctx, e)
		}
	}
}

func (r *Runtime) namespace(ctx context.Context) (string, error) {
	if ns, ok := namespaces.Namespace(ctx); ok {
		return ns, nil
	}
	ns := r.cfg.Client.DefaultNamespace()
	if ns == "" {
		return "", fmt.Errorf("no containerd namespace set")
	}
	return ns, nil
}

// apply folds one containerd event into the state.
func (r *Runtime) apply(ctx context.Context, e *events.Envelope) {
	v, err := typeurl.UnmarshalAny(e.Event)
	if err != nil {
		return
	}
	switch ev := v.(type) {
	case *apievents.ContainerCreate:
		r.adopt(ctx, ev.ID)
	case *apievents.ContainerDelete:
		r.forget(ev.ID)
	case *apievents.TaskStart:
		r.update(ev.ContainerID, func(info *Info) bool {
			if info.Phase >= PhaseRunning && sameTask(info.pid, ev.Pid) {
				return false
			}
			*info = withReason(Info{ContainerID: info.ContainerID, ID: info.ID, Revision: info.Revision, Namespace: info.Namespace,
				Name: info.Name, Spec: info.Spec, Labels: info.Labels, LogPath: info.LogPath, Created: info.Created,
				Phase: PhaseRunning, Persisted: info.Persisted, Warm: info.Warm, Claimed: info.Claimed,
				mainStarted: info.mainStarted, specBytes: info.specBytes, pid: ev.Pid, agent: info.agent})
			return true
		})
	case *apievents.TaskOOM:
		r.update(ev.ContainerID, func(info *Info) bool {
			if info.oom {
				return false
			}
			info.oom = true
			*info = withReason(*info)
			return true
		})
	case *apievents.TaskExit:
		if ev.ID != ev.ContainerID {
			return // an exec'd process, not the sandbox's main one
		}
		r.exitEvent(ctx, ev.ContainerID, ev.Pid, ev.ExitStatus, ev.ExitedAt.AsTime())
	case *apievents.TaskDelete:
		if ev.ID != "" && ev.ID != ev.ContainerID {
			return
		}
		r.exitEvent(ctx, ev.ContainerID, ev.Pid, ev.ExitStatus, ev.ExitedAt.AsTime())
	}
}

// exitEvent records an exit event. One without a pid names no process:
// containerd sends such an exit (status 255) when it cleans up after a
// shim that went away, and it may come after a new task of the same
// container has started — a create that replaced a task left without its
// process by a containerd restart. So only containerd's own view of the
// container's task decides such an exit, and only while no create or
// delete of the container is under way. Such a call may be between deleting
// a task left without its process and making its own (existingTask), where
// containerd shows no task: an exit recorded then, with no pid to tell the
// tasks apart, would match the task the call goes on to start and outlast
// it (the sandbox reported Failed with 255 while it runs). The call's own
// result, or the next resync, decides instead.
func (r *Runtime) exitEvent(ctx context.Context, containerID string, pid, code uint32, at time.Time) {
	if pid != 0 {
		r.exited(containerID, pid, code, at)
		return
	}
	if _, ok := r.Sandbox(containerID); !ok {
		return
	}
	// Never wait: this runs on Watch's goroutine.
	unlock, ok := r.locks.tryLock(containerID)
	if !ok {
		return
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := r.cfg.Client.LoadContainer(ctx, containerID)
	if errdefs.IsNotFound(err) {
		return // its ContainerDelete event forgets it
	}
	if err != nil {
		return // containerd away: the reload after the reconnect decides
	}
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		r.exited(containerID, 0, code, at) // no task runs it any more
		return
	}
	if err != nil {
		return
	}
	st, err := task.Status(ctx)
	switch {
	case errdefs.IsNotFound(err):
		r.exited(containerID, 0, code, at)
	case err != nil:
	case st.Status == containerd.Stopped:
		r.exited(containerID, task.Pid(), st.ExitStatus, st.ExitTime)
	default:
		r.cfg.Logger.Debug("ignored an exit without a pid: the container's task runs",
			slog.String("container", containerID), slog.Uint64("status", uint64(code)))
	}
}

// exited records the exit of the task with pid (0: unknown) of a container.
func (r *Runtime) exited(containerID string, pid, code uint32, at time.Time) {
	r.update(containerID, func(info *Info) bool {
		if info.Phase == PhaseExited || !sameTask(info.pid, pid) {
			return false
		}
		info.Phase, info.ExitCode, info.ExitTime = PhaseExited, code, at
		if pid != 0 {
			info.pid = pid
		}
		*info = withReason(*info)
		return true
	})
}

// adopt adds a container created outside Ensure (or whose event came
// first) when it is one of this agent's.
func (r *Runtime) adopt(ctx context.Context, containerID string) {
	if _, ok := r.Sandbox(containerID); ok {
		return
	}
	c, err := r.cfg.Client.LoadContainer(ctx, containerID)
	if err != nil {
		return // gone again, or containerd away: the next resync decides
	}
	info, err := r.inspect(ctx, c)
	if err != nil || info.agent != r.cfg.AgentID {
		return
	}
	r.record(info)
}
