package fastpath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"time"

	"connectrpc.com/connect"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// Recovery makes the store agree with what the agents run (DESIGN §4,
// durability of FAST). A sandbox an agent runs that no object and no
// pending create knows is one of two things, told apart by the persisted
// mark the controller puts on a container once it has seen its object:
//
//   - unmarked: a FAST create whose object write was lost (the controller
//     died or stopped first, or its agent finished the create after the
//     call broke). It gets its object back from the spec and labels the
//     agent keeps, unless its name now belongs to another sandbox (then it
//     is superseded) or the store refuses that object for good; then it
//     is removed.
//   - marked: its object was written and is gone, so the sandbox was
//     deleted (while its agent was away, say). It is removed: a deleted
//     sandbox never comes back.
//
// Recover does this for every agent at start, before the fast path serves;
// RecoverAgent does it for one agent whenever it connects or comes back.
// An agent that fails a recovery's call is retried while it is up, and
// holds up no other: Recover goes on with the rest, and every call is
// bound to its agent's liveness and to recoveryCallTimeout.

// recoveryCallTimeout bounds each call a recovery makes to an agent. The
// recoveries run one at a time: an agent that takes a call and never
// answers (a stopped process before it counts as down) must not hold up
// every other agent's recovery.
const recoveryCallTimeout = 30 * time.Second

// lost is a sandbox an agent runs that no object and no pending create
// knows.
type lost struct {
	agent string
	sb    *fsbv1.AgentSandbox
}

// Recover rebuilds the registry from the store and recovers every agent's
// sandboxes, before the fast path serves. It returns how many objects it
// re-created and how many containers it removed. An agent whose calls
// fail is logged and queued for a retry, and fails nothing else; an error
// is the store's, or ctx's. Once it has succeeded, the recoveries AgentUp
// queues run, until ctx ends: ctx is the term of the replica that leads
// (or of the only one), and a replica whose term ended recovers nothing,
// writes no object and removes no container, until the next term's
// Recover (which covers every agent anew).
func (s *Server) Recover(ctx context.Context) (recreated, removed int, err error) {
	s.recoverMu.Lock()
	defer s.recoverMu.Unlock()
	// The registry learns every placement the store records before the
	// fast path places anything (the agents' status gave it what runs).
	for _, sb := range s.cfg.Controller.List() {
		if agentID, id, _ := v1alpha1.Placement(sb); agentID != "" && id != "" {
			_ = s.cfg.Registry.Assign(id, agentID, sb.Spec.ExposedPorts)
		}
	}
	// Agents queued until now are covered by the statuses read below.
	s.qmu.Lock()
	clear(s.queued)
	connects := maps.Clone(s.connects)
	s.qmu.Unlock()
	var found []lost
	covered := map[string]bool{}
	for _, st := range s.cfg.Agents.Statuses() {
		confirmed, err := s.confirm(ctx, st.GetAgentId(), s.unknownOn(st))
		if err != nil {
			// It was up a moment ago: it is retried after the start, while
			// it is up, and whenever it connects again.
			s.cfg.Logger.Warn("agent not recovered at start; retrying", slog.String("agent", st.GetAgentId()), slog.Any("err", err))
			s.queue(st.GetAgentId())
			continue
		}
		covered[st.GetAgentId()] = true
		found = append(found, confirmed...)
	}
	recreated, removed, failed, err := s.settle(ctx, found)
	if err != nil {
		return recreated, removed, err
	}
	for agentID, ferr := range failed {
		s.cfg.Logger.Warn("agent not recovered at start; retrying", slog.String("agent", agentID), slog.Any("err", ferr))
		s.queue(agentID)
		delete(covered, agentID)
	}
	for agentID := range covered {
		s.markReconciled(agentID, connects[agentID])
	}
	s.recoveredOnce.Do(func() { close(s.recovered) })
	// The queued recoveries run in this term from now on (only Recover
	// sends, under recoverMu: the buffer has room once drained).
	select {
	case <-s.terms:
	default:
	}
	s.terms <- ctx
	return recreated, removed, nil
}

