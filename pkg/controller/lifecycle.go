package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
)

// Condition types the controller sets besides ConditionCreated.
const (
	// ConditionAgentReachable is False while the sandbox's agent is silent;
	// its reason is AgentLost once the lost timeout has passed.
	ConditionAgentReachable = "AgentReachable"
	// ConditionRecovering is True while AutoRecreate brings a failed or lost
	// sandbox back (its LastTransitionTime is when the recovery began), and
	// False with reason GaveUp once recoveryTimeoutSeconds passed without a
	// revision that kept running.
	ConditionRecovering = "Recovering"
)

// reasonLost is the reason an agent gives for a sandbox whose task vanished
// after it had started (a host reboot, a lost shim).
const reasonLost = "Lost"

func (c *Controller) sync(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	cached, ok := c.Get(namespace, name)
	if !ok {
		c.forget(key)
		return nil // gone: the finalizer already saw to the container
	}
	sb := cached.DeepCopy()
	if sb.DeletionTimestamp != nil {
		return c.finalize(ctx, key, sb)
	}
	if !slices.Contains(sb.Finalizers, v1alpha1.Finalizer) || sb.Annotations[v1alpha1.AnnotationID] == "" {
		// A sandbox made outside the fast path (kubectl): give it the
		// finalizer and an ID before anything runs for it.
		if !slices.Contains(sb.Finalizers, v1alpha1.Finalizer) {
			sb.Finalizers = append(sb.Finalizers, v1alpha1.Finalizer)
		}
		if sb.Annotations == nil {
			sb.Annotations = map[string]string{}
		}
		if sb.Annotations[v1alpha1.AnnotationID] == "" {
			sb.Annotations[v1alpha1.AnnotationID] = c.cfg.NewID()
		}
		_, err := c.cfg.Store.Update(ctx, sb)
		return err
	}
	if exp := sb.Spec.ExpireTime; exp != nil {
		if left := time.Until(exp.Time); left > 0 {
			c.queue.AddAfter(key, left)
		} else {
			return c.expire(ctx, sb)
		}
	}
	agent, id, revision := v1alpha1.Placement(sb)
	if agent == "" {
		if wait := c.creates.wait(key); wait > 0 {
			c.queue.AddAfter(key, wait)
			return nil
		}
		return c.place(ctx, key, sb, id)
	}
	revision = max(revision, 1)
	// A reset asked for before the controller first wrote the status (a
	// FAST create that carried one) is the revision that runs: observe
	// accepts it.
	if resetRequested(sb) && sb.Status.Phase != "" {
		if wait := c.recreates.wait(key); wait > 0 {
			c.queue.AddAfter(key, wait)
			return nil
		}
		return c.reset(ctx, key, sb, agent, id, revision)
	}
	return c.observe(ctx, key, sb, agent, id, revision)
}

// forget drops what the controller kept in memory about a sandbox.
func (c *Controller) forget(key string) {
	c.creates.reset(key)
	c.recreates.reset(key)
	c.mu.Lock()
	delete(c.failedAt, key)
	c.mu.Unlock()
}

// place finds an agent for a sandbox, persists Bound, and starts it there.
func (c *Controller) place(ctx context.Context, key string, sb *v1alpha1.Sandbox, id string) error {
	req, err := PlacementRequest(sb, id)
	if err != nil {
		return c.refused(ctx, sb, connect.CodeInvalidArgument, err)
	}
	done := c.phase(sb, "allocate")
	p, err := c.cfg.Registry.Allocate(req)
	done()
	if pe := new(registry.PoolError); errors.As(err, &pe) {
		return c.poolMissing(ctx, key, sb, id, pe)
	}
	if errors.Is(err, registry.ErrNoCapacity) {
		msg := err.Error()
		if nc := new(registry.NoCapacityError); errors.As(err, &nc) {
			msg = nc.Advice(fmt.Sprintf("sandbox %s in namespace %s", sb.Name, sb.Namespace), sb.Spec.PoolRef, "")
		}
		st := sb.Status.DeepCopy()
		st.Phase = v1alpha1.PhasePending
		st.SandboxID = id
		st.Message = msg
		setCondition(st, ConditionCreated, metav1.ConditionFalse, connect.CodeResourceExhausted.String(), msg)
		if err := c.setStatus(ctx, sb, st); err != nil {
			return err
		}
		return fmt.Errorf("no agent for %s: %w", id, err)
	}
	if err != nil {
		return err
	}
	st := sb.Status.DeepCopy()
	st.Phase, st.SandboxID, st.AssignedPod, st.NodeName, st.Revision = v1alpha1.PhaseBound, id, p.AgentID, p.NodeName, 1
	st.Message = ""
	st.AcceptedResetRevision = sb.Spec.ResetRevision.DeepCopy() // a reset asked for at create is this revision
	meta.RemoveStatusCondition(&st.Conditions, ConditionCreated)
	if err := c.setStatus(ctx, sb, st); err != nil {
		c.cfg.Registry.Release(id)
		return err
	}
	c.cfg.Logger.Debug("sandbox placed", slog.String("sandbox", key), slog.String("agent", p.AgentID))
	c.cfg.Events.Eventf(sb, corev1.EventTypeNormal, ReasonPlaced, "placed on agent %s%s as sandbox %s", p.AgentID, onNode(p.NodeName), id)
	return c.start(ctx, key, sb, p.AgentID, id, 1)
}

