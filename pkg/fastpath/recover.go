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

// Recovery makes the store agree with what the agents run (DESIGN §4,
// durability of FAST). A sandbox an agent runs that no object and no
// pending create knows is one of two things, told apart by the persisted
// mark the controller puts on a container once it has seen its object:
//
//   - unmarked: a FAST create whose object write was lost (the controller
//     died or stopped first, or its agent finished the create after the
//     call broke). It gets its object back from the spec and labels the
//     agent keeps, unless its name now belongs to another sandbox; then it
//     is superseded and removed.
//   - marked: its object was written and is gone, so the sandbox was
//     deleted (while its agent was away, say). It is removed: a deleted
//     sandbox never comes back.
//
// Recover does this for every agent at start, before the fast path serves.

// lost is a sandbox an agent runs that no object and no pending create
// knows.
type lost struct {
	agent string
	sb    *fsbv1.AgentSandbox
}

// Recover rebuilds the registry from the store and recovers every agent's
// sandboxes, before the fast path serves. It returns how many objects it
// re-created and how many containers it removed.
func (s *Server) Recover(ctx context.Context) (recreated, removed int, err error) {
	// The registry learns every placement the store records before the
	// fast path places anything (the agents' status gave it what runs).
	for _, sb := range s.cfg.Controller.List() {
		if agentID, id, _ := v1alpha1.Placement(sb); agentID != "" && id != "" {
			_ = s.cfg.Registry.Assign(id, agentID, sb.Spec.ExposedPorts)
		}
	}
	var found []lost
	for _, st := range s.cfg.Agents.Statuses() {
		confirmed, err := s.confirm(ctx, st.GetAgentId(), s.unknownOn(st))
		if err != nil {
			return 0, 0, fmt.Errorf("recover agent %s: %w", st.GetAgentId(), err)
		}
		found = append(found, confirmed...)
	}
	return s.settle(ctx, found)
}

// unknownOn returns what an agent's status holds that neither a pending
// FAST create nor an object knows.
func (s *Server) unknownOn(st *fsbv1.AgentStatus) []lost {
	var out []lost
	for _, asb := range st.GetSandboxes() {
		// The pending table first: a create leaves it only once the cache
		// has its object (checked next) or its container is gone.
		if s.pendingID(asb.GetSandboxId()) {
			continue
		}
		if _, ok := s.cfg.Controller.ByID(asb.GetSandboxId()); ok {
			continue
		}
		out = append(out, lost{st.GetAgentId(), asb})
	}
	return out
}

// pendingID reports whether a pending FAST create holds a sandbox ID.
func (s *Server) pendingID(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.pending {
		if p.id == id {
			return true
		}
	}
	return false
}

// confirm keeps, of an agent's unmarked lost sandboxes, those the agent
// still runs now. The status they came from may predate a create that
// failed and was rolled back, or a delete that finished, before the checks
// of unknownOn: without a second look such a sandbox would get an object
// again. Marked ones need none: removing what is gone succeeds.
func (s *Server) confirm(ctx context.Context, agentID string, found []lost) ([]lost, error) {
	if !slices.ContainsFunc(found, func(l lost) bool { return !l.sb.GetPersisted() }) {
		return found, nil
	}
	client, err := s.cfg.Agents.Client(agentID)
	if err != nil {
		return nil, err
	}
	resp, err := client.GetStatus(ctx, connect.NewRequest(&fsbv1.GetStatusRequest{}))
	if err != nil {
		return nil, fmt.Errorf("status of agent %s: %w", agentID, err)
	}
	runs := map[string]bool{}
	for _, asb := range resp.Msg.GetStatus().GetSandboxes() {
		runs[asb.GetContainerId()] = true
	}
	return slices.DeleteFunc(found, func(l lost) bool { return !l.sb.GetPersisted() && !runs[l.sb.GetContainerId()] }), nil
}

// settle recovers lost sandboxes: marked ones are removed; unmarked ones,
// newest first, get their objects back, or are removed when their name is
// taken (when two share a name, the newest keeps it).
func (s *Server) settle(ctx context.Context, found []lost) (recreated, removed int, err error) {
	slices.SortStableFunc(found, func(a, b lost) int {
		return b.sb.GetCreateTime().AsTime().Compare(a.sb.GetCreateTime().AsTime())
	})
	var written []*v1alpha1.Sandbox
	taken := map[string]string{} // namespace/name -> the sandbox ID that has it
	for _, o := range found {
		asb := o.sb
		k := key(asb.GetNamespace(), asb.GetName())
		if asb.GetPersisted() {
			s.cfg.Logger.Info("removing a sandbox whose object was deleted", slog.String("sandbox", k),
				slog.String("id", asb.GetSandboxId()), slog.Int64("revision", asb.GetRevision()), slog.String("agent", o.agent))
			if err := s.remove(ctx, o.agent, asb); err != nil {
				return recreated, removed, err
			}
			removed++
			continue
		}
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
			// Stored but not cached: a write from elsewhere since the
			// cache was read. Whoever has the name keeps it.
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
	// Done only once the cache, which Get and List read, has them too.
	for _, obj := range written {
		if _, err := s.cfg.Controller.Wait(ctx, obj.Namespace, obj.Name, func(sb *v1alpha1.Sandbox) bool { return sb != nil }); err != nil {
			return recreated, removed, err
		}
	}
	return recreated, removed, nil
}

func (s *Server) removeSuperseded(ctx context.Context, agentID string, asb *fsbv1.AgentSandbox, by string) error {
	s.cfg.Logger.Warn("removing a sandbox container superseded by another under its name",
		slog.String("sandbox", asb.GetNamespace()+"/"+asb.GetName()), slog.String("id", asb.GetSandboxId()),
		slog.String("by", by))
	return s.remove(ctx, agentID, asb)
}

// remove removes a lost sandbox revision's container (grace 0), then
// releases its slot.
func (s *Server) remove(ctx context.Context, agentID string, asb *fsbv1.AgentSandbox) error {
	client, err := s.cfg.Agents.Client(agentID)
	if err != nil {
		return err
	}
	zero := int32(0)
	_, err = client.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{
		SandboxId: asb.GetSandboxId(), Revision: asb.GetRevision(), GracePeriodSeconds: &zero,
	}))
	if err != nil {
		return fmt.Errorf("remove sandbox %s revision %d: %w", asb.GetSandboxId(), asb.GetRevision(), err)
	}
	s.cfg.Registry.Release(asb.GetSandboxId())
	return nil
}
