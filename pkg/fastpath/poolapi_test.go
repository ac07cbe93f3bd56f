package fastpath

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// poolAPI serves the fast path's pool RPCs over the embedded store's pools
// (nil pools: none served) and returns a client, and the store.
func poolAPI(t *testing.T, withPools bool) (fsbv1connect.FastPathServiceClient, store.PoolInterface) {
	t.Helper()
	s, err := store.OpenEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cfg := Config{Store: s, Registry: registry.New(), Logger: slog.New(slog.DiscardHandler)}
	if withPools {
		cfg.Pools, cfg.PoolNamespace = s.Pools(), "fsb-system"
	}
	ctx, cancel := context.WithCancel(context.Background())
	fp := New(ctx, cfg)
	t.Cleanup(func() { cancel(); fp.Wait() })
	mux := http.NewServeMux()
	mux.Handle(fp.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return fsbv1connect.NewFastPathServiceClient(http.DefaultClient, srv.URL), s.Pools()
}

func TestPoolAPI(t *testing.T) {
	api, pools := poolAPI(t, true)
	ctx := context.Background()
	warm := []*fsbv1.WarmEntry{{Image: "localhost/fsb/busybox:latest", Runtime: "runc", Count: 2}}
	apply := func(p *fsbv1.SandboxPool) (*fsbv1.ApplyPoolResponse, error) {
		resp, err := api.ApplyPool(ctx, connect.NewRequest(&fsbv1.ApplyPoolRequest{Pool: p}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}

	r, err := apply(&fsbv1.SandboxPool{Name: "gpu", Namespace: "ignored", Labels: map[string]string{"a": "b"},
		Spec: &fsbv1.SandboxPoolSpec{Warm: warm}})
	if err != nil || !r.GetCreated() || !r.GetChanged() || r.GetPool().GetNamespace() != "fsb-system" || r.GetPool().GetGeneration() != 1 {
		t.Fatalf("apply a new pool: %v, %v", r, err)
	}
	r, err = apply(&fsbv1.SandboxPool{Name: "gpu", Labels: map[string]string{"a": "b"}, Spec: &fsbv1.SandboxPoolSpec{Warm: warm}})
	if err != nil || r.GetCreated() || r.GetChanged() {
		t.Fatalf("apply the same: %v, %v", r, err)
	}
	// Replace, no merge: the labels go, the capacity comes.
	r, err = apply(&fsbv1.SandboxPool{Name: "gpu", Spec: &fsbv1.SandboxPoolSpec{
		Capacity: &fsbv1.PoolCapacity{PoolMax: 2}, Warm: warm}})
	if err != nil || r.GetCreated() || !r.GetChanged() || len(r.GetPool().GetLabels()) != 0 ||
		r.GetPool().GetSpec().GetCapacity().GetPoolMax() != 2 || r.GetPool().GetGeneration() != 2 {
		t.Fatalf("apply a changed pool: %v, %v", r, err)
	}
	stored, err := pools.Get(ctx, "fsb-system", "gpu")
	if err != nil || stored.Spec.Capacity == nil || len(stored.Spec.Warm) != 1 || stored.Spec.Warm[0].Count != 2 {
		t.Fatalf("the stored pool: %+v, %v", stored, err)
	}

	for _, tc := range []struct {
		name string
		pool *fsbv1.SandboxPool
		want string
	}{
		{"no pool", nil, "pool: required"},
		{"bad name", &fsbv1.SandboxPool{Name: "GPU"}, `name "GPU"`},
		{"bad warm entry", &fsbv1.SandboxPool{Name: "p", Spec: &fsbv1.SandboxPoolSpec{
			Warm: []*fsbv1.WarmEntry{{Image: "busybox", Count: 1001}}}}, "spec.warm[0].count"},
		{"bad capacity", &fsbv1.SandboxPool{Name: "p", Spec: &fsbv1.SandboxPoolSpec{
			Capacity: &fsbv1.PoolCapacity{PoolMin: 2, PoolMax: 1}}}, "spec.capacity.poolMin"},
		{"bad template", &fsbv1.SandboxPool{Name: "p", Spec: &fsbv1.SandboxPoolSpec{AgentTemplateJson: "{"}}, "spec.agentTemplate"},
		{"bad label", &fsbv1.SandboxPool{Name: "p", Labels: map[string]string{"-x": "y"}}, "label"},
	} {
		_, err := apply(tc.pool)
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want InvalidArgument about %q", tc.name, err, tc.want)
		}
	}

	list, err := api.ListPools(ctx, connect.NewRequest(&fsbv1.ListPoolsRequest{}))
	if err != nil || len(list.Msg.GetPools()) != 1 || list.Msg.GetPools()[0].GetName() != "gpu" {
		t.Fatalf("list: %v, %v", list, err)
	}
	if _, err := api.GetPool(ctx, connect.NewRequest(&fsbv1.GetPoolRequest{Name: "none"})); connect.CodeOf(err) != connect.CodeNotFound ||
		!strings.Contains(err.Error(), "sandbox pool none not found in namespace fsb-system") {
		t.Errorf("get an absent pool: %v", err)
	}

	// A pool being deleted cannot be applied; once gone, it can.
	stored.Finalizers = []string{"test/hold"}
	if _, err := pools.Update(ctx, stored); err != nil {
		t.Fatal(err)
	}
	if _, err := api.DeletePool(ctx, connect.NewRequest(&fsbv1.DeletePoolRequest{Name: "gpu"})); err != nil {
		t.Fatalf("delete: %v", err)
	}
	got, err := api.GetPool(ctx, connect.NewRequest(&fsbv1.GetPoolRequest{Name: "gpu"}))
	if err != nil || got.Msg.GetPool().GetDeletedAt() == nil {
		t.Fatalf("get a pool being deleted: %v, %v", got, err)
	}
	if _, err := apply(&fsbv1.SandboxPool{Name: "gpu"}); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("apply a pool being deleted: %v, want FailedPrecondition", err)
	}
	held, _ := pools.Get(ctx, "fsb-system", "gpu")
	held.Finalizers = nil
	if _, err := pools.Update(ctx, held); err != nil {
		t.Fatal(err)
	}
	if _, err := api.DeletePool(ctx, connect.NewRequest(&fsbv1.DeletePoolRequest{Name: "gpu"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("delete an absent pool: %v, want NotFound", err)
	}
	if r, err := apply(&fsbv1.SandboxPool{Name: "gpu"}); err != nil || !r.GetCreated() {
		t.Errorf("apply after the pool went: %v, %v", r, err)
	}
	// A pool another writer changed meanwhile is applied over it.
	cur, _ := pools.Get(ctx, "fsb-system", "gpu")
	cur.Annotations = map[string]string{"kept": "yes"}
	if _, err := pools.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if _, err := apply(&fsbv1.SandboxPool{Name: "gpu", Spec: &fsbv1.SandboxPoolSpec{Warm: warm}}); err != nil {
		t.Fatal(err)
	}
	if after, _ := pools.Get(ctx, "fsb-system", "gpu"); after.Annotations["kept"] != "yes" || len(after.Spec.Warm) != 1 {
		t.Errorf("apply kept %+v", after.ObjectMeta)
	}
}

func TestPoolAPINotServed(t *testing.T) {
	api, _ := poolAPI(t, false)
	ctx := context.Background()
	_, err := api.ListPools(ctx, connect.NewRequest(&fsbv1.ListPoolsRequest{}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "serves no SandboxPools") {
		t.Errorf("list pools without pools served: %v", err)
	}
	_, err = api.ApplyPool(ctx, connect.NewRequest(&fsbv1.ApplyPoolRequest{Pool: &fsbv1.SandboxPool{Name: "p"}}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("apply a pool without pools served: %v", err)
	}
}