// Condition reasons of a sandbox whose poolRef the registry refused:
// Created is False with one of them while the sandbox waits, Pending, for
// its pool. Refusal answers a waiting STRONG create with their codes.
const (
	ReasonPoolNotFound = "PoolNotFound"
	ReasonPoolClosed   = "PoolClosed"
)

// poolReasonCodes maps the pool reasons to the Connect code of the
// refusal: a pool that does not exist is NotFound; one being deleted is
// there but takes no sandbox, FailedPrecondition.
var poolReasonCodes = map[string]connect.Code{
	ReasonPoolNotFound: connect.CodeNotFound,
	ReasonPoolClosed:   connect.CodeFailedPrecondition,
}

// PoolRefusal words a placement the registry refused for the sandbox's
// pool (a *registry.PoolError) for a person: the pool by name, and what
// to do about it. It returns the Connect code and the condition reason
// too; ok is false for any other error.
func (c *Controller) PoolRefusal(err error) (code connect.Code, reason, msg string, ok bool) {
	pe := new(registry.PoolError)
	if !errors.As(err, &pe) {
		return 0, "", "", false
	}
	ns := c.cfg.PoolNamespace
	list := "fsb ctl get pools, or kubectl get sandboxpools -n " + ns
	if pe.Closed {
		msg = fmt.Sprintf("sandbox pool %q is being deleted: it takes no new sandboxes; name another pool (%s lists them), or leave poolRef empty for the default pool", pe.Pool, list)
		if ns == "" {
			msg = fmt.Sprintf("sandbox pool %q is being deleted: it takes no new sandboxes; name another pool, or leave poolRef empty for the default pool", pe.Pool)
		}
		return connect.CodeFailedPrecondition, ReasonPoolClosed, msg, true
	}
	msg = fmt.Sprintf("sandbox pool %q not found: create it in namespace %s (%s lists them), or leave poolRef empty for the default pool", pe.Pool, ns, list)
	if ns == "" {
		// A controller configured without a pool namespace declares no
		// pools: only the default pool exists.
		msg = fmt.Sprintf("sandbox pool %q not found: this controller serves no SandboxPools: leave poolRef empty for the default pool", pe.Pool)
	}
	return connect.CodeNotFound, ReasonPoolNotFound, msg, true
}

// poolMissing records that a sandbox waits for its pool: Pending, Created
// False with the pool's reason, the message naming the pool. It is not a
// failure: the sandbox is placed once the pool exists (or opens), tried
// again after the create back-off (sync waits it out), and the message
// stays the same from try to try, so waiting writes nothing.
func (c *Controller) poolMissing(ctx context.Context, key string, sb *v1alpha1.Sandbox, id string, pe *registry.PoolError) error {
	_, reason, msg, _ := c.PoolRefusal(pe)
	st := sb.Status.DeepCopy()
	st.Phase = v1alpha1.PhasePending
	st.SandboxID = id
	st.Message = msg
	setCondition(st, ConditionCreated, metav1.ConditionFalse, reason, msg)
	wait := c.creates.failed(key)
	c.queue.AddAfter(key, wait)
	if sb.Status.Message != msg {
		c.cfg.Logger.Info("sandbox waits for its pool", slog.String("sandbox", key), slog.String("pool", pe.Pool), slog.Bool("closed", pe.Closed))
		c.cfg.Events.Eventf(sb, corev1.EventTypeWarning, ReasonUnschedulable, "%s (the controller keeps trying)", msg)
	}
	return c.setStatus(ctx, sb, st)
}

