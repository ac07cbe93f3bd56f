package agentpool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/client-go/tools/cache"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
)

// DeclarerConfig is what a Declarer needs.
type DeclarerConfig struct {
	// ListWatch lists and watches SandboxPools: the kube store's (every
	// namespace, so that misplaced pools are seen) or the embedded
	// store's (store.PoolListWatch).
	ListWatch cache.ListerWatcher
	// Namespace is the pool namespace: pools elsewhere are not declared.
	Namespace string
	Registry  *registry.Registry
	Logger    *slog.Logger
	// Changed, when set, is called after a pool of the pool namespace is
	// declared, closed or forgotten in the registry (not on its other
	// updates): the sandbox controller places the sandboxes that waited
	// for it at once.
	Changed func(pool string)
	// Warm, when set, is called with a pool's spec.warm when the pool is
	// declared and whenever its spec.warm changes, and with nil once it is
	// being deleted or gone. The pool named v1alpha1.DefaultPool gives the
	// default pool its warm entries: Warm hears of it as pool "".
	Warm func(pool string, entries []v1alpha1.WarmEntry)
}

// Declarer runs on every replica, in either store mode: it tells the
// registry which pools exist (DeclarePool, closed once a pool is being
// deleted; ForgetPool once gone), so that a create naming a pool is judged
// the same on any replica, and hands each pool's warm entries to Warm.
//
// The pool named v1alpha1.DefaultPool is the default pool's (agents with no
// --pool): it is never declared as a pool of its own, only its warm entries
// count.
type Declarer struct {
	cfg      DeclarerConfig
	informer cache.SharedIndexInformer
	declared cache.ResourceEventHandlerRegistration

	mu sync.Mutex
	// open is what the registry was told of each pool (true: open), so
	// that Changed hears only of changes.
	open map[string]bool
	// warm is what Warm was last told of each pool ("" for the default
	// pool), so that it hears only of changes.
	warm map[string][]v1alpha1.WarmEntry
}

// NewDeclarer returns a Declarer for cfg; Start runs it.
func NewDeclarer(cfg DeclarerConfig) (*Declarer, error) {
	switch {
	case cfg.ListWatch == nil:
		return nil, errors.New("agentpool: no SandboxPools to list and watch")
	case cfg.Namespace == "":
		return nil, errors.New("agentpool: no pool namespace")
	case cfg.Registry == nil:
		return nil, errors.New("agentpool: no registry")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Declarer{
		cfg:      cfg,
		informer: cache.NewSharedIndexInformer(cfg.ListWatch, &v1alpha1.SandboxPool{}, 0, cache.Indexers{}),
		open:     make(map[string]bool),
		warm:     make(map[string][]v1alpha1.WarmEntry),
	}
	var err error
	d.declared, err = d.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    d.observe,
		UpdateFunc: func(_, obj any) { d.observe(obj) },
		DeleteFunc: d.forget,
	})
	if err != nil {
		return nil, fmt.Errorf("agentpool: %w", err)
	}
	return d, nil
}

// observe declares a pool of the pool namespace in the registry (closed
// once it is being deleted) and hands on its warm entries.
func (d *Declarer) observe(obj any) {
	pool, ok := obj.(*v1alpha1.SandboxPool)
	if !ok || pool.Namespace != d.cfg.Namespace {
		return
	}
	open := pool.DeletionTimestamp == nil
	if pool.Name == v1alpha1.DefaultPool {
		d.setWarm("", pool.Spec.Warm, open)
		return
	}
	// A pool with a name no agent can carry (made before the schema said
	// so) is never declared: the pool controller gives it its InvalidName
	// condition.
	if v1alpha1.ValidatePoolName(pool.Name) != nil {
		return
	}
	d.cfg.Registry.DeclarePool(pool.Name, open)
	d.mu.Lock()
	was, known := d.open[pool.Name]
	d.open[pool.Name] = open
	d.mu.Unlock()
	if (!known || was != open) && d.cfg.Changed != nil {
		d.cfg.Changed(pool.Name)
	}
	d.setWarm(pool.Name, pool.Spec.Warm, open)
}

// forget undeclares a deleted pool.
func (d *Declarer) forget(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pool, ok := obj.(*v1alpha1.SandboxPool)
	if !ok || pool.Namespace != d.cfg.Namespace {
		return
	}
	if pool.Name == v1alpha1.DefaultPool {
		d.setWarm("", nil, false)
		return
	}
	d.cfg.Registry.ForgetPool(pool.Name)
	d.mu.Lock()
	delete(d.open, pool.Name)
	d.mu.Unlock()
	if d.cfg.Changed != nil {
		d.cfg.Changed(pool.Name)
	}
	d.setWarm(pool.Name, nil, false)
}

// setWarm tells Warm of a pool's entries when they changed: none once the
// pool is closed.
func (d *Declarer) setWarm(pool string, entries []v1alpha1.WarmEntry, open bool) {
	if d.cfg.Warm == nil {
		return
	}
	if !open {
		entries = nil
	}
	d.mu.Lock()
	prev, known := d.warm[pool]
	same := known && equality.Semantic.DeepEqual(prev, entries)
	if entries == nil {
		delete(d.warm, pool)
	} else {
		d.warm[pool] = entries
	}
	d.mu.Unlock()
	// A pool first seen without entries has nothing to stop.
	if same || (!known && entries == nil) {
		return
	}
	d.cfg.Warm(pool, entries)
}

// Start runs the informer until ctx ends, and returns once every pool
// listed at the start has been declared in the registry (closing synced):
// serve creates only from then on, or a create naming a pool right after a
// restart would get a false NotFound.
func (d *Declarer) Start(ctx context.Context, synced chan<- struct{}) error {
	go d.informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), d.informer.HasSynced, d.declared.HasSynced) {
		return errors.New("sandbox pools: cache never synced")
	}
	d.cfg.Logger.Info("sandbox pools listed", slog.String("namespace", d.cfg.Namespace),
		slog.Int("pools", len(d.informer.GetStore().ListKeys())))
	close(synced)
	return nil
}

// Namespace is the pool namespace.
func (d *Declarer) Namespace() string { return d.cfg.Namespace }

// HasSynced says every pool listed at the start has been declared.
func (d *Declarer) HasSynced() bool { return d.declared.HasSynced() }

// Informer is the pool informer, for the pool controller's own handlers
// and cache.
func (d *Declarer) Informer() cache.SharedIndexInformer { return d.informer }
