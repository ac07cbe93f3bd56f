package registry

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

func TestPoolsMustBeDeclared(t *testing.T) {
	gpu := healthy("gpu", 5)
	gpu.Pool = "gpu"
	r := New()
	r.Upsert(healthy("a", 5))
	r.Upsert(gpu)

	refused := func(id string, want error, closed bool) {
		t.Helper()
		_, err := r.Allocate(Request{SandboxID: id, Pool: "gpu"})
		var pe *PoolError
		if !errors.Is(err, want) || !errors.As(err, &pe) || pe.Pool != "gpu" || pe.Closed != closed {
			t.Fatalf("Allocate %s in pool gpu: %v, want a *PoolError wrapping %v", id, err, want)
		}
		if _, ok := r.Lookup(id); ok {
			t.Fatalf("a refused sandbox %s is placed", id)
		}
	}
	refused("s1", ErrNoPool, false)
	if got := fmt.Sprint(&PoolError{Pool: "gpu"}); got != `sandbox pool "gpu" not found` {
		t.Errorf("message %q", got)
	}

	r.DeclarePool("gpu", true)
	p, err := r.Allocate(Request{SandboxID: "s1", Pool: "gpu"})
	if err != nil || p.AgentID != "gpu" {
		t.Fatalf("Allocate in a declared pool = %+v, %v; want agent gpu", p, err)
	}

	r.DeclarePool("gpu", false)
	refused("s2", ErrPoolClosed, true)
	// A placed sandbox keeps its placement: a retried create is not refused.
	if again, err := r.Allocate(Request{SandboxID: "s1", Pool: "gpu"}); err != nil || again != p {
		t.Errorf("re-Allocate of a placed sandbox in a closed pool = %+v, %v; want %+v", again, err, p)
	}

	r.ForgetPool("gpu")
	refused("s3", ErrNoPool, false)
	// The default pool needs no declaration and is not affected.
	r.DeclarePool("", false)
	if p, err := r.Allocate(Request{SandboxID: "s4"}); err != nil || p.AgentID != "a" {
		t.Errorf("Allocate in the default pool = %+v, %v; want agent a", p, err)
	}
}

func TestPoolAgents(t *testing.T) {
	inPool := func(id, pool string) Agent { a := healthy(id, 2); a.Pool = pool; return a }
	r := newRegistry(t, []Agent{inPool("b", "p"), inPool("a", "p"), inPool("c", "q"), healthy("d", 2)},
		[]running{{id: "s", agent: "b"}})
	got := r.PoolAgents("p")
	if len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" || got[1].Used != 1 || got[1].Sandboxes[0] != "s" {
		t.Fatalf("PoolAgents(p) = %+v; want a, then b with sandbox s", got)
	}
	if def := r.PoolAgents(""); len(def) != 1 || def[0].ID != "d" {
		t.Errorf("PoolAgents(\"\") = %+v; want d", def)
	}
	if none := r.PoolAgents("none"); len(none) != 0 {
		t.Errorf("PoolAgents(none) = %+v", none)
	}
}