// PoolChanged wakes the sandboxes that wait for pool name (placed nowhere
// yet, naming it), forgetting their create back-off: the pool's controller
// calls it when it declares, opens or closes the pool in the registry, so
// that they are placed (or told why not) at once rather than at their next
// try, up to RecreateBackoffMax later.
func (c *Controller) PoolChanged(name string) {
	for _, sb := range c.List() {
		if sb.Spec.PoolRef != name || sb.DeletionTimestamp != nil {
			continue
		}
		if agent, _, _ := v1alpha1.Placement(sb); agent != "" {
			continue
		}
		key := sb.Namespace + "/" + sb.Name
		c.creates.reset(key)
		c.queue.Add(key)
	}
}

// start asks the agent to run the sandbox revision (idempotent) and records
// Running. A failure that may pass (containerd or a registry away) is
// retried with back-off, its cause shown in the Created condition; one
// that cannot (a bad spec, an image that does not exist, refused
// credentials) fails the sandbox.
func (c *Controller) start(ctx context.Context, key string, sb *v1alpha1.Sandbox, agent, id string, revision int64) error {
	client, err := c.cfg.Agents.Client(agent)
	if err != nil {
		return c.retryCreate(ctx, key, sb, agent, err)
	}
	callCtx, cancel := c.cfg.Agents.Bind(ctx, agent)
	defer cancel()
	done := c.phase(sb, "agent")
	resp, err := client.CreateSandbox(callCtx, connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{
		SandboxId: id, Revision: revision, Namespace: sb.Namespace, Name: sb.Name, Spec: v1alpha1.SpecToProto(sb.Spec),
		Labels: sb.Labels, Persisted: true, // the object exists: this create came from it
	}))
	done()
	if err != nil {
		switch code := connect.CodeOf(err); code {
		case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeFailedPrecondition,
			connect.CodeAlreadyExists, connect.CodePermissionDenied:
			// The agent will not run it as asked: retrying cannot help.
			c.cfg.Registry.Release(id)
			return c.refused(ctx, sb, code, err)
		case connect.CodeResourceExhausted:
			// The agent's own fence says no (its slots or ports differ
			// from what the registry believed): place it afresh, unless a
			// FAST create pinned it there.
			if sb.Status.AssignedPod == agent && sb.Annotations[v1alpha1.AnnotationAgent] == "" && revision == 1 {
				c.cfg.Registry.Release(id)
				st := sb.Status.DeepCopy()
				st.Phase, st.AssignedPod, st.NodeName, st.Message = v1alpha1.PhasePending, "", "", err.Error()
				if serr := c.setStatus(ctx, sb, st); serr != nil {
					return serr
				}
			}
		}
		return c.retryCreate(ctx, key, sb, agent, err)
	}
	c.creates.reset(key)
	return c.setStatus(ctx, sb, statusFrom(sb, agent, id, revision, resp.Msg.GetSandbox()))
}

// retryCreate records why a create did not happen and when it is tried
// again; nothing retries it sooner, however often the agent's status
// changes in the meantime.
func (c *Controller) retryCreate(ctx context.Context, key string, sb *v1alpha1.Sandbox, agent string, cause error) error {
	if cond := meta.FindStatusCondition(sb.Status.Conditions, ConditionRecovering); cond != nil && cond.Status == metav1.ConditionTrue &&
		time.Since(cond.LastTransitionTime.Time) >= recoveryLimit(sb) {
		// A new revision that cannot even start counts against the
		// recovery deadline too.
		_, id, _ := v1alpha1.Placement(sb)
		c.cfg.Registry.Release(id)
		return c.giveUp(ctx, key, sb, sb.Status.DeepCopy(), cond.LastTransitionTime.Time, cause.Error())
	}
	wait := c.creates.failed(key)
	c.cfg.Logger.Warn("create failed; retrying", slog.String("sandbox", key), slog.String("agent", agent),
		slog.Duration("in", wait), slog.Any("err", cause))
	st := sb.Status.DeepCopy()
	msg := fmt.Sprintf("%v (retrying in %s)", cause, wait.Round(time.Millisecond))
	st.Message = msg
	setCondition(st, ConditionCreated, metav1.ConditionUnknown, connect.CodeOf(cause).String(), msg)
	c.queue.AddAfter(key, wait)
	return c.setStatus(ctx, sb, st)
}

