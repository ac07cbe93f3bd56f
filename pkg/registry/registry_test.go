package registry

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

const busybox = "localhost/fsb/busybox:latest"

// running is a sandbox already on an agent before the request under test.
type running struct {
	id, agent string
	ports     []int32
}

// newRegistry returns a registry with agents and what already runs on them;
// the agents' pools are declared.
func newRegistry(t *testing.T, agents []Agent, run []running) *Registry {
	t.Helper()
	r := New()
	for _, a := range agents {
		r.Upsert(a)
		r.DeclarePool(a.Pool, true)
	}
	for _, s := range run {
		if err := r.Assign(s.id, s.agent, s.ports); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// fill returns n sandboxes running on agent, named after it.
func fill(agent string, n int) []running {
	out := make([]running, n)
	for i := range out {
		out[i] = running{id: fmt.Sprintf("%s-%d", agent, i), agent: agent}
	}
	return out
}

func healthy(id string, capacity int, images ...string) Agent {
	return Agent{ID: id, Address: id + ":7788", NodeName: "node-" + id, Capacity: capacity, Images: images, Healthy: true}
}

func TestAllocate(t *testing.T) {
	gvisor := healthy("g", 5)
	gvisor.Runtimes = []string{"runc", "gvisor"}
	crun := healthy("c", 5)
	crun.Runtimes = []string{"crun"}
	sick := healthy("sick", 10, busybox)
	sick.Healthy = false
	gpu := healthy("gpu", 5)
	gpu.Pool = "gpu"

	tests := []struct {
		name   string
		agents []Agent
		run    []running
		req    Request
		want   string // agent ID; "" means ErrNoCapacity, or wantErr
		// wantErr is the error a refused request wraps when it is not
		// ErrNoCapacity.
		wantErr error
	}{
		{
			name:   "image holder wins although more loaded",
			agents: []Agent{healthy("a", 10, busybox), healthy("b", 10)},
			run:    fill("a", 9),
			req:    Request{Image: busybox},
			want:   "a",
		},
		{
			name:   "full image holder falls back to the least loaded",
			agents: []Agent{healthy("a", 2, busybox), healthy("b", 10), healthy("c", 10)},
			run:    append(fill("a", 2), fill("b", 1)...),
			req:    Request{Image: busybox},
			want:   "c",
		},
		{
			name:   "least loaded among image holders",
			agents: []Agent{healthy("a", 5, busybox), healthy("b", 5, busybox), healthy("c", 5)},
			run:    append(fill("a", 2), fill("b", 1)...),
			req:    Request{Image: busybox},
			want:   "b",
		},
		{
			name:   "least loaded among equals",
			agents: []Agent{healthy("a", 5), healthy("b", 5), healthy("c", 5)},
			run:    append(fill("a", 2), fill("c", 1)...),
			req:    Request{Image: busybox},
			want:   "b",
		},
		{
			name:   "least loaded means most free slots",
			agents: []Agent{healthy("small", 4), healthy("big", 10)},
			run:    fill("big", 3),
			want:   "big",
		},
		{
			name:   "a wild capacity is just many slots",
			agents: []Agent{healthy("a", 5), healthy("huge", 1<<40)},
			run:    fill("huge", 3),
			want:   "huge",
		},
		{
			name:   "capacity respected",
			agents: []Agent{healthy("a", 2, busybox), healthy("b", 1)},
			run:    append(fill("a", 2), fill("b", 1)...),
			req:    Request{Image: busybox},
		},
		{
			name:   "zero capacity takes nothing",
			agents: []Agent{healthy("a", 0)},
		},
		{
			name:   "port in use passes the agent over",
			agents: []Agent{healthy("a", 10), healthy("b", 10)},
			run:    append([]running{{id: "web", agent: "a", ports: []int32{8080}}}, fill("b", 5)...),
			req:    Request{Ports: []int32{8080}},
			want:   "b",
		},
		{
			name:   "port in use passes the image holder over",
			agents: []Agent{healthy("a", 10, busybox), healthy("b", 10)},
			run:    []running{{id: "web", agent: "a", ports: []int32{9000, 8080}}},
			req:    Request{Image: busybox, Ports: []int32{22, 8080}},
			want:   "b",
		},
		{
			name:   "other ports do not conflict",
			agents: []Agent{healthy("a", 10), healthy("b", 10)},
			run:    append([]running{{id: "web", agent: "a", ports: []int32{8080}}}, fill("b", 5)...),
			req:    Request{Ports: []int32{8081}},
			want:   "a",
		},
		{
			name:   "port in use everywhere",
			agents: []Agent{healthy("a", 10), healthy("b", 10)},
			run:    []running{{id: "w1", agent: "a", ports: []int32{8080}}, {id: "w2", agent: "b", ports: []int32{8080}}},
			req:    Request{Ports: []int32{8080}},
		},
		{
			name:   "unhealthy agent skipped",
			agents: []Agent{sick, healthy("b", 5)},
			run:    fill("b", 4),
			req:    Request{Image: busybox},
			want:   "b",
		},
		{
			name:   "runtime required",
			agents: []Agent{healthy("a", 10), gvisor},
			run:    fill("g", 4),
			req:    Request{Runtime: "gvisor"},
			want:   "g",
		},
		{
			name:   "no agent with the runtime",
			agents: []Agent{healthy("a", 10), crun},
			req:    Request{Runtime: "gvisor"},
		},
		{
			name:   "empty runtime means runc",
			agents: []Agent{crun, healthy("a", 5)},
			run:    fill("a", 4),
			want:   "a",
		},
		{
			name:   "named pool only",
			agents: []Agent{healthy("a", 10), gpu},
			run:    fill("gpu", 4),
			req:    Request{Pool: "gpu"},
			want:   "gpu",
		},
		{
			name:   "no pool means the default pool",
			agents: []Agent{healthy("a", 10), gpu},
			run:    fill("a", 8),
			want:   "a",
		},
		{
			name:   "a full default pool does not spill into a named one",
			agents: []Agent{healthy("a", 2), gpu},
			run:    fill("a", 2),
		},
		{
			name:    "undeclared pool",
			agents:  []Agent{healthy("a", 10), gpu},
			req:     Request{Pool: "tpu"},
			wantErr: ErrNoPool,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRegistry(t, tt.agents, tt.run)
			tt.req.SandboxID = "new"
			p, err := r.Allocate(tt.req)
			if tt.want == "" {
				if want := cmp.Or(tt.wantErr, ErrNoCapacity); !errors.Is(err, want) {
					t.Fatalf("Allocate = %+v, %v; want %v", p, err, want)
				}
				if _, ok := r.Lookup("new"); ok {
					t.Error("a refused sandbox is placed")
				}
				return
			}
			if err != nil {
				t.Fatalf("Allocate: %v", err)
			}
			want := Placement{AgentID: tt.want, Address: tt.want + ":7788", NodeName: "node-" + tt.want}
			if p != want {
				t.Fatalf("Allocate = %+v, want %+v", p, want)
			}
			if got, ok := r.Lookup("new"); !ok || got != want {
				t.Errorf("Lookup = %+v, %v; want %+v", got, ok, want)
			}
		})
	}
}

func TestAllocateSamePortOnDifferentAgents(t *testing.T) {
	r := newRegistry(t, []Agent{healthy("a", 5), healthy("b", 5)}, nil)
	seen := map[string]bool{}
	for _, id := range []string{"s1", "s2"} {
		p, err := r.Allocate(Request{SandboxID: id, Ports: []int32{8080}})
		if err != nil {
			t.Fatalf("Allocate %s: %v", id, err)
		}
		if seen[p.AgentID] {
			t.Fatalf("two sandboxes with port 8080 on agent %s", p.AgentID)
		}
		seen[p.AgentID] = true
	}
	if _, err := r.Allocate(Request{SandboxID: "s3", Ports: []int32{8080}}); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("third sandbox with port 8080: %v, want ErrNoCapacity", err)
	}
	if _, err := r.Allocate(Request{SandboxID: "s4", Ports: []int32{8081}}); err != nil {
		t.Fatalf("sandbox with another port: %v", err)
	}
}

