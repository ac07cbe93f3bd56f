// Package agentpool is the SandboxPool controller: it keeps each pool's
// agent pods within its bounds and tells the registry which pools exist.
//
// Pools live in one namespace, the pool namespace, where their agent pods
// live too (an owner reference must stay in its object's namespace, and
// the privileged agent pods and their Secrets belong in the system
// namespace). A pool made elsewhere is not served: its Ready condition is
// False with reason WrongNamespace, naming the right namespace.
//
// Every replica runs the pool informer (Start: a Declarer, which an
// embedded-store controller runs alone on its store's pools), declaring
// each pool of the pool namespace in the registry — closed once it is being
// deleted, forgotten once gone — so that a create naming a pool is judged
// the same on any replica. Only the leader acts (Work): in k8s.io/sample-controller's
// shape, pool and pod events and a periodic resync (sandbox counts change in
// the registry without any API event) queue a pool's key, and sync counts
// the pool's pods and agents, applies Scale, and writes the status when it
// changed.
//
// The promises:
//   - an agent that runs a sandbox is never removed: a pod is deleted only
//     after registry.Cordon took its agent out of placement, which fails
//     when a sandbox is placed on it (atomically with Allocate);
//   - a pool being deleted is held by the finalizer sandbox.fast.io/pool-cleanup
//     while any Sandbox names it in spec.poolRef or runs on its agents;
//     then its pods are removed and the finalizer with them.
package agentpool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/controller"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
)

// Finalizer holds a pool's deletion until no sandbox uses it and its pods
// are removed.
const Finalizer = "sandbox.fast.io/pool-cleanup"

// Conditions of a pool's status.
const (
	// ConditionReady is True when at least poolMin pods are Ready and the
	// idle buffer is full (or the pool is at poolMax).
	ConditionReady = "Ready"
	// ConditionExhausted is True when the pool is at poolMax and none of
	// its agents is idle: creates for it wait for capacity.
	ConditionExhausted = "Exhausted"
	// ConditionDeleting is True while the finalizer holds a deletion.
	ConditionDeleting = "Deleting"
)

// Reasons of conditions and Events.
const (
	ReasonWrongNamespace  = "WrongNamespace"
	ReasonInvalidName     = "InvalidName"
	ReasonReady           = "Ready"
	ReasonNoCapacity      = "NoCapacity"
	ReasonScalingUp       = "ScalingUp"
	ReasonAtPoolMax       = "AtPoolMax"
	ReasonHasRoom         = "HasRoom"
	ReasonSandboxesRemain = "SandboxesRemain"
	ReasonRemovingPods    = "RemovingPods"
	ReasonDeleting        = "Deleting"
	ReasonScaledUp        = "ScaledUp"
	ReasonScaledDown      = "ScaledDown"
	ReasonScaleFailed     = "ScaleFailed"
	ReasonDeleteBlocked   = "DeleteBlocked"
)

// DefaultResyncPeriod is how often every pool is synced without an event.
const DefaultResyncPeriod = time.Second

// seenTimeout bounds the wait for the pod informer to see a sync's own
// creates and deletes, so that the next sync does not count them twice.
const seenTimeout = 10 * time.Second

// maxNamed is how many blocking sandboxes a message names.
const maxNamed = 5

// Sandboxes lists every Sandbox object: the sandbox controller's cache
// (pkg/controller's List), not the API server, since a pool whose deletion
// is held asks at each resync.
type Sandboxes interface {
	List() []*v1alpha1.Sandbox
}

// SandboxesFunc is a func as Sandboxes.
type SandboxesFunc func() []*v1alpha1.Sandbox

// List calls f.
func (f SandboxesFunc) List() []*v1alpha1.Sandbox { return f() }

