// Package controller is the Sandbox controller: one state machine for both
// stores, in k8s.io/sample-controller's shape. Informer event handlers only
// enqueue keys; workers run sync(key), which places a sandbox that has no
// agent (STRONG mode, kubectl), follows what its agent reports, applies the
// failure policy, resetRevision and expiry, and on deletion stops the
// container before it removes the finalizer. Status is written through
// UpdateStatus, and only when it changed.
//
// The lifecycle it keeps (docs/controller.md tells it to users):
//
//   - exit 0 is Succeeded under either policy; a non-zero exit or an OOM
//     kill is Failed; an agent silent for LostTimeout, or a container or
//     task gone from its agent, is Lost.
//   - Manual: nothing restarts. AutoRecreate: a Failed or Lost revision is
//     followed by revision+1 (same sandbox ID), placed anew — elsewhere
//     when its agent is gone — after a back-off (RecreateBackoff doubling up
//     to RecreateBackoffMax, reset once a revision has run StableAfter);
//     after recoveryTimeoutSeconds without a revision that ran StableAfter
//     it stays Failed and the Recovering condition says it gave up.
//   - Never two revisions: a revision older than the object's, reported by
//     any agent (one that comes back after its sandbox was re-created
//     elsewhere), is removed.
//   - A new spec.resetRevision stops the current revision gracefully and
//     starts the next one; status.acceptedResetRevision records it.
//   - At spec.expireTime the sandbox becomes Expired and is deleted
//     gracefully.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/fast-sandbox/fast-sandbox/pkg/agentlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// AnnotationGracePeriod carries the grace period of a delete, in seconds,
// from the API to the controller that stops the container.
const AnnotationGracePeriod = "sandbox.fast.io/grace-period-seconds"

// ConditionCreated says whether the agent accepted the sandbox. When it is
// False its Reason is the Connect code the agent answered with (as
// connect.Code's text), or a pool reason (ReasonPoolNotFound), so that a
// STRONG create can answer with it.
const ConditionCreated = "Created"

// Defaults of the lifecycle settings in Config.
const (
	DefaultLostTimeout        = 30 * time.Second
	DefaultRecreateBackoff    = time.Second
	DefaultRecreateBackoffMax = 30 * time.Second
	DefaultStableAfter        = 10 * time.Minute
	DefaultRecoveryTimeout    = 300 * time.Second
	DefaultResyncPeriod       = 5 * time.Minute
)

// Config is what a Controller needs.
type Config struct {
	Store    store.Interface
	Registry *registry.Registry
	Agents   *agentlink.Set
	Logger   *slog.Logger
	// NewID makes a sandbox ID for an object that has none (kubectl).
	NewID func() string
	// Phases times the phases of a placement (allocate, agent); nil times
	// nothing.
	Phases PhaseTimer
	// Metrics counts lifecycle events; nil counts nothing.
	Metrics *Metrics
	// Events records Events on Sandboxes (events.go's reasons); nil logs
	// them through Logger.
	Events record.EventRecorder
	// LostTimeout is how long an agent may be silent before its sandboxes
	// are Lost.
	LostTimeout time.Duration
	// RecreateBackoff is AutoRecreate's first wait, doubling up to
	// RecreateBackoffMax; create retries (containerd or a registry away)
	// use the same spacing.
	RecreateBackoff, RecreateBackoffMax time.Duration
	// StableAfter is how long a revision must run for its back-off to
	// reset and a recovery to end.
	StableAfter time.Duration
	// ResyncPeriod is how often every sandbox is synced even without a
	// change (expiry, lost agents and back-offs are also timed exactly).
	ResyncPeriod time.Duration
	// PoolNamespace is where SandboxPools live (Kubernetes mode), named in
	// the message a sandbox naming a missing pool gets; empty where no
	// SandboxPools are served.
	PoolNamespace string
}

// PhaseTimer times one phase of a create: the returned func ends it.
type PhaseTimer interface {
	Phase(mode, phase string) func()
}

func (c *Controller) phase(sb *v1alpha1.Sandbox, phase string) func() {
	if c.cfg.Phases == nil {
		return func() {}
	}
	mode := string(sb.Spec.ConsistencyMode)
	if mode == "" {
		mode = string(v1alpha1.ConsistencyStrong) // placed by the controller
	}
	return c.cfg.Phases.Phase(mode, phase)
}

// Controller reconciles Sandbox objects with their agents.
type Controller struct {
	cfg      Config
	informer cache.SharedIndexInformer
	queue    *termQueue[string]
	// stale holds revisions that an agent still runs though the object has
	// moved on; a worker removes them.
	stale *termQueue[staleRevision]
	// creates spaces out the retries of creates that failed for a
	// reason that may pass, by object key.
	creates *backoff
	// recreates spaces out AutoRecreate's new revisions, by object key.
	recreates *backoff

	mu      sync.Mutex
	changed chan struct{} // closed at every change the informer sees
	// failedAt is when the controller first saw each failed revision, by
	// object key: the back-off counts from there.
	failedAt map[string]failedRevision
}