// RecoverAgent recovers one agent's sandboxes, from its latest status. It
// is serialised with every other recovery.
func (s *Server) RecoverAgent(ctx context.Context, agentID string) (recreated, removed int, err error) {
	s.recoverMu.Lock()
	defer s.recoverMu.Unlock()
	s.qmu.Lock()
	connects := s.connects[agentID]
	s.qmu.Unlock()
	var st *fsbv1.AgentStatus
	for _, one := range s.cfg.Agents.Statuses() {
		if one.GetAgentId() == agentID {
			st = one
		}
	}
	if st == nil {
		return 0, 0, fmt.Errorf("recover agent %s: no status from it yet", agentID)
	}
	found, err := s.confirm(ctx, agentID, s.unknownOn(st))
	if err != nil {
		return 0, 0, fmt.Errorf("recover agent %s: %w", agentID, err)
	}
	recreated, removed, failed, err := s.settle(ctx, found)
	if err == nil {
		err = failed[agentID]
	}
	if err != nil {
		return recreated, removed, fmt.Errorf("recover agent %s: %w", agentID, err)
	}
	s.markReconciled(agentID, connects)
	return recreated, removed, nil
}

// markReconciled records that a recovery of agentID, started when the
// agent had connected the given number of times, succeeded. Should the
// agent have connected again meanwhile, the record stays behind its
// count, and the janitor hears "undecided" until the next recovery.
func (s *Server) markReconciled(agentID string, connects uint64) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	s.reconciled[agentID] = max(s.reconciled[agentID], connects)
}

// reconciledSinceConnect reports whether agentID has been reconciled
// since it last connected.
func (s *Server) reconciledSinceConnect(agentID string) bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	n := s.connects[agentID]
	return n > 0 && s.reconciled[agentID] == n
}

// AgentUp queues the recovery of an agent that connected or came back
// (agentlink.Config.Up). The recoveries run one at a time, off the caller's
// goroutine, once Recover has succeeded, until the server's context ends.
func (s *Server) AgentUp(st *fsbv1.AgentStatus) {
	s.qmu.Lock()
	s.connects[st.GetAgentId()]++
	s.qmu.Unlock()
	s.queue(st.GetAgentId())
}