// Config is what a Controller needs.
type Config struct {
	// Config reaches the API server of the SandboxPools.
	Config *rest.Config
	// Client creates and deletes agent pods and reads the DaemonSet.
	Client kubernetes.Interface
	// Namespace is the pool namespace: the pools served and their pods.
	Namespace string
	// DaemonSet names the agent DaemonSet in Namespace whose pod template
	// every pool's pods start from.
	DaemonSet string
	Registry  *registry.Registry
	// Sandboxes tells which Sandboxes name a pool being deleted.
	Sandboxes Sandboxes
	// AgentsSynced is closed once every agent known at the start has been
	// heard from: until then an idle agent could look absent and a busy
	// one pending. nil: nothing to wait for.
	AgentsSynced <-chan struct{}
	// Events records ScaledUp, ScaledDown and DeleteBlocked on pools; nil
	// logs them through Logger.
	Events record.EventRecorder
	Logger *slog.Logger
	// ResyncPeriod is how often every pool is synced without an event;
	// zero means DefaultResyncPeriod.
	ResyncPeriod time.Duration
	// Changed, when set, is called after a pool of the pool namespace is
	// declared, closed or forgotten in the registry (not on its other
	// updates): the sandbox controller places the sandboxes that waited
	// for it at once.
	Changed func(pool string)
	// Warm is DeclarerConfig.Warm.
	Warm func(pool string, entries []v1alpha1.WarmEntry)
}

// Controller keeps SandboxPools' agent pods.
type Controller struct {
	cfg      Config
	pools    *pools
	declarer *Declarer
	informer cache.SharedIndexInformer

	mu    sync.Mutex
	queue workqueue.TypedRateLimitingInterface[string] // the term's; nil between terms
	// blocked is the DeleteBlocked message last said of each pool
	// (namespace/name).
	blocked map[string]string
}

// New returns a Controller for cfg; Start and Work run it.
func New(cfg Config) (*Controller, error) {
	switch {
	case cfg.Config == nil || cfg.Client == nil:
		return nil, errors.New("agentpool: no Kubernetes client")
	case cfg.Namespace == "":
		return nil, errors.New("agentpool: no pool namespace")
	case cfg.DaemonSet == "":
		return nil, errors.New("agentpool: no agent DaemonSet to make pods from")
	case cfg.Registry == nil || cfg.Sandboxes == nil:
		return nil, errors.New("agentpool: no registry or sandbox store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Events == nil {
		cfg.Events = controller.LogEvents(cfg.Logger)
	}
	if cfg.ResyncPeriod <= 0 {
		cfg.ResyncPeriod = DefaultResyncPeriod
	}
	p, err := newPools(cfg.Config)
	if err != nil {
		return nil, err
	}
	d, err := NewDeclarer(DeclarerConfig{
		ListWatch: p.listWatch(), Namespace: cfg.Namespace, Registry: cfg.Registry, Logger: cfg.Logger,
		Changed: cfg.Changed, Warm: cfg.Warm,
	})
	if err != nil {
		return nil, err
	}
	c := &Controller{cfg: cfg, pools: p, declarer: d, informer: d.Informer(), blocked: make(map[string]string)}
	_, err = c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.observe,
		UpdateFunc: func(_, obj any) { c.observe(obj) },
		DeleteFunc: c.observe,
	})
	if err != nil {
		return nil, fmt.Errorf("agentpool: %w", err)
	}
	return c, nil
}

// observe queues a pool's key (the declarer has told the registry).
func (c *Controller) observe(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if pool, ok := obj.(*v1alpha1.SandboxPool); ok {
		c.enqueue(pool.Namespace + "/" + pool.Name)
	}
}

func (c *Controller) enqueue(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.queue != nil {
		c.queue.Add(key)
	}
}

// Start runs the pool informer until ctx ends, and returns once every
// pool listed at the start has been declared in the registry (closing
// synced): serve creates only from then on, or a create naming a pool
// right after a restart would get a false NotFound. It runs on every
// replica; nothing is written until Work.
func (c *Controller) Start(ctx context.Context, synced chan<- struct{}) error {
	return c.declarer.Start(ctx, synced)
}

// Check lists the pools once, to fail early and say what to do when the
// API server does not serve SandboxPools or refuses this identity: the
// informer would only retry, and the controller never become Ready.
func (c *Controller) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := c.pools.client.Get().Resource(poolsResource).VersionedParams(&metav1.ListOptions{Limit: 1}, c.pools.params).
		Do(ctx).Error()
	if err != nil {
		return fmt.Errorf("list sandboxpools.sandbox.fast.io in every namespace (are the CRDs in deploy/crds applied, and may this identity list them?): %w", err)
	}
	return nil
}

// Namespace is the pool namespace: the pools served and their pods.
func (c *Controller) Namespace() string { return c.cfg.Namespace }

