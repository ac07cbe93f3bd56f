package agentpool

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// warmCall is one call of the Warm hook.
type warmCall struct {
	pool  string
	count []int32 // each entry's count; nil: no entries
}

// TestDeclarerOnTheEmbeddedStore: the declarer declares the pools of the
// embedded store's pool namespace in the registry (closed once being
// deleted, forgotten once gone), ignores other namespaces, never declares
// the pool named default, and tells Warm of each pool's entries when they
// change — the default pool's as pool "" — and nil when a pool goes.
func TestDeclarerOnTheEmbeddedStore(t *testing.T) {
	s, err := store.OpenEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pools := s.Pools()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const ns = "fsb-system"
	entry := func(n int32) []v1alpha1.WarmEntry {
		return []v1alpha1.WarmEntry{{Image: "docker.io/library/busybox:latest", Count: n}}
	}
	mk := func(ns, name string, warm []v1alpha1.WarmEntry) *v1alpha1.SandboxPool {
		p, err := pools.Create(ctx, &v1alpha1.SandboxPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: v1alpha1.SandboxPoolSpec{Warm: warm}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Listed at the start: declared before Start returns.
	mk(ns, "early", nil)

	var mu sync.Mutex
	var warm []warmCall
	var changed []string
	reg := registry.New()
	d, err := NewDeclarer(DeclarerConfig{
		ListWatch: store.PoolListWatch(pools, ns), Namespace: ns, Registry: reg,
		Changed: func(pool string) { mu.Lock(); changed = append(changed, pool); mu.Unlock() },
		Warm: func(pool string, entries []v1alpha1.WarmEntry) {
			c := warmCall{pool: pool}
			for _, e := range entries {
				c.count = append(c.count, e.Count)
			}
			mu.Lock()
			warm = append(warm, c)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	synced := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- d.Start(ctx, synced) }()
	select {
	case <-synced:
	case <-time.After(10 * time.Second):
		t.Fatal("never synced")
	}
	// Start returns once synced; the informer runs on until ctx ends.
	if err := <-done; err != nil {
		t.Fatalf("start: %v", err)
	}
	// allocate tells what the registry says of a pool: nil (declared, no
	// agent), or its PoolError.
	poolErr := func(pool string) *registry.PoolError {
		_, err := reg.Allocate(registry.Request{SandboxID: "x", Image: "i", Pool: pool})
		var pe *registry.PoolError
		if errors.As(err, &pe) {
			return pe
		}
		return nil
	}
	eventually := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("%s: never (warm calls %v, changed %v)", what, warm, changed)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if pe := poolErr("early"); pe != nil {
		t.Fatalf("a pool listed at the start is not declared once synced: %v", pe)
	}

	gpu := mk(ns, "gpu", entry(2))
	mk("elsewhere", "other", entry(1))
	mk(ns, v1alpha1.DefaultPool, entry(3))
	eventually("gpu declared", func() bool { return poolErr("gpu") == nil })
	eventually("the default pool's warm entries", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.ContainsFunc(warm, func(c warmCall) bool { return c.pool == "" })
	})
	if pe := poolErr("other"); pe == nil || pe.Closed {
		t.Errorf("a pool of another namespace: %v, want not found", pe)
	}
	if pe := poolErr(v1alpha1.DefaultPool); pe == nil {
		t.Errorf("the pool named default was declared as a pool of its own")
	}

	// A label changes no warm entries; a count does.
	gpu.Labels = map[string]string{"a": "b"}
	if gpu, err = pools.Update(ctx, gpu); err != nil {
		t.Fatal(err)
	}
	gpu.Spec.Warm = entry(5)
	if gpu, err = pools.Update(ctx, gpu); err != nil {
		t.Fatal(err)
	}
	eventually("gpu's new count", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.ContainsFunc(warm, func(c warmCall) bool { return c.pool == "gpu" && slices.Equal(c.count, []int32{5}) })
	})

	// Being deleted (a finalizer holds it): closed, no warm entries; gone:
	// forgotten.
	gpu.Finalizers = []string{"test/hold"}
	if gpu, err = pools.Update(ctx, gpu); err != nil {
		t.Fatal(err)
	}
	if err := pools.Delete(ctx, ns, "gpu"); err != nil {
		t.Fatal(err)
	}
	eventually("gpu closed", func() bool { pe := poolErr("gpu"); return pe != nil && pe.Closed })
	gpu, err = pools.Get(ctx, ns, "gpu")
	if err != nil {
		t.Fatal(err)
	}
	gpu.Finalizers = nil
	if _, err := pools.Update(ctx, gpu); err != nil {
		t.Fatal(err)
	}
	eventually("gpu forgotten", func() bool { pe := poolErr("gpu"); return pe != nil && !pe.Closed })
	if err := pools.Delete(ctx, ns, v1alpha1.DefaultPool); err != nil {
		t.Fatal(err)
	}
	eventually("the default pool's entries withdrawn", func() bool {
		mu.Lock()
		defer mu.Unlock()
		last := warm[len(warm)-1]
		return last.pool == "" && last.count == nil
	})

	mu.Lock()
	defer mu.Unlock()
	want := []warmCall{{"gpu", []int32{2}}, {"", []int32{3}}, {"gpu", []int32{5}}, {"gpu", nil}, {"", nil}}
	if len(warm) != len(want) {
		t.Fatalf("warm calls %v, want %v", warm, want)
	}
	for i := range want {
		if warm[i].pool != want[i].pool || !slices.Equal(warm[i].count, want[i].count) {
			t.Errorf("warm call %d: %v, want %v (all: %v)", i, warm[i], want[i], warm)
		}
	}
	// Changed hears of early and gpu declared, gpu closed, gpu forgotten.
	if got := slices.Compact(slices.Clone(changed)); !slices.Equal(got, []string{"early", "gpu"}) || len(changed) != 4 {
		t.Errorf("Changed heard %v, want early, then gpu three times", changed)
	}
}
