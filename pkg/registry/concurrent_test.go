package registry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// stressAgents returns n agents of 5 to 10 slots with some of 8 images; a
// third also runs gVisor and a fifth are in pool "p".
func stressAgents(rng *rand.Rand, n, images int) []Agent {
	agents := make([]Agent, n)
	for i := range agents {
		a := Agent{
			ID:       fmt.Sprintf("agent-%05d", i),
			Address:  fmt.Sprintf("10.0.%d.%d:7788", i/256, i%256),
			NodeName: fmt.Sprintf("node-%d", i),
			Capacity: 5 + rng.IntN(6),
			Runtimes: []string{"runc"},
			Healthy:  true,
		}
		for range 3 {
			a.Images = append(a.Images, fmt.Sprintf("localhost/fsb/img%d:latest", rng.IntN(images)))
		}
		if i%3 == 0 {
			a.Runtimes = append(a.Runtimes, "gvisor")
		}
		if i%5 == 0 {
			a.Pool = "p"
		}
		agents[i] = a
	}
	return agents
}

// TestConcurrentAllocateRelease runs workers that allocate and release
// sandboxes with random images, runtimes, pools and ports, while another
// goroutine flips agents' health. At checkpoints, with the workers held
// still, and at the end, the registry must agree with what the workers
// were told: every live sandbox on exactly the agent it was placed on, none
// above capacity, no port twice on one agent, Lookup consistent. Some
// checkpoints remove an agent and add it back; its sandboxes are gone.
func TestConcurrentAllocateRelease(t *testing.T) {
	const (
		workers      = 16
		opsPerWorker = 4000
		images       = 8
	)
	rng := rand.New(rand.NewPCG(7, 7))
	agents := stressAgents(rng, 50, images)
	r := New()
	r.DeclarePool("p", true)
	for _, a := range agents {
		r.Upsert(a)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	// gate holds the workers still at checkpoints: a worker holds it for
	// reading around each operation and the bookkeeping that follows.
	var gate sync.RWMutex
	live := make([]map[string]string, workers) // per worker: sandbox ID -> agent ID
	var placed, refused [workers]int

	g, ctx := errgroup.WithContext(ctx)
	for w := range workers {
		live[w] = map[string]string{}
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			ids := make([]string, 0, opsPerWorker)
			for i := 0; i < opsPerWorker && ctx.Err() == nil; i++ {
				gate.RLock()
				err := func() error {
					mine := live[w]
					ids = ids[:0]
					for id := range mine {
						ids = append(ids, id)
					}
					switch op := rng.IntN(10); {
					case op < 5 || len(ids) == 0:
						req := Request{
							SandboxID: fmt.Sprintf("w%d-%d", w, i),
							Image:     fmt.Sprintf("localhost/fsb/img%d:latest", rng.IntN(images)),
						}
						if rng.IntN(4) == 0 {
							req.Runtime = "gvisor"
						}
						if rng.IntN(5) == 0 {
							req.Pool = "p"
						}
						for range rng.IntN(3) {
							req.Ports = append(req.Ports, int32(8000+rng.IntN(10)))
						}
						p, err := r.Allocate(req)
						if errors.Is(err, ErrNoCapacity) {
							refused[w]++
							return nil
						}
						if err != nil {
							return err
						}
						mine[req.SandboxID] = p.AgentID
						placed[w]++
					case op < 6:
						// Allocating a live sandbox again finds it where it is.
						id := ids[rng.IntN(len(ids))]
						p, err := r.Allocate(Request{SandboxID: id, Ports: []int32{9999}})
						if err != nil || p.AgentID != mine[id] {
							return fmt.Errorf("Allocate(%s) again = %+v, %v; it is on %s", id, p, err, mine[id])
						}
					default:
						id := ids[rng.IntN(len(ids))]
						r.Release(id)
						delete(mine, id)
					}
					return nil
				}()
				gate.RUnlock()
				if err != nil {
					return err
				}
			}
			return nil
		})
	}

	// The health flipper is not held by the gate: health changes under
	// the workers' feet.
	stop := make(chan struct{})
	var flips sync.WaitGroup
	defer flips.Wait()
	defer close(stop)
	flips.Go(func() {
		rng := rand.New(rand.NewPCG(9, 9))
		tick := time.NewTicker(100 * time.Microsecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			a := agents[rng.IntN(len(agents))]
			a.Healthy = rng.IntN(3) > 0
			r.Upsert(a)
		}
	})

	// check compares the registry with the workers' books; the workers
	// must be still.
	check := func() error {
		snap := r.Agents()
		where, err := snapshotInvariants(snap)
		if err != nil {
			return err
		}
		for _, a := range snap {
			if a.Used > a.Capacity {
				return fmt.Errorf("agent %s: %d sandboxes in %d slots", a.ID, a.Used, a.Capacity)
			}
		}
		n := 0
		for w := range workers {
			for id, agent := range live[w] {
				n++
				if where[id] != agent {
					return fmt.Errorf("sandbox %s placed on %s, the registry has it on %q", id, agent, where[id])
				}
			}
		}
		if n != len(where) {
			return fmt.Errorf("the registry holds %d sandboxes, the workers %d", len(where), n)
		}
		for id, agent := range where {
			if p, ok := r.Lookup(id); !ok || p.AgentID != agent {
				return fmt.Errorf("Lookup(%s) = %+v, %v; Agents has it on %s", id, p, ok, agent)
			}
		}
		return nil
	}

	var werr error
	workersDone := make(chan struct{})
	go func() { werr = g.Wait(); close(workersDone) }()
	defer func() { cancel(); <-workersDone }()
	for checkpoints, finished := 1, false; !finished; checkpoints++ {
		select {
		case <-workersDone:
			finished = true
		case <-time.After(20 * time.Millisecond):
		}
		gate.Lock()
		err := check()
		if err == nil && checkpoints%3 == 0 {
			a := agents[rng.IntN(len(agents))]
			for _, id := range r.Remove(a.ID) {
				for w := range workers {
					delete(live[w], id)
				}
			}
			r.Upsert(a)
		}
		gate.Unlock()
		if err != nil {
			t.Fatalf("checkpoint %d: %v", checkpoints, err)
		}
	}
	if werr != nil {
		t.Fatal(werr)
	}
	p, f := 0, 0
	for w := range workers {
		p, f = p+placed[w], f+refused[w]
	}
	t.Logf("%d placed, %d refused", p, f)
	if p < 1000 || f == 0 {
		t.Fatalf("%d placed, %d refused: not enough pressure to mean anything", p, f)
	}
}

// TestConcurrentAllocateSameID races many goroutines to allocate the same
// sandbox: all get the same placement and it takes one slot.
func TestConcurrentAllocateSameID(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	r := New()
	r.DeclarePool("p", true)
	for _, a := range stressAgents(rng, 20, 4) {
		r.Upsert(a)
	}
	for round := range 50 {
		id := fmt.Sprint("same-", round)
		start := make(chan struct{})
		got := make([]Placement, 32)
		var wg sync.WaitGroup
		for i := range got {
			wg.Go(func() {
				<-start
				p, err := r.Allocate(Request{SandboxID: id, Ports: []int32{int32(8000 + round)}})
				if err != nil {
					t.Errorf("Allocate(%s): %v", id, err)
				}
				got[i] = p
			})
		}
		close(start)
		wg.Wait()
		for _, p := range got[1:] {
			if p != got[0] {
				t.Fatalf("Allocate(%s) returned %+v and %+v", id, got[0], p)
			}
		}
	}
	used := 0
	snap := r.Agents()
	checkSnapshot(t, snap)
	for _, a := range snap {
		used += a.Used
	}
	if used != 50 {
		t.Fatalf("50 sandboxes take %d slots", used)
	}
}