// HasSynced says every pool listed at the start has been declared.
func (c *Controller) HasSynced() bool { return c.declarer.HasSynced() }

// term is what one term of Work reads: its queue and the pods of pools.
type term struct {
	queue workqueue.TypedRateLimitingInterface[string]
	pods  corelisters.PodNamespaceLister
}

// Work runs one term of the pool controller until ctx ends: the leader's,
// or the only one without an election. Every pool is synced at its start,
// on every pod event of a pool, and every ResyncPeriod.
func (c *Controller) Work(ctx context.Context, workers int) {
	if c.cfg.AgentsSynced != nil {
		select {
		case <-c.cfg.AgentsSynced:
		case <-ctx.Done():
			return
		}
	}
	sel, err := labels.NewRequirement(LabelPool, selection.Exists, nil)
	if err != nil {
		panic(err) // a constant label key
	}
	factory := informers.NewSharedInformerFactoryWithOptions(c.cfg.Client, 0,
		informers.WithNamespace(c.cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel.String() }))
	podInformer := factory.Core().V1().Pods()
	t := &term{
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "sandboxpools"}),
		pods: podInformer.Lister().Pods(c.cfg.Namespace),
	}
	defer t.queue.ShutDown()
	podEvent := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if pod, ok := obj.(*corev1.Pod); ok && pod.Labels[LabelPool] != "" {
			t.queue.Add(pod.Namespace + "/" + pod.Labels[LabelPool])
		}
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    podEvent,
		UpdateFunc: func(_, obj any) { podEvent(obj) },
		DeleteFunc: podEvent,
	}); err != nil {
		c.cfg.Logger.Error("sandbox pools: pod handler", slog.Any("err", err))
		return
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.Informer().HasSynced) {
		return
	}

	c.mu.Lock()
	c.queue = t.queue
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.queue = nil
		c.mu.Unlock()
	}()
	c.cfg.Logger.Info("keeping sandbox pools", slog.String("namespace", c.cfg.Namespace),
		slog.String("daemonset", c.cfg.DaemonSet), slog.Duration("resync", c.cfg.ResyncPeriod))

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The resync, right away the first time: every pool at the term's
		// start, whatever an earlier term left.
		wait.UntilWithContext(ctx, func(context.Context) {
			for _, key := range c.informer.GetStore().ListKeys() {
				// A pool whose sync failed waits for its back-off, not
				// the next resync (a missing DaemonSet would be read, and
				// reported, every period).
				if t.queue.NumRequeues(key) == 0 {
					t.queue.Add(key)
				}
			}
		}, c.cfg.ResyncPeriod)
	}()
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.next(ctx, t) {
			}
		}()
	}
	<-ctx.Done()
	t.queue.ShutDown()
	wg.Wait()
}

// next syncs one queued pool; false once the queue is shut down.
func (c *Controller) next(ctx context.Context, t *term) bool {
	key, quit := t.queue.Get()
	if quit {
		return false
	}
	defer t.queue.Done(key)
	if err := c.sync(ctx, t, key); err != nil && ctx.Err() == nil {
		level := slog.LevelWarn
		if apierrors.IsConflict(err) {
			level = slog.LevelDebug // a write on a copy the informer had not refreshed yet
		}
		c.cfg.Logger.Log(ctx, level, "sandbox pool not synced; retrying", slog.String("pool", key), slog.Any("err", err))
		t.queue.AddRateLimited(key)
		return true
	}
	t.queue.Forget(key)
	return true
}

