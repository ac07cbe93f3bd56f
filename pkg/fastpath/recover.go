package fastpath

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"connectrpc.com/connect"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// Recover rebuilds the registry from the store and makes the store agree
// with what the agents run, before the fast path serves (DESIGN §4,
// durability of FAST): a sandbox an agent runs with
// no object — a FAST create whose write was lost when the controller
// died — gets its object back from the spec and labels the agent keeps; a
// sandbox whose name now belongs to another sandbox is superseded, and its
// container is removed. It returns how many objects it re-created and how
// many containers it removed.
func (s *Server) Recover(ctx context.Context) (recreated, removed int, err error) {
	// The registry learns every placement the store records before the
	// fast path places anything (the agents' status gave it what runs).
	for _, sb := range s.cfg.Controller.List() {
		if agentID, id, _ := v1alpha1.Placement(sb); agentID != "" && id != "" {
			_ = s.cfg.Registry.Assign(id, agentID, sb.Spec.ExposedPorts)
		}
	}
	// Sandboxes the agents run that no object knows, newest first: when
	// two share a name, the newest keeps it.
	type lost struct {
		agent string
		sb    *fsbv1.AgentSandbox
	}
	var orphans []lost
	for _, st := range s.cfg.Agents.Statuses() {
		for _, asb := range st.GetSandboxes() {
			if _, ok := s.cfg.Controller.ByID(asb.GetSandboxId()); !ok {
				orphans = append(orphans, lost{st.GetAgentId(), asb})
			}
		}
	}
	slices.SortStableFunc(orphans, func(a, b lost) int {
		return b.sb.GetCreateTime().AsTime().Compare(a.sb.GetCreateTime().AsTime())
	})
	var written []*v1alpha1.Sandbox
	taken := map[string]string{} // namespace/name -> the sandbox ID that has it
	for _, o := range orphans {
		asb := o.sb
		k := key(asb.GetNamespace(), asb.GetName())
		if other, ok := s.cfg.Controller.Get(asb.GetNamespace(), asb.GetName()); ok {
			taken[k] = other.Annotations[v1alpha1.AnnotationID]
		}
		if by, ok := taken[k]; ok {
			if err := s.removeSuperseded(ctx, o.agent, asb, by); err != nil {
				return recreated, removed, err
			}
			removed++
			continue
		}
		obj := &v1alpha1.Sandbox{
			ObjectMeta: metav1.ObjectMeta{
				Name: asb.GetName(), Namespace: asb.GetNamespace(), Labels: asb.GetLabels(),
				Annotations: map[string]string{
					v1alpha1.AnnotationID:       asb.GetSandboxId(),
					v1alpha1.AnnotationAgent:    o.agent,
					v1alpha1.AnnotationRevision: strconv.FormatInt(asb.GetRevision(), 10),
				},
				Finalizers: []string{v1alpha1.Finalizer},
			},
			Spec: v1alpha1.SpecFromProto(asb.GetSpec()),
		}
		if _, err := s.cfg.Store.Create(ctx, obj); apierrors.IsAlreadyExists(err) {
			// Stored but not cached: the cache is synced before this runs,
			// so only a write from elsewhere gets here. Whoever has the
			// name keeps it.
			have, gerr := s.cfg.Store.Get(ctx, asb.GetNamespace(), asb.GetName())
			if gerr != nil {
				return recreated, removed, fmt.Errorf("re-create sandbox %s: %w", k, gerr)
			}
			if _, id, _ := v1alpha1.Placement(have); id != asb.GetSandboxId() {
				if err := s.removeSuperseded(ctx, o.agent, asb, id); err != nil {
					return recreated, removed, err
				}
				removed++
			}
			taken[k] = asb.GetSandboxId()
			continue
		} else if err != nil {
			return recreated, removed, fmt.Errorf("re-create sandbox %s: %w", k, err)
		}
		s.cfg.Logger.Info("sandbox object re-created from its agent", slog.String("sandbox", k),
			slog.String("id", asb.GetSandboxId()), slog.String("agent", o.agent))
		taken[k] = asb.GetSandboxId()
		written = append(written, obj)
		recreated++
	}
	// Ready only once the cache, which Get and List read, has them too.
	for _, obj := range written {
		if _, err := s.cfg.Controller.Wait(ctx, obj.Namespace, obj.Name, func(sb *v1alpha1.Sandbox) bool { return sb != nil }); err != nil {
			return recreated, removed, err
		}
	}
	return recreated, removed, nil
}

func (s *Server) removeSuperseded(ctx context.Context, agentID string, asb *fsbv1.AgentSandbox, by string) error {
	client, err := s.cfg.Agents.Client(agentID)
	if err != nil {
		return err
	}
	s.cfg.Logger.Warn("removing a sandbox container superseded by another under its name",
		slog.String("sandbox", asb.GetNamespace()+"/"+asb.GetName()), slog.String("id", asb.GetSandboxId()),
		slog.String("by", by))
	zero := int32(0)
	_, err = client.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{
		SandboxId: asb.GetSandboxId(), Revision: asb.GetRevision(), GracePeriodSeconds: &zero,
	}))
	if err != nil {
		return fmt.Errorf("remove superseded sandbox %s: %w", asb.GetSandboxId(), err)
	}
	s.cfg.Registry.Release(asb.GetSandboxId())
	return nil
}