func TestCordon(t *testing.T) {
	inPool := func(id string) Agent { a := healthy(id, 2); a.Pool = "p"; return a }
	r := newRegistry(t, []Agent{inPool("busy"), inPool("idle")}, []running{{id: "s", agent: "busy"}})

	if err := r.Cordon("busy"); !errors.Is(err, ErrAgentBusy) {
		t.Fatalf("Cordon of an agent with a sandbox: %v, want ErrAgentBusy", err)
	}
	if err := r.Cordon("nobody"); !errors.Is(err, ErrUnknownAgent) {
		t.Fatalf("Cordon of an unknown agent: %v, want ErrUnknownAgent", err)
	}
	if err := r.Cordon("idle"); err != nil {
		t.Fatalf("Cordon(idle): %v", err)
	}
	if err := r.Cordon("idle"); err != nil {
		t.Fatalf("Cordon twice: %v", err)
	}
	// A status update keeps it cordoned.
	r.Upsert(inPool("idle"))
	if !find(r.Agents(), "idle").Cordoned || find(r.Agents(), "busy").Cordoned {
		t.Fatalf("snapshot: %+v", r.Agents())
	}
	p, err := r.Allocate(Request{SandboxID: "n1", Pool: "p"})
	if err != nil || p.AgentID != "busy" {
		t.Fatalf("Allocate beside a cordoned agent = %+v, %v; want busy", p, err)
	}
	_, err = r.Allocate(Request{SandboxID: "n2", Pool: "p"})
	want := `no capacity for sandbox "n2": none of 2 agents can take it: 1 is full, 1 is being removed`
	if !errors.Is(err, ErrNoCapacity) || err.Error() != want {
		t.Fatalf("Allocate with the only free agent cordoned: %v\nwant %s", err, want)
	}
	var nc *NoCapacityError
	if errors.As(err, &nc); nc == nil || nc.Cordoned != 1 {
		t.Errorf("NoCapacityError %+v, want Cordoned 1", nc)
	}

	r.Uncordon("idle")
	if p, err := r.Allocate(Request{SandboxID: "n2", Pool: "p"}); err != nil || p.AgentID != "idle" {
		t.Fatalf("Allocate after Uncordon = %+v, %v; want idle", p, err)
	}
	// Removed and back: a new agent, not cordoned.
	r.Release("n2")
	if err := r.Cordon("idle"); err != nil {
		t.Fatal(err)
	}
	r.Remove("idle")
	r.Upsert(inPool("idle"))
	if find(r.Agents(), "idle").Cordoned {
		t.Error("an agent removed and registered again is still cordoned")
	}
}

// TestCordonRacesAllocate: while creates allocate and release in a pool,
// another goroutine cordons its agents as a scale-down does. No create may
// land on a cordoned agent: a successful Cordon holds an agent that stays
// empty until Uncordon.
func TestCordonRacesAllocate(t *testing.T) {
	r := New()
	r.DeclarePool("p", true)
	for i := range 3 {
		a := healthy(fmt.Sprint("a", i), 2)
		a.Pool = "p"
		r.Upsert(a)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var placed atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load() && i < 20000; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				if _, err := r.Allocate(Request{SandboxID: id, Pool: "p"}); err == nil {
					placed.Add(1)
					r.Release(id)
				} else if !errors.Is(err, ErrNoCapacity) {
					t.Errorf("Allocate: %v", err)
					return
				}
			}
		})
	}
	cordons := 0
	for i := 0; i < 20000 && placed.Load() < 20000; i++ {
		id := fmt.Sprint("a", i%3)
		if err := r.Cordon(id); err != nil {
			if !errors.Is(err, ErrAgentBusy) {
				t.Fatal(err)
			}
			continue
		}
		cordons++
		for range 3 {
			if a := find(r.PoolAgents("p"), id); a.Used != 0 {
				t.Fatalf("a sandbox landed on cordoned agent %s: %+v", id, a)
			}
		}
		r.Uncordon(id)
	}
	stop.Store(true)
	wg.Wait()
	if cordons == 0 || placed.Load() == 0 {
		t.Fatalf("%d cordons, %d placements: the race was not exercised", cordons, placed.Load())
	}
	t.Logf("%d cordons beside %d placements", cordons, placed.Load())
}

func TestRemoveIfEmpty(t *testing.T) {
	r := newRegistry(t, []Agent{healthy("busy", 2), healthy("idle", 2)}, []running{{id: "s", agent: "busy"}})
	if r.RemoveIfEmpty("busy") {
		t.Error("RemoveIfEmpty removed an agent with a sandbox")
	}
	if !r.RemoveIfEmpty("idle") {
		t.Error("RemoveIfEmpty kept an agent with no sandbox")
	}
	if r.RemoveIfEmpty("nobody") {
		t.Error("RemoveIfEmpty of an unknown agent reported a removal")
	}
	if got := r.Agents(); len(got) != 1 || got[0].ID != "busy" {
		t.Fatalf("agents %+v, want busy only", got)
	}
	if _, err := r.Allocate(Request{SandboxID: "n"}); err != nil {
		t.Fatalf("Allocate after a removal: %v", err) // busy has a free slot; the index is intact
	}
}