// observe follows what the sandbox's agent reports.
func (c *Controller) observe(ctx context.Context, key string, sb *v1alpha1.Sandbox, agent, id string, revision int64) error {
	if addrs := c.cfg.Agents.Conflict(agent); addrs != nil {
		// Two processes claim the agent's identity: its sandboxes are left
		// as they are until one goes; the condition says why.
		st := sb.Status.DeepCopy()
		setCondition(st, ConditionAgentReachable, metav1.ConditionUnknown, "AgentIDConflict",
			fmt.Sprintf("agent ID %s is reported by %s: its sandboxes are left as they are until only one address reports it", agent, strings.Join(addrs, " and ")))
		return c.setStatus(ctx, sb, st)
	}
	asb, known := c.cfg.Agents.Sandbox(agent, id, revision)
	if !known {
		return c.agentSilent(ctx, key, sb, agent, id, revision)
	}
	switch {
	case asb != nil, sb.Status.Phase == "", sb.Status.Phase == v1alpha1.PhasePending, sb.Status.Phase == v1alpha1.PhaseBound:
		// It runs there, or a create is expected: its slot and ports are
		// held. (After a restart the registry learns placements from here
		// and from the agents' status.) A sandbox with nothing there holds
		// nothing.
		_ = c.cfg.Registry.Assign(id, agent, sb.Spec.ExposedPorts)
	}
	if asb == nil {
		switch sb.Status.Phase {
		case "", v1alpha1.PhasePending, v1alpha1.PhaseBound:
			// Placed but not (yet) on the agent: a create cut short, or a
			// FAST create whose object came before the agent's status.
			// Creates are idempotent: make sure, once its back-off allows.
			if wait := c.creates.wait(key); wait > 0 {
				c.queue.AddAfter(key, wait)
				return nil
			}
			return c.start(ctx, key, sb, agent, id, revision)
		case v1alpha1.PhaseRunning, v1alpha1.PhaseLost:
			// The status stream may lag behind the create that wrote
			// Running: ask the agent before calling it gone.
			if gone, err := c.goneFromAgent(ctx, agent, id, revision); err != nil || !gone {
				return err
			}
			return c.failed(ctx, key, sb, sb.Status.DeepCopy(), agent, id, revision, failure{
				lost: true, reason: "ContainerGone",
				message: fmt.Sprintf("revision %d is gone from agent %s", revision, agent),
			})
		case v1alpha1.PhaseFailed:
			if recovering(sb) {
				// Its container was removed for a new revision that could
				// not be placed yet: go on trying.
				return c.failed(ctx, key, sb, sb.Status.DeepCopy(), agent, id, revision, failure{
					exitCode: sb.Status.ExitCode, message: sb.Status.Message,
				})
			}
		}
		return nil
	}
	if asb.GetReason() == reasonLost && sb.Status.Revision == revision &&
		(sb.Status.Phase == v1alpha1.PhaseSucceeded || sb.Status.Phase == v1alpha1.PhaseFailed) {
		// An ended revision whose task went with a host reboot: it had
		// ended already, and its recorded end stands.
		return c.markPersisted(ctx, agent, id, revision, asb)
	}
	st := statusFrom(sb, agent, id, revision, asb)
	if p, ok := c.cfg.Registry.Lookup(id); ok && p.NodeName != "" {
		st.NodeName = p.NodeName
	}
	meta.RemoveStatusCondition(&st.Conditions, ConditionAgentReachable)
	switch asb.GetPhase() {
	case fsbv1.Phase_PHASE_FAILED:
		f := failure{exitCode: asb.GetExitCode(), reason: asb.GetReason(),
			message: fmt.Sprintf("revision %d exited with code %d (%s)", revision, asb.GetExitCode(), asb.GetReason())}
		if asb.GetReason() == reasonLost {
			f = failure{lost: true, reason: "TaskGone",
				message: fmt.Sprintf("revision %d stopped running without an exit (its task is gone: a host reboot or a lost shim)", revision)}
		}
		if asb.GetCreateTime() != nil && asb.GetExitTime() != nil {
			f.ran = asb.GetExitTime().AsTime().Sub(asb.GetCreateTime().AsTime())
		}
		if err := c.failed(ctx, key, sb, st, agent, id, revision, f); err != nil {
			return err
		}
		return c.markPersisted(ctx, agent, id, revision, asb)
	case fsbv1.Phase_PHASE_SUCCEEDED:
		meta.RemoveStatusCondition(&st.Conditions, ConditionRecovering)
		c.recreates.reset(key)
	case fsbv1.Phase_PHASE_RUNNING:
		c.settle(key, st, asb)
	}
	if err := c.setStatus(ctx, sb, st); err != nil {
		return err
	}
	return c.markPersisted(ctx, agent, id, revision, asb)
}

