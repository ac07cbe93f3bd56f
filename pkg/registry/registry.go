// Package registry is the controller's in-memory truth about agents: their
// slots, the ports in use in each agent's network namespace, the images on
// their nodes, their runtimes and health, and which sandbox runs where.
//
// Allocate runs on every create, so it does not look at every agent. Each
// healthy agent is filed in a few groups: one per (pool, runtime) and one
// per (pool, runtime, image) it can serve. Inside a group agents sit in buckets by free slots, so the
// least loaded agent is in the highest non-empty bucket, found from a
// bitset. Allocate looks there in the request's image group, then in its
// plain group: a few map operations and O(1) work, whatever the number of
// agents. A placement leaves the agent filed too high in all its groups; a
// pick that comes across it moves it down, in that group only, and a release
// files it up again where it is too low. So a placement costs nothing in the
// groups no request asks for, and an allocate-release cycle moves nothing.
// Ports are checked only on the agents so found: agents passed over for a
// port in use are the one cost that grows with the cluster. One mutex guards
// it all.
//
// Pools: a request without a pool goes to the default pool (agents whose
// pool is ""): in Kubernetes the agent DaemonSet's, locally the agents the
// controller names. A request naming a pool goes only to that pool's
// agents, and only once the pool is declared (DeclarePool: a SandboxPool
// object exists); an undeclared or closing pool is a *PoolError, not a
// lack of capacity. Cordon takes an idle agent out of placement for good
// while its pod is removed: atomically with every Allocate, so a create
// never lands on an agent being scaled down.
package registry

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// defaultRuntime is the runtime of a request that names none, and of an
// agent that reports none.
const defaultRuntime = "runc"

// ErrNoCapacity is returned, wrapped in a message that says why each agent
// was refused, when no healthy agent has a free slot, the runtime and the
// ports free.
var ErrNoCapacity = errors.New("no capacity")

// NoCapacityError is the ErrNoCapacity of one request: how many agents
// there are and how many were refused for each reason, for callers that
// word their own message (the fast path names the sandbox by its name and
// says what to change).
type NoCapacityError struct {
	SandboxID string
	Agents    int // every agent the registry knows
	// The agents refused for each reason; each agent counts for its first.
	Full, PortInUse, NoRuntime, Unhealthy, Cordoned, OtherPool int
	// Reasons is the counts in words, such as "1 is full, 2 are unhealthy";
	// "no agents are registered" when Agents is 0.
	Reasons string
}

func (e *NoCapacityError) Error() string {
	if e.Agents == 0 {
		return fmt.Sprintf("%v for sandbox %q: %s", ErrNoCapacity, e.SandboxID, e.Reasons)
	}
	return fmt.Sprintf("%v for sandbox %q: none of %d %s can take it: %s",
		ErrNoCapacity, e.SandboxID, e.Agents, plural(e.Agents, "agent", "agents"), e.Reasons)
}

func (e *NoCapacityError) Unwrap() error { return ErrNoCapacity }

// Advice words the refusal for a person: what could not be placed (such as
// "sandbox web in namespace team"), why, and what to change. ports says who
// holds the ports asked for, when the caller knows ("port 8080 is held by
// sandbox team/web"); empty gives a generic sentence. pool is the sandbox's
// poolRef.
func (e *NoCapacityError) Advice(what, pool, ports string) string {
	if e.Agents == 0 {
		return fmt.Sprintf("no agent can take %s: no agents are registered: start one (the controller's --agents names them)", what)
	}
	agents := fmt.Sprintf("%d %s", e.Agents, plural(e.Agents, "agent", "agents"))
	head := fmt.Sprintf("no agent can take %s (%s: %s)", what, agents, e.Reasons)
	if e.Full == e.Agents {
		head = fmt.Sprintf("no agent has a free slot for %s (%s, all full)", what, agents)
	}
	var fix []string
	if e.Full > 0 {
		fix = append(fix, "delete a sandbox or add capacity")
	}
	if e.PortInUse > 0 {
		if ports == "" {
			ports = "a port it exposes is in use on the other agents"
		}
		fix = append(fix, ports+": delete it or pick another port")
	}
	if e.NoRuntime > 0 {
		fix = append(fix, "pick a runtime the agents offer (fsb ctl agents lists them)")
	}
	if e.Unhealthy > 0 {
		fix = append(fix, "wait for the unhealthy agents to come back (fsb ctl agents)")
	}
	if e.Cordoned > 0 {
		fix = append(fix, "wait: the agents being removed are scaled down by their pool")
	}
	if e.OtherPool > 0 && e.OtherPool == e.Agents {
		if pool == "" {
			fix = append(fix, "start an agent of the default pool (in Kubernetes the agent DaemonSet; locally the controller's --agents), or name a SandboxPool")
		} else {
			fix = append(fix, fmt.Sprintf("wait for pool %q to start an agent (its controller keeps poolMin pods and bufferMin idle agents: with both 0 it starts none; kubectl get sandboxpools shows them)", pool))
		}
	}
	return head + ": " + strings.Join(fix, "; ")
}

