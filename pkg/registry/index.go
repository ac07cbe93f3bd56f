package registry

import "math/bits"

// groupKey names one set of interchangeable agents: those a request with
// this pool ("" is the default pool), runtime and (when not empty) image
// may go to.
type groupKey struct {
	pool    string
	runtime string
	image   string
}

// group files healthy agents of one groupKey in buckets by their free
// slots, so that the least loaded agent is found without looking at the
// others: the highest non-empty bucket, read off a bitset, holds it.
//
// An agent is filed eagerly when it gains free slots (a release), but when it
// loses them (a placement) it stays where it is until a pick in this group
// comes across it and moves it down. A placement so costs nothing in the
// groups nobody asks for, and an allocate-release cycle moves nothing at all.
// Hence an agent's bucket is never below its free slots, and may be above.
type group struct {
	key groupKey
	// members counts the healthy agents in the group, full or not; filed
	// counts those in buckets. After a pick that found nothing, every filed
	// agent has a free slot and a port in use: the ErrNoCapacity message
	// relies on it.
	members int
	filed   int
	// buckets[f] holds the agents filed under f free slots; buckets[0] stays
	// empty.
	buckets [][]entry
	// nonempty has bit f set when buckets[f] is not empty.
	nonempty []uint64
}

// entry is one agent in a bucket: the agent and the index of its
// membership of this group.
type entry struct {
	a *agent
	m int
}

// membership is an agent's place in one group: the bucket it is filed in
// (0 when it is not) and its index there.
type membership struct {
	g      *group
	bucket int
	pos    int
}

// refile files membership m of agent a under free slots: it takes it out of
// its bucket, if any, and puts it in bucket free unless free is 0.
func (g *group) refile(a *agent, m, free int) {
	ms := &a.members[m]
	if ms.bucket == free {
		return
	}
	if ms.bucket > 0 {
		g.unfile(ms.bucket, ms.pos)
		g.filed--
	}
	ms.bucket = free
	if free == 0 {
		return
	}
	for len(g.buckets) <= free {
		g.buckets = append(g.buckets, nil)
	}
	if w := free / 64; len(g.nonempty) <= w {
		g.nonempty = append(g.nonempty, make([]uint64, w+1-len(g.nonempty))...)
	}
	ms.pos = len(g.buckets[free])
	g.buckets[free] = append(g.buckets[free], entry{a: a, m: m})
	g.nonempty[free/64] |= 1 << (free % 64)
	g.filed++
}

// unfile takes the entry at pos out of bucket b: the last entry of the
// bucket takes its place.
func (g *group) unfile(b, pos int) {
	bucket := g.buckets[b]
	last := len(bucket) - 1
	if pos != last {
		moved := bucket[last]
		bucket[pos] = moved
		moved.a.members[moved.m].pos = pos
	}
	bucket[last] = entry{} // let a removed agent be collected
	g.buckets[b] = bucket[:last]
	if last == 0 {
		g.nonempty[b/64] &^= 1 << (b % 64)
	}
}

// pick returns an agent with the most free slots on which none of ports is
// in use, or nil. It moves the agents it finds filed too high to where they
// belong, which is O(1) each and paid for by the placement that left them
// there; beyond that only agents refused for a port cost anything.
func (g *group) pick(ports []int32) *agent {
	for b := g.highest(len(g.buckets)); b > 0; b = g.highest(b) {
		for i := 0; i < len(g.buckets[b]); {
			e := g.buckets[b][i]
			if free := e.a.free(); free < b {
				g.refile(e.a, e.m, free) // the last entry moves to i
				continue
			}
			if !e.a.portsBusy(ports) {
				return e.a
			}
			i++
		}
	}
	return nil
}

// highest returns the highest non-empty bucket below below, or 0.
func (g *group) highest(below int) int {
	b := below - 1
	if b <= 0 {
		return 0
	}
	w := b / 64
	word := g.nonempty[w] & (^uint64(0) >> (63 - b%64)) // buckets up to b
	for {
		if word != 0 {
			return w*64 + bits.Len64(word) - 1
		}
		if w == 0 {
			return 0
		}
		w--
		word = g.nonempty[w]
	}
}