// markPersisted marks a sandbox's container once its object is written:
// from then on a container without the object was deleted, and must never
// bring it back. (After the status write, so that the status shows first.)
func (c *Controller) markPersisted(ctx context.Context, agent, id string, revision int64, asb *fsbv1.AgentSandbox) error {
	if asb.GetPersisted() {
		return nil
	}
	client, err := c.cfg.Agents.Client(agent)
	if err != nil {
		return err
	}
	callCtx, cancel := c.cfg.Agents.Bind(ctx, agent)
	defer cancel()
	if _, err := client.MarkPersisted(callCtx, connect.NewRequest(&fsbv1.MarkPersistedRequest{SandboxId: id, Revision: revision})); err != nil {
		return fmt.Errorf("mark %s persisted on agent %s: %w", id, agent, err)
	}
	return nil
}

// goneFromAgent asks the agent itself whether a revision is gone.
func (c *Controller) goneFromAgent(ctx context.Context, agent, id string, revision int64) (bool, error) {
	client, err := c.cfg.Agents.Client(agent)
	if err != nil {
		return false, err
	}
	callCtx, cancel := c.cfg.Agents.Bind(ctx, agent)
	defer cancel()
	resp, err := client.GetStatus(callCtx, connect.NewRequest(&fsbv1.GetStatusRequest{}))
	if err != nil {
		return false, fmt.Errorf("status of agent %s: %w", agent, err)
	}
	for _, asb := range resp.Msg.GetStatus().GetSandboxes() {
		if asb.GetSandboxId() == id && asb.GetRevision() == revision {
			return false, nil
		}
	}
	return true, nil
}

// recovering reports whether AutoRecreate is bringing the sandbox back.
func recovering(sb *v1alpha1.Sandbox) bool {
	cond := meta.FindStatusCondition(sb.Status.Conditions, ConditionRecovering)
	return cond != nil && cond.Status == metav1.ConditionTrue
}

// recoveryLimit is how long AutoRecreate tries without a revision that
// keeps running.
func recoveryLimit(sb *v1alpha1.Sandbox) time.Duration {
	if s := sb.Spec.RecoveryTimeoutSeconds; s > 0 {
		return time.Duration(s) * time.Second
	}
	return DefaultRecoveryTimeout
}

// giveUp leaves an AutoRecreate sandbox Failed: no revision kept running
// within its recovery timeout.
func (c *Controller) giveUp(ctx context.Context, key string, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, began time.Time, last string) error {
	msg := fmt.Sprintf("gave up: no revision kept running for %s since %s; last: %s", recoveryLimit(sb), began.UTC().Format(time.RFC3339), last)
	st.Phase, st.Message = v1alpha1.PhaseFailed, msg
	setCondition(st, ConditionRecovering, metav1.ConditionFalse, "GaveUp", msg)
	// Counted and logged once the write landed: a sync from a stale cache
	// gives up again, and its write then fails with a Conflict.
	if err := c.setStatus(ctx, sb, st); err != nil {
		return err
	}
	c.cfg.Metrics.gaveUpOne()
	c.cfg.Logger.Warn("recovery given up", slog.String("sandbox", key), slog.String("why", msg))
	return nil
}

// settle ends a recovery once the running revision has run StableAfter,
// and resets the back-off; until then it wakes the sandbox when it will.
func (c *Controller) settle(key string, st *v1alpha1.SandboxStatus, asb *fsbv1.AgentSandbox) {
	if asb.GetCreateTime() == nil {
		return
	}
	ran := time.Since(asb.GetCreateTime().AsTime())
	if ran >= c.cfg.StableAfter {
		meta.RemoveStatusCondition(&st.Conditions, ConditionRecovering)
		c.recreates.reset(key)
		return
	}
	if cond := meta.FindStatusCondition(st.Conditions, ConditionRecovering); cond != nil && cond.Status == metav1.ConditionTrue {
		c.queue.AddAfter(key, c.cfg.StableAfter-ran)
	}
}

