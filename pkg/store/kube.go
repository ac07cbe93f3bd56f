package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// Client-side rate limits of the kube store. client-go's defaults (5 requests
// a second, bursts of 10) are meant for background controllers; here every
// STRONG create writes its object and its status before it answers, and a
// FAST burst writes one object per sandbox, so those defaults would queue a
// burst of 50 creates for seconds in the client while the API server idles.
// The API server's own priority and fairness is what protects it.
const (
	KubeQPS   = 200
	KubeBurst = 400
)

// Kube is the Interface on a Kubernetes API server: Sandbox objects of the
// sandboxes.sandbox.fast.io CRD (deploy/crds), through a typed REST client.
//
// The API server keeps the promises of Interface itself (status subresource,
// finalizers, generation, resourceVersions, errors); Kube adds only what the
// API server does differently:
//   - Update and UpdateStatus with an empty resourceVersion: the API server
//     refuses unconditional updates of custom resources, so Kube reads the
//     current version and retries on Conflict.
//   - Create with a resourceVersion: BadRequest here (the API server answers
//     with an internal error).
//   - Watch from a compacted resourceVersion: the API server answers with a
//     stream whose first event is an ERROR carrying the 410 Status (client-go's
//     reflector relists on it, as it does on a ResourceExpired error).
//   - Watch from "" or "0": from now, as Interface says (to the API server
//     both replay the current state first).
//
// Two differences remain, and the store tests say so: an Update that removes
// the last finalizer of a deleted object returns the object as last stored
// (the DELETED event carries the deletion's resourceVersion), and the first
// UpdateStatus of an object created without status writes once even when the
// status is empty (the API server stores "status": {}).
//
// Returned objects carry no managedFields, like the embedded store's: the
// controller and the fast path never read them, and informers would hold one
// copy per object.
type Kube struct {
	client rest.Interface
	params runtime.ParameterCodec
}

var _ Interface = (*Kube)(nil)

// NewKube returns the store on the API server cfg points at. cfg is not
// modified; QPS and Burst left at zero become KubeQPS and KubeBurst.
func NewKube(cfg *rest.Config) (*Kube, error) {
	if cfg == nil {
		return nil, fmt.Errorf("store: kube: no client config")
	}
	c := rest.CopyConfig(cfg)
	if c.QPS == 0 {
		c.QPS = KubeQPS
	}
	if c.Burst == 0 {
		c.Burst = KubeBurst
	}
	client, params, err := v1alpha1.RESTClient(c)
	if err != nil {
		return nil, fmt.Errorf("store: kube: %w", err)
	}
	return &Kube{client: client, params: params}, nil
}

// Create implements Interface. The API server drops .status (the CRD has a
// status subresource); Kube does not send it.
func (k *Kube) Create(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	if sb == nil {
		return nil, apierrors.NewBadRequest("no object given")
	}
	return typed[*v1alpha1.Sandbox](k.create(ctx, sandboxKind, sb))
}

// Update implements Interface. The API server ignores .status here and bumps
// the generation when the spec changed; an update that changes nothing writes
// nothing there too.
func (k *Kube) Update(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	if sb == nil {
		return nil, apierrors.NewBadRequest("no object given")
	}
	return typed[*v1alpha1.Sandbox](k.update(ctx, sandboxKind, sb))
}

// UpdateStatus implements Interface, through the status subresource: only
// .status is taken from sb.
func (k *Kube) UpdateStatus(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	if sb == nil {
		return nil, apierrors.NewBadRequest("no object given")
	}
	return typed[*v1alpha1.Sandbox](k.updateStatus(ctx, sandboxKind, sb))
}

func (k *Kube) create(ctx context.Context, kd *kind, o object) (object, error) {
	m := metaOf(o)
	if err := validateNamespace(m.Namespace); err != nil || m.Namespace == "" {
		return nil, namespaceRequired(m.Name, err)
	}
	if m.ResourceVersion != "" {
		// The API server says so too, but as an internal error.
		return nil, apierrors.NewBadRequest("resourceVersion should not be set on objects to be created")
	}
	in := withoutStatus(kd, o)
	out := kd.newObj()
	err := k.client.Post().Namespace(m.Namespace).Resource(kd.resource).Body(in).Do(ctx).Into(out)
	return kubeResult(out, err)
}

func (k *Kube) update(ctx context.Context, kd *kind, o object) (object, error) {
	m := metaOf(o)
	if err := validateKey(m.Namespace, m.Name); err != nil {
		return nil, err
	}
	return k.put(ctx, kd, withoutStatus(kd, o), "")
}

func (k *Kube) updateStatus(ctx context.Context, kd *kind, o object) (object, error) {
	m := metaOf(o)
	if err := validateKey(m.Namespace, m.Name); err != nil {
		return nil, err
	}
	in := deepCopy(o)
	metaOf(in).ManagedFields = nil // nil keeps the server's; never send a stale copy
	return k.put(ctx, kd, in, "status")
}

