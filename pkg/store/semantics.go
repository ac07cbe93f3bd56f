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
	obj object
}

var metadataPath = field.NewPath("metadata")

// prepareCreate fills the system fields of a new object and drops its status.
func prepareCreate(k *kind, cur, in object, now metav1.Time) (change, error) {
	m := metaOf(in)
	if cur != nil {
		return change{}, k.alreadyExists(m.Name)
	}
	if m.ResourceVersion != "" {
		return change{}, apierrors.NewBadRequest("resourceVersion should not be set on objects to be created")
	}
	m.UID = uuid.NewUUID()
	m.CreationTimestamp = now
	m.Generation = 1
	m.DeletionTimestamp = nil
	m.DeletionGracePeriodSeconds = nil
	m.ManagedFields = nil
	k.setStatus(in, nil)
	if errs := apivalidation.ValidateObjectMeta(m, true, apivalidation.NameIsDNSSubdomain, metadataPath); len(errs) > 0 {
		return change{}, k.invalid(m.Name, errs)
	}
	if err := k.check(in); err != nil {
		return change{}, err
	}
	return change{typ: watch.Added, obj: in}, nil
}

// prepareUpdate takes metadata and spec from in and everything else from cur.
func prepareUpdate(k *kind, cur, in object, _ metav1.Time) (change, error) {
	if err := precondition(k, cur, in); err != nil {
		return change{}, err
	}
	next, c := metaOf(in), metaOf(cur)
	next.ResourceVersion = c.ResourceVersion
	if next.UID == "" {
		next.UID = c.UID
	}
	next.CreationTimestamp = c.CreationTimestamp
	next.Generation = c.Generation
	// An update never moves or clears a deletion; setting one is refused below.
	if c.DeletionTimestamp != nil {
		next.DeletionTimestamp = c.DeletionTimestamp
		next.DeletionGracePeriodSeconds = c.DeletionGracePeriodSeconds
	}
	next.ManagedFields = nil
	k.setStatus(in, cur)

	errs := apivalidation.ValidateObjectMetaUpdate(next, c, metadataPath)
	errs = append(errs, apivalidation.ValidateFinalizers(next.Finalizers, metadataPath.Child("finalizers"))...)
	if len(errs) > 0 {
		return change{}, k.invalid(next.Name, errs)
	}
	if err := k.check(in); err != nil {
		return change{}, err
	}

	specChanged := !k.specEqual(cur, in)
	if !specChanged && apiequality.Semantic.DeepEqual(c, next) {
		return change{obj: cur}, nil
	}
	if specChanged {
		next.Generation++
	}
	if next.DeletionTimestamp != nil && len(next.Finalizers) == 0 {
		return change{typ: watch.Deleted, obj: in}, nil
	}
	return change{typ: watch.Modified, obj: in}, nil
}

// prepareUpdateStatus takes status from in and everything else from cur.
func prepareUpdateStatus(k *kind, cur, in object, _ metav1.Time) (change, error) {
	if err := precondition(k, cur, in); err != nil {
		return change{}, err
	}
	if k.statusEqual(cur, in) {
		return change{obj: cur}, nil
	}
	next := deepCopy(cur)
	k.setStatus(next, in)
	return change{typ: watch.Modified, obj: next}, nil
}

// prepareDelete removes an object without finalizers, and marks one with
// finalizers as being deleted (once), as the API server does for custom
// resources: deletionTimestamp now, a zero grace period, generation + 1.
func prepareDelete(k *kind, cur object, name string, now metav1.Time) (change, error) {
	if cur == nil {
		return change{}, k.notFound(name)
	}
	c := metaOf(cur)
	if len(c.Finalizers) == 0 {
		return change{typ: watch.Deleted, obj: deepCopy(cur)}, nil
	}
	if c.DeletionTimestamp != nil {
		return change{obj: cur}, nil
	}
	next := deepCopy(cur)
	m := metaOf(next)
	m.DeletionTimestamp = &now
	m.DeletionGracePeriodSeconds = new(int64)
	m.Generation++
	return change{typ: watch.Modified, obj: next}, nil
}

// precondition is the check every update makes first: the object exists,
// its UID (when the caller names one) is the stored one, and so is its
// resourceVersion (when the caller names one). An empty resourceVersion
// updates unconditionally. A UID of another object is a Conflict, as the API
// server's UID precondition makes it: the object was deleted and made anew.
func precondition(k *kind, cur, in object) error {
	m := metaOf(in)
	if cur == nil {
		return k.notFound(m.Name)
	}
	c := metaOf(cur)
	if m.UID != "" && m.UID != c.UID {
		return apierrors.NewConflict(k.group, m.Name, fmt.Errorf(
			"Precondition failed: UID in precondition: %s, UID in object meta: %s", m.UID, c.UID))
	}
	if m.ResourceVersion != "" && m.ResourceVersion != c.ResourceVersion {
		return k.conflict(m.Name)
	}
	return nil
}
