package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// Refill's pace: how many warm sandboxes are made at once, how often the
// stock is looked at even when nothing changed, and the back-off after a
// kind's warm sandbox failed to start.
const (
	warmConcurrency = 2
	warmTick        = time.Second
	warmBackoffMin  = time.Second
	warmBackoffMax  = time.Minute
)

// A warm sandbox starts once no create has run for refillQuiet, or after
// refillMaxWait whatever the creates do. Making one keeps a small node's
// cores busy for tens of milliseconds: started at once, it falls on the
// answer of the claim that emptied its slot, and on the next creates.
const (
	refillQuiet   = 25 * time.Millisecond
	refillMaxWait = 250 * time.Millisecond
)

// warmPool is what the agent keeps about warm sandboxes besides the
// runtime's state: the targets the controller set, the warm containers
// taken (by a claim, or for removal) and the ones being made.
type warmPool struct {
	mu sync.Mutex
	// targets are the kinds to keep, by key; set says SetWarm was called
	// since the agent started. Until then, the warm sandboxes an earlier
	// run of the agent made are kept as they are.
	targets map[string]*fsbv1.WarmEntry
	set     bool
	// taken are warm containers no claim may take any more: one is being
	// claimed or removed. A warm sandbox serves one create, ever.
	taken map[string]bool
	// starting counts the warm sandboxes being made, by key.
	starting map[string]int
	// backoff is when a kind whose warm sandbox failed may be tried again,
	// and failures how many failed in a row.
	backoff  map[string]time.Time
	failures map[string]int
	kick     chan struct{}
	// creates counts the creates under way, and lastCreate is when the
	// last one ended (awaitQuiet).
	creates    int
	lastCreate time.Time
}

// createBegan and createEnded bracket a create, for awaitQuiet.
func (p *warmPool) createBegan() {
	p.mu.Lock()
	p.creates++
	p.mu.Unlock()
}

func (p *warmPool) createEnded() {
	p.mu.Lock()
	p.creates--
	p.lastCreate = time.Now()
	p.mu.Unlock()
}

// awaitQuiet waits until no create has run for refillQuiet, refillMaxWait
// at most, or until ctx ends.
func (p *warmPool) awaitQuiet(ctx context.Context) {
	deadline := time.Now().Add(refillMaxWait)
	for {
		p.mu.Lock()
		wait := refillQuiet
		if p.creates == 0 {
			wait -= time.Since(p.lastCreate)
		}
		p.mu.Unlock()
		wait = min(wait, time.Until(deadline))
		if wait <= 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func newWarmPool() *warmPool {
	return &warmPool{targets: map[string]*fsbv1.WarmEntry{}, taken: map[string]bool{}, starting: map[string]int{},
		backoff: map[string]time.Time{}, failures: map[string]int{}, kick: make(chan struct{}, 1)}
}

func (p *warmPool) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// SetWarm implements AgentService.SetWarm: it replaces the kinds of warm
// sandboxes the agent keeps, and answers the stock. The fence interceptor
// admitted the call; it is checked again before the targets change.
func (a *Agent) SetWarm(ctx context.Context, req *connect.Request[fsbv1.SetWarmRequest]) (*connect.Response[fsbv1.SetWarmResponse], error) {
	targets, err := validateWarmTargets(req.Msg.GetTargets())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if err := a.stillCurrent(ctx, req.Spec().Procedure); err != nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	}
	a.warm.mu.Lock()
	a.warm.targets, a.warm.set = targets, true
	a.warm.mu.Unlock()
	a.warm.poke()
	a.cfg.Logger.Info("warm targets set", slog.Int("kinds", len(targets)))
	return connect.NewResponse(&fsbv1.SetWarmResponse{Warm: a.warmStock()}), nil
}

// validateWarmTargets checks a SetWarm request: every entry valid, no two
// of one kind, and each key the entry's own.
func validateWarmTargets(ts []*fsbv1.WarmTarget) (map[string]*fsbv1.WarmEntry, error) {
	entries := make([]v1alpha1.WarmEntry, 0, len(ts))
	for i, t := range ts {
		if t.GetEntry() == nil {
			return nil, fmt.Errorf("targets[%d]: no entry", i)
		}
		entries = append(entries, v1alpha1.WarmEntryFromProto(t.GetEntry()))
	}
	if err := v1alpha1.ValidateWarm("targets", entries); err != nil {
		return nil, err
	}
	out := make(map[string]*fsbv1.WarmEntry, len(ts))
	for i, t := range ts {
		key, ok := v1alpha1.WarmEntryKey(t.GetEntry())
		if !ok || key != t.GetKey() {
			return nil, fmt.Errorf("targets[%d].key %q: the entry's key is %q", i, t.GetKey(), key)
		}
		out[key] = proto.CloneOf(t.GetEntry())
	}
	return out, nil
}

// warmStock counts the warm sandboxes per kind: of every targeted kind,
// and of every kind the agent holds.
func (a *Agent) warmStock() []*fsbv1.WarmStock {
	warms := a.cfg.Runtime.WarmSandboxes()
	a.warm.mu.Lock()
	defer a.warm.mu.Unlock()
	byKey := map[string]*fsbv1.WarmStock{}
	get := func(key string) *fsbv1.WarmStock {
		s := byKey[key]
		if s == nil {
			s = &fsbv1.WarmStock{Key: key}
			byKey[key] = s
		}
		return s
	}
	for key := range a.warm.targets {
		get(key)
	}
	for key, n := range a.warm.starting {
		if n > 0 {
			get(key).Starting += int32(n)
		}
	}
	ready, starting := 0, 0
	for _, w := range warms {
		if w.Phase == runtime.PhaseRunning && !a.warm.taken[w.ContainerID] {
			get(w.Warm).Ready++
		}
	}
	out := make([]*fsbv1.WarmStock, 0, len(byKey))
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		out = append(out, byKey[key])
		ready += int(byKey[key].Ready)
		starting += int(byKey[key].Starting)
	}
	a.metrics.warm.WithLabelValues("ready").Set(float64(ready))
	a.metrics.warm.WithLabelValues("starting").Set(float64(starting))
	return out
}

