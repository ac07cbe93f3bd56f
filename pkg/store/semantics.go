package store

import (
	"fmt"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// This file holds the API server's rules for each write, as pure functions of
// the stored object (cur, nil when absent) and the caller's private copy of
// its object (in). They mirror k8s.io/apiserver's generic registry and the
// CRD strategies, so the embedded store and Kubernetes behave alike.

// change is what one write does: the object as it is afterwards and the watch
// event the write produces. An empty typ means nothing changed: obj is the
// stored object, and nothing is written.
type change struct {
	typ watch.EventType
	obj *v1alpha1.Sandbox
}

var metadataPath = field.NewPath("metadata")

// prepareCreate fills the system fields of a new object and drops its status.
func prepareCreate(cur, in *v1alpha1.Sandbox, now metav1.Time) (change, error) {
	if cur != nil {
		return change{}, alreadyExists(in.Name)
	}
	if in.ResourceVersion != "" {
		return change{}, apierrors.NewBadRequest("resourceVersion should not be set on objects to be created")
	}
	next := in
	next.UID = uuid.NewUUID()
	next.CreationTimestamp = now
	next.Generation = 1
	next.DeletionTimestamp = nil
	next.DeletionGracePeriodSeconds = nil
	next.ManagedFields = nil
	next.Status = v1alpha1.SandboxStatus{}
	if errs := apivalidation.ValidateObjectMeta(&next.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, metadataPath); len(errs) > 0 {
		return change{}, invalid(in.Name, errs)
	}
	return change{typ: watch.Added, obj: next}, nil
}

// prepareUpdate takes metadata and spec from in and everything else from cur.
func prepareUpdate(cur, in *v1alpha1.Sandbox, _ metav1.Time) (change, error) {
	if err := precondition(cur, in); err != nil {
		return change{}, err
	}
	next := in
	next.ResourceVersion = cur.ResourceVersion
	if next.UID == "" {
		next.UID = cur.UID
	}
	next.CreationTimestamp = cur.CreationTimestamp
	next.Generation = cur.Generation
	// An update never moves or clears a deletion; setting one is refused below.
	if cur.DeletionTimestamp != nil {
		next.DeletionTimestamp = cur.DeletionTimestamp
		next.DeletionGracePeriodSeconds = cur.DeletionGracePeriodSeconds
	}
	next.ManagedFields = nil
	next.Status = *cur.Status.DeepCopy()

	errs := apivalidation.ValidateObjectMetaUpdate(&next.ObjectMeta, &cur.ObjectMeta, metadataPath)
	errs = append(errs, apivalidation.ValidateFinalizers(next.Finalizers, metadataPath.Child("finalizers"))...)
	if len(errs) > 0 {
		return change{}, invalid(in.Name, errs)
	}

	specChanged := !apiequality.Semantic.DeepEqual(cur.Spec, next.Spec)
	if !specChanged && apiequality.Semantic.DeepEqual(cur.ObjectMeta, next.ObjectMeta) {
		return change{obj: cur}, nil
	}
	if specChanged {
		next.Generation++
	}
	if next.DeletionTimestamp != nil && len(next.Finalizers) == 0 {
		return change{typ: watch.Deleted, obj: next}, nil
	}
	return change{typ: watch.Modified, obj: next}, nil
}

// prepareUpdateStatus takes status from in and everything else from cur.
func prepareUpdateStatus(cur, in *v1alpha1.Sandbox, _ metav1.Time) (change, error) {
	if err := precondition(cur, in); err != nil {
		return change{}, err
	}
	if apiequality.Semantic.DeepEqual(cur.Status, in.Status) {
		return change{obj: cur}, nil
	}
	next := cur.DeepCopy()
	next.Status = in.Status
	return change{typ: watch.Modified, obj: next}, nil
}

// prepareDelete removes an object without finalizers, and marks one with
// finalizers as being deleted (once), as the API server does for custom
// resources: deletionTimestamp now, a zero grace period, generation + 1.
func prepareDelete(cur *v1alpha1.Sandbox, name string, now metav1.Time) (change, error) {
	if cur == nil {
		return change{}, notFound(name)
	}
	if len(cur.Finalizers) == 0 {
		return change{typ: watch.Deleted, obj: cur.DeepCopy()}, nil
	}
	if cur.DeletionTimestamp != nil {
		return change{obj: cur}, nil
	}
	next := cur.DeepCopy()
	next.DeletionTimestamp = &now
	next.DeletionGracePeriodSeconds = new(int64)
	next.Generation++
	return change{typ: watch.Modified, obj: next}, nil
}

// precondition is the check every update makes first: the object exists,
// its UID (when the caller names one) is the stored one, and so is its
// resourceVersion (when the caller names one). An empty resourceVersion
// updates unconditionally. A UID of another object is a Conflict, as the API
// server's UID precondition makes it: the object was deleted and made anew.
func precondition(cur, in *v1alpha1.Sandbox) error {
	if cur == nil {
		return notFound(in.Name)
	}
	if in.UID != "" && in.UID != cur.UID {
		return apierrors.NewConflict(GroupResource, in.Name, fmt.Errorf(
			"Precondition failed: UID in precondition: %s, UID in object meta: %s", in.UID, cur.UID))
	}
	if in.ResourceVersion != "" && in.ResourceVersion != cur.ResourceVersion {
		return conflict(in.Name)
	}
	return nil
}
