package registry

import (
	"maps"
	"testing"
)

func withWarm(a Agent, stock map[string]int) Agent {
	a.Warm = stock
	return a
}

// TestWarmPreferred: a create of a kind some agent holds warm goes there,
// before the least loaded agent, as long as the agent's count lasts.
func TestWarmPreferred(t *testing.T) {
	r := New()
	r.Upsert(withWarm(healthy("a", 4), map[string]int{"k": 2}))
	r.Upsert(healthy("b", 10))
	for i, want := range []string{"a", "a", "b"} {
		id := string(rune('1' + i))
		p, err := r.Allocate(Request{SandboxID: id, Warm: "k"})
		if err != nil || p.AgentID != want {
			t.Fatalf("create %d of kind k: %+v, %v; want agent %s", i+1, p, err, want)
		}
	}
	// No kind, or another: the least loaded agent.
	for _, warm := range []string{"", "other"} {
		if p, err := r.Allocate(Request{SandboxID: "x" + warm, Warm: warm}); err != nil || p.AgentID != "b" {
			t.Errorf("create of kind %q: %+v, %v; want agent b", warm, p, err)
		}
	}
	if got := r.WarmStock(""); len(got) != 0 {
		t.Errorf("stock after both were claimed: %v", got)
	}
	// The agent's next report is the truth again.
	r.Upsert(withWarm(healthy("a", 4), map[string]int{"k": 1}))
	if got := r.WarmStock(""); !maps.Equal(got, map[string]int{"k": 1}) {
		t.Errorf("stock after a report of 1: %v", got)
	}
}

// TestWarmHolderMustBePlaceable: a holder that is unhealthy, cordoned,
// full, has a port in use or serves another pool is passed over.
func TestWarmHolderMustBePlaceable(t *testing.T) {
	stock := map[string]int{"k": 3}
	for _, c := range []struct {
		name  string
		setup func(r *Registry)
		req   Request
	}{
		{"unhealthy", func(r *Registry) {
			a := withWarm(healthy("a", 4), stock)
			a.Healthy = false
			r.Upsert(a)
		}, Request{SandboxID: "s", Warm: "k"}},
		{"cordoned", func(r *Registry) {
			r.Upsert(withWarm(healthy("a", 4), stock))
			if err := r.Cordon("a"); err != nil {
				t.Fatal(err)
			}
		}, Request{SandboxID: "s", Warm: "k"}},
		{"full", func(r *Registry) {
			r.Upsert(withWarm(healthy("a", 1), stock))
			if err := r.Assign("held", "a", nil); err != nil {
				t.Fatal(err)
			}
		}, Request{SandboxID: "s", Warm: "k"}},
		{"port in use", func(r *Registry) {
			r.Upsert(withWarm(healthy("a", 4), stock))
			if err := r.Assign("held", "a", []int32{80}); err != nil {
				t.Fatal(err)
			}
		}, Request{SandboxID: "s", Warm: "k", Ports: []int32{80}}},
		{"other pool", func(r *Registry) {
			a := withWarm(healthy("a", 4), stock)
			a.Pool = "p"
			r.Upsert(a)
		}, Request{SandboxID: "s", Warm: "k"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := New()
			c.setup(r)
			r.Upsert(healthy("b", 2))
			if p, err := r.Allocate(c.req); err != nil || p.AgentID != "b" {
				t.Errorf("%+v, %v; want agent b", p, err)
			}
		})
	}
}

// TestWarmFollowsTheAgent: a holder that moves to another pool, or is
// removed, holds nothing where it was.
func TestWarmFollowsTheAgent(t *testing.T) {
	r := New()
	r.DeclarePool("p", true)
	r.Upsert(withWarm(healthy("a", 4), map[string]int{"k": 2}))
	moved := withWarm(healthy("a", 4), map[string]int{"k": 2})
	moved.Pool = "p"
	r.Upsert(moved)
	if got := r.WarmStock(""); len(got) != 0 {
		t.Errorf("default pool's stock after its holder moved: %v", got)
	}
	if got := r.WarmStock("p"); !maps.Equal(got, map[string]int{"k": 2}) {
		t.Errorf("pool p's stock: %v", got)
	}
	if p, err := r.Allocate(Request{SandboxID: "s", Pool: "p", Warm: "k"}); err != nil || p.AgentID != "a" {
		t.Errorf("claim in pool p: %+v, %v", p, err)
	}
	r.Remove("a")
	if got := r.WarmStock("p"); len(got) != 0 {
		t.Errorf("stock after its holder was removed: %v", got)
	}
}