// takeWarm takes a ready warm sandbox of kind key for a claim, or returns
// "" when there is none. Whoever took it gives it back (giveBack) once the
// create is done, whatever became of it.
func (a *Agent) takeWarm(key string) string {
	warms := a.cfg.Runtime.WarmSandboxes()
	a.warm.mu.Lock()
	defer a.warm.mu.Unlock()
	for _, w := range warms {
		if w.Warm == key && w.Phase == runtime.PhaseRunning && !a.warm.taken[w.ContainerID] {
			a.warm.taken[w.ContainerID] = true
			return w.ContainerID
		}
	}
	return ""
}

// takeVictim takes a warm sandbox to remove so that a cold create of kind
// key gets its slot: one of another kind first, else of key; "" if none.
func (a *Agent) takeVictim(key string) string {
	warms := a.cfg.Runtime.WarmSandboxes()
	a.warm.mu.Lock()
	defer a.warm.mu.Unlock()
	slices.SortStableFunc(warms, func(x, y runtime.Info) int {
		return cmp.Compare(boolInt(x.Warm == key), boolInt(y.Warm == key))
	})
	for _, w := range warms {
		if !a.warm.taken[w.ContainerID] {
			a.warm.taken[w.ContainerID] = true
			return w.ContainerID
		}
	}
	return ""
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// giveBack ends a take: a container still warm may be taken again, one
// that was claimed or removed is no warm sandbox any more.
func (a *Agent) giveBack(id string) {
	a.warm.mu.Lock()
	delete(a.warm.taken, id)
	a.warm.mu.Unlock()
	a.warm.poke()
}

// removeWarm removes a taken warm sandbox.
func (a *Agent) removeWarm(ctx context.Context, id string) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DeleteTimeout)
	defer cancel()
	err := a.cfg.Runtime.RemoveWarm(rctx, id)
	a.giveBack(id)
	return err
}

// reserveWarm takes a slot for warm sandbox id about to be made, unless
// the agent is full.
func (a *Agent) reserveWarm(id string) (release func(), ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.heldLocked("")) >= a.cfg.Capacity {
		return nil, false
	}
	a.creating[id] = nil
	return func() {
		a.mu.Lock()
		delete(a.creating, id)
		a.mu.Unlock()
	}, true
}