type failedRevision struct {
	revision int64
	at       time.Time
}

// staleRevision is a sandbox revision to remove from an agent.
type staleRevision struct {
	agent, id string
	revision  int64
}

// Informer indexes.
const (
	byAgent = "agent"
	byID    = "sandboxID"
)

// New returns a Controller; Run starts it.
func New(cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Events == nil {
		cfg.Events = LogEvents(cfg.Logger)
	}
	cfg.LostTimeout = orDefault(cfg.LostTimeout, DefaultLostTimeout)
	cfg.RecreateBackoff = orDefault(cfg.RecreateBackoff, DefaultRecreateBackoff)
	cfg.RecreateBackoffMax = max(orDefault(cfg.RecreateBackoffMax, DefaultRecreateBackoffMax), cfg.RecreateBackoff)
	cfg.StableAfter = orDefault(cfg.StableAfter, DefaultStableAfter)
	cfg.ResyncPeriod = orDefault(cfg.ResyncPeriod, DefaultResyncPeriod)
	c := &Controller{
		cfg: cfg,
		informer: cache.NewSharedIndexInformer(store.ListWatch(cfg.Store, ""), &v1alpha1.Sandbox{}, cfg.ResyncPeriod, cache.Indexers{
			byAgent: func(obj any) ([]string, error) {
				if agent, _, _ := v1alpha1.Placement(obj.(*v1alpha1.Sandbox)); agent != "" {
					return []string{agent}, nil
				}
				return nil, nil
			},
			byID: func(obj any) ([]string, error) {
				if _, id, _ := v1alpha1.Placement(obj.(*v1alpha1.Sandbox)); id != "" {
					return []string{id}, nil
				}
				return nil, nil
			},
		}),
		// Failed syncs retry from 50 ms, doubling to 30 s: a delete that
		// waits for containerd to come back finishes soon after it does.
		queue: newTermQueue(func() workqueue.TypedRateLimitingInterface[string] {
			return workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 30*time.Second))
		}),
		stale: newTermQueue(func() workqueue.TypedRateLimitingInterface[staleRevision] {
			return workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[staleRevision](100*time.Millisecond, 30*time.Second))
		}),
		creates:   newBackoff(cfg.RecreateBackoff, cfg.RecreateBackoffMax),
		recreates: newBackoff(cfg.RecreateBackoff, cfg.RecreateBackoffMax),
		changed:   make(chan struct{}),
		failedAt:  make(map[string]failedRevision),
	}
	_, _ = c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
		DeleteFunc: c.enqueue,
	})
	return c
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (c *Controller) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.queue.Add(key)
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// AgentChanged re-syncs every sandbox placed on the agent whose status
// changed (or that went down), and queues the removal of any revision the
// agent runs that its object has moved on from.
func (c *Controller) AgentChanged(st *fsbv1.AgentStatus) {
	objs, err := c.informer.GetIndexer().ByIndex(byAgent, st.GetAgentId())
	if err != nil {
		return
	}
	for _, obj := range objs {
		c.enqueue(obj)
	}
	for _, asb := range st.GetSandboxes() {
		sb, ok := c.ByID(asb.GetSandboxId())
		if !ok {
			continue // no object: the fast path's recovery decides
		}
		// Only an older revision is stale: a newer one is the object's
		// next revision, reported before the cache has its status.
		agent, _, revision := v1alpha1.Placement(sb)
		switch {
		case asb.GetRevision() < revision:
			c.stale.Add(staleRevision{agent: st.GetAgentId(), id: asb.GetSandboxId(), revision: asb.GetRevision()})
		case agent != st.GetAgentId():
			c.enqueue(sb) // not in the agent's index yet
		}
	}
}

// Run runs the informer and the workers until ctx ends: one term that
// lasts as long as the controller, as without leader election. It
// returns once the cache has synced and the workers have stopped.
func (c *Controller) Run(ctx context.Context, workers int, synced chan<- struct{}) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	defer c.stale.ShutDown()
	if err := c.Start(ctx, synced); err != nil {
		return err
	}
	c.Work(ctx, workers)
	return nil
}

// Start runs the informer until ctx ends, and returns once its cache has
// synced (closing synced): Get, List and Wait answer from then on, on a
// standby replica too. Nothing is placed or removed until Work.
func (c *Controller) Start(ctx context.Context, synced chan<- struct{}) error {
	go c.informer.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return errors.New("sandbox controller: cache never synced")
	}
	close(synced)
	return nil
}

