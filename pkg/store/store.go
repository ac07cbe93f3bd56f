// Package store keeps Sandbox objects the way the Kubernetes API server does:
// create, update, status update, delete with finalizers, get, list and watch
// from a resourceVersion, with the API server's errors. The controller and the
// fast path code against Interface, so the same code runs on Kubernetes (the
// CRDs through client-go) and on the embedded bbolt store of a single machine.
package store

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// Interface is what the controller and the fast path use.
//
// Errors are k8s.io/apimachinery/pkg/api/errors values naming
// sandboxes.sandbox.fast.io, so callers test them with apierrors.IsNotFound,
// IsAlreadyExists, IsConflict, IsInvalid and IsResourceExpired whichever
// implementation they talk to. Objects passed in are never kept, and objects
// returned belong to the caller.
type Interface interface {
	// Create stores a new Sandbox: sets UID, ResourceVersion,
	// CreationTimestamp, Generation=1; IGNORES .Status (status subresource
	// semantics); AlreadyExists when namespace/name exists; BadRequest when
	// ResourceVersion is set.
	Create(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error)
	// Update replaces metadata (labels, annotations, finalizers) and spec;
	// IGNORES status; Conflict when ResourceVersion is set and stale (empty
	// updates unconditionally); NotFound; bumps Generation when spec
	// changed. When the object has a DeletionTimestamp and the update leaves
	// no finalizers, the object is removed (as Kubernetes does). An update
	// that changes nothing writes nothing and returns the stored object.
	Update(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error)
	// UpdateStatus replaces only .Status; Conflict on stale ResourceVersion;
	// NotFound. The same status again writes nothing.
	UpdateStatus(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error)
	// Delete removes the object, or, while it has finalizers, sets
	// DeletionTimestamp (once) and keeps it. NotFound when absent.
	Delete(ctx context.Context, namespace, name string) error
	// Get returns one object; NotFound when absent.
	Get(ctx context.Context, namespace, name string) (*v1alpha1.Sandbox, error)
	// List returns objects in namespace ("" = all) matching selector (nil =
	// everything), with the store's current ResourceVersion in ListMeta.
	List(ctx context.Context, namespace string, selector labels.Selector) (*v1alpha1.SandboxList, error)
	// Watch streams changes after resourceVersion ("" or "0" = from now) as
	// watch.Added/Modified/Deleted events of *v1alpha1.Sandbox, in order; a
	// too-old resourceVersion gives ResourceExpired (410) so informers relist.
	// The stream ends when ctx ends or the watcher is stopped, and may end
	// early (a consumer that falls behind); watch again from the last
	// ResourceVersion seen.
	Watch(ctx context.Context, namespace string, resourceVersion string) (watch.Interface, error)
}

// PoolInterface keeps SandboxPool objects with the promises Interface makes
// for Sandboxes, and with errors naming sandboxpools.sandbox.fast.io. Both
// stores check created and updated pools with v1alpha1.ValidatePool's rules:
// the embedded store calls it, the API server has the CRD's schema, which
// says the same (pkg/api/v1alpha1's parity tests).
type PoolInterface interface {
	Create(ctx context.Context, pool *v1alpha1.SandboxPool) (*v1alpha1.SandboxPool, error)
	Update(ctx context.Context, pool *v1alpha1.SandboxPool) (*v1alpha1.SandboxPool, error)
	UpdateStatus(ctx context.Context, pool *v1alpha1.SandboxPool) (*v1alpha1.SandboxPool, error)
	Delete(ctx context.Context, namespace, name string) error
	Get(ctx context.Context, namespace, name string) (*v1alpha1.SandboxPool, error)
	List(ctx context.Context, namespace string, selector labels.Selector) (*v1alpha1.SandboxPoolList, error)
	// Watch streams *v1alpha1.SandboxPool events as Interface.Watch does.
	Watch(ctx context.Context, namespace string, resourceVersion string) (watch.Interface, error)
}

// PoolGroupResource names SandboxPools in errors.
var PoolGroupResource = v1alpha1.Resource("sandboxpools")

// GroupResource names Sandboxes in errors: sandboxes.sandbox.fast.io.
var GroupResource = v1alpha1.Resource("sandboxes")

