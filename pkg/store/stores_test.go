package store_test

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// The contract's tests run on both stores: the embedded one in a temp dir,
// and the kube one on the rig's API server (rig.Kube: make test starts it).
var storeKinds = []struct {
	name string
	// open makes a fresh store; the kube store has no options (the API
	// server's watch cache is its own).
	open func(t testing.TB, opts ...store.Option) store.Interface
}{
	{"embedded", func(t testing.TB, opts ...store.Option) store.Interface { return open(t, opts...) }},
	{"kube", func(t testing.TB, _ ...store.Option) store.Interface { return openKube(t) }},
}

// eachStore runs f once per store kind, as subtests named after the kind.
func eachStore(t *testing.T, f func(t *testing.T, s store.Interface)) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) { f(t, k.open(t)) })
	}
}

// eachKind runs f once per store kind with the kind's constructor, for tests
// that open a fresh store per case.
func eachKind(t *testing.T, f func(t *testing.T, open func(testing.TB, ...store.Option) store.Interface)) {
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) { f(t, k.open) })
	}
}

// isKube tells the tests where the API server behaves differently from the
// embedded store on purpose (a shared server, global resourceVersions).
func isKube(s store.Interface) bool {
	_, ok := s.(*kubeView)
	return ok
}

// kubeView is a Kube store seen through namespaces of the test's own. The
// API server is shared by every package's tests, so the tests' namespaces
// ("default", "team-a", ...) become fresh rig namespaces (made on a test's
// first create in them), and a list or watch of every namespace is narrowed
// to the test's. Invalid namespaces pass through unchanged, so the store's
// validation still sees them.
type kubeView struct {
	t     testing.TB
	kube  *store.Kube
	mu    sync.Mutex
	real  map[string]string // test namespace -> rig namespace
	names map[string]string // rig namespace -> test namespace
}

func openKube(t testing.TB) *kubeView {
	t.Helper()
	env := rig.Kube(t)
	k, err := store.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	v := &kubeView{t: t, kube: k, real: map[string]string{}, names: map[string]string{}}
	v.real["default"], v.names[env.Namespace] = env.Namespace, "default"
	return v
}

// ns maps a test namespace to its rig namespace; create makes one when
// there is none yet.
func (v *kubeView) ns(name string, create bool) string {
	if name == "" || len(validation.ValidateNamespaceName(name, false)) > 0 {
		return name
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if real, ok := v.real[name]; ok {
		return real
	}
	if !create {
		return "absent-" + name // a namespace nobody made lists empty
	}
	real := rig.Kube(v.t).Namespace
	v.real[name], v.names[real] = real, name
	return real
}

// back maps an object from the API server to the test's namespaces; false
// when it is in no namespace of the test.
func (v *kubeView) back(sb *v1alpha1.Sandbox) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	name, ok := v.names[sb.Namespace]
	if ok {
		sb.Namespace = name
	}
	return ok
}

func (v *kubeView) in(sb *v1alpha1.Sandbox, create bool) *v1alpha1.Sandbox {
	if sb == nil {
		return nil
	}
	cp := sb.DeepCopy()
	cp.Namespace = v.ns(sb.Namespace, create)
	return cp
}

func (v *kubeView) out(sb *v1alpha1.Sandbox, err error) (*v1alpha1.Sandbox, error) {
	if err != nil {
		return nil, err
	}
	v.back(sb)
	return sb, nil
}

func (v *kubeView) Create(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	return v.out(v.kube.Create(ctx, v.in(sb, true)))
}

func (v *kubeView) Update(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	return v.out(v.kube.Update(ctx, v.in(sb, false)))
}

func (v *kubeView) UpdateStatus(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	return v.out(v.kube.UpdateStatus(ctx, v.in(sb, false)))
}

func (v *kubeView) Delete(ctx context.Context, namespace, name string) error {
	return v.kube.Delete(ctx, v.ns(namespace, false), name)
}

func (v *kubeView) Get(ctx context.Context, namespace, name string) (*v1alpha1.Sandbox, error) {
	return v.out(v.kube.Get(ctx, v.ns(namespace, false), name))
}

func (v *kubeView) List(ctx context.Context, namespace string, selector labels.Selector) (*v1alpha1.SandboxList, error) {
	list, err := v.kube.List(ctx, v.ns(namespace, false), selector)
	if err != nil {
		return nil, err
	}
	items := make([]v1alpha1.Sandbox, 0, len(list.Items))
	for i, it := range list.Items {
		// The API server lists in etcd's key order: by namespace, then name.
		if i > 0 {
			if prev := list.Items[i-1]; prev.Namespace > it.Namespace || (prev.Namespace == it.Namespace && prev.Name >= it.Name) {
				v.t.Errorf("the API server listed %s/%s before %s/%s", prev.Namespace, prev.Name, it.Namespace, it.Name)
			}
		}
		if v.back(&it) {
			items = append(items, it)
		}
	}
	// Sorted again in the test's namespaces, as the embedded store sorts.
	slices.SortFunc(items, func(a, b v1alpha1.Sandbox) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	list.Items = items
	return list, nil
}

func (v *kubeView) Watch(ctx context.Context, namespace, resourceVersion string) (watch.Interface, error) {
	w, err := v.kube.Watch(ctx, v.ns(namespace, false), resourceVersion)
	if err != nil {
		return nil, err
	}
	return watch.Filter(w, func(e watch.Event) (watch.Event, bool) {
		sb, ok := e.Object.(*v1alpha1.Sandbox)
		if !ok {
			return e, true // an error or a bookmark: the consumer's business
		}
		return e, v.back(sb)
	}), nil
}