// Work runs one term of the workers, until ctx ends: the leader's, or the
// only one without an election. Every object is synced anew at the start
// of a term, whatever an earlier term left. It returns once the workers
// have stopped: a replica that loses its leadership places and removes
// nothing from then on (a sync under way finishes its agent call, which
// the agents' fence refuses).
func (c *Controller) Work(ctx context.Context, workers int) {
	// Until every agent has been heard from (or found down) once, an
	// agent not known yet is no news: the workers wait, so that no
	// sandbox is judged on it. Then every agent's revisions are checked
	// once against the objects, for replaced ones that still run.
	select {
	case <-c.cfg.Agents.Synced():
	case <-ctx.Done():
		return
	}
	queue, stale := c.queue.renew(), c.stale.renew()
	for _, obj := range c.informer.GetStore().List() {
		c.enqueue(obj)
	}
	for _, st := range c.cfg.Agents.Statuses() {
		c.AgentChanged(st)
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait.UntilWithContext(ctx, func(ctx context.Context) {
				for c.processNextWorkItem(ctx, queue) {
				}
			}, time.Second)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		wait.UntilWithContext(ctx, func(ctx context.Context) {
			for c.removeNextStale(ctx, stale) {
			}
		}, time.Second)
	}()
	<-ctx.Done()
	queue.ShutDown()
	stale.ShutDown()
	wg.Wait()
}

// removeNextStale removes one revision an agent runs that its object has
// moved on from: the sandbox was re-created while that agent was away.
func (c *Controller) removeNextStale(ctx context.Context, stale workqueue.TypedRateLimitingInterface[staleRevision]) bool {
	r, shutdown := stale.Get()
	if shutdown {
		return false
	}
	defer stale.Done(r)
	if asb, _ := c.cfg.Agents.Sandbox(r.agent, r.id, r.revision); asb == nil {
		// Gone already, or its agent away: it is queued again when the
		// agent reports it.
		stale.Forget(r)
		return true
	}
	err := c.deleteOnAgent(ctx, r.agent, r.id, r.revision, new(int32))
	if err != nil {
		c.cfg.Logger.Warn("removing a replaced revision failed; retrying", slog.String("id", r.id),
			slog.Int64("revision", r.revision), slog.String("agent", r.agent), slog.Any("err", err))
		stale.AddRateLimited(r)
		return true
	}
	c.cfg.Logger.Info("replaced revision removed", slog.String("id", r.id), slog.Int64("revision", r.revision), slog.String("agent", r.agent))
	stale.Forget(r)
	return true
}

// deleteOnAgent stops and removes a sandbox revision (0: all) on an agent;
// grace nil means the agent's default.
func (c *Controller) deleteOnAgent(ctx context.Context, agent, id string, revision int64, grace *int32) error {
	client, err := c.cfg.Agents.Client(agent)
	if err != nil {
		return err
	}
	ctx, cancel := c.cfg.Agents.Bind(ctx, agent)
	defer cancel()
	_, err = client.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{
		SandboxId: id, Revision: revision, GracePeriodSeconds: grace,
	}))
	if err != nil {
		return fmt.Errorf("delete %s revision %d on agent %s: %w", id, revision, agent, err)
	}
	return nil
}

func (c *Controller) processNextWorkItem(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string]) bool {
	key, shutdown := queue.Get()
	if shutdown {
		return false
	}
	defer queue.Done(key)
	if err := c.sync(ctx, key); err != nil {
		c.cfg.Logger.Debug("sync failed; retrying", slog.String("sandbox", key), slog.Any("err", err))
		queue.AddRateLimited(key)
		return true
	}
	queue.Forget(key)
	return true
}

// Get returns the cached object for namespace/name.
func (c *Controller) Get(namespace, name string) (*v1alpha1.Sandbox, bool) {
	obj, exists, err := c.informer.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !exists {
		return nil, false
	}
	return obj.(*v1alpha1.Sandbox), true
}

// ByID returns the cached object of a sandbox ID.
func (c *Controller) ByID(id string) (*v1alpha1.Sandbox, bool) {
	objs, err := c.informer.GetIndexer().ByIndex(byID, id)
	if err != nil || len(objs) == 0 {
		return nil, false
	}
	return objs[0].(*v1alpha1.Sandbox), true
}

// List returns the cached objects.
func (c *Controller) List() []*v1alpha1.Sandbox {
	objs := c.informer.GetIndexer().List()
	out := make([]*v1alpha1.Sandbox, 0, len(objs))
	for _, obj := range objs {
		out = append(out, obj.(*v1alpha1.Sandbox))
	}
	return out
}

