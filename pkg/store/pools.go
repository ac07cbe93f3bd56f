package store

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// EmbeddedPools is the embedded store's PoolInterface: SandboxPools in the
// same file as the Sandboxes, in their own bucket, written by the same
// committer and numbered by the same revision counter.
type EmbeddedPools struct{ s *Embedded }

var _ PoolInterface = EmbeddedPools{}

// Pools returns the store's SandboxPools.
func (s *Embedded) Pools() EmbeddedPools { return EmbeddedPools{s} }

// Create implements PoolInterface.
func (p EmbeddedPools) Create(ctx context.Context, pool *v1alpha1.SandboxPool) (*v1alpha1.SandboxPool, error) {
	return typed[*v1alpha1.SandboxPool](p.s.create(ctx, poolKind, pool))
}

// Update implements PoolInterface.
func (p EmbeddedPools) Update(ctx context.Context, pool *v1alpha1.SandboxPool) (*v1alpha1.SandboxPool, error) {
	return typed[*v1alpha1.SandboxPool](p.s.update(ctx, poolKind, pool))
}

// UpdateStatus implements PoolInterface.
func (p EmbeddedPools) UpdateStatus(ctx context.Context, pool *v1alpha1.SandboxPool) (*v1alpha1.SandboxPool, error) {
	return typed[*v1alpha1.SandboxPool](p.s.updateStatus(ctx, poolKind, pool))
}

// Delete implements PoolInterface.
func (p EmbeddedPools) Delete(ctx context.Context, namespace, name string) error {
	return p.s.delete(ctx, poolKind, namespace, name)
}

// Get implements PoolInterface.
func (p EmbeddedPools) Get(ctx context.Context, namespace, name string) (*v1alpha1.SandboxPool, error) {
	return typed[*v1alpha1.SandboxPool](p.s.get(ctx, poolKind, namespace, name))
}

// List implements PoolInterface. Items are sorted by namespace and name.
func (p EmbeddedPools) List(ctx context.Context, namespace string, selector labels.Selector) (*v1alpha1.SandboxPoolList, error) {
	objs, rv, err := p.s.list(ctx, poolKind, namespace, selector)
	if err != nil {
		return nil, err
	}
	list := &v1alpha1.SandboxPoolList{ListMeta: metav1.ListMeta{ResourceVersion: rv},
		Items: make([]v1alpha1.SandboxPool, len(objs))}
	for i, obj := range objs {
		obj.(*v1alpha1.SandboxPool).DeepCopyInto(&list.Items[i])
	}
	return list, nil
}

// Watch implements PoolInterface.
func (p EmbeddedPools) Watch(ctx context.Context, namespace, resourceVersion string) (watch.Interface, error) {
	return p.s.watch(ctx, poolKind, namespace, resourceVersion)
}