// refill keeps, per target, ready + starting warm sandboxes at the
// target's count, within capacity, and removes the warm sandboxes no
// target wants (once SetWarm was called) and those that stopped. It runs
// until ctx ends and waits for the work it started.
func (a *Agent) refill(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, warmConcurrency)
	tick := time.NewTicker(warmTick)
	defer tick.Stop()
	for {
		_, changed := a.cfg.Runtime.Sandboxes()
		a.refillOnce(ctx, &wg, sem)
		select {
		case <-ctx.Done():
			return
		case <-a.warm.kick:
		case <-changed:
		case <-tick.C:
		}
	}
}

// refillOnce starts what the stock lacks and removes what it has too much.
func (a *Agent) refillOnce(ctx context.Context, wg *sync.WaitGroup, sem chan struct{}) {
	warms := a.cfg.Runtime.WarmSandboxes()
	type start struct {
		key   string
		entry *fsbv1.WarmEntry
	}
	var remove []string
	var starts []start
	now := time.Now()
	a.warm.mu.Lock()
	ready := map[string]int{}
	for _, w := range warms {
		if a.warm.taken[w.ContainerID] {
			continue
		}
		target, targeted := a.warm.targets[w.Warm]
		switch {
		case w.Phase == runtime.PhaseExited:
		case a.warm.set && !targeted:
		case w.Phase != runtime.PhaseRunning:
			continue // being made
		case a.warm.set && ready[w.Warm] >= int(target.GetCount()):
			// More than the target asks for (its count was lowered). The
			// ones starting do not count here: one that just started is
			// running before it stops counting as starting.
		default:
			ready[w.Warm]++
			continue
		}
		a.warm.taken[w.ContainerID] = true
		remove = append(remove, w.ContainerID)
	}
	for _, key := range slices.Sorted(maps.Keys(a.warm.targets)) {
		entry := a.warm.targets[key]
		if now.Before(a.warm.backoff[key]) {
			continue
		}
		for n := ready[key] + a.warm.starting[key]; n < int(entry.GetCount()); n++ {
			starts = append(starts, start{key, entry})
		}
	}
	a.warm.mu.Unlock()

	for _, id := range remove {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.removeWarm(ctx, id); err != nil {
				a.cfg.Logger.Warn("remove a warm sandbox", slog.String("container", id), slog.Any("err", err))
			}
		}()
	}
	if len(starts) > 0 {
		// Before a slot is reserved: a create meanwhile may want it.
		a.warm.awaitQuiet(ctx)
	}
	for _, s := range starts {
		select {
		case sem <- struct{}{}:
		default:
			return // at the concurrency bound: the next round goes on
		}
		id, err := runtime.NewWarmID()
		if err != nil {
			<-sem
			a.cfg.Logger.Warn("warm sandbox", slog.Any("err", err))
			return
		}
		release, ok := a.reserveWarm(id)
		if !ok {
			<-sem
			return // full: warm sandboxes never take a sandbox's slot
		}
		a.warm.mu.Lock()
		a.warm.starting[s.key]++
		a.warm.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			began := time.Now()
			cctx, cancel := context.WithTimeout(ctx, CreateTimeout)
			_, err := a.cfg.Runtime.NewWarm(cctx, id, s.key, v1alpha1.WarmEntrySpec(s.entry))
			cancel()
			release()
			a.warm.mu.Lock()
			a.warm.starting[s.key]--
			if a.warm.starting[s.key] <= 0 {
				delete(a.warm.starting, s.key)
			}
			if err != nil {
				a.warm.failures[s.key]++
				d := min(warmBackoffMin<<min(a.warm.failures[s.key]-1, 10), warmBackoffMax)
				a.warm.backoff[s.key] = time.Now().Add(d)
			} else {
				delete(a.warm.failures, s.key)
				delete(a.warm.backoff, s.key)
			}
			a.warm.mu.Unlock()
			if err != nil {
				if ctx.Err() == nil {
					a.cfg.Logger.Warn("warm sandbox not made", slog.String("kind", s.key), slog.String("image", s.entry.GetImage()), slog.Any("err", err))
				}
			} else {
				a.metrics.warmRefill.Observe(time.Since(began).Seconds())
			}
			a.warm.poke()
		}()
	}
}

// errFull marks a reservation refused for want of a slot.
var errFull = errors.New("no free slot")
