package runtime

import (
	"context"
	"fmt"
	"strconv"

	"github.com/containerd/containerd/errdefs"
)

// fenceLabelPrefix + agent ID is the containerd namespace label that keeps
// the highest controller fence the agent has seen (pkg/fence), so that it
// outlives the agent's process.
const fenceLabelPrefix = "sandbox.fast.io/fence."

// Fence returns the highest controller fence this agent kept, 0 for none.
func (r *Runtime) Fence(ctx context.Context) (int64, error) {
	labels, err := r.cfg.Client.NamespaceService().Labels(ctx, r.cfg.Client.DefaultNamespace())
	if errdefs.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read the kept fence: %w", err)
	}
	v, ok := labels[fenceLabelPrefix+r.cfg.AgentID]
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("kept fence %q: %w", v, err)
	}
	return n, nil
}

// SetFence keeps n as the highest controller fence this agent has seen.
func (r *Runtime) SetFence(ctx context.Context, n int64) error {
	ns := r.cfg.Client.DefaultNamespace()
	key, value := fenceLabelPrefix+r.cfg.AgentID, strconv.FormatInt(n, 10)
	svc := r.cfg.Client.NamespaceService()
	err := svc.SetLabel(ctx, ns, key, value)
	if errdefs.IsNotFound(err) {
		// A fresh node: the namespace holds nothing yet.
		err = svc.Create(ctx, ns, map[string]string{key: value})
		if errdefs.IsAlreadyExists(err) {
			err = svc.SetLabel(ctx, ns, key, value)
		}
	}
	if err != nil {
		return fmt.Errorf("keep fence %d: %w", n, err)
	}
	return nil
}