// put replaces the object (or its status subresource) with in, a copy of the
// caller's that put may change. An empty resourceVersion is unconditional:
// the API server refuses that for custom resources, so put reads the
// current version and retries while another writer gets in between.
func (k *Kube) put(ctx context.Context, kd *kind, in object, subresource string) (object, error) {
	m := metaOf(in)
	if m.ResourceVersion != "" {
		return k.putOnce(ctx, kd, in, subresource)
	}
	var out object
	err := retry.OnError(retry.DefaultRetry, isVersionConflict, func() error {
		cur, err := k.get(ctx, kd, m.Namespace, m.Name)
		if err != nil {
			return err
		}
		m.ResourceVersion = metaOf(cur).ResourceVersion
		out, err = k.putOnce(ctx, kd, in, subresource)
		return err
	})
	return out, err
}

func (k *Kube) putOnce(ctx context.Context, kd *kind, in object, subresource string) (object, error) {
	m := metaOf(in)
	req := k.client.Put().Namespace(m.Namespace).Resource(kd.resource).Name(m.Name)
	if subresource != "" {
		req = req.SubResource(subresource)
	}
	out := kd.newObj()
	return kubeResult(out, req.Body(in).Do(ctx).Into(out))
}

// isVersionConflict tells a stale resourceVersion, worth another try of an
// unconditional write, from a UID precondition that failed (the object was
// made anew: the caller's is another one), which no retry cures.
func isVersionConflict(err error) bool {
	return apierrors.IsConflict(err) && !strings.Contains(err.Error(), "Precondition failed: UID")
}

// Delete implements Interface.
func (k *Kube) Delete(ctx context.Context, namespace, name string) error {
	return k.delete(ctx, sandboxKind, namespace, name)
}

func (k *Kube) delete(ctx context.Context, kd *kind, namespace, name string) error {
	if err := validateKey(namespace, name); err != nil {
		return err
	}
	return k.client.Delete().Namespace(namespace).Resource(kd.resource).Name(name).Do(ctx).Error()
}

// Get implements Interface.
func (k *Kube) Get(ctx context.Context, namespace, name string) (*v1alpha1.Sandbox, error) {
	return typed[*v1alpha1.Sandbox](k.get(ctx, sandboxKind, namespace, name))
}

func (k *Kube) get(ctx context.Context, kd *kind, namespace, name string) (object, error) {
	if err := validateKey(namespace, name); err != nil {
		return nil, err
	}
	out := kd.newObj()
	err := k.client.Get().Namespace(namespace).Resource(kd.resource).Name(name).Do(ctx).Into(out)
	return kubeResult(out, err)
}

// List implements Interface: a consistent read, sorted by namespace and name
// as etcd keeps them.
func (k *Kube) List(ctx context.Context, namespace string, selector labels.Selector) (*v1alpha1.SandboxList, error) {
	if err := validateNamespace(namespace); err != nil {
		return nil, err
	}
	opts := &metav1.ListOptions{}
	if selector != nil && !selector.Empty() {
		opts.LabelSelector = selector.String()
	}
	out := new(v1alpha1.SandboxList)
	err := k.client.Get().Namespace(namespace).Resource(sandboxKind.resource).
		VersionedParams(opts, k.params).Do(ctx).Into(out)
	if err != nil {
		return nil, err
	}
	for i := range out.Items {
		out.Items[i].ManagedFields = nil
	}
	return out, nil
}

// Watch implements Interface. The stream ends when ctx ends, when it is
// stopped, or when the API server closes it (its watch timeout, a restart);
// watch again from the last resourceVersion seen.
func (k *Kube) Watch(ctx context.Context, namespace, resourceVersion string) (watch.Interface, error) {
	return k.watch(ctx, sandboxKind, namespace, resourceVersion)
}

func (k *Kube) watch(ctx context.Context, kd *kind, namespace, resourceVersion string) (watch.Interface, error) {
	if err := validateNamespace(namespace); err != nil {
		return nil, err
	}
	if _, err := parseResourceVersion(resourceVersion); err != nil {
		return nil, err
	}
	if resourceVersion == "" || resourceVersion == "0" {
		// To the API server both mean "the current state, replayed as ADDED
		// events, then changes"; Interface defines them as "from now". The
		// resourceVersion of a one-item list is now.
		now, err := k.currentVersion(ctx, kd, namespace)
		if err != nil {
			return nil, err
		}
		resourceVersion = now
	}
	opts := &metav1.ListOptions{
		Watch:           true,
		ResourceVersion: resourceVersion,
		// The API server ends a watch after a random 30–60 min by default;
		// a shorter one stays below the idle cut of proxies in between.
		TimeoutSeconds: &watchTimeout,
	}
	// The stream's own context, ended by Stop too: client-go reports a
	// stream cut by its context or by Stop as an internal error ("unable
	// to decode an event from the watch stream: context canceled", or
	// "http2: response body closed" when Stop closes the body first), and
	// Interface ends the stream quietly.
	wctx, cancel := context.WithCancel(ctx)
	w, err := k.client.Get().Namespace(namespace).Resource(kd.resource).
		VersionedParams(opts, k.params).Watch(wctx)
	if err != nil {
		cancel()
		return nil, err
	}
	filtered := watch.Filter(w, func(e watch.Event) (watch.Event, bool) {
		if e.Type == watch.Error && wctx.Err() != nil {
			return e, false
		}
		if o, ok := e.Object.(object); ok {
			metaOf(o).ManagedFields = nil
		}
		return e, true
	})
	return &quietWatch{Interface: filtered, cancel: cancel}, nil
}

