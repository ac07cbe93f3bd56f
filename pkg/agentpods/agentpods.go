// Package agentpods finds the controller's agents from their pods: a pod of
// the agents (one namespace, a label selector) that is Running, has an IP
// and is not being deleted is an agent, known by the pod's UID (which the
// agent reports as its ID: it runs with --agent-id=$(POD_UID)) and reached
// at the pod's IP and the agents' port. A pod in any other state, or
// deleted, is no agent: the agent is removed, and its sandboxes are Lost
// after the controller's lost timeout (pkg/agentlink).
//
// The shape is k8s.io/sample-controller's: the informer's handlers only
// queue a pod's key; a worker compares the pod with the agent it was and
// adds or removes it.
package agentpods

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Agents is what the pods feed: pkg/agentlink's Set.
type Agents interface {
	// Add follows the agent under key at addr (host:port or a URL).
	Add(key, addr string)
	// Remove stops following the agent under key; it is down.
	Remove(key string)
	// Listed says every agent known at the start has been added.
	Listed()
}

// Config is what a Watcher needs.
type Config struct {
	Client    kubernetes.Interface
	Namespace string
	// Selector picks the agents' pods, e.g.
	// app.kubernetes.io/name=fsb,app.kubernetes.io/component=agent.
	Selector labels.Selector
	// Port is the agents' port.
	Port int
	// TLS makes agents' addresses https:// URLs; else host:port (h2c).
	TLS    bool
	Agents Agents
	Logger *slog.Logger
	// ResyncPeriod is how often every pod is looked at again even when
	// nothing changed; zero means none.
	ResyncPeriod time.Duration
}

// Watcher follows the agents' pods and feeds Agents.
type Watcher struct {
	cfg      Config
	factory  informers.SharedInformerFactory
	lister   corelisters.PodNamespaceLister
	informer cache.SharedIndexInformer
	queue    workqueue.TypedRateLimitingInterface[string]

	// mu guards agents: the UID of the agent each pod name was (the
	// worker's memory of what it added, so that a pod's deletion, seen
	// only as a name, removes the right agent).
	mu     sync.Mutex
	agents map[string]types.UID
}

// New returns a Watcher for cfg; Run starts it.
func New(cfg Config) (*Watcher, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("agentpods: no Kubernetes client")
	case cfg.Namespace == "":
		return nil, errors.New("agentpods: no namespace")
	case cfg.Selector == nil || cfg.Selector.Empty():
		return nil, errors.New("agentpods: an empty selector would take every pod of the namespace for an agent")
	case cfg.Port <= 0 || cfg.Port > 65535:
		return nil, fmt.Errorf("agentpods: port %d: want 1-65535", cfg.Port)
	case cfg.Agents == nil:
		return nil, errors.New("agentpods: no agents to feed")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	selector := cfg.Selector.String()
	factory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, cfg.ResyncPeriod,
		informers.WithNamespace(cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	pods := factory.Core().V1().Pods()
	w := &Watcher{
		cfg:      cfg,
		factory:  factory,
		lister:   pods.Lister().Pods(cfg.Namespace),
		informer: pods.Informer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "agentpods"}),
		agents: make(map[string]types.UID),
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			w.queue.Add(key)
		}
	}
	if _, err := w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return nil, fmt.Errorf("agentpods: %w", err)
	}
	return w, nil
}

// Run follows the pods until ctx ends. Once the informer has listed them,
// every agent among them is added and Agents told Listed; from then on
// each change of a pod is applied as it comes. Until the pods can be
// listed (an API server away, a Role without list and watch on pods) it
// waits, as client-go's reflector retries and logs why.
func (w *Watcher) Run(ctx context.Context) error {
	defer w.queue.ShutDown()
	w.factory.Start(ctx.Done())
	defer w.factory.Shutdown()
	w.cfg.Logger.Info("finding agents from their pods", slog.String("namespace", w.cfg.Namespace),
		slog.String("selector", w.cfg.Selector.String()), slog.Int("port", w.cfg.Port), slog.Bool("tls", w.cfg.TLS))
	if !cache.WaitForCacheSync(ctx.Done(), w.informer.HasSynced) {
		return nil // ctx ended first: a stop, not a failure
	}
	// The listing first, at once, so that Listed follows every agent the
	// cache holds; the queue then brings what changed since (each sync is
	// idempotent).
	pods, err := w.lister.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("agentpods: list pods: %w", err)
	}
	for _, pod := range pods {
		w.apply(pod.Name, pod)
	}
	w.cfg.Agents.Listed()
	w.cfg.Logger.Info("agents' pods listed", slog.Int("pods", len(pods)), slog.Int("agents", w.count()))

	go func() {
		<-ctx.Done()
		w.queue.ShutDown()
	}()
	for w.next(ctx) {
	}
	return nil
}

func (w *Watcher) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.agents)
}

// next syncs one queued pod; false once the queue is shut down.
func (w *Watcher) next(ctx context.Context) bool {
	key, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(key)
	if err := w.sync(key); err != nil && ctx.Err() == nil {
		w.cfg.Logger.Warn("agent pod not synced; retrying", slog.String("pod", key), slog.Any("err", err))
		w.queue.AddRateLimited(key)
		return true
	}
	w.queue.Forget(key)
	return true
}

// sync brings the agent of the pod under key in line with the pod.
func (w *Watcher) sync(key string) error {
	_, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key this queue makes: nothing to retry
	}
	pod, err := w.lister.Get(name)
	switch {
	case apierrors.IsNotFound(err):
		pod = nil
	case err != nil:
		return err
	}
	w.apply(name, pod)
	return nil
}

// apply makes the agent of pod name match pod (nil: the pod is gone).
func (w *Watcher) apply(name string, pod *corev1.Pod) {
	w.mu.Lock()
	had, known := w.agents[name]
	addr, why := w.address(pod)
	switch {
	case addr != "":
		w.agents[name] = pod.UID
	case known:
		delete(w.agents, name)
	}
	w.mu.Unlock()

	if known && (addr == "" || had != pod.UID) {
		// Gone, no longer an agent, or the name now holds another pod.
		w.cfg.Logger.Info("agent's pod is no agent any more: the agent is removed", slog.String("pod", name),
			slog.String("agent", string(had)), slog.String("why", why))
		w.cfg.Agents.Remove(string(had))
	}
	if addr != "" {
		if !known || had != pod.UID {
			w.cfg.Logger.Info("agent found from its pod", slog.String("pod", name), slog.String("agent", string(pod.UID)),
				slog.String("address", addr), slog.String("node", pod.Spec.NodeName))
		}
		// Add is a no-op for the same address, and moves the link for a
		// new one.
		w.cfg.Agents.Add(string(pod.UID), addr)
	}
}

// address returns where the agent of pod listens, or "" and why the pod is
// no agent now.
func (w *Watcher) address(pod *corev1.Pod) (addr, why string) {
	switch {
	case pod == nil:
		return "", "the pod was deleted"
	case pod.DeletionTimestamp != nil:
		return "", "the pod is being deleted"
	case pod.Status.Phase != corev1.PodRunning:
		return "", fmt.Sprintf("the pod is %s", pod.Status.Phase)
	case pod.Status.PodIP == "":
		return "", "the pod has no IP"
	}
	hostport := net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(w.cfg.Port))
	if w.cfg.TLS {
		return "https://" + hostport, ""
	}
	return hostport, ""
}
