package store

import (
	"context"
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

// sandboxes is the resource's path segment.
const sandboxes = "sandboxes"

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
	if err := validateNamespace(sb.Namespace); err != nil || sb.Namespace == "" {
		return nil, namespaceRequired(sb.Name, err)
	}
	if sb.ResourceVersion != "" {
		// The API server says so too, but as an internal error.
		return nil, apierrors.NewBadRequest("resourceVersion should not be set on objects to be created")
	}
	in := withoutStatus(sb)
	out := new(v1alpha1.Sandbox)
	err := k.client.Post().Namespace(in.Namespace).Resource(sandboxes).Body(in).Do(ctx).Into(out)
	return kubeResult(out, err)
}

// Update implements Interface. The API server ignores .status here and bumps
// the generation when the spec changed; an update that changes nothing writes
// nothing there too.
func (k *Kube) Update(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	if sb == nil {
		return nil, apierrors.NewBadRequest("no object given")
	}
	if err := validateKey(sb.Namespace, sb.Name); err != nil {
		return nil, err
	}
	return k.put(ctx, withoutStatus(sb), "")
}

// UpdateStatus implements Interface, through the status subresource: only
// .status is taken from sb.
func (k *Kube) UpdateStatus(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	if sb == nil {
		return nil, apierrors.NewBadRequest("no object given")
	}
	if err := validateKey(sb.Namespace, sb.Name); err != nil {
		return nil, err
	}
	in := sb.DeepCopy()
	in.ManagedFields = nil // nil keeps the server's; never send a stale copy
	return k.put(ctx, in, "status")
}

// put replaces the object (or its status subresource) with in, a copy of the
// caller's that put may change. An empty resourceVersion is unconditional:
// the API server refuses that for custom resources, so put reads the
// current version and retries while another writer gets in between.
func (k *Kube) put(ctx context.Context, in *v1alpha1.Sandbox, subresource string) (*v1alpha1.Sandbox, error) {
	if in.ResourceVersion != "" {
		return k.putOnce(ctx, in, subresource)
	}
	var out *v1alpha1.Sandbox
	err := retry.OnError(retry.DefaultRetry, isVersionConflict, func() error {
		cur, err := k.Get(ctx, in.Namespace, in.Name)
		if err != nil {
			return err
		}
		in.ResourceVersion = cur.ResourceVersion
		out, err = k.putOnce(ctx, in, subresource)
		return err
	})
	return out, err
}

func (k *Kube) putOnce(ctx context.Context, in *v1alpha1.Sandbox, subresource string) (*v1alpha1.Sandbox, error) {
	req := k.client.Put().Namespace(in.Namespace).Resource(sandboxes).Name(in.Name)
	if subresource != "" {
		req = req.SubResource(subresource)
	}
	out := new(v1alpha1.Sandbox)
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
	if err := validateKey(namespace, name); err != nil {
		return err
	}
	return k.client.Delete().Namespace(namespace).Resource(sandboxes).Name(name).Do(ctx).Error()
}

// Get implements Interface.
func (k *Kube) Get(ctx context.Context, namespace, name string) (*v1alpha1.Sandbox, error) {
	if err := validateKey(namespace, name); err != nil {
		return nil, err
	}
	out := new(v1alpha1.Sandbox)
	err := k.client.Get().Namespace(namespace).Resource(sandboxes).Name(name).Do(ctx).Into(out)
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
	err := k.client.Get().Namespace(namespace).Resource(sandboxes).
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
		now, err := k.currentVersion(ctx, namespace)
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
	w, err := k.client.Get().Namespace(namespace).Resource(sandboxes).
		VersionedParams(opts, k.params).Watch(wctx)
	if err != nil {
		cancel()
		return nil, err
	}
	filtered := watch.Filter(w, func(e watch.Event) (watch.Event, bool) {
		if e.Type == watch.Error && wctx.Err() != nil {
			return e, false
		}
		if sb, ok := e.Object.(*v1alpha1.Sandbox); ok {
			sb.ManagedFields = nil
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
func (k *Kube) currentVersion(ctx context.Context, namespace string) (string, error) {
	out := new(v1alpha1.SandboxList)
	err := k.client.Get().Namespace(namespace).Resource(sandboxes).
		VersionedParams(&metav1.ListOptions{Limit: 1}, k.params).Do(ctx).Into(out)
	if err != nil {
		return "", err
	}
	return out.ResourceVersion, nil
}

// withoutStatus is the caller's object as sent on create and update: a copy
// (the caller's stays untouched) with no status and no managedFields.
func withoutStatus(sb *v1alpha1.Sandbox) *v1alpha1.Sandbox {
	in := sb.DeepCopy()
	in.Status = v1alpha1.SandboxStatus{}
	in.ManagedFields = nil
	return in
}

func kubeResult(out *v1alpha1.Sandbox, err error) (*v1alpha1.Sandbox, error) {
	if err != nil {
		return nil, err
	}
	out.ManagedFields = nil
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