// ErrNoPool is wrapped by the *PoolError of a request naming a pool that
// is not declared; ErrPoolClosed by that of a pool being deleted.
var (
	ErrNoPool     = errors.New("no such sandbox pool")
	ErrPoolClosed = errors.New("sandbox pool is being deleted")
)

// PoolError is the refusal of a request whose pool is not declared or is
// closed.
type PoolError struct {
	Pool   string
	Closed bool // declared but being deleted
}

func (e *PoolError) Error() string {
	if e.Closed {
		return fmt.Sprintf("sandbox pool %q is being deleted", e.Pool)
	}
	return fmt.Sprintf("sandbox pool %q not found", e.Pool)
}

func (e *PoolError) Unwrap() error {
	if e.Closed {
		return ErrPoolClosed
	}
	return ErrNoPool
}

// ErrAgentBusy is wrapped by Cordon's refusal of an agent that has
// sandboxes placed on it.
var ErrAgentBusy = errors.New("agent runs sandboxes")

// ErrUnknownAgent is returned by Assign for an agent the registry does not
// know.
var ErrUnknownAgent = errors.New("unknown agent")

// Agent is what the registry knows of one agent, from its status.
type Agent struct {
	ID       string   // agent ID (pod UID in Kubernetes)
	Address  string   // host:port of its AgentService
	Pool     string   // pool name; "" for the default pool
	NodeName string   // node the agent runs on
	Capacity int      // slots
	Images   []string // image names present on its node, normalized
	Runtimes []string // "runc", "crun", "gvisor"; none means runc
	Healthy  bool
	// Warm counts the ready warm sandboxes the agent holds, by WarmKey.
	Warm map[string]int
}

// Request asks for a place for one sandbox.
type Request struct {
	SandboxID string
	Image     string  // normalized name
	Ports     []int32 // exposed ports; each must be free in the agent's network namespace
	Runtime   string  // "" means runc
	Pool      string  // "" is the default pool; otherwise a declared pool's name
	// Warm is the sandbox's v1alpha1.WarmKey: an agent holding a warm
	// sandbox of that kind is preferred to any other. "" claims none.
	Warm string
}

// Placement is where a sandbox goes.
type Placement struct {
	AgentID  string
	Address  string
	NodeName string
}

// AgentState is a snapshot of one agent: its facts and what is placed on it.
type AgentState struct {
	Agent
	Used      int      // slots taken
	Cordoned  bool     // taken out of placement (Cordon)
	Ports     []int32  // ports in use, sorted; a port appears once per sandbox using it
	Sandboxes []string // sandbox IDs placed on it, sorted
}

// Registry places sandboxes on agents. The zero value is not usable; call
// New. A Registry is safe for concurrent use.
type Registry struct {
	mu        sync.Mutex
	agents    map[string]*agent
	sandboxes map[string]placed
	groups    map[groupKey]*group
	pools     map[string]*poolCount
	// declared holds the pools a request may name, open or closing; the
	// default pool "" is always open and never in it.
	declared map[string]bool
	healthy  int // healthy agents in all pools
	// holders files the agents holding warm sandboxes, by pool and kind.
	holders map[warmGroup]map[*agent]struct{}
}

