// Package controller is the Sandbox controller: one state machine for both
// stores, in k8s.io/sample-controller's shape. Informer event handlers only
// enqueue keys; workers run sync(key), which places a sandbox that has no
// agent (STRONG mode, kubectl), follows what its agent reports, and on
// deletion stops the container before it removes the finalizer. Status is
// written through UpdateStatus, and only when it changed.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/fast-sandbox/fast-sandbox/pkg/agents"
	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// AnnotationGracePeriod carries the grace period of a delete, in seconds,
// from the API to the controller that stops the container.
const AnnotationGracePeriod = "sandbox.fast.io/grace-period-seconds"

// ConditionCreated says whether the agent accepted the sandbox. When it is
// False its Reason is the Connect code the agent answered with (as
// connect.Code's text), so that a STRONG create can answer with it.
const ConditionCreated = "Created"

// Config is what a Controller needs.
type Config struct {
	Store    store.Interface
	Registry *registry.Registry
	Agents   *agents.Set
	Logger   *slog.Logger
	// NewID makes a sandbox ID for an object that has none (kubectl).
	NewID func() string
	// Phases times the phases of a placement (allocate, agent); nil times
	// nothing.
	Phases PhaseTimer
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
	queue    workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	changed chan struct{} // closed at every change the informer sees
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
	c := &Controller{
		cfg: cfg,
		informer: cache.NewSharedIndexInformer(store.ListWatch(cfg.Store, ""), &v1alpha1.Sandbox{}, 0, cache.Indexers{
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
		queue:   workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		changed: make(chan struct{}),
	}
	_, _ = c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
		DeleteFunc: c.enqueue,
	})
	return c
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
// changed.
func (c *Controller) AgentChanged(st *fsbv1.AgentStatus) {
	objs, err := c.informer.GetIndexer().ByIndex(byAgent, st.GetAgentId())
	if err != nil {
		return
	}
	for _, obj := range objs {
		c.enqueue(obj)
	}
}

// Run runs workers until ctx ends. It returns once the cache has synced
// and the workers have stopped.
func (c *Controller) Run(ctx context.Context, workers int, synced chan<- struct{}) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	go c.informer.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.informer.HasSynced) {
		return errors.New("sandbox controller: cache never synced")
	}
	close(synced)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wait.UntilWithContext(ctx, c.runWorker, time.Second)
		}()
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

func (c *Controller) runWorker(ctx context.Context) {
	for c.processNextWorkItem(ctx) {
	}
}

