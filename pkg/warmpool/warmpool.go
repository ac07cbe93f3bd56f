// Package warmpool keeps the warm sandboxes that pools ask for on their
// agents. A SandboxPool's spec.warm lists kinds of sandbox (image, runtime,
// resources) and how many of each to keep pre-started; the Planner spreads
// each count over the pool's placeable agents and tells every agent its
// share (AgentService.SetWarm). The agents make, refill and hand out their
// warm sandboxes themselves: a claim is decided on the agent, under its
// lock, so that no warm sandbox ever serves two creates, and nothing here
// is on a create's path.
//
// The Planner runs on the controller that serves creates (the leader). It
// sends an agent its targets when they change, when the agent (re)connects
// (an agent keeps its targets in memory only), and again after a failed
// call, at the next resync.
package warmpool

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
)

// DefaultResync is how often every agent's targets are checked when nothing
// asked for it: what retries a failed SetWarm and moves shares off an agent
// that went down.
const DefaultResync = 2 * time.Second

// callTimeout bounds one SetWarm call.
const callTimeout = 5 * time.Second

// Registry is what the Planner reads of the agents.
type Registry interface {
	Agents() []registry.AgentState
}

// Agents reaches an agent (agentlink.Set).
type Agents interface {
	Reach(ctx context.Context, agentID string) (fsbv1connect.AgentServiceClient, context.Context, context.CancelFunc, error)
}

// Config is what New needs.
type Config struct {
	Registry Registry
	Agents   Agents
	Logger   *slog.Logger
	// Resync is DefaultResync when zero.
	Resync time.Duration
}

// Planner spreads pools' warm entries over their agents; see the package
// doc. Its methods are safe for concurrent use.
type Planner struct {
	cfg  Config
	kick chan struct{}

	mu sync.Mutex
	// pools holds each pool's warm entries ("" is the default pool).
	pools map[string][]*fsbv1.WarmEntry
	// sent holds, by agent ID, the fingerprint of the targets the agent
	// acknowledged last; an agent missing was not sent any in this term,
	// or must be sent them again.
	sent map[string]string
	// refused holds the agents that answered Unimplemented (an older
	// agent), so that it is said once.
	refused map[string]bool
}

// New returns a Planner for cfg; Run runs it.
func New(cfg Config) *Planner {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = DefaultResync
	}
	return &Planner{
		cfg:     cfg,
		kick:    make(chan struct{}, 1),
		pools:   make(map[string][]*fsbv1.WarmEntry),
		sent:    make(map[string]string),
		refused: make(map[string]bool),
	}
}

// SetPool sets the warm entries of a pool ("" is the default pool); none
// (a pool deleted, or being deleted) removes its warm sandboxes.
func (p *Planner) SetPool(pool string, entries []v1alpha1.WarmEntry) {
	out := make([]*fsbv1.WarmEntry, 0, len(entries))
	for _, e := range entries {
		out = append(out, v1alpha1.WarmEntryToProto(e))
	}
	p.mu.Lock()
	if len(out) == 0 {
		delete(p.pools, pool)
	} else {
		p.pools[pool] = out
	}
	p.mu.Unlock()
	p.Kick()
}

// AgentUp says an agent (re)connected: it holds no targets until it is
// sent them again.
func (p *Planner) AgentUp(agentID string) {
	p.mu.Lock()
	delete(p.sent, agentID)
	p.mu.Unlock()
	p.Kick()
}

// Kick asks for a plan now rather than at the next resync.
func (p *Planner) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Run plans and sends targets until ctx ends: on every Kick and every
// Resync. It forgets what it sent when it returns, so that a later term
// (another leadership) sends every agent its targets again.
func (p *Planner) Run(ctx context.Context) {
	defer func() {
		p.mu.Lock()
		clear(p.sent)
		p.mu.Unlock()
	}()
	tick := time.NewTicker(p.cfg.Resync)
	defer tick.Stop()
	for {
		p.sync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-tick.C:
		}
	}
}