// Wait waits until done, called with the cached object (nil once gone),
// reports true, or ctx ends.
func (c *Controller) Wait(ctx context.Context, namespace, name string, done func(*v1alpha1.Sandbox) bool) (*v1alpha1.Sandbox, error) {
	for {
		c.mu.Lock()
		changed := c.changed
		c.mu.Unlock()
		sb, _ := c.Get(namespace, name)
		if done(sb) {
			return sb, nil
		}
		select {
		case <-ctx.Done():
			return sb, ctx.Err()
		case <-changed:
		}
	}
}

// statusFrom is the status an agent's report of a sandbox implies. A
// failed revision keeps the object's phase: the failure policy decides it.
func statusFrom(sb *v1alpha1.Sandbox, agent, id string, revision int64, asb *fsbv1.AgentSandbox) *v1alpha1.SandboxStatus {
	st := sb.Status.DeepCopy()
	if st.Phase == "" && sb.Generation <= 1 {
		// The first status of a FAST create: a reset it carried is the
		// revision that runs. A reset asked for after the create (a later
		// generation) is not: that revision already ran without it.
		st.AcceptedResetRevision = sb.Spec.ResetRevision.DeepCopy()
	}
	st.SandboxID, st.AssignedPod, st.Revision = id, agent, revision
	st.Endpoints = asb.GetEndpoints()
	st.Warm = asb.GetWarm()
	st.ExitCode = asb.GetExitCode()
	st.Message = ""
	switch asb.GetPhase() {
	case fsbv1.Phase_PHASE_PENDING:
		st.Phase = v1alpha1.PhaseBound
	case fsbv1.Phase_PHASE_RUNNING:
		st.Phase = v1alpha1.PhaseRunning
	case fsbv1.Phase_PHASE_SUCCEEDED:
		st.Phase = v1alpha1.PhaseSucceeded
	}
	setCondition(st, ConditionCreated, metav1.ConditionTrue, "Created", "")
	return st
}

// setStatus writes st when it differs from what sb has.
func (c *Controller) setStatus(ctx context.Context, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus) error {
	if equality.Semantic.DeepEqual(&sb.Status, st) {
		return nil
	}
	before := sb.Status
	sb.Status = *st
	updated, err := c.cfg.Store.UpdateStatus(ctx, sb)
	if err != nil {
		return err
	}
	*sb = *updated
	c.statusEvents(sb, &before)
	return nil
}

func setCondition(st *v1alpha1.SandboxStatus, typ string, status metav1.ConditionStatus, reason, msg string) {
	if reason == "" {
		reason = typ
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reasonText(reason), Message: msg})
}

// PlacementRequest is what the registry needs to place a sandbox.
func PlacementRequest(sb *v1alpha1.Sandbox, id string) (registry.Request, error) {
	image, err := v1alpha1.NormalizeImage(sb.Spec.Image)
	if err != nil {
		return registry.Request{}, err
	}
	// A spec without a key (noInit) has warm "": it claims none.
	warm, _ := v1alpha1.WarmKey(v1alpha1.SpecToProto(sb.Spec))
	return registry.Request{
		SandboxID: id,
		Image:     image,
		Ports:     sb.Spec.ExposedPorts,
		Runtime:   sb.Spec.Runtime,
		Pool:      sb.Spec.PoolRef,
		Warm:      warm,
	}, nil
}

// Refusal reports the code and message with which the agent refused a
// sandbox, if it did.
func Refusal(sb *v1alpha1.Sandbox) (connect.Code, string, bool) {
	cond := meta.FindStatusCondition(sb.Status.Conditions, ConditionCreated)
	if cond == nil || cond.Status != metav1.ConditionFalse {
		return 0, "", false
	}
	if code, ok := poolReasonCodes[cond.Reason]; ok {
		return code, cond.Message, true
	}
	var code connect.Code
	snake := make([]byte, 0, len(cond.Reason)+4)
	for i := 0; i < len(cond.Reason); i++ {
		ch := cond.Reason[i]
		if ch >= 'A' && ch <= 'Z' {
			if i > 0 {
				snake = append(snake, '_')
			}
			ch += 'a' - 'A'
		}
		snake = append(snake, ch)
	}
	if err := code.UnmarshalText(snake); err != nil {
		code = connect.CodeUnknown
	}
	return code, cond.Message, true
}

// reasonText makes a condition reason of a Connect code's text
// ("resource_exhausted" becomes "ResourceExhausted"), as reasons are
// CamelCase.
func reasonText(s string) string {
	out := make([]byte, 0, len(s))
	upper := true
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch == '_' {
			upper = true
			continue
		}
		if upper && ch >= 'a' && ch <= 'z' {
			ch -= 'a' - 'A'
		}
		upper = false
		out = append(out, ch)
	}
	return string(out)
}