// sync brings the pool under key in line with its spec.
func (c *Controller) sync(ctx context.Context, t *term, key string) error {
	obj, exists, err := c.informer.GetStore().GetByKey(key)
	if err != nil || !exists {
		return err // gone: its pods went before its finalizer did
	}
	pool := obj.(*v1alpha1.SandboxPool).DeepCopy()
	if pool.Namespace != c.cfg.Namespace {
		if slices.Contains(pool.Finalizers, Finalizer) {
			// Another controller serves it: its pool namespace is that one
			// (a second installation on the cluster, or a test's).
			return nil
		}
		return c.misplaced(ctx, pool)
	}
	if pool.Name == v1alpha1.DefaultPool {
		// The default pool's agents are the DaemonSet's: the object only
		// gives them warm entries (Declarer), and scales nothing.
		return nil
	}
	if pool.DeletionTimestamp != nil {
		return c.finalize(ctx, t, pool)
	}
	if !slices.Contains(pool.Finalizers, Finalizer) {
		pool.Finalizers = append(pool.Finalizers, Finalizer)
		if pool, err = c.pools.update(ctx, pool); err != nil {
			return fmt.Errorf("add the finalizer: %w", err)
		}
	}
	if err := v1alpha1.ValidatePoolName(pool.Name); err != nil {
		// Its name becomes a label value and the agents' --pool.
		st := pool.Status.DeepCopy()
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse,
			Reason: ReasonInvalidName, Message: err.Error()})
		return c.writeStatus(ctx, pool, st)
	}

	v := c.view(t, pool)
	plan := Scale(pool.Spec.Capacity, v.Counts)
	var scaleErr error
	switch {
	case plan.Add > 0:
		scaleErr = c.scaleUp(ctx, t, pool, plan.Add, v)
	case plan.RemoveIdle+plan.RemovePending > 0:
		victims := append(newest(v.idle, plan.RemoveIdle), newest(v.pending, plan.RemovePending)...)
		scaleErr = c.scaleDown(ctx, t, pool, victims, v)
	}
	if plan != (Plan{}) {
		v = c.view(t, pool)
	}
	return errors.Join(scaleErr, c.writeStatus(ctx, pool, c.status(pool, v)))
}

// view is a pool's pods and agents as sync counts them.
type view struct {
	Counts
	ready   int           // pods whose Ready condition is True
	agents  int           // registered agents of its pods
	placed  int           // sandboxes placed on its agents
	idle    []*corev1.Pod // pods of idle agents
	pending []*corev1.Pod // pending pods
	all     []*corev1.Pod // every pod of the pool, being deleted or not
}