func (c *Controller) processNextWorkItem(ctx context.Context) bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx, key); err != nil {
		c.cfg.Logger.Debug("sync failed; retrying", slog.String("sandbox", key), slog.Any("err", err))
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
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

func (c *Controller) sync(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	cached, ok := c.Get(namespace, name)
	if !ok {
		return nil // gone: the finalizer already saw to the container
	}
	sb := cached.DeepCopy()
	if sb.DeletionTimestamp != nil {
		return c.finalize(ctx, sb)
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
	agent, id, revision := v1alpha1.Placement(sb)
	if agent == "" {
		return c.place(ctx, sb, id)
	}
	return c.observe(ctx, sb, agent, id, max(revision, 1))
}

// place finds an agent for a sandbox, persists Bound, and starts it there.
func (c *Controller) place(ctx context.Context, sb *v1alpha1.Sandbox, id string) error {
	req, err := PlacementRequest(sb, id)
	if err != nil {
		return c.fail(ctx, sb, connect.CodeInvalidArgument, err)
	}
	done := c.phase(sb, "allocate")
	p, err := c.cfg.Registry.Allocate(req)
	done()
	if errors.Is(err, registry.ErrNoCapacity) {
		st := sb.Status.DeepCopy()
		st.Phase = v1alpha1.PhasePending
		st.SandboxID = id
		st.Message = err.Error()
		setCondition(st, ConditionCreated, metav1.ConditionFalse, connect.CodeResourceExhausted.String(), err.Error())
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
	meta.RemoveStatusCondition(&st.Conditions, ConditionCreated)
	if err := c.setStatus(ctx, sb, st); err != nil {
		c.cfg.Registry.Release(id)
		return err
	}
	c.cfg.Logger.Debug("sandbox placed", slog.String("sandbox", sb.Namespace+"/"+sb.Name), slog.String("agent", p.AgentID))
	return c.start(ctx, sb, p.AgentID, id, 1)
}

// start asks the agent to run the sandbox (idempotent) and records Running.
func (c *Controller) start(ctx context.Context, sb *v1alpha1.Sandbox, agent, id string, revision int64) error {
	client, err := c.cfg.Agents.Client(agent)
	if err != nil {
		return err
	}
	done := c.phase(sb, "agent")
	resp, err := client.CreateSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{
		SandboxId: id, Revision: revision, Namespace: sb.Namespace, Name: sb.Name, Spec: v1alpha1.SpecToProto(sb.Spec), Labels: sb.Labels,
	}))
	done()
	if err != nil {
		switch code := connect.CodeOf(err); code {
		case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeFailedPrecondition, connect.CodeAlreadyExists:
			// The agent will not run it as asked: retrying cannot help.
			c.cfg.Registry.Release(id)
			return c.fail(ctx, sb, code, err)
		case connect.CodeResourceExhausted:
			// The agent's own fence says no (its slots or ports differ
			// from what the registry believed): place it afresh, unless a
			// FAST create pinned it there.
			if sb.Status.AssignedPod == agent && sb.Annotations[v1alpha1.AnnotationAgent] == "" {
				c.cfg.Registry.Release(id)
				st := sb.Status.DeepCopy()
				st.Phase, st.AssignedPod, st.NodeName, st.Message = v1alpha1.PhasePending, "", "", err.Error()
				if serr := c.setStatus(ctx, sb, st); serr != nil {
					return serr
				}
			}
		}
		return fmt.Errorf("create %s on agent %s: %w", id, agent, err)
	}
	return c.setStatus(ctx, sb, statusFrom(sb, agent, id, revision, resp.Msg.GetSandbox()))
}

// observe follows what the sandbox's agent reports.
func (c *Controller) observe(ctx context.Context, sb *v1alpha1.Sandbox, agent, id string, revision int64) error {
	// After a restart the registry learns placements from here and from
	// the agents' status; an agent it does not know yet is fine.
	_ = c.cfg.Registry.Assign(id, agent, sb.Spec.ExposedPorts)
	asb, known := c.cfg.Agents.Sandbox(agent, id, revision)
	if !known {
		return nil // the agent's word is not in yet; its status will enqueue us
	}
	if asb == nil {
		switch sb.Status.Phase {
		case "", v1alpha1.PhasePending, v1alpha1.PhaseBound:
			// Placed but not (yet) on the agent: a create cut short, or a
			// FAST create whose object came before the agent's status.
			// Creates are idempotent: make sure.
			return c.start(ctx, sb, agent, id, revision)
		case v1alpha1.PhaseRunning:
			st := sb.Status.DeepCopy()
			st.Phase, st.Message = v1alpha1.PhaseLost, fmt.Sprintf("the sandbox is gone from agent %s", agent)
			return c.setStatus(ctx, sb, st)
		}
		return nil
	}
	st := statusFrom(sb, agent, id, revision, asb)
	if p, ok := c.cfg.Registry.Lookup(id); ok && p.NodeName != "" {
		st.NodeName = p.NodeName
	}
	return c.setStatus(ctx, sb, st)
}

// statusFrom is the status an agent's report of a sandbox implies.
func statusFrom(sb *v1alpha1.Sandbox, agent, id string, revision int64, asb *fsbv1.AgentSandbox) *v1alpha1.SandboxStatus {
	st := sb.Status.DeepCopy()
	st.SandboxID, st.AssignedPod, st.Revision = id, agent, revision
	st.Endpoints = asb.GetEndpoints()
	st.ExitCode = asb.GetExitCode()
	st.Message = ""
	switch asb.GetPhase() {
	case fsbv1.Phase_PHASE_PENDING:
		st.Phase = v1alpha1.PhaseBound
	case fsbv1.Phase_PHASE_RUNNING:
		st.Phase = v1alpha1.PhaseRunning
	case fsbv1.Phase_PHASE_SUCCEEDED:
		st.Phase = v1alpha1.PhaseSucceeded
	case fsbv1.Phase_PHASE_FAILED:
		st.Phase = v1alpha1.PhaseFailed
		st.Message = fmt.Sprintf("exited with code %d (%s)", asb.GetExitCode(), asb.GetReason())
	}
	setCondition(st, ConditionCreated, metav1.ConditionTrue, "Created", "")
	return st
}

// fail records that the agent refused the sandbox, with its code.
func (c *Controller) fail(ctx context.Context, sb *v1alpha1.Sandbox, code connect.Code, err error) error {
	st := sb.Status.DeepCopy()
	st.Phase = v1alpha1.PhaseFailed
	st.Message = err.Error()
	setCondition(st, ConditionCreated, metav1.ConditionFalse, code.String(), err.Error())
	return c.setStatus(ctx, sb, st)
}

// finalize stops the container of a deleted sandbox, frees its slot, and
// lets the object go.
func (c *Controller) finalize(ctx context.Context, sb *v1alpha1.Sandbox) error {
	if !slices.Contains(sb.Finalizers, v1alpha1.Finalizer) {
		return nil
	}
	agent, id, _ := v1alpha1.Placement(sb)
	if agent != "" && id != "" {
		if sb.Status.Phase != v1alpha1.PhaseTerminating {
			st := sb.Status.DeepCopy()
			st.Phase = v1alpha1.PhaseTerminating
			if err := c.setStatus(ctx, sb, st); err != nil {
				return err
			}
		}
		client, err := c.cfg.Agents.Client(agent)
		if err != nil {
			return err
		}
		req := &fsbv1.AgentServiceDeleteSandboxRequest{SandboxId: id}
		if s, ok := sb.Annotations[AnnotationGracePeriod]; ok {
			if g, err := strconv.ParseInt(s, 10, 32); err == nil {
				grace := int32(g)
				req.GracePeriodSeconds = &grace
			}
		}
		if _, err := client.DeleteSandbox(ctx, connect.NewRequest(req)); err != nil {
			return fmt.Errorf("delete %s on agent %s: %w", id, agent, err)
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
	return err
}

// setStatus writes st when it differs from what sb has.
func (c *Controller) setStatus(ctx context.Context, sb *v1alpha1.Sandbox, st *v1alpha1.SandboxStatus) error {
	if equality.Semantic.DeepEqual(&sb.Status, st) {
		return nil
	}
	sb.Status = *st
	updated, err := c.cfg.Store.UpdateStatus(ctx, sb)
	if err != nil {
		return err
	}
	*sb = *updated
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
	image, err := runtime.NormalizeImage(sb.Spec.Image)
	if err != nil {
		return registry.Request{}, err
	}
	return registry.Request{
		SandboxID: id,
		Image:     image,
		Ports:     sb.Spec.ExposedPorts,
		Runtime:   sb.Spec.Runtime,
		Pool:      sb.Spec.PoolRef,
	}, nil
}

// Refusal reports the code and message with which the agent refused a
// sandbox, if it did.
func Refusal(sb *v1alpha1.Sandbox) (connect.Code, string, bool) {
	cond := meta.FindStatusCondition(sb.Status.Conditions, ConditionCreated)
	if cond == nil || cond.Status != metav1.ConditionFalse {
		return 0, "", false
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
