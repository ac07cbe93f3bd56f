package runtime

import (
	"context"
	"errors"
	"log/slog"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
)

// A create that fails after making its container rolls it back, so that
// the caller's retry starts clean and a create answered with an error
// leaves nothing. When containerd goes away mid-create (killed, restarting)
// the roll back fails too: the half-made container would stay, holding a
// slot, until the agent's next start repaired it. Instead it is noted here
// and rolled back by Watch as soon as containerd answers again (every
// reload: after a reconnect and at each resync), unless a retry of the
// same create finished it first.

// errNotKnownYet marks a noted container that cannot be judged now: its
// task's state containerd does not know yet, or a create or delete of it
// is under way.
var errNotKnownYet = errors.New("task state not known yet")

// rollBackLater notes a container whose roll back failed.
func (r *Runtime) rollBackLater(containerID, runtimeName string) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	r.rollbacks[containerID] = runtimeName
}

// rolledForward forgets a noted container that a create has finished.
func (r *Runtime) rolledForward(containerID string) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	delete(r.rollbacks, containerID)
}

// retryRollbacks rolls back the noted containers that run nothing: no
// task, or a task created and never started. One that is gone or started
// is forgotten (a retry of the create or a delete settles a started one);
// one whose state containerd does not know yet, or that it does not answer
// for, stays noted.
func (r *Runtime) retryRollbacks(ctx context.Context) {
	r.stateMu.Lock()
	pending := make(map[string]string, len(r.rollbacks))
	for id, rt := range r.rollbacks {
		pending[id] = rt
	}
	r.stateMu.Unlock()
	for id, rt := range pending {
		err := r.rollBack(ctx, id, rt)
		if errors.Is(err, errNotKnownYet) {
			continue // the next reload
		}
		if err != nil {
			r.cfg.Logger.Warn("rolling back a create cut short failed; retrying at the next reload", slog.String("container", id), slog.Any("err", err))
			continue
		}
		r.rolledForward(id)
	}
}

func (r *Runtime) rollBack(ctx context.Context, id, runtimeName string) error {
	// Never wait here: this runs on Watch's goroutine, and a create or a
	// delete of the same container (a retry right after containerd came
	// back, say) may hold it for long. It decides; the next reload looks
	// again.
	unlock, ok := r.locks.tryLock(id)
	if !ok {
		return errNotKnownYet
	}
	defer unlock()
	c, err := r.cfg.Client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		return ignoreNotFound(err)
	}
	if labels[LabelAgent] != r.cfg.AgentID {
		return nil // another agent's, made under the same ID: not ours to judge
	}
	var status containerd.ProcessStatus
	task, err := c.Task(ctx, nil)
	switch {
	case errdefs.IsNotFound(err):
		// No process runs: whatever its start did, the create that made it
		// was answered with an error, and nothing of it is left to keep.
		task = nil
	case err != nil:
		return err
	default:
		st, err := task.Status(ctx)
		switch {
		case errdefs.IsNotFound(err):
		case err != nil:
			return err
		case st.Status == containerd.Unknown:
			return errNotKnownYet
		case st.Status != containerd.Created:
			// Started: a retry finished it, or the start ran and only its
			// answer was lost. A retry of the create or a delete decides.
			return nil
		default:
			status = st.Status
		}
	}
	if err := r.remove(ctx, c, task, status, runtimeName); err != nil {
		return err
	}
	r.forget(id)
	r.cfg.Logger.Info("rolled back a create that containerd's outage cut short", slog.String("container", id))
	return nil
}