// view counts pool's pods (not being deleted) and their agents, known by
// pod UID.
func (c *Controller) view(t *term, pool *v1alpha1.SandboxPool) view {
	agents := make(map[string]registry.AgentState)
	var v view
	for _, a := range c.cfg.Registry.PoolAgents(pool.Name) {
		agents[a.ID] = a
		v.placed += a.Used
	}
	pods, _ := t.pods.List(labels.SelectorFromSet(labels.Set{LabelPool: pool.Name}))
	for _, pod := range pods {
		if !metav1.IsControlledBy(pod, pool) {
			continue // another pool's of the same name, or no pool's
		}
		v.all = append(v.all, pod)
		if pod.DeletionTimestamp != nil {
			continue
		}
		v.Total++
		if podReady(pod) {
			v.ready++
		}
		a, known := agents[string(pod.UID)]
		if known {
			v.agents++
		}
		switch {
		case known && a.Used > 0:
			v.Busy++
		case known && a.Healthy && !a.Cordoned:
			v.Idle++
			v.idle = append(v.idle, pod)
		default:
			v.Pending++
			v.pending = append(v.pending, pod)
		}
	}
	return v
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// newest returns the n most recently created of pods: the youngest go
// first, the oldest (warm caches, pulled images) stay.
func newest(pods []*corev1.Pod, n int) []*corev1.Pod {
	pods = slices.Clone(pods)
	slices.SortFunc(pods, func(a, b *corev1.Pod) int {
		if c := b.CreationTimestamp.Compare(a.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(b.Name, a.Name)
	})
	return pods[:min(n, len(pods))]
}

// scaleUp creates n pods for pool from the agent DaemonSet's template.
func (c *Controller) scaleUp(ctx context.Context, t *term, pool *v1alpha1.SandboxPool, n int, v view) error {
	ds, err := c.cfg.Client.AppsV1().DaemonSets(c.cfg.Namespace).Get(ctx, c.cfg.DaemonSet, metav1.GetOptions{})
	if err != nil {
		err = fmt.Errorf("read the agent DaemonSet %s/%s, whose pod template agent pods start from: %w", c.cfg.Namespace, c.cfg.DaemonSet, err)
		c.cfg.Events.Event(pool, corev1.EventTypeWarning, ReasonScaleFailed, err.Error())
		return err
	}
	var created []string
	var errs []error
	for i := range n {
		pod, err := BuildPod(&ds.Spec.Template, pool)
		if err == nil {
			pod, err = c.cfg.Client.CoreV1().Pods(c.cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		}
		if err != nil {
			err = fmt.Errorf("create an agent pod: %w", err)
			c.cfg.Events.Event(pool, corev1.EventTypeWarning, ReasonScaleFailed, err.Error())
			errs = append(errs, err)
			break
		}
		created = append(created, pod.Name)
		msg := fmt.Sprintf("created agent pod %s (%d of %d): %d pods, %d idle, %d busy, %d pending before",
			pod.Name, i+1, n, v.Total, v.Idle, v.Busy, v.Pending)
		c.cfg.Events.Event(pool, corev1.EventTypeNormal, ReasonScaledUp, msg)
		c.cfg.Logger.Info("sandbox pool scaled up", slog.String("pool", pool.Name), slog.String("pod", pod.Name),
			slog.Int("pods", v.Total+i+1), slog.Int("idle", v.Idle), slog.Int("busy", v.Busy))
	}
	errs = append(errs, c.waitSeen(ctx, t, func() bool {
		for _, name := range created {
			if _, err := t.pods.Get(name); err != nil {
				return false
			}
		}
		return true
	}))
	return errors.Join(errs...)
}

// scaleDown removes the pods of victims: each agent is cordoned first,
// which fails when a sandbox was placed on it meanwhile (it is kept), and
// uncordoned again if its pod cannot be deleted. A pending pod whose agent
// the registry does not know has nothing to cordon.
func (c *Controller) scaleDown(ctx context.Context, t *term, pool *v1alpha1.SandboxPool, victims []*corev1.Pod, v view) error {
	var deleted []*corev1.Pod
	var errs []error
	for _, pod := range victims {
		removed, err := c.remove(ctx, pod)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !removed {
			continue
		}
		deleted = append(deleted, pod)
		msg := fmt.Sprintf("deleted agent pod %s (no sandbox on it): %d pods, %d idle, %d busy, %d pending before",
			pod.Name, v.Total, v.Idle, v.Busy, v.Pending)
		c.cfg.Events.Event(pool, corev1.EventTypeNormal, ReasonScaledDown, msg)
		c.cfg.Logger.Info("sandbox pool scaled down", slog.String("pool", pool.Name), slog.String("pod", pod.Name),
			slog.Int("pods", v.Total-len(deleted)), slog.Int("idle", v.Idle), slog.Int("busy", v.Busy))
	}
	errs = append(errs, c.waitSeen(ctx, t, func() bool {
		for _, pod := range deleted {
			if p, err := t.pods.Get(pod.Name); err == nil && p.UID == pod.UID && p.DeletionTimestamp == nil {
				return false
			}
		}
		return true
	}))
	return errors.Join(errs...)
}

// remove cordons pod's agent and deletes the pod; false, nil when the agent
// runs a sandbox and stays.
func (c *Controller) remove(ctx context.Context, pod *corev1.Pod) (bool, error) {
	id := string(pod.UID)
	err := c.cfg.Registry.Cordon(id)
	switch {
	case errors.Is(err, registry.ErrAgentBusy):
		return false, nil
	case errors.Is(err, registry.ErrUnknownAgent):
		// Not connected: nothing can be placed on it.
	case err != nil:
		return false, fmt.Errorf("cordon agent %s of pod %s: %w", id, pod.Name, err)
	}
	cordoned := err == nil
	err = c.cfg.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name,
		metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		if cordoned {
			c.cfg.Registry.Uncordon(id)
		}
		return false, fmt.Errorf("delete agent pod %s: %w", pod.Name, err)
	}
	return true, nil
}

// waitSeen waits until the pod informer shows what a sync did, so that the
// next sync of the pool does not count it twice.
func (c *Controller) waitSeen(ctx context.Context, t *term, seen func() bool) error {
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, seenTimeout, true,
		func(context.Context) (bool, error) { return seen(), nil })
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("the pod informer did not see this sync's changes within %s", seenTimeout)
	}
	return nil
}

