package agentpool

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// poolsResource is SandboxPools' path segment.
const poolsResource = "sandboxpools"

// pools reads and writes SandboxPool objects through a typed REST client
// on the v1alpha1 scheme, as pkg/store's kube store does Sandboxes.
type pools struct {
	client rest.Interface
	params runtime.ParameterCodec
}

func newPools(cfg *rest.Config) (*pools, error) {
	client, params, err := v1alpha1.RESTClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("sandbox pools: %w", err)
	}
	return &pools{client: client, params: params}, nil
}

// listWatch lists and watches the pools of every namespace, for an
// informer: misplaced pools are seen too, to be told where pools belong.
func (p *pools) listWatch() *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			out := &v1alpha1.SandboxPoolList{}
			err := p.client.Get().Resource(poolsResource).VersionedParams(&opts, p.params).Do(ctx).Into(out)
			return out, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.Watch = true
			return p.client.Get().Resource(poolsResource).VersionedParams(&opts, p.params).Watch(ctx)
		},
	}
}

// update writes pool's metadata and spec (its finalizers).
func (p *pools) update(ctx context.Context, pool *v1alpha1.SandboxPool) (*v1alpha1.SandboxPool, error) {
	out := &v1alpha1.SandboxPool{}
	err := p.client.Put().Namespace(pool.Namespace).Resource(poolsResource).Name(pool.Name).Body(pool).Do(ctx).Into(out)
	return out, err
}

// updateStatus writes pool's status through the status subresource.
func (p *pools) updateStatus(ctx context.Context, pool *v1alpha1.SandboxPool) (*v1alpha1.SandboxPool, error) {
	out := &v1alpha1.SandboxPool{}
	err := p.client.Put().Namespace(pool.Namespace).Resource(poolsResource).Name(pool.Name).SubResource("status").
		Body(pool).Do(ctx).Into(out)
	return out, err
}