// groupKind names Sandboxes in validation (Invalid) errors.
var groupKind = v1alpha1.GroupVersion.WithKind("Sandbox").GroupKind()

// ListWatch adapts an Interface for client-go's cache.NewSharedIndexInformer:
// it lists and watches every Sandbox in namespace ("" = all namespaces).
//
// Interface has no streaming list, so a watch that asks for initial events
// (client-go's WatchListClient feature) is refused the way an API server
// without the WatchList feature refuses it; the reflector then falls back to
// list + watch. Label and field selectors are refused too: Interface.Watch
// cannot filter by them, and a list filtered differently from its watch would
// corrupt an informer's cache.
func ListWatch(s Interface, namespace string) *cache.ListWatch {
	return listWatch(func(ctx context.Context) (runtime.Object, error) { return s.List(ctx, namespace, nil) },
		func(ctx context.Context, rv string) (watch.Interface, error) { return s.Watch(ctx, namespace, rv) })
}

// PoolListWatch is ListWatch for SandboxPools.
func PoolListWatch(s PoolInterface, namespace string) *cache.ListWatch {
	return listWatch(func(ctx context.Context) (runtime.Object, error) { return s.List(ctx, namespace, nil) },
		func(ctx context.Context, rv string) (watch.Interface, error) { return s.Watch(ctx, namespace, rv) })
}

func listWatch(list func(context.Context) (runtime.Object, error),
	watchFrom func(ctx context.Context, rv string) (watch.Interface, error)) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			if err := wholeNamespace(opts); err != nil {
				return nil, err
			}
			return list(ctx)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			if err := wholeNamespace(opts); err != nil {
				return nil, err
			}
			if opts.SendInitialEvents != nil {
				return nil, apierrors.NewInvalid(
					schema.GroupKind{Group: metav1.GroupName, Kind: "ListOptions"}, "",
					field.ErrorList{field.Forbidden(field.NewPath("sendInitialEvents"),
						"sendInitialEvents is not supported by this store; list, then watch")})
			}
			return watchFrom(ctx, opts.ResourceVersion)
		},
	}
}

func wholeNamespace(opts metav1.ListOptions) error {
	if opts.LabelSelector != "" || opts.FieldSelector != "" {
		return apierrors.NewBadRequest(fmt.Sprintf(
			"store.ListWatch serves whole namespaces; selectors %q/%q are not supported",
			opts.LabelSelector, opts.FieldSelector))
	}
	return nil
}

// validateKey checks the namespace (a DNS-1123 label) and name (a DNS-1123
// subdomain) a Get or Delete names.
func validateKey(namespace, name string) error {
	meta := field.NewPath("metadata")
	errs := checkName(meta.Child("namespace"), namespace, apivalidation.ValidateNamespaceName)
	errs = append(errs, checkName(meta.Child("name"), name, apivalidation.NameIsDNSSubdomain)...)
	if len(errs) > 0 {
		return invalid(name, errs)
	}
	return nil
}

// validateNamespace checks the namespace of a List or Watch ("" = all).
func validateNamespace(namespace string) error {
	if namespace == "" {
		return nil
	}
	if errs := checkName(field.NewPath("metadata", "namespace"), namespace, apivalidation.ValidateNamespaceName); len(errs) > 0 {
		return invalid("", errs)
	}
	return nil
}

func checkName(path *field.Path, value string, valid apivalidation.ValidateNameFunc) field.ErrorList {
	if value == "" {
		return field.ErrorList{field.Required(path, "")}
	}
	var errs field.ErrorList
	for _, msg := range valid(value, false) {
		errs = append(errs, field.Invalid(path, value, msg))
	}
	return errs
}

func notFound(name string) error { return apierrors.NewNotFound(GroupResource, name) }

func alreadyExists(name string) error { return apierrors.NewAlreadyExists(GroupResource, name) }

// errStale is the API server's message for a stale resourceVersion.
var errStale = errors.New("the object has been modified; please apply your changes to the latest version and try again")

func conflict(name string) error { return apierrors.NewConflict(GroupResource, name, errStale) }

func invalid(name string, errs field.ErrorList) error {
	return apierrors.NewInvalid(groupKind, name, errs)
}