// status is pool's status from v.
func (c *Controller) status(pool *v1alpha1.SandboxPool, v view) *v1alpha1.SandboxPoolStatus {
	capa := pool.Spec.Capacity
	st := pool.Status.DeepCopy()
	st.ObservedGeneration = pool.Generation
	st.CurrentPods, st.ReadyPods = int32(v.Total), int32(v.ready)
	st.TotalAgents, st.IdleAgents, st.BusyAgents = int32(v.agents), int32(v.Idle), int32(v.Busy)

	if capa == nil {
		// Its agents are started by other means: nothing to scale, and
		// nothing this controller could make ready or exhausted.
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue,
			Reason: ReasonNoCapacity, Message: fmt.Sprintf(
				"no spec.capacity: the pool's agents are started by other means (agents with --pool %s); no pods are kept", pool.Name)})
		meta.RemoveStatusCondition(&st.Conditions, ConditionExhausted)
		meta.RemoveStatusCondition(&st.Conditions, ConditionDeleting)
		return st
	}
	ready := metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonReady,
		Message: fmt.Sprintf("%d of %d pods ready, %d idle agents (bufferMin %d)", v.ready, v.Total, v.Idle, capa.BufferMin)}
	if v.ready < int(capa.PoolMin) || (v.Idle < int(capa.BufferMin) && v.Total < int(capa.PoolMax)) {
		ready.Status, ready.Reason = metav1.ConditionFalse, ReasonScalingUp
		ready.Message = fmt.Sprintf("%d pods ready (poolMin %d), %d idle agents (bufferMin %d), %d pending",
			v.ready, capa.PoolMin, v.Idle, capa.BufferMin, v.Pending)
		if why := pendingWhy(v.pending); why != "" {
			// A pending pod counts as an agent to come: one that never
			// comes (crash-looping, unschedulable) must say why.
			ready.Message += ": " + why
		}
	}
	meta.SetStatusCondition(&st.Conditions, ready)
	exhausted := metav1.Condition{Type: ConditionExhausted, Status: metav1.ConditionFalse, Reason: ReasonHasRoom,
		Message: fmt.Sprintf("%d of poolMax %d pods, %d idle agents", v.Total, capa.PoolMax, v.Idle)}
	if v.Total >= int(capa.PoolMax) && v.Idle == 0 {
		exhausted.Status, exhausted.Reason = metav1.ConditionTrue, ReasonAtPoolMax
		exhausted.Message = fmt.Sprintf("at poolMax (%d pods) with no idle agent: creates naming this pool find no capacity until a sandbox ends; raise poolMax for more",
			capa.PoolMax)
	}
	meta.SetStatusCondition(&st.Conditions, exhausted)
	meta.RemoveStatusCondition(&st.Conditions, ConditionDeleting)
	return st
}

// writeStatus writes st as pool's status, if it changed, and makes pool
// the object written (its new resourceVersion).
func (c *Controller) writeStatus(ctx context.Context, pool *v1alpha1.SandboxPool, st *v1alpha1.SandboxPoolStatus) error {
	if equality.Semantic.DeepEqual(&pool.Status, st) {
		return nil
	}
	next := pool.DeepCopy()
	next.Status = *st
	out, err := c.pools.updateStatus(ctx, next)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("write the status: %w", err)
	}
	*pool = *out
	return nil
}

// misplaced tells a pool outside the pool namespace where pools belong.
func (c *Controller) misplaced(ctx context.Context, pool *v1alpha1.SandboxPool) error {
	st := pool.Status.DeepCopy()
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse,
		Reason: ReasonWrongNamespace, Message: fmt.Sprintf(
			"SandboxPools are served in namespace %s only (the controller's --pool-namespace), where their agent pods run: create this pool there",
			c.cfg.Namespace)})
	return c.writeStatus(ctx, pool, st)
}