// sync sends every agent whose targets changed its new ones, one call at a
// time: targets change seldom, and a slow agent only delays the others'.
func (p *Planner) sync(ctx context.Context) {
	agents := p.cfg.Registry.Agents()
	p.mu.Lock()
	plan := Plan(p.pools, agents)
	var todo []string
	for _, a := range agents {
		// Never sent in this term is not "sent none": an agent may hold
		// warm sandboxes an earlier term asked for, which it keeps until
		// told otherwise.
		if sent, ok := p.sent[a.ID]; !ok || sent != fingerprint(plan[a.ID]) {
			todo = append(todo, a.ID)
		}
	}
	p.mu.Unlock()
	for _, id := range todo {
		if ctx.Err() != nil {
			return
		}
		p.send(ctx, id, plan[id])
	}
}

// send gives one agent its targets and notes them once acknowledged.
func (p *Planner) send(ctx context.Context, agentID string, targets []*fsbv1.WarmTarget) {
	client, callCtx, cancel, err := p.cfg.Agents.Reach(ctx, agentID)
	if err != nil {
		return // not connected: AgentUp brings it back
	}
	defer cancel()
	callCtx, cancelCall := context.WithTimeout(callCtx, callTimeout)
	defer cancelCall()
	_, err = client.SetWarm(callCtx, connect.NewRequest(&fsbv1.SetWarmRequest{Targets: targets}))
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err == nil:
		p.sent[agentID] = fingerprint(targets)
		delete(p.refused, agentID)
	case connect.CodeOf(err) == connect.CodeUnimplemented:
		if !p.refused[agentID] && len(targets) > 0 {
			p.cfg.Logger.Warn("agent keeps no warm sandboxes (an older version?): its pool's warm entries are not kept there",
				slog.String("agent", agentID), slog.Any("error", err))
		}
		p.refused[agentID] = true
		p.sent[agentID] = fingerprint(targets)
	case ctx.Err() == nil:
		p.cfg.Logger.Warn("set an agent's warm sandboxes; retried at the next resync",
			slog.String("agent", agentID), slog.Any("error", err))
	}
}

// Plan is each agent's targets (by agent ID; agents with none are left
// out) for pools' warm entries: each entry's count spread evenly over its
// pool's healthy, uncordoned agents that offer its runtime, in order of
// agent ID, the first ones taking one more when it does not divide. An
// entry whose kind cannot be keyed (refused by validation before it gets
// here) is skipped.
func Plan(pools map[string][]*fsbv1.WarmEntry, agents []registry.AgentState) map[string][]*fsbv1.WarmTarget {
	byPool := make(map[string][]registry.AgentState)
	for _, a := range agents {
		if a.Healthy && !a.Cordoned {
			byPool[a.Pool] = append(byPool[a.Pool], a)
		}
	}
	out := make(map[string][]*fsbv1.WarmTarget)
	for _, pool := range slices.Sorted(maps.Keys(pools)) {
		members := byPool[pool]
		slices.SortFunc(members, func(x, y registry.AgentState) int { return strings.Compare(x.ID, y.ID) })
		for _, e := range pools[pool] {
			key, ok := v1alpha1.WarmEntryKey(e)
			if !ok || e.GetCount() <= 0 {
				continue
			}
			rt := e.GetRuntime()
			if rt == "" {
				rt = v1alpha1.RuntimeRunc
			}
			var able []registry.AgentState
			for _, a := range members {
				if slices.Contains(a.Runtimes, rt) {
					able = append(able, a)
				}
			}
			if len(able) == 0 {
				continue
			}
			n := int(e.GetCount())
			for i, a := range able {
				share := n / len(able)
				if i < n%len(able) {
					share++
				}
				if share == 0 {
					continue
				}
				entry := proto.CloneOf(e)
				entry.Count = int32(share)
				out[a.ID] = append(out[a.ID], &fsbv1.WarmTarget{Key: key, Entry: entry})
			}
		}
	}
	return out
}

// fingerprint identifies a list of targets; none is "".
func fingerprint(targets []*fsbv1.WarmTarget) string {
	if len(targets) == 0 {
		return ""
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&fsbv1.SetWarmRequest{Targets: targets})
	if err != nil {
		return "unmarshalable" // never equal to a sent one: sent again
	}
	return string(b)
}