// agentSilent handles a sandbox whose agent is not connected: nothing until
// the agent has been silent for LostTimeout, then Lost.
func (c *Controller) agentSilent(ctx context.Context, key string, sb *v1alpha1.Sandbox, agent, id string, revision int64) error {
	switch sb.Status.Phase {
	case v1alpha1.PhaseSucceeded, v1alpha1.PhaseFailed:
		if cond := meta.FindStatusCondition(sb.Status.Conditions, ConditionRecovering); cond == nil || cond.Status != metav1.ConditionTrue {
			return nil // nothing runs that could be lost
		}
	}
	_, since := c.cfg.Agents.Reachable(agent)
	if wait := time.Until(since.Add(c.cfg.LostTimeout)); wait > 0 {
		st := sb.Status.DeepCopy()
		setCondition(st, ConditionAgentReachable, metav1.ConditionFalse, "AgentUnreachable",
			fmt.Sprintf("agent %s silent since %s; the sandbox counts as Lost after %s", agent, since.UTC().Format(time.RFC3339), c.cfg.LostTimeout))
		c.queue.AddAfter(key, wait)
		return c.setStatus(ctx, sb, st)
	}
	return c.failed(ctx, key, sb, sb.Status.DeepCopy(), agent, id, revision, failure{
		lost: true, reason: "AgentLost",
		message: fmt.Sprintf("agent %s silent since %s (over --agent-lost-timeout %s)", agent, since.UTC().Format(time.RFC3339), c.cfg.LostTimeout),
	})
}

// failure is why a revision ended without success.
type failure struct {
	lost     bool // the agent or the task went away; else it exited
	exitCode int32
	reason   string
	message  string
	ran      time.Duration // how long it ran, when known
}

// failed applies the failure policy to a revision that failed or was lost.
// st is the status to start from (what the agent reported, or the
// object's own).
func (c *Controller) failed(ctx context.Context, key string, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, agent, id string, revision int64, f failure) error {
	st.Message = f.message
	if f.lost {
		if st.Phase != v1alpha1.PhaseLost {
			c.cfg.Metrics.lostOne()
			c.cfg.Logger.Warn("sandbox lost", slog.String("sandbox", key), slog.String("agent", agent), slog.String("why", f.message))
		}
		st.Phase = v1alpha1.PhaseLost
		if f.reason == "AgentLost" {
			setCondition(st, ConditionAgentReachable, metav1.ConditionFalse, "AgentLost", f.message)
		}
	} else {
		st.Phase = v1alpha1.PhaseFailed
		st.ExitCode = f.exitCode
	}
	if sb.Spec.FailurePolicy != v1alpha1.FailurePolicyAutoRecreate {
		return c.setStatus(ctx, sb, st)
	}
	if f.ran >= c.cfg.StableAfter {
		c.recreates.reset(key)
	}
	now := time.Now()
	began := now
	cond := meta.FindStatusCondition(st.Conditions, ConditionRecovering)
	switch {
	case cond != nil && cond.Status == metav1.ConditionFalse && cond.Reason == "GaveUp":
		return c.setStatus(ctx, sb, st) // gave up: only a reset or a delete goes on
	case cond != nil && cond.Status == metav1.ConditionTrue:
		began = cond.LastTransitionTime.Time
	}
	if now.Sub(began) >= recoveryLimit(sb) {
		return c.giveUp(ctx, key, sb, st, began, f.message)
	}
	c.mu.Lock()
	fa, ok := c.failedAt[key]
	if !ok || fa.revision != revision {
		fa = failedRevision{revision: revision, at: now}
		c.failedAt[key] = fa
	}
	c.mu.Unlock()
	due := fa.at.Add(c.recreates.next(key))
	if wait := time.Until(due); wait > 0 {
		// The time is absolute: a countdown in the message would change the
		// status at every sync, and every write wakes a sync.
		setCondition(st, ConditionRecovering, metav1.ConditionTrue, "BackOff",
			fmt.Sprintf("%s; revision %d starts at %s", f.message, revision+1, due.UTC().Format("15:04:05.000Z")))
		c.queue.AddAfter(key, wait)
		return c.setStatus(ctx, sb, st)
	}
	setCondition(st, ConditionRecovering, metav1.ConditionTrue, "Recreating", fmt.Sprintf("%s; starting revision %d", f.message, revision+1))
	cause := "failed"
	if f.lost {
		cause = "lost"
	}
	return c.nextRevision(ctx, key, sb, st, agent, id, revision, new(int32), cause)
}