// agent is the registry's record of one agent.
type agent struct {
	Agent
	used      int
	ports     map[int32]int // port -> sandboxes using it
	sandboxes map[string]struct{}
	// cordoned keeps the agent out of every group (as if unhealthy) until
	// Uncordon; it survives Upsert.
	cordoned bool
	// members are the groups the agent is in while it is healthy and not
	// cordoned.
	members []membership
	// warm is Agent.Warm as last reported, less the placements that were
	// sent to claim one since; the Agent's own copy is not kept up to date.
	warm map[string]int
}

// placed is where one sandbox is and which ports it holds there.
type placed struct {
	agent *agent
	ports []int32
}

// poolCount counts the agents of one pool, for the ErrNoCapacity message:
// healthy ones and, among them, cordoned ones.
type poolCount struct {
	total, healthy, cordoned int
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{
		agents:    make(map[string]*agent),
		sandboxes: make(map[string]placed),
		groups:    make(map[groupKey]*group),
		pools:     make(map[string]*poolCount),
		declared:  make(map[string]bool),
		holders:   make(map[warmGroup]map[*agent]struct{}),
	}
}

// DeclarePool makes a pool one that requests may name: open, or closed
// while it is being deleted (its requests then get a *PoolError that wraps
// ErrPoolClosed). Declaring the default pool "" does nothing.
func (r *Registry) DeclarePool(name string, open bool) {
	if name == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.declared[name] = open
}

// ForgetPool undoes DeclarePool: requests naming the pool get a
// *PoolError that wraps ErrNoPool. Its agents stay registered.
func (r *Registry) ForgetPool(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.declared, name)
}

// Cordon takes an agent out of placement until Uncordon or Remove, if no
// sandbox is placed on it (a slot reserved by an Allocate whose create is
// still under way counts): otherwise it returns an error wrapping
// ErrAgentBusy and changes nothing. Being under the same lock as Allocate,
// a create either lands before the Cordon (which then refuses) or goes
// elsewhere. Cordoning a cordoned agent succeeds.
func (r *Registry) Cordon(agentID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.agents[agentID]
	if !ok {
		return fmt.Errorf("cordon: %w %q", ErrUnknownAgent, agentID)
	}
	if a.used > 0 {
		return fmt.Errorf("cordon agent %q: %w (%d)", agentID, ErrAgentBusy, a.used)
	}
	if !a.cordoned {
		r.leave(a)
		a.cordoned = true
		r.join(a)
	}
	return nil
}

// Uncordon puts a cordoned agent back into placement. An unknown or
// uncordoned agent is a no-op.
func (r *Registry) Uncordon(agentID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.agents[agentID]; ok && a.cordoned {
		r.leave(a)
		a.cordoned = false
		r.join(a)
	}
}

