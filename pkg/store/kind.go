package store

import (
	"strings"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// object is what both stores keep: a Sandbox or a SandboxPool. Both embed
// ObjectMeta, whose accessor returns it, so the API server's rules
// (semantics.go) read and write metadata the same way for either.
type object interface {
	runtime.Object
	metav1.ObjectMetaAccessor
}

func metaOf(o object) *metav1.ObjectMeta { return o.GetObjectMeta().(*metav1.ObjectMeta) }

func deepCopy(o object) object { return o.DeepCopyObject().(object) }

// kind is what the rules and the stores need to know of one resource: its
// names, its bucket in the embedded store's file, and its spec and status,
// which the status subresource keeps apart.
type kind struct {
	kind     string // "Sandbox"
	resource string // "sandboxes": the REST path segment and the bbolt bucket
	group    schema.GroupResource
	newObj   func() object
	// spec and status return pointers to the object's spec and status,
	// compared with apiequality.Semantic.
	spec   func(object) any
	status func(object) any
	// setStatus makes dst's status a deep copy of src's; src nil empties it.
	setStatus func(dst, src object)
	// validate is the schema's check of a created or updated object (the
	// embedded store holds it to what the CRD's schema holds it to); nil
	// when callers validate before they write.
	validate func(object) error
}

var sandboxKind = &kind{
	kind: "Sandbox", resource: "sandboxes", group: v1alpha1.Resource("sandboxes"),
	newObj: func() object { return new(v1alpha1.Sandbox) },
	spec:   func(o object) any { return &o.(*v1alpha1.Sandbox).Spec },
	status: func(o object) any { return &o.(*v1alpha1.Sandbox).Status },
	setStatus: func(dst, src object) {
		d := dst.(*v1alpha1.Sandbox)
		if src == nil {
			d.Status = v1alpha1.SandboxStatus{}
			return
		}
		d.Status = *src.(*v1alpha1.Sandbox).Status.DeepCopy()
	},
}

var poolKind = &kind{
	kind: "SandboxPool", resource: "sandboxpools", group: v1alpha1.Resource("sandboxpools"),
	newObj: func() object { return new(v1alpha1.SandboxPool) },
	spec:   func(o object) any { return &o.(*v1alpha1.SandboxPool).Spec },
	status: func(o object) any { return &o.(*v1alpha1.SandboxPool).Status },
	setStatus: func(dst, src object) {
		d := dst.(*v1alpha1.SandboxPool)
		if src == nil {
			d.Status = v1alpha1.SandboxPoolStatus{}
			return
		}
		d.Status = *src.(*v1alpha1.SandboxPool).Status.DeepCopy()
	},
	validate: func(o object) error { return v1alpha1.ValidatePool(o.(*v1alpha1.SandboxPool)) },
}

// kinds are the resources the embedded store keeps, each in its bucket.
var kinds = []*kind{sandboxKind, poolKind}

func (k *kind) groupKind() schema.GroupKind {
	return v1alpha1.GroupVersion.WithKind(k.kind).GroupKind()
}

func (k *kind) notFound(name string) error { return apierrors.NewNotFound(k.group, name) }

func (k *kind) alreadyExists(name string) error { return apierrors.NewAlreadyExists(k.group, name) }

func (k *kind) conflict(name string) error { return apierrors.NewConflict(k.group, name, errStale) }

func (k *kind) invalid(name string, errs field.ErrorList) error {
	return apierrors.NewInvalid(k.groupKind(), name, errs)
}

// check runs the kind's validation as the API server's schema would: an
// Invalid error naming the object.
func (k *kind) check(o object) error {
	if k.validate == nil {
		return nil
	}
	if err := k.validate(o); err != nil {
		// v1alpha1's messages start with the field they are about.
		path, detail, ok := strings.Cut(err.Error(), " ")
		if !ok {
			path, detail = "", err.Error()
		}
		return k.invalid(metaOf(o).Name, field.ErrorList{&field.Error{
			Type: field.ErrorTypeInvalid, Field: path, BadValue: field.OmitValueType{}, Detail: detail}})
	}
	return nil
}

func (k *kind) specEqual(a, b object) bool {
	return apiequality.Semantic.DeepEqual(k.spec(a), k.spec(b))
}

func (k *kind) statusEqual(a, b object) bool {
	return apiequality.Semantic.DeepEqual(k.status(a), k.status(b))
}
