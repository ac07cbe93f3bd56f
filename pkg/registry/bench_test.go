package registry

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

const benchImages = 20

// benchRegistry returns a registry of n agents (5 to 10 slots, 3 of 20
// images, a third with gVisor, a fifth in pool "p") and a mix of requests:
// a random image, one in four exposing one of three common ports, one in ten
// asking for gVisor, one in ten for pool "p". If fill > 0 it first places
// sandboxes of that mix until that share of all slots is taken.
func benchRegistry(b *testing.B, n int, fill float64) (*Registry, []Request) {
	b.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), 42))
	r := New()
	r.DeclarePool("p", true)
	slots := 0
	for _, a := range stressAgents(rng, n, benchImages) {
		r.Upsert(a)
		slots += a.Capacity
	}
	reqs := make([]Request, 4096)
	for i := range reqs {
		req := Request{
			SandboxID: fmt.Sprint("bench-", i),
			Image:     fmt.Sprintf("localhost/fsb/img%d:latest", rng.IntN(benchImages)),
		}
		if rng.IntN(4) == 0 {
			req.Ports = []int32{[]int32{8080, 8888, 3000}[rng.IntN(3)]}
		}
		if rng.IntN(10) == 0 {
			req.Runtime = "gvisor"
		}
		if rng.IntN(10) == 0 {
			req.Pool = "p"
		}
		reqs[i] = req
	}
	placed := 0
	for i := 0; placed < int(fill*float64(slots)) && i < 4*slots; i++ {
		req := reqs[i%len(reqs)]
		req.SandboxID = fmt.Sprint("fill-", i)
		if _, err := r.Allocate(req); err == nil {
			placed++
		}
	}
	return r, reqs
}

// BenchmarkAllocate measures one Allocate and its Release, so the registry
// stays as full as it started: empty, or 80% of all slots taken.
func BenchmarkAllocate(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		for _, fill := range []float64{0, 0.8} {
			name := fmt.Sprintf("agents=%d/fill=%d%%", n, int(fill*100))
			b.Run(name+"/serial", func(b *testing.B) {
				r, reqs := benchRegistry(b, n, fill)
				refused := 0
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					req := reqs[i%len(reqs)]
					if _, err := r.Allocate(req); err != nil {
						if !errors.Is(err, ErrNoCapacity) {
							b.Fatal(err)
						}
						refused++
					}
					r.Release(req.SandboxID)
				}
				b.ReportMetric(float64(refused)/float64(b.N), "refused/op")
			})
			b.Run(name+"/parallel", func(b *testing.B) {
				r, reqs := benchRegistry(b, n, fill)
				// Each goroutine allocates its own sandboxes.
				ids := make([][]string, 64)
				for w := range ids {
					ids[w] = make([]string, len(reqs))
					for i := range reqs {
						ids[w][i] = fmt.Sprintf("w%d-%d", w, i)
					}
				}
				var workers, refused atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					w := int(workers.Add(1)-1) % len(ids)
					for i := 0; pb.Next(); i++ {
						req := reqs[i%len(reqs)]
						req.SandboxID = ids[w][i%len(reqs)]
						if _, err := r.Allocate(req); err != nil {
							if !errors.Is(err, ErrNoCapacity) {
								b.Error(err)
								return
							}
							refused.Add(1)
						}
						r.Release(req.SandboxID)
					}
				})
				b.ReportMetric(float64(refused.Load())/float64(b.N), "refused/op")
			})
		}
	}
}

// BenchmarkAllocateRefused measures an Allocate that finds no place. When
// every agent is full that costs what a placement costs; when every agent
// has a free slot but the port in use, each of them is looked at.
func BenchmarkAllocateRefused(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("agents=%d/full", n), func(b *testing.B) {
			r, _ := benchRegistry(b, n, 0)
			for i := 0; ; i++ {
				if _, err := r.Allocate(Request{SandboxID: fmt.Sprint("fill-", i)}); err != nil {
					break
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Allocate(Request{SandboxID: "x"}); !errors.Is(err, ErrNoCapacity) {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("agents=%d/port-in-use", n), func(b *testing.B) {
			r, _ := benchRegistry(b, n, 0)
			// Port 8080 taken on every agent of the default pool.
			for i := 0; ; i++ {
				if _, err := r.Allocate(Request{SandboxID: fmt.Sprint("web-", i), Ports: []int32{8080}}); err != nil {
					if !errors.Is(err, ErrNoCapacity) {
						b.Fatal(err)
					}
					break
				}
			}
			req := Request{SandboxID: "x", Ports: []int32{8080}}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Allocate(req); !errors.Is(err, ErrNoCapacity) {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStatusUpdate measures what an agent's status report costs: an
// Upsert with unchanged facts and an Assign of each of its 8 sandboxes.
func BenchmarkStatusUpdate(b *testing.B) {
	r := New()
	a := Agent{ID: "a", Address: "a:1", Capacity: 10, Runtimes: []string{"runc"}, Healthy: true,
		Images: []string{"localhost/fsb/img0:latest", "localhost/fsb/img1:latest", "localhost/fsb/img2:latest"}}
	r.Upsert(a)
	ids := make([]string, 8)
	for i := range ids {
		ids[i] = fmt.Sprint("s", i)
		if err := r.Assign(ids[i], "a", []int32{int32(8000 + i)}); err != nil {
			b.Fatal(err)
		}
	}
	ports := [][]int32{{8000}, {8001}, {8002}, {8003}, {8004}, {8005}, {8006}, {8007}}
	b.ReportAllocs()
	for b.Loop() {
		r.Upsert(a)
		for i, id := range ids {
			if err := r.Assign(id, "a", ports[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkAgents measures a snapshot of 10,000 agents 80% full, as
// ListAgents and metrics take it; the lock is held for the copying only.
func BenchmarkAgents(b *testing.B) {
	r, _ := benchRegistry(b, 10000, 0.8)
	b.ReportAllocs()
	for b.Loop() {
		if len(r.Agents()) != 10000 {
			b.Fatal("agents missing")
		}
	}
}