func TestAllocateIsIdempotent(t *testing.T) {
	r := newRegistry(t, []Agent{healthy("a", 5), healthy("b", 5)}, nil)
	first, err := r.Allocate(Request{SandboxID: "s", Ports: []int32{80}})
	if err != nil {
		t.Fatal(err)
	}
	// The same ID again, even asking for something else, is the same placement.
	again, err := r.Allocate(Request{SandboxID: "s", Ports: []int32{81}, Image: busybox})
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Fatalf("second Allocate = %+v, want %+v", again, first)
	}
	used, ports := 0, 0
	for _, a := range r.Agents() {
		used += a.Used
		ports += len(a.Ports)
	}
	if used != 1 || ports != 1 {
		t.Fatalf("after two Allocates of one sandbox: %d slots and %d ports taken, want 1 and 1", used, ports)
	}
}

func TestReleaseFreesSlotAndPorts(t *testing.T) {
	r := newRegistry(t, []Agent{healthy("a", 1)}, nil)
	if _, err := r.Allocate(Request{SandboxID: "s1", Ports: []int32{8080}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Allocate(Request{SandboxID: "s2"}); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("Allocate on a full agent: %v, want ErrNoCapacity", err)
	}
	r.Release("s1")
	r.Release("s1")      // twice is fine
	r.Release("unknown") // so is an unknown ID
	if _, ok := r.Lookup("s1"); ok {
		t.Fatal("a released sandbox is still placed")
	}
	if _, err := r.Allocate(Request{SandboxID: "s2", Ports: []int32{8080}}); err != nil {
		t.Fatalf("Allocate after Release: %v", err)
	}
	got := r.Agents()[0]
	if got.Used != 1 || !slices.Equal(got.Ports, []int32{8080}) || !slices.Equal(got.Sandboxes, []string{"s2"}) {
		t.Fatalf("agent after Release and Allocate: %+v", got)
	}
}

func TestRemove(t *testing.T) {
	r := newRegistry(t, []Agent{healthy("a", 5), healthy("b", 5)},
		[]running{{id: "s2", agent: "a"}, {id: "s1", agent: "a", ports: []int32{80}}, {id: "s3", agent: "b"}})
	if got := r.Remove("a"); !slices.Equal(got, []string{"s1", "s2"}) {
		t.Fatalf("Remove = %v, want [s1 s2]", got)
	}
	for _, id := range []string{"s1", "s2"} {
		if _, ok := r.Lookup(id); ok {
			t.Errorf("sandbox %s of a removed agent is still placed", id)
		}
	}
	if p, ok := r.Lookup("s3"); !ok || p.AgentID != "b" {
		t.Errorf("Lookup(s3) = %+v, %v; want it on b", p, ok)
	}
	for i := range 4 {
		p, err := r.Allocate(Request{SandboxID: fmt.Sprint("n", i)})
		if err != nil || p.AgentID != "b" {
			t.Fatalf("Allocate after Remove = %+v, %v; want b", p, err)
		}
	}
	if got := r.Remove("a"); got != nil {
		t.Errorf("Remove of an unknown agent = %v, want nil", got)
	}
	if err := r.Assign("s9", "a", nil); !errors.Is(err, ErrUnknownAgent) {
		t.Errorf("Assign to a removed agent: %v, want ErrUnknownAgent", err)
	}
}

func TestUpsertKeepsAllocations(t *testing.T) {
	r := newRegistry(t, []Agent{healthy("a", 3), healthy("b", 3)},
		[]running{{id: "s1", agent: "a", ports: []int32{80}}, {id: "s2", agent: "a"}})

	// New facts: unhealthy, more slots, an image. Its sandboxes stay.
	a := healthy("a", 10, busybox)
	a.Healthy = false
	r.Upsert(a)
	if p, err := r.Allocate(Request{SandboxID: "n1", Image: busybox}); err != nil || p.AgentID != "b" {
		t.Fatalf("Allocate with a unhealthy = %+v, %v; want b", p, err)
	}
	a.Healthy = true
	a.Address = "moved:1"
	r.Upsert(a)
	if p, err := r.Allocate(Request{SandboxID: "n2", Image: busybox}); err != nil || p.AgentID != "a" || p.Address != "moved:1" {
		t.Fatalf("Allocate with a healthy again = %+v, %v; want a at moved:1", p, err)
	}
	if p, _ := r.Lookup("s1"); p.Address != "moved:1" {
		t.Errorf("Lookup after an address change = %+v", p)
	}
	got := r.Agents()[0]
	if got.Used != 3 || !slices.Equal(got.Ports, []int32{80}) || !slices.Equal(got.Sandboxes, []string{"n2", "s1", "s2"}) {
		t.Fatalf("agent a after Upserts: %+v", got)
	}

	// Fewer slots than it runs: nothing is evicted, nothing more is placed.
	a.Capacity = 1
	r.Upsert(a)
	if got := r.Agents()[0]; got.Used != 3 {
		t.Fatalf("agent a after shrinking: Used = %d, want 3", got.Used)
	}
	for i := range 2 {
		if p, err := r.Allocate(Request{SandboxID: fmt.Sprint("m", i)}); err != nil || p.AgentID != "b" {
			t.Fatalf("Allocate with a over capacity = %+v, %v; want b", p, err)
		}
	}
}

func TestAssign(t *testing.T) {
	r := newRegistry(t, []Agent{healthy("a", 1), healthy("b", 5)}, nil)
	if err := r.Assign("s", "nope", nil); !errors.Is(err, ErrUnknownAgent) {
		t.Fatalf("Assign to an unknown agent: %v, want ErrUnknownAgent", err)
	}
	for range 2 {
		if err := r.Assign("s", "a", []int32{80, 80}); err != nil {
			t.Fatal(err)
		}
	}
	// What runs is recorded even beyond capacity.
	if err := r.Assign("t", "a", []int32{80}); err != nil {
		t.Fatal(err)
	}
	st := r.Agents()[0]
	if st.Used != 2 || !slices.Equal(st.Ports, []int32{80, 80}) {
		t.Fatalf("agent a after Assigns: %+v", st)
	}
	// A sandbox found elsewhere moves, with its new ports.
	if err := r.Assign("s", "b", []int32{81}); err != nil {
		t.Fatal(err)
	}
	if p, _ := r.Lookup("s"); p.AgentID != "b" {
		t.Fatalf("Lookup after a move = %+v", p)
	}
	snap := r.Agents()
	if snap[0].Used != 1 || !slices.Equal(snap[0].Ports, []int32{80}) || !slices.Equal(snap[1].Ports, []int32{81}) {
		t.Fatalf("agents after a move: %+v", snap)
	}
	// An allocated sandbox's ID may be assigned as it is: nothing changes.
	p, err := r.Allocate(Request{SandboxID: "u", Ports: []int32{90, 91}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Assign("u", p.AgentID, []int32{91, 90}); err != nil {
		t.Fatal(err)
	}
	used := 0
	for _, a := range r.Agents() {
		used += a.Used
	}
	if used != 3 {
		t.Fatalf("slots taken = %d, want 3", used)
	}
}

func TestAgentsIsASnapshot(t *testing.T) {
	images := []string{busybox, "b", busybox, ""}
	r := newRegistry(t, []Agent{healthy("b", 5, images...), healthy("a", 5)}, []running{{id: "s", agent: "b", ports: []int32{1}}})
	images[0] = "changed" // the registry keeps its own copy
	snap := r.Agents()
	if len(snap) != 2 || snap[0].ID != "a" || snap[1].ID != "b" {
		t.Fatalf("Agents not sorted by ID: %+v", snap)
	}
	if want := []string{"b", busybox}; !slices.Equal(snap[1].Images, want) {
		t.Fatalf("Images = %q, want %q", snap[1].Images, want)
	}
	if !slices.Equal(snap[0].Runtimes, []string{"runc"}) {
		t.Errorf("an agent that reports no runtime: Runtimes = %q, want [runc]", snap[0].Runtimes)
	}
	snap[1].Images[0], snap[1].Ports[0], snap[1].Sandboxes[0] = "x", 2, "y"
	again := r.Agents()
	if again[1].Images[0] != "b" || again[1].Ports[0] != 1 || again[1].Sandboxes[0] != "s" {
		t.Fatalf("changing a snapshot changed the registry: %+v", again[1])
	}
}

func TestNoCapacityMessage(t *testing.T) {
	inPool := func(a Agent) Agent { a.Pool = "p"; return a }
	sick := inPool(healthy("sick", 5))
	sick.Healthy = false
	gv := func(a Agent) Agent { a.Runtimes = []string{"gvisor"}; return a }

	tests := []struct {
		name   string
		agents []Agent
		run    []running
		req    Request
		want   string
	}{
		{
			name: "no agents",
			req:  Request{SandboxID: "sb"},
			want: `no capacity for sandbox "sb": no agents are registered`,
		},
		{
			name:   "all full",
			agents: []Agent{healthy("a", 1), healthy("b", 1)},
			run:    append(fill("a", 1), fill("b", 1)...),
			req:    Request{SandboxID: "sb"},
			want:   `no capacity for sandbox "sb": none of 2 agents can take it: 2 are full`,
		},
		{
			name: "every reason",
			agents: []Agent{
				healthy("other", 5),
				sick,
				inPool(healthy("runc-only", 5)),
				gv(inPool(healthy("full", 1))),
				gv(inPool(healthy("web", 5))),
			},
			run: []running{{id: "f", agent: "full"}, {id: "w", agent: "web", ports: []int32{8080}}},
			req: Request{SandboxID: "sb", Pool: "p", Runtime: "gvisor", Ports: []int32{8080}},
			want: `no capacity for sandbox "sb": none of 5 agents can take it: 1 is full, ` +
				`1 has a port of [8080] in use, 1 lacks runtime "gvisor", 1 is unhealthy, 1 is not in pool "p"`,
		},
		{
			name:   "runtime nowhere",
			agents: []Agent{healthy("a", 1)},
			req:    Request{SandboxID: "sb", Runtime: "gvisor"},
			want:   `no capacity for sandbox "sb": none of 1 agent can take it: 1 lacks runtime "gvisor"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRegistry(t, tt.agents, tt.run)
			_, err := r.Allocate(tt.req)
			if !errors.Is(err, ErrNoCapacity) {
				t.Fatalf("Allocate: %v, want ErrNoCapacity", err)
			}
			if err.Error() != tt.want {
				t.Fatalf("message:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

// TestAllocateMatchesLinearScan drives the registry through random
// operations and checks every placement against the rule, applied by
// looking at every agent: an agent with the image if one can take the
// sandbox, the most free slots among those, and ErrNoCapacity only when no
// agent can take it.
func TestAllocateMatchesLinearScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	images := []string{"i0", "i1", "i2", "i3"}
	runtimes := []string{"", "runc", "gvisor"}
	pools := []string{"", "p1", "p2"}
	randomAgent := func(id string) Agent {
		a := Agent{ID: id, Pool: pools[rng.IntN(len(pools))], Capacity: rng.IntN(6), Healthy: rng.IntN(5) > 0}
		for _, img := range images {
			if rng.IntN(2) == 0 {
				a.Images = append(a.Images, img)
			}
		}
		for _, rt := range runtimes[1:] {
			if rng.IntN(2) == 0 {
				a.Runtimes = append(a.Runtimes, rt)
			}
		}
		return a
	}

	r := New()
	for _, p := range pools {
		r.DeclarePool(p, true)
	}
	for i := range 20 {
		r.Upsert(randomAgent(fmt.Sprint("a", i)))
	}
	var live []string
	placed, refused := 0, 0
	for i := range 5000 {
		switch op := rng.IntN(10); {
		case op < 5:
			req := Request{
				SandboxID: fmt.Sprint("s", i),
				Image:     images[rng.IntN(len(images))],
				Runtime:   runtimes[rng.IntN(len(runtimes))],
				Pool:      pools[rng.IntN(len(pools))],
			}
			for range rng.IntN(3) {
				req.Ports = append(req.Ports, int32(8000+rng.IntN(4)))
			}
			snap := r.Agents()
			p, err := r.Allocate(req)
			best, bestImage, bestFree := scan(snap, req)
			switch {
			case best == 0 && !errors.Is(err, ErrNoCapacity):
				t.Fatalf("op %d: %+v placed at %+v (err %v); a scan finds no agent", i, req, p, err)
			case best == 0:
				checkReasons(t, snap, req, err)
				refused++
				continue
			case err != nil:
				t.Fatalf("op %d: %+v: %v; a scan finds %d agents", i, req, err, best)
			}
			got := find(snap, p.AgentID)
			if !eligible(got, req) || slices.Contains(got.Images, req.Image) != bestImage || got.Capacity-got.Used != bestFree {
				t.Fatalf("op %d: %+v placed on %+v; want image=%v free=%d", i, req, got, bestImage, bestFree)
			}
			live = append(live, req.SandboxID)
			placed++
		case op < 8 && len(live) > 0:
			j := rng.IntN(len(live))
			r.Release(live[j])
			live = slices.Delete(live, j, j+1)
		case op < 9:
			// Cordon an agent (refused while it runs sandboxes) or put one
			// back, as a pool's scale-down does.
			id := fmt.Sprint("a", rng.IntN(20))
			if a := find(r.Agents(), id); a.Cordoned {
				r.Uncordon(id)
			} else if err := r.Cordon(id); (err == nil) != (a.Used == 0) {
				t.Fatalf("op %d: Cordon(%s) with %d sandboxes: %v", i, id, a.Used, err)
			}
		default:
			r.Upsert(randomAgent(fmt.Sprint("a", rng.IntN(20))))
		}
		checkSnapshot(t, r.Agents())
	}
	t.Logf("%d placed, %d refused", placed, refused)
	if placed < 500 || refused < 100 {
		t.Fatalf("%d placed, %d refused: the random mix no longer exercises both", placed, refused)
	}
}

// scan finds, by looking at every agent, how many agents can take req and
// what the best of them is like.
func scan(snap []AgentState, req Request) (n int, image bool, free int) {
	for _, a := range snap {
		if !eligible(a, req) {
			continue
		}
		n++
		has, f := slices.Contains(a.Images, req.Image), a.Capacity-a.Used
		if n == 1 || has && !image || has == image && f > free {
			image, free = has, f
		}
	}
	return n, image, free
}

// checkReasons checks that an ErrNoCapacity message counts the agents of
// snap refused req for each reason, the first that applies, and names no
// reason that none was refused for.
func checkReasons(t *testing.T, snap []AgentState, req Request, err error) {
	t.Helper()
	var pool, sick, cordoned, runtime, full, port int
	for _, a := range snap {
		switch {
		case a.Pool != req.Pool:
			pool++
		case !a.Healthy:
			sick++
		case a.Cordoned:
			cordoned++
		case !slices.Contains(a.Runtimes, cmpOr(req.Runtime, "runc")):
			runtime++
		case a.Used >= a.Capacity:
			full++
		default:
			port++
		}
	}
	msg := err.Error()
	otherPool, otherPools := "is in a SandboxPool", "are in SandboxPools"
	if req.Pool != "" {
		otherPool, otherPools = "is not in pool", "are not in pool"
	}
	for _, r := range []struct {
		n         int
		one, many string
	}{
		{full, "is full", "are full"},
		{port, "has a port", "have a port"},
		{runtime, "lacks runtime", "lack runtime"},
		{sick, "is unhealthy", "are unhealthy"},
		{cordoned, "is being removed", "are being removed"},
		{pool, otherPool, otherPools},
	} {
		want := fmt.Sprintf("%d %s", r.n, r.many)
		if r.n == 1 {
			want = fmt.Sprintf("%d %s", r.n, r.one)
		}
		said := strings.Contains(msg, want)
		if r.n == 0 {
			said = !strings.Contains(msg, r.one) && !strings.Contains(msg, r.many)
		}
		if !said {
			t.Fatalf("%+v refused with %q: want %d agents that %s", req, msg, r.n, r.many)
		}
	}
}

func eligible(a AgentState, req Request) bool {
	if !a.Healthy || a.Cordoned || a.Used >= a.Capacity || a.Pool != req.Pool {
		return false
	}
	if !slices.Contains(a.Runtimes, cmpOr(req.Runtime, "runc")) {
		return false
	}
	for _, p := range req.Ports {
		if slices.Contains(a.Ports, p) {
			return false
		}
	}
	return true
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func find(snap []AgentState, id string) AgentState {
	for _, a := range snap {
		if a.ID == id {
			return a
		}
	}
	return AgentState{}
}

// checkSnapshot checks what holds in any snapshot, and returns where each
// sandbox is: Used counts the sandboxes, no port is used twice on one agent
// and no sandbox is on two agents. (Assign may break the port rule on
// purpose; these tests do not.)
func checkSnapshot(t testing.TB, snap []AgentState) map[string]string {
	t.Helper()
	where, err := snapshotInvariants(snap)
	if err != nil {
		t.Fatal(err)
	}
	return where
}

func snapshotInvariants(snap []AgentState) (map[string]string, error) {
	where := map[string]string{}
	for _, a := range snap {
		if a.Used != len(a.Sandboxes) {
			return nil, fmt.Errorf("agent %s: Used %d but %d sandboxes", a.ID, a.Used, len(a.Sandboxes))
		}
		for i := 1; i < len(a.Ports); i++ {
			if a.Ports[i] == a.Ports[i-1] {
				return nil, fmt.Errorf("agent %s: port %d used twice: %v", a.ID, a.Ports[i], a.Ports)
			}
		}
		for _, id := range a.Sandboxes {
			if other, ok := where[id]; ok {
				return nil, fmt.Errorf("sandbox %s on both %s and %s", id, other, a.ID)
			}
			where[id] = a.ID
		}
	}
	return where, nil
}