// resetRequested reports whether spec.resetRevision asks for a revision
// the status has not accepted yet.
func resetRequested(sb *v1alpha1.Sandbox) bool {
	r := sb.Spec.ResetRevision
	return r != nil && (sb.Status.AcceptedResetRevision == nil || !r.Equal(sb.Status.AcceptedResetRevision))
}

// reset re-creates a sandbox on demand: the current revision is stopped
// gracefully first, then the next one starts.
func (c *Controller) reset(ctx context.Context, key string, sb *v1alpha1.Sandbox, agent, id string, revision int64) error {
	st := sb.Status.DeepCopy()
	meta.RemoveStatusCondition(&st.Conditions, ConditionRecovering)
	c.cfg.Logger.Info("resetting sandbox", slog.String("sandbox", key), slog.Int64("revision", revision+1))
	return c.nextRevision(ctx, key, sb, st, agent, id, revision, gracePeriod(sb), "reset")
}

// nextRevision places revision+1 anew, then removes revision from its
// agent (with grace; skipped when the agent is away — a replaced revision
// is removed when its agent comes back), persists Bound with the new one
// (and, for a reset, the reset it carried out), and starts it. When no
// agent can take the new revision, nothing changes but the message: the
// current one stays, with its slot, and it is tried again after a back-off.
func (c *Controller) nextRevision(ctx context.Context, key string, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus, agent, id string, revision int64, grace *int32, cause string) error {
	why := st.Message
	req, err := PlacementRequest(sb, id)
	if err != nil {
		return c.refused(ctx, sb, connect.CodeInvalidArgument, err)
	}
	old, placed := c.cfg.Registry.Lookup(id)
	c.cfg.Registry.Release(id)
	p, err := c.cfg.Registry.Allocate(req)
	if err != nil {
		if placed {
			_ = c.cfg.Registry.Assign(id, old.AgentID, sb.Spec.ExposedPorts)
		}
		wait := c.recreates.failed(key)
		if _, _, msg, ok := c.PoolRefusal(err); ok {
			err = errors.New(msg)
		}
		st.Message = fmt.Sprintf("no agent can take revision %d: %v (next try at %s)", revision+1, err, time.Now().Add(wait).UTC().Format("15:04:05Z"))
		c.queue.AddAfter(key, wait)
		return c.setStatus(ctx, sb, st)
	}
	if up, _ := c.cfg.Agents.Reachable(agent); up {
		if err := c.deleteOnAgent(ctx, agent, id, revision, grace); err != nil {
			c.cfg.Registry.Release(id)
			if placed {
				_ = c.cfg.Registry.Assign(id, old.AgentID, sb.Spec.ExposedPorts)
			}
			return err
		}
	}
	c.recreates.failed(key) // each new revision lengthens the next wait
	st.Phase, st.AssignedPod, st.NodeName, st.Revision = v1alpha1.PhaseBound, p.AgentID, p.NodeName, revision+1
	st.Endpoints, st.ExitCode, st.Message = nil, 0, ""
	if cause == "reset" {
		st.AcceptedResetRevision = sb.Spec.ResetRevision.DeepCopy()
	}
	meta.RemoveStatusCondition(&st.Conditions, ConditionCreated)
	meta.RemoveStatusCondition(&st.Conditions, ConditionAgentReachable)
	if err := c.setStatus(ctx, sb, st); err != nil {
		c.cfg.Registry.Release(id)
		return err
	}
	c.cfg.Metrics.recreate(cause)
	c.cfg.Events.Eventf(sb, corev1.EventTypeNormal, ReasonRecreated, "revision %d placed on agent %s%s, after revision %d %s", revision+1, p.AgentID, onNode(p.NodeName), revision, recreateCause(cause, why))
	c.cfg.Logger.Info("new revision placed", slog.String("sandbox", key), slog.Int64("revision", revision+1),
		slog.String("agent", p.AgentID), slog.String("cause", cause))
	return c.start(ctx, key, sb, p.AgentID, id, revision+1)
}