// quietWatch ends its stream's context before it stops the stream, so
// that the error client-go reports for the stream it cut is dropped.
type quietWatch struct {
	watch.Interface
	cancel context.CancelFunc
}

func (w *quietWatch) Stop() {
	w.cancel()
	w.Interface.Stop()
}

// watchTimeout is how long one watch stream lasts before the API server ends
// it (the consumer watches again from the last resourceVersion it saw).
var watchTimeout = int64((10 * time.Minute).Seconds())

// currentVersion is the resourceVersion of the API server's state now.
func (k *Kube) currentVersion(ctx context.Context, kd *kind, namespace string) (string, error) {
	raw, err := k.client.Get().Namespace(namespace).Resource(kd.resource).
		VersionedParams(&metav1.ListOptions{Limit: 1}, k.params).Do(ctx).Raw()
	if err != nil {
		return "", err
	}
	// Only the list's metadata is read, whichever kind it lists.
	var out struct {
		Metadata metav1.ListMeta `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return "", fmt.Errorf("store: kube: list %s: %w", kd.resource, err)
	}
	return out.Metadata.ResourceVersion, nil
}

// withoutStatus is the caller's object as sent on create and update: a copy
// (the caller's stays untouched) with no status and no managedFields.
func withoutStatus(kd *kind, o object) object {
	in := deepCopy(o)
	kd.setStatus(in, nil)
	metaOf(in).ManagedFields = nil
	return in
}

func kubeResult(out object, err error) (object, error) {
	if err != nil {
		return nil, err
	}
	metaOf(out).ManagedFields = nil
	return out, nil
}

// namespaceRequired is the Invalid error for a create without a valid
// namespace, which the REST path could not even name.
func namespaceRequired(name string, err error) error {
	if err != nil {
		return err
	}
	return validateKey("", name)
}

// KubePools is the kube store's PoolInterface: SandboxPool objects of the
// sandboxpools.sandbox.fast.io CRD, with Kube's adjustments.
type KubePools struct{ k *Kube }

var _ PoolInterface = KubePools{}

// Pools returns the store's SandboxPools.
func (k *Kube) Pools() KubePools { return KubePools{k} }

// Create implements PoolInterface.
func (p KubePools) Create(ctx context.Context, pool *v1alpha1.SandboxPool) (*v1alpha1.SandboxPool, error) {
	if pool == nil {
		return nil, apierrors.NewBadRequest("no object given")
	}
	return typed[*v1alpha1.SandboxPool](p.k.create(ctx, poolKind, pool))
}

// Update implements PoolInterface.
func (p KubePools) Update(ctx context.Context, pool *v1alpha1.SandboxPool) (*v1alpha1.SandboxPool, error) {
	if pool == nil {
		return nil, apierrors.NewBadRequest("no object given")
	}
	return typed[*v1alpha1.SandboxPool](p.k.update(ctx, poolKind, pool))
}

// UpdateStatus implements PoolInterface.
func (p KubePools) UpdateStatus(ctx context.Context, pool *v1alpha1.SandboxPool) (*v1alpha1.SandboxPool, error) {
	if pool == nil {
		return nil, apierrors.NewBadRequest("no object given")
	}
	return typed[*v1alpha1.SandboxPool](p.k.updateStatus(ctx, poolKind, pool))
}

// Delete implements PoolInterface.
func (p KubePools) Delete(ctx context.Context, namespace, name string) error {
	return p.k.delete(ctx, poolKind, namespace, name)
}

// Get implements PoolInterface.
func (p KubePools) Get(ctx context.Context, namespace, name string) (*v1alpha1.SandboxPool, error) {
	return typed[*v1alpha1.SandboxPool](p.k.get(ctx, poolKind, namespace, name))
}

// List implements PoolInterface.
func (p KubePools) List(ctx context.Context, namespace string, selector labels.Selector) (*v1alpha1.SandboxPoolList, error) {
	if err := validateNamespace(namespace); err != nil {
		return nil, err
	}
	opts := &metav1.ListOptions{}
	if selector != nil && !selector.Empty() {
		opts.LabelSelector = selector.String()
	}
	out := new(v1alpha1.SandboxPoolList)
	err := p.k.client.Get().Namespace(namespace).Resource(poolKind.resource).
		VersionedParams(opts, p.k.params).Do(ctx).Into(out)
	if err != nil {
		return nil, err
	}
	for i := range out.Items {
		out.Items[i].ManagedFields = nil
	}
	return out, nil
}

// Watch implements PoolInterface.
func (p KubePools) Watch(ctx context.Context, namespace, resourceVersion string) (watch.Interface, error) {
	return p.k.watch(ctx, poolKind, namespace, resourceVersion)
}
