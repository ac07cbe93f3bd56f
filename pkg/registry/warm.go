package registry

import "maps"

// Warm sandboxes. An agent may hold warm sandboxes: pre-started, of one
// kind each (a WarmKey: image, runtime, resources), claimed by a matching
// create. The agent decides each claim itself, under its own lock, so two
// creates never get one warm sandbox whatever the registry believes; the
// registry only steers a create whose kind an agent holds to that agent.
// Its counts are the agent's last report less the creates placed there
// since: a create placed on a stale count just starts cold on that agent.
//
// Warm sandboxes take no slot here. The agent gives one up to make room
// for a create that finds it full, so from the controller's side every
// slot not used by a sandbox is free; a claim turns a warm sandbox into
// the sandbox, taking the slot it held.

// warmGroup names the agents of a pool holding warm sandboxes of one kind.
type warmGroup struct{ pool, key string }

// setWarm replaces what r believes a holds, keeping the holders index
// right. It is called with r.mu held, on every Upsert.
func (r *Registry) setWarm(a *agent, stock map[string]int) {
	if maps.Equal(a.warm, stock) {
		return
	}
	r.unholdAll(a)
	a.warm = nil
	for key, n := range stock {
		if n <= 0 {
			continue
		}
		if a.warm == nil {
			a.warm = make(map[string]int, len(stock))
		}
		a.warm[key] = n
		r.hold(a, key)
	}
}

func (r *Registry) hold(a *agent, key string) {
	g := warmGroup{pool: a.Pool, key: key}
	h := r.holders[g]
	if h == nil {
		h = make(map[*agent]struct{})
		r.holders[g] = h
	}
	h[a] = struct{}{}
}

func (r *Registry) unhold(a *agent, key string) {
	g := warmGroup{pool: a.Pool, key: key}
	if h := r.holders[g]; h != nil {
		delete(h, a)
		if len(h) == 0 {
			delete(r.holders, g)
		}
	}
}

// unholdAll takes a out of every holders set (before its pool changes, or
// when it is removed).
func (r *Registry) unholdAll(a *agent) {
	for key := range a.warm {
		r.unhold(a, key)
	}
}

// pickWarm returns the placeable agent of req's pool holding the most warm
// sandboxes of req's kind, with a free slot and req's ports free, or nil.
// It looks only at the holders of that kind: a handful, whatever the
// number of agents.
func (r *Registry) pickWarm(req Request) *agent {
	if req.Warm == "" {
		return nil
	}
	var best *agent
	for a := range r.holders[warmGroup{pool: req.Pool, key: req.Warm}] {
		if !a.Healthy || a.cordoned || a.used >= a.Capacity || a.portsBusy(req.Ports) {
			continue
		}
		if best == nil || a.warm[req.Warm] > best.warm[req.Warm] ||
			a.warm[req.Warm] == best.warm[req.Warm] && a.ID < best.ID {
			best = a
		}
	}
	return best
}

// claimWarm counts one warm sandbox of key on a as taken.
func (r *Registry) claimWarm(a *agent, key string) {
	if a.warm[key]--; a.warm[key] <= 0 {
		delete(a.warm, key)
		r.unhold(a, key)
	}
}

// WarmStock returns how many warm sandboxes of each kind the agents of a
// pool ("" is the default pool) hold, as the registry believes.
func (r *Registry) WarmStock(pool string) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int)
	for g, h := range r.holders {
		if g.pool != pool {
			continue
		}
		for a := range h {
			out[g.key] += a.warm[g.key]
		}
	}
	return out
}