// Upsert adds an agent or updates its facts. The sandboxes placed on it stay
// placed, even if it now has fewer slots than they take.
func (r *Registry) Upsert(in Agent) {
	in.Images = normalizeSet(in.Images)
	in.Runtimes = normalizeSet(in.Runtimes)
	if len(in.Runtimes) == 0 {
		in.Runtimes = []string{defaultRuntime}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.agents[in.ID]
	if !ok {
		a = &agent{Agent: in, sandboxes: make(map[string]struct{})}
		r.agents[in.ID] = a
		r.join(a)
		r.setWarm(a, in.Warm)
		return
	}
	if a.Pool != in.Pool {
		// Its holders sets are filed under the old pool.
		r.unholdAll(a)
		a.warm = nil
	}
	defer r.setWarm(a, in.Warm)
	if a.Pool == in.Pool && a.Capacity == in.Capacity && a.Healthy == in.Healthy &&
		slices.Equal(a.Images, in.Images) && slices.Equal(a.Runtimes, in.Runtimes) {
		// Nothing the index depends on changed: the common status update.
		a.Address, a.NodeName = in.Address, in.NodeName
		return
	}
	r.leave(a)
	a.Agent = in
	r.join(a)
}

// Remove forgets an agent and returns the IDs of the sandboxes that were on
// it, sorted; they are no longer placed anywhere.
func (r *Registry) Remove(agentID string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.agents[agentID]
	if !ok {
		return nil
	}
	r.leave(a)
	r.unholdAll(a)
	delete(r.agents, agentID)
	ids := make([]string, 0, len(a.sandboxes))
	for id := range a.sandboxes {
		ids = append(ids, id)
		delete(r.sandboxes, id)
	}
	slices.Sort(ids)
	return ids
}

// RemoveIfEmpty forgets an agent if no sandbox is placed on it, and
// reports whether it did (an unknown agent: false). The check and the
// removal are one step: a placement cannot slip in between.
func (r *Registry) RemoveIfEmpty(agentID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.agents[agentID]
	if !ok || a.used > 0 {
		return false
	}
	r.leave(a)
	r.unholdAll(a)
	delete(r.agents, agentID)
	return true
}

// Allocate reserves a slot and req.Ports on one agent for req.SandboxID and
// returns where. It prefers an agent holding a warm sandbox of req.Warm's
// kind (the one holding most), then agents whose node has req.Image, then
// the agent with the most free slots. Calling it again for a placed sandbox returns the
// same placement and takes nothing more. A request naming a pool that is
// not declared, or closed, gets a *PoolError. If no agent can take the
// sandbox the error wraps ErrNoCapacity and says why the agents were
// refused.
func (r *Registry) Allocate(req Request) (Placement, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.sandboxes[req.SandboxID]; ok {
		return p.agent.placement(), nil
	}
	if req.Pool != "" {
		if open, ok := r.declared[req.Pool]; !ok || !open {
			return Placement{}, &PoolError{Pool: req.Pool, Closed: ok}
		}
	}
	if a := r.pickWarm(req); a != nil {
		r.claimWarm(a, req.Warm)
		r.place(a, req.SandboxID, req.Ports)
		return a.placement(), nil
	}
	key := groupKey{pool: req.Pool, runtime: cmp.Or(req.Runtime, defaultRuntime)}
	var a *agent
	if req.Image != "" {
		key.image = req.Image
		if g := r.groups[key]; g != nil {
			a = g.pick(req.Ports)
		}
		key.image = ""
	}
	g := r.groups[key]
	if a == nil && g != nil {
		a = g.pick(req.Ports)
	}
	if a == nil {
		return Placement{}, r.refusal(req, g)
	}
	r.place(a, req.SandboxID, req.Ports)
	return a.placement(), nil
}

// Assign records that a sandbox runs on an agent with ports, as the store or
// the agent's status says after a restart. What runs is the truth: it is
// recorded even beyond the agent's capacity or over a port in use, and a
// sandbox recorded elsewhere moves. Assigning what is already recorded
// changes nothing.
func (r *Registry) Assign(sandboxID, agentID string, ports []int32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.agents[agentID]
	if !ok {
		return fmt.Errorf("assign sandbox %q: %w %q", sandboxID, ErrUnknownAgent, agentID)
	}
	if p, ok := r.sandboxes[sandboxID]; ok {
		if p.agent == a && sameSet(p.ports, ports) {
			return nil
		}
		r.unplace(sandboxID, p)
	}
	r.place(a, sandboxID, ports)
	return nil
}

// Release frees the slot and ports of a sandbox. An unknown sandbox is a
// no-op.
func (r *Registry) Release(sandboxID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.sandboxes[sandboxID]; ok {
		r.unplace(sandboxID, p)
	}
}

// Lookup returns where a sandbox is placed.
func (r *Registry) Lookup(sandboxID string) (Placement, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.sandboxes[sandboxID]
	if !ok {
		return Placement{}, false
	}
	return p.agent.placement(), true
}

// Agents returns a snapshot of every agent, sorted by ID.
func (r *Registry) Agents() []AgentState {
	return r.snapshot(func(*agent) bool { return true })
}

// PoolAgents returns a snapshot of the agents of one pool ("" is the
// default pool), sorted by ID.
func (r *Registry) PoolAgents(pool string) []AgentState {
	return r.snapshot(func(a *agent) bool { return a.Pool == pool })
}

// snapshot returns the agents keep accepts, sorted by ID.
func (r *Registry) snapshot(keep func(*agent) bool) []AgentState {
	// Under the lock, only what changes in place is copied: the sandbox IDs
	// and ports, into one array each for all agents. Images and Runtimes are
	// replaced by Upsert, never changed, so they are copied after the lock,
	// and all sorting is done after it too.
	r.mu.Lock()
	out := make([]AgentState, 0, len(r.agents))
	ids := make([]string, 0, len(r.sandboxes))
	var ports []int32
	for _, a := range r.agents {
		if !keep(a) {
			continue
		}
		i, p := len(ids), len(ports)
		for id := range a.sandboxes {
			ids = append(ids, id)
		}
		for port, n := range a.ports {
			for range n {
				ports = append(ports, port)
			}
		}
		// A grown ports array leaves the earlier agents' ports in the old one.
		out = append(out, AgentState{
			Agent:     a.Agent,
			Used:      a.used,
			Cordoned:  a.cordoned,
			Sandboxes: ids[i:len(ids):len(ids)],
			Ports:     ports[p:len(ports):len(ports)],
		})
	}
	r.mu.Unlock()

	n := 0
	for _, s := range out {
		n += len(s.Images) + len(s.Runtimes)
	}
	names := make([]string, 0, n)
	for i := range out {
		s := &out[i]
		names = append(names, s.Images...)
		s.Images = names[len(names)-len(s.Images) : len(names) : len(names)]
		names = append(names, s.Runtimes...)
		s.Runtimes = names[len(names)-len(s.Runtimes) : len(names) : len(names)]
		slices.Sort(s.Ports)
		slices.Sort(s.Sandboxes)
	}
	slices.SortFunc(out, func(x, y AgentState) int { return strings.Compare(x.ID, y.ID) })
	return out
}

// place puts a sandbox on a, taking a slot and its ports.
func (r *Registry) place(a *agent, id string, ports []int32) {
	ports = distinct(ports)
	if len(ports) > 0 && a.ports == nil {
		a.ports = make(map[int32]int, len(ports))
	}
	for _, p := range ports {
		a.ports[p]++
	}
	a.used++
	a.sandboxes[id] = struct{}{}
	r.sandboxes[id] = placed{agent: a, ports: ports}
	// a stays filed where it was, now above its free slots: see group.
}

// unplace takes a sandbox off its agent, freeing its slot and ports.
func (r *Registry) unplace(id string, p placed) {
	a := p.agent
	for _, port := range p.ports {
		if a.ports[port]--; a.ports[port] == 0 {
			delete(a.ports, port)
		}
	}
	a.used--
	delete(a.sandboxes, id)
	delete(r.sandboxes, id)
	r.promote(a)
}

// join counts a in its pool and, if it is healthy and not cordoned, files
// it in every group whose requests it can serve.
func (r *Registry) join(a *agent) {
	pc := r.pools[a.Pool]
	if pc == nil {
		pc = &poolCount{}
		r.pools[a.Pool] = pc
	}
	pc.total++
	if !a.Healthy {
		return
	}
	pc.healthy++
	r.healthy++
	if a.cordoned {
		pc.cordoned++
		return
	}
	for _, rt := range a.Runtimes {
		r.addMember(a, groupKey{pool: a.Pool, runtime: rt})
		for _, img := range a.Images {
			r.addMember(a, groupKey{pool: a.Pool, runtime: rt, image: img})
		}
	}
	r.promote(a)
}

// leave undoes join.
func (r *Registry) leave(a *agent) {
	pc := r.pools[a.Pool]
	pc.total--
	if a.Healthy {
		pc.healthy--
		r.healthy--
		if a.cordoned {
			pc.cordoned--
		}
	}
	if pc.total == 0 {
		delete(r.pools, a.Pool)
	}
	a.unfileAll()
	for _, m := range a.members {
		if m.g.members--; m.g.members == 0 {
			delete(r.groups, m.g.key)
		}
	}
	clear(a.members)
	a.members = a.members[:0]
}

func (r *Registry) addMember(a *agent, key groupKey) {
	g := r.groups[key]
	if g == nil {
		g = &group{key: key}
		r.groups[key] = g
	}
	g.members++
	a.members = append(a.members, membership{g: g})
}

// promote files a under its free slots in each group where it is filed
// lower, as after a release. Where it is filed higher, as after a
// placement, it stays: a pick in that group moves it down if it comes
// across it (see group).
func (r *Registry) promote(a *agent) {
	free := a.free()
	for m := range a.members {
		if ms := &a.members[m]; ms.bucket < free {
			ms.g.refile(a, m, free)
		}
	}
}

// unfileAll takes a out of the buckets of all its groups.
func (a *agent) unfileAll() {
	for m := range a.members {
		a.members[m].g.refile(a, m, 0)
	}
}

// maxBucket bounds the buckets of a group: an agent with more free slots
// than that is filed as if it had maxBucket, so that a wild capacity cannot
// make a group allocate a bucket per slot.
const maxBucket = 1024

// free returns the slots a has free, up to maxBucket.
func (a *agent) free() int {
	return min(max(a.Capacity-a.used, 0), maxBucket)
}

// portsBusy reports whether any of ports is in use on a.
func (a *agent) portsBusy(ports []int32) bool {
	if len(a.ports) == 0 {
		return false
	}
	for _, p := range ports {
		if a.ports[p] > 0 {
			return true
		}
	}
	return false
}

func (a *agent) placement() Placement {
	return Placement{AgentID: a.ID, Address: a.Address, NodeName: a.NodeName}
}

// refusal explains why no agent could take req. Every agent is counted for
// the first reason that refuses it: another pool, unhealthy, cordoned, no
// runtime, full, a port in use. g is the request's group without image, or
// nil when no placeable agent of the pool has the runtime; its pick has
// just found nothing, so every agent filed in it has a free slot and a
// port in use. The counts come from counters: refusing costs nothing
// beyond the search.
func (r *Registry) refusal(req Request, g *group) error {
	total := len(r.agents)
	inPool, healthy, cordoned := 0, 0, 0
	if pc := r.pools[req.Pool]; pc != nil {
		inPool, healthy, cordoned = pc.total, pc.healthy, pc.cordoned
	}
	placeable := healthy - cordoned
	withRuntime, withSlot := 0, 0
	if g != nil {
		withRuntime, withSlot = g.members, g.filed
	}
	runtime := cmp.Or(req.Runtime, defaultRuntime)

	if total == 0 {
		return &NoCapacityError{SandboxID: req.SandboxID, Reasons: "no agents are registered"}
	}
	var b strings.Builder
	reason := func(n int, one, many string) {
		if n > 0 {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%d %s", n, plural(n, one, many))
		}
	}
	reason(withRuntime-withSlot, "is full", "are full")
	reason(withSlot, fmt.Sprintf("has a port of %v in use", req.Ports), fmt.Sprintf("have a port of %v in use", req.Ports))
	reason(placeable-withRuntime, fmt.Sprintf("lacks runtime %q", runtime), fmt.Sprintf("lack runtime %q", runtime))
	reason(cordoned, "is being removed", "are being removed")
	reason(inPool-healthy, "is unhealthy", "are unhealthy")
	if req.Pool == "" {
		reason(total-inPool, "is in a SandboxPool, not the default pool", "are in SandboxPools, not the default pool")
	} else {
		reason(total-inPool, fmt.Sprintf("is not in pool %q", req.Pool), fmt.Sprintf("are not in pool %q", req.Pool))
	}
	return &NoCapacityError{
		SandboxID: req.SandboxID, Agents: total,
		Full: withRuntime - withSlot, PortInUse: withSlot, NoRuntime: placeable - withRuntime,
		Cordoned: cordoned, Unhealthy: inPool - healthy, OtherPool: total - inPool,
		Reasons: b.String(),
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// normalizeSet returns a sorted copy of s without duplicates or empty names.
func normalizeSet(s []string) []string {
	out := slices.DeleteFunc(slices.Clone(s), func(v string) bool { return v == "" })
	slices.Sort(out)
	return slices.Compact(out)
}

// distinct returns ports without duplicates, as a slice the caller may keep.
func distinct(ports []int32) []int32 {
	if len(ports) == 0 {
		return nil
	}
	out := make([]int32, 0, len(ports))
	for _, p := range ports {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// sameSet reports whether a and b hold the same ports; a has no duplicates.
func sameSet(a, b []int32) bool {
	for _, p := range b {
		if !slices.Contains(a, p) {
			return false
		}
	}
	// Every port of b is in a; they are equal if a has nothing more.
	for _, p := range a {
		if !slices.Contains(b, p) {
			return false
		}
	}
	return true
}