// finalize ends a pool's deletion: held while any sandbox names the pool
// or runs on its agents, then its pods are removed and the finalizer
// with them. The registry has closed the pool already (observe), so no new
// sandbox is placed on it meanwhile.
func (c *Controller) finalize(ctx context.Context, t *term, pool *v1alpha1.SandboxPool) error {
	if !slices.Contains(pool.Finalizers, Finalizer) {
		return nil
	}
	v := c.view(t, pool)
	var naming []string
	for _, sb := range c.cfg.Sandboxes.List() {
		if sb.Spec.PoolRef == pool.Name {
			naming = append(naming, sb.Namespace+"/"+sb.Name)
		}
	}
	slices.Sort(naming)
	st := c.status(pool, v)
	// A pool being deleted scales no more: Ready says so, not what the
	// scaling rule would do.
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse,
		Reason: ReasonDeleting, Message: "the pool is being deleted: it takes no new sandboxes and adds no pods"})
	if len(naming)+v.placed > 0 {
		named := naming[:min(len(naming), maxNamed)]
		if len(naming) > maxNamed {
			named = append(named, "…")
		}
		msg := fmt.Sprintf("deletion held by the finalizer %s: %d Sandboxes name this pool in spec.poolRef (%s) and %d sandboxes run on its agents; delete them and the pool goes",
			Finalizer, len(naming), strings.Join(named, ", "), v.placed)
		before := meta.FindStatusCondition(pool.Status.Conditions, ConditionDeleting)
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: ConditionDeleting, Status: metav1.ConditionTrue,
			Reason: ReasonSandboxesRemain, Message: msg})
		// The cached pool may not show the status written a moment ago:
		// what was said last is remembered too, so that a resync in
		// between does not say it twice.
		key := pool.Namespace + "/" + pool.Name
		c.mu.Lock()
		said := c.blocked[key] == msg
		c.blocked[key] = msg
		c.mu.Unlock()
		if !said && (before == nil || before.Message != msg) {
			c.cfg.Events.Event(pool, corev1.EventTypeWarning, ReasonDeleteBlocked, msg)
		}
		return c.writeStatus(ctx, pool, st)
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: ConditionDeleting, Status: metav1.ConditionTrue,
		Reason: ReasonRemovingPods, Message: fmt.Sprintf("no sandbox uses the pool: removing its %d pods", len(v.all))})
	if err := c.writeStatus(ctx, pool, st); err != nil {
		return err
	}
	var errs []error
	for _, pod := range v.all {
		if pod.DeletionTimestamp != nil {
			continue
		}
		removed, err := c.remove(ctx, pod)
		switch {
		case err != nil:
			errs = append(errs, err)
		case !removed:
			errs = append(errs, fmt.Errorf("agent pod %s runs a sandbox: the pool's deletion waits", pod.Name))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	pool.Finalizers = slices.DeleteFunc(pool.Finalizers, func(f string) bool { return f == Finalizer })
	if _, err := c.pools.update(ctx, pool); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove the finalizer: %w", err)
	}
	c.cfg.Logger.Info("sandbox pool deleted", slog.String("pool", pool.Name), slog.Int("pods", len(v.all)))
	return nil
}

// maxWhy is how many pending pods a Ready message explains.
const maxWhy = 3

// pendingWhy says why pending pods have no agent yet, for the first
// maxWhy of them that show a reason: unschedulable, a container waiting
// (CrashLoopBackOff, an image not present) with its last exit, or not
// ready. Only reasons and exit codes, and the last line of a termination
// message (with terminationMessagePolicy FallbackToLogsOnError, as
// deploy/ sets it, the agent's last words: why it stopped), so that the
// status changes when the cause does, not with each back-off's countdown.
func pendingWhy(pods []*corev1.Pod) string {
	var out []string
	for _, pod := range pods {
		if len(out) == maxWhy {
			out = append(out, "…")
			break
		}
		if why := podWhy(pod); why != "" {
			out = append(out, pod.Name+": "+why)
		}
	}
	return strings.Join(out, "; ")
}

func podWhy(pod *corev1.Pod) string {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return "not scheduled: " + lastLine(cmp.Or(c.Message, c.Reason))
		}
	}
	for _, cs := range append(slices.Clone(pod.Status.InitContainerStatuses), pod.Status.ContainerStatuses...) {
		w := cs.State.Waiting
		if w == nil || w.Reason == "" || w.Reason == "PodInitializing" || w.Reason == "ContainerCreating" {
			continue
		}
		why := fmt.Sprintf("container %s %s", cs.Name, w.Reason)
		if t := cs.LastTerminationState.Terminated; t != nil {
			why += fmt.Sprintf(" (last exit %d", t.ExitCode)
			if msg := lastLine(t.Message); msg != "" {
				why += ": " + msg
			}
			why += ")"
		}
		return why
	}
	return ""
}

// lastLine is s's last non-empty line, at most 200 bytes.
func lastLine(s string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if line := strings.TrimSpace(lines[i]); line != "" {
			if len(line) > 200 {
				line = line[:200] + "…"
			}
			return line
		}
	}
	return ""
}