// expire marks a sandbox Expired and deletes it; the finalizer stops it
// gracefully.
func (c *Controller) expire(ctx context.Context, sb *v1alpha1.Sandbox) error {
	if sb.Status.Phase != v1alpha1.PhaseExpired {
		st := sb.Status.DeepCopy()
		st.Phase = v1alpha1.PhaseExpired
		st.Message = fmt.Sprintf("expired at %s", sb.Spec.ExpireTime.UTC().Format(time.RFC3339))
		if err := c.setStatus(ctx, sb, st); err != nil {
			return err
		}
		c.cfg.Metrics.expiredOne()
		c.cfg.Events.Eventf(sb, corev1.EventTypeNormal, ReasonExpired, "spec.expireTime %s passed: the sandbox is stopped and deleted", sb.Spec.ExpireTime.UTC().Format(time.RFC3339))
		c.cfg.Logger.Info("sandbox expired", slog.String("sandbox", sb.Namespace+"/"+sb.Name))
	}
	err := c.cfg.Store.Delete(ctx, sb.Namespace, sb.Name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// refused records that the agent refused the sandbox, with its code.
func (c *Controller) refused(ctx context.Context, sb *v1alpha1.Sandbox, code connect.Code, err error) error {
	st := sb.Status.DeepCopy()
	st.Phase = v1alpha1.PhaseFailed
	st.Message = err.Error()
	setCondition(st, ConditionCreated, metav1.ConditionFalse, code.String(), err.Error())
	return c.setStatus(ctx, sb, st)
}

// gracePeriod is the grace period a delete asked for, or nil for the
// agent's default.
func gracePeriod(sb *v1alpha1.Sandbox) *int32 {
	s, ok := sb.Annotations[AnnotationGracePeriod]
	if !ok {
		return nil
	}
	g, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return nil
	}
	grace := int32(g)
	return &grace
}

// finalize stops the container of a deleted sandbox, frees its slot, and
// lets the object go. While the agent cannot do it, the message says what
// the delete waits for, and it is retried until it can; a sandbox whose
// agent is lost goes at once (its container, marked persisted, is removed
// when the agent comes back).
func (c *Controller) finalize(ctx context.Context, key string, sb *v1alpha1.Sandbox) error {
	if !slices.Contains(sb.Finalizers, v1alpha1.Finalizer) {
		return nil
	}
	agent, id, _ := v1alpha1.Placement(sb)
	if agent != "" && id != "" {
		st := sb.Status.DeepCopy()
		if st.Phase != v1alpha1.PhaseExpired && st.Phase != v1alpha1.PhaseLost {
			st.Phase = v1alpha1.PhaseTerminating
		}
		if err := c.setStatus(ctx, sb, st); err != nil {
			return err
		}
		up, since := c.cfg.Agents.Reachable(agent)
		lost := sb.Status.Phase == v1alpha1.PhaseLost || time.Since(since) >= c.cfg.LostTimeout
		switch {
		case !up && !lost:
			st.Message = fmt.Sprintf("waiting for agent %s (silent since %s) to remove the container; it goes without it after %s",
				agent, since.UTC().Format(time.RFC3339), c.cfg.LostTimeout)
			c.queue.AddAfter(key, time.Until(since.Add(c.cfg.LostTimeout)))
			return c.setStatus(ctx, sb, st)
		case up:
			if err := c.deleteOnAgent(ctx, agent, id, 0, gracePeriod(sb)); err != nil {
				st.Message = fmt.Sprintf("waiting for agent %s to remove the container: %v", agent, err)
				if serr := c.setStatus(ctx, sb, st); serr != nil {
					return errors.Join(err, serr)
				}
				return err
			}
		}
	}
	if id != "" {
		c.cfg.Registry.Release(id)
	}
	sb.Finalizers = slices.DeleteFunc(sb.Finalizers, func(f string) bool { return f == v1alpha1.Finalizer })
	_, err := c.cfg.Store.Update(ctx, sb)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil && agent != "" && id != "" {
		if up, _ := c.cfg.Agents.Reachable(agent); up {
			c.cfg.Events.Eventf(sb, corev1.EventTypeNormal, ReasonRemoved, "container of sandbox %s removed from agent %s", id, agent)
		} else {
			c.cfg.Events.Eventf(sb, corev1.EventTypeWarning, ReasonRemoved,
				"agent %s is lost: the object goes now, and the container of sandbox %s is removed when the agent comes back", agent, id)
		}
	}
	return err
}