func (s *Server) queue(agentID string) {
	s.qmu.Lock()
	s.queued[agentID] = true
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// runRecoveries runs the queued recoveries during each term (Recover's
// ctx), each bound to it, until the server's context ends; it owns no
// state but the queue's head. Between terms the queue waits: the next
// term's Recover clears it.
func (s *Server) runRecoveries() {
	var term context.Context // the current term's, ended with the server's too
	release := func() {}
	defer func() { release() }()
	adopt := func(t context.Context) {
		release()
		ctx, cancel := context.WithCancel(t)
		stop := context.AfterFunc(s.ctx, cancel)
		term, release = ctx, func() { stop(); cancel() }
	}
	for {
		select {
		case t := <-s.terms:
			adopt(t)
		default:
		}
		if term == nil || term.Err() != nil {
			select {
			case t := <-s.terms:
				adopt(t)
				continue
			case <-s.ctx.Done():
				return
			}
		}
		s.qmu.Lock()
		var agentID string
		for id := range s.queued {
			agentID = id
			break
		}
		delete(s.queued, agentID)
		s.qmu.Unlock()
		if agentID == "" {
			select {
			case <-s.wake:
			case <-term.Done():
			case <-s.ctx.Done():
				return
			}
			continue
		}
		recreated, removed, err := s.RecoverAgent(term, agentID)
		switch {
		case s.ctx.Err() != nil:
			return
		case term.Err() != nil:
			// The term ended during the recovery: the next one's Recover
			// covers the agent.
		case err != nil:
			s.cfg.Logger.Warn("recovering an agent's sandboxes failed; retrying while it is up", slog.String("agent", agentID), slog.Any("err", err))
			if s.cfg.Agents.Up(agentID) {
				select {
				case <-time.After(time.Second):
				case <-term.Done():
				}
				s.queue(agentID)
			}
		case recreated+removed > 0:
			s.cfg.Logger.Info("store brought in line with an agent", slog.String("agent", agentID),
				slog.Int("recreated", recreated), slog.Int("removed", removed))
		}
	}
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

// pendingName returns the sandbox ID of the pending FAST create under
// namespace/name k ("" when there is none), and whether its agent has
// answered (the sandbox runs, and may be acknowledged).
func (s *Server) pendingName(k string) (id string, answered bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending[k]
	if p == nil {
		return "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deleted {
		return "", false
	}
	return p.id, p.agent != ""
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
	var resp *connect.Response[fsbv1.GetStatusResponse]
	err := s.callAgent(ctx, agentID, func(ctx context.Context, client fsbv1connect.AgentServiceClient) (err error) {
		resp, err = client.GetStatus(ctx, connect.NewRequest(&fsbv1.GetStatusRequest{}))
		return err
	})
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
//
// A call to an agent that fails is that agent's failure, not the
// recovery's: failed holds the first such error per agent, and that
// agent's removals after it are left to its next recovery (its objects
// are still re-created: that needs only the store). err is a failure of
// the store's, or ctx's end, after which nothing more is done.
func (s *Server) settle(ctx context.Context, found []lost) (recreated, removed int, failed map[string]error, err error) {
	slices.SortStableFunc(found, func(a, b lost) int {
		return b.sb.GetCreateTime().AsTime().Compare(a.sb.GetCreateTime().AsTime())
	})
	failed = map[string]error{}
	// removeFrom runs the removal of a lost sandbox from its agent, unless
	// a call to that agent has failed already. Only the end of ctx is an
	// error: any other failure is the agent's.
	removeFrom := func(agentID string, remove func() error) error {
		if failed[agentID] != nil {
			return nil
		}
		if err := remove(); err != nil {
			if ctx.Err() != nil {
				return err
			}
			failed[agentID] = err
			return nil
		}
		removed++
		return nil
	}
	var written []*v1alpha1.Sandbox
	taken := map[string]string{} // namespace/name -> the sandbox ID that has it
	for _, o := range found {
		asb := o.sb
		k := key(asb.GetNamespace(), asb.GetName())
		if asb.GetPersisted() {
			err := removeFrom(o.agent, func() error {
				s.cfg.Logger.Info("removing a sandbox whose object was deleted", slog.String("sandbox", k),
					slog.String("id", asb.GetSandboxId()), slog.Int64("revision", asb.GetRevision()), slog.String("agent", o.agent))
				return s.remove(ctx, o.agent, asb)
			})
			if err != nil {
				return recreated, removed, failed, err
			}
			continue
		}
		if other, ok := s.cfg.Controller.Get(asb.GetNamespace(), asb.GetName()); ok {
			taken[k] = other.Annotations[v1alpha1.AnnotationID]
		} else if id, answered := s.pendingName(k); id != "" && id != asb.GetSandboxId() {
			// A FAST create under the name is under way, its object not
			// yet written: it is newer than this lost one (a caller who
			// retried a create that failed while containerd was away, say).
			// An object for the lost one would make that write fail and
			// remove an acknowledged sandbox, so the name is the new one's
			// once its agent has answered. Before that, the create may
			// still fail, and the lost one is neither given an object nor
			// removed: this agent's recovery is tried again.
			if !answered {
				failed[o.agent] = fmt.Errorf("a FAST create of %s is waiting for its agent", k)
				continue
			}
			taken[k] = id
		}
		if by, ok := taken[k]; ok {
			if err := removeFrom(o.agent, func() error { return s.removeSuperseded(ctx, o.agent, asb, by) }); err != nil {
				return recreated, removed, failed, err
			}
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
		if asb.GetWarm() {
			obj.Annotations[v1alpha1.AnnotationWarm] = "true"
		}
		if _, err := s.cfg.Store.Create(ctx, obj); apierrors.IsAlreadyExists(err) {
			// Stored but not cached: a write from elsewhere since the
			// cache was read. Whoever has the name keeps it.
			have, gerr := s.cfg.Store.Get(ctx, asb.GetNamespace(), asb.GetName())
			if gerr != nil {
				return recreated, removed, failed, fmt.Errorf("re-create sandbox %s: %w", k, gerr)
			}
			if _, id, _ := v1alpha1.Placement(have); id != asb.GetSandboxId() {
				if err := removeFrom(o.agent, func() error { return s.removeSuperseded(ctx, o.agent, asb, id) }); err != nil {
					return recreated, removed, failed, err
				}
			}
			taken[k] = asb.GetSandboxId()
			continue
		} else if refusedForGood(err) && s.health.final(asb.GetSandboxId(), err) {
			// No retry can make it land, and failing here would fail every
			// recovery (and the start) on the same refusal.
			s.cfg.Logger.Error("the store refused a recovered sandbox's object for good; removing its container", slog.String("sandbox", k),
				slog.String("id", asb.GetSandboxId()), slog.String("agent", o.agent), slog.Any("err", err))
			s.refusedEvent(obj, err)
			if err := removeFrom(o.agent, func() error { return s.remove(ctx, o.agent, asb) }); err != nil {
				return recreated, removed, failed, err
			}
			continue
		} else if refusedForGood(err) {
			// Forbidden within the grace (storehealth.go): the agent's
			// recovery is tried again, and the sandbox stays meanwhile.
			if failed[o.agent] == nil {
				failed[o.agent] = fmt.Errorf("re-create sandbox %s: %w (retrying for %s before it counts as final)", k, err, s.cfg.ForbiddenGrace)
			}
			continue
		} else if err != nil {
			return recreated, removed, failed, fmt.Errorf("re-create sandbox %s: %w", k, err)
		}
		s.health.settled(asb.GetSandboxId())
		s.cfg.Logger.Info("sandbox object re-created from its agent", slog.String("sandbox", k),
			slog.String("id", asb.GetSandboxId()), slog.String("agent", o.agent))
		taken[k] = asb.GetSandboxId()
		written = append(written, obj)
		recreated++
	}
	// Done only once the cache, which Get and List read, has them too.
	for _, obj := range written {
		if _, err := s.cfg.Controller.Wait(ctx, obj.Namespace, obj.Name, func(sb *v1alpha1.Sandbox) bool { return sb != nil }); err != nil {
			return recreated, removed, failed, err
		}
	}
	return recreated, removed, failed, nil
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
	zero := int32(0)
	err := s.callAgent(ctx, agentID, func(ctx context.Context, client fsbv1connect.AgentServiceClient) error {
		_, err := client.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{
			SandboxId: asb.GetSandboxId(), Revision: asb.GetRevision(), GracePeriodSeconds: &zero,
		}))
		return err
	})
	if err != nil {
		return fmt.Errorf("remove sandbox %s revision %d from agent %s: %w", asb.GetSandboxId(), asb.GetRevision(), agentID, err)
	}
	s.cfg.Registry.Release(asb.GetSandboxId())
	return nil
}

// callAgent makes one recovery call to an agent, bound to the agent's
// liveness (it ends when the agent goes down) and to recoveryCallTimeout.
// A call cut short says why: the agent went down, or the time ran out.
func (s *Server) callAgent(ctx context.Context, agentID string, call func(context.Context, fsbv1connect.AgentServiceClient) error) error {
	client, err := s.cfg.Agents.Client(agentID)
	if err != nil {
		return err
	}
	timeoutCtx, cancelTimeout := context.WithTimeout(ctx, recoveryCallTimeout)
	defer cancelTimeout()
	callCtx, cancel := s.cfg.Agents.Bind(timeoutCtx, agentID)
	defer cancel()
	err = call(callCtx, client)
	if cause := context.Cause(callCtx); err != nil && cause != nil && ctx.Err() == nil && !errors.Is(err, cause) {
		return fmt.Errorf("%w (%w)", err, cause)
	}
	return err
}
