// Package agentlink is the controller's link to its agents: one Connect client
// per agent, and a monitor per agent that follows its WatchStatus stream,
// keeps the latest status, and feeds the registry (capacity, images,
// runtimes, health, and the sandboxes already placed there).
//
// The agents are a fixed list of addresses (Config.Addresses), or come and
// go while the Set runs (Add, Remove), as a source that follows them finds
// them: in Kubernetes, pkg/agentpods from the agents' pods. Each agent is
// known by a key that stays with it (its address in a fixed list, its
// pod's UID when found from pods: a new pod may get an old one's address).
// An agent removed is down, exactly as one that stopped answering: its
// sandboxes are Lost after the controller's lost timeout.
package agentlink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
)

// Config is what a Set needs.
type Config struct {
	// Addresses are the agents' host:port (reached over h2c) or URLs:
	// http://host:port, or https://host:port for TLS (see Transport). Each
	// is its agent's key. More agents may be added while the Set runs.
	Addresses []string
	// Discover says a source adds the agents (Add) and says when it has
	// listed those it knows at its start (Listed): Synced waits for that.
	// Without it the agents are Addresses, listed at New.
	Discover bool
	// KeyIsID says an agent's key is the agent ID it must report (the UID
	// of its pod, which the agent is told with --agent-id): an agent that
	// reports another ID is warned about, and still followed by its key.
	KeyIsID bool
	// Token is sent to every agent.
	Token    string
	Registry *registry.Registry
	// Changed is called with an agent's status after every change of it.
	Changed func(*fsbv1.AgentStatus)
	// Up is called with an agent's status when it connects: the first
	// time, and every time it comes back after being unreachable. It runs
	// after Changed, on the goroutine that follows the agent.
	Up     func(*fsbv1.AgentStatus)
	Logger *slog.Logger
	// HTTPClient reaches the agents; nil means a default one.
	HTTPClient *http.Client
	// Fence returns the fence of the controller's current term, sent with
	// every call (pkg/fence); nil (no election) sends none.
	Fence func() int64
	// Heartbeat is how often an agent is asked to speak when nothing
	// changes; an agent silent for three of them (a stopped process, a
	// partition) counts as down. Zero means DefaultHeartbeat.
	Heartbeat time.Duration
}

// DefaultHeartbeat is the agents' heartbeat interval when Config sets none.
const DefaultHeartbeat = 2 * time.Second

// maxReconnectBackoff bounds the wait between attempts to reach an agent, so
// that a restarted agent is back in the registry within about a second.
const maxReconnectBackoff = time.Second

// Set is the controller's agents.
type Set struct {
	cfg Config

	started time.Time

	// opts are the options of every agent's client.
	opts []connect.ClientOption

	mu    sync.Mutex
	byKey map[string]*agent // the agents followed now
	// byID holds, by the ID they report, the agents followed now and those
	// removed since (down, for good): a removed agent's sandboxes count as
	// silent since its last message, not as never heard of.
	byID   map[string]*agent
	synced chan struct{}
	listed bool // the source has added the agents it knew at its start
	// pending counts the agents added before the listing that have not
	// sent a status or been found down yet; Synced closes at zero.
	pending int
	// run is Run's context, nil until Run starts: an agent added before
	// is started by Run, one added after at once. stopped is set when it
	// ends: no agent starts after that.
	run     context.Context
	stopped bool
	wg      sync.WaitGroup // every follow goroutine
}

type agent struct {
	key      string
	addr     string
	client   fsbv1connect.AgentServiceClient
	status   *fsbv1.AgentStatus // nil until the first one
	up       bool
	lastSeen time.Time // the last message, status or heartbeat
	// reported maps each sandbox ID in the last status to the registry key
	// that holds its slot here: the ID itself, or for a revision that the
	// registry places elsewhere (a replaced one, not yet removed) a key of
	// its own, so that both agents' slots are counted.
	reported map[string]string
	conflict bool // another address reports the same agent ID
	// removed says its source removed it (Remove): it is down for good,
	// kept only so that its silence counts from its last message.
	removed bool
	// counted says the agent counts in the Set's pending; seen that it
	// has sent a status or been found down since it was added.
	counted, seen bool
	// warnedID is the unexpected ID last warned about (Config.KeyIsID).
	warnedID string
	// stop ends the goroutine that follows the agent, done is closed when
	// it has returned; both nil until it starts.
	stop context.CancelFunc
	done chan struct{}
	// alive ends when the agent goes down: calls bound to it (Bind) end
	// with it, so that nothing waits on an agent that stopped answering.
	alive context.Context
	died  context.CancelFunc
}

// ErrUnknownAgent marks an agent ID the controller does not know.
var ErrUnknownAgent = errors.New("unknown agent")

// New returns a Set for cfg; Run starts following the agents.
func New(cfg Config) *Set {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: transport(nil)}
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	s := &Set{cfg: cfg, started: time.Now(), byKey: make(map[string]*agent), byID: make(map[string]*agent), synced: make(chan struct{})}
	// No gzip on the link: exec output and file data cross a cluster's
	// network, where deflate, not the wire, would be the bottleneck (on
	// loopback it took twice the time of a 40 MiB read of a file).
	opts := []connect.ClientOption{connect.WithAcceptCompression("gzip", nil, nil)}
	if cfg.Token != "" {
		opts = append(opts, connect.WithInterceptors(auth.Bearer(cfg.Token)))
	}
	if cfg.Fence != nil {
		opts = append(opts, connect.WithInterceptors(fenceInterceptor(cfg.Fence)))
	}
	s.opts = opts
	for _, addr := range cfg.Addresses {
		s.Add(addr, addr)
	}
	if !cfg.Discover {
		s.Listed()
	}
	return s
}

// Add follows the agent at addr (as in Config.Addresses) under key. An
// agent already followed under key at addr is left as it is; at another
// address it is removed first (as Remove does) and followed anew there.
func (s *Set) Add(key, addr string) {
	s.mu.Lock()
	old, ok := s.byKey[key]
	s.mu.Unlock()
	if ok {
		if old.addr == addr {
			return
		}
		s.Remove(key)
	}
	url := addr
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	a := &agent{key: key, addr: addr, client: fsbv1connect.NewAgentServiceClient(s.cfg.HTTPClient, url, s.opts...)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byKey[key]; ok {
		return // added meanwhile by another caller
	}
	s.byKey[key] = a
	if !s.listed {
		a.counted = true
		s.pending++
	}
	s.startLocked(a)
}

// Remove stops following the agent under key, and marks it down as an
// agent found unreachable is: unhealthy in the registry, Changed called
// (when it was up), its calls (Bind) ended. Its sandboxes are left to the
// controller's lost timeout, counted from the agent's last message. An
// unknown key is ignored. Remove waits for the goroutine that followed
// the agent, so it must not be called from Config's callbacks.
func (s *Set) Remove(key string) {
	s.mu.Lock()
	a, ok := s.byKey[key]
	if !ok {
		s.mu.Unlock()
		return
	}
	delete(s.byKey, key)
	a.removed = true
	s.settleLocked(a) // a source that removes it has decided about it
	stop, done := a.stop, a.done
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	s.down(a, errRemoved)
	// A removed agent that runs nothing is forgotten, here and in the
	// registry: no sandbox of it waits to be found Lost (a pool's agent
	// scaled down, say), and an agent that never comes back must not count
	// among the unhealthy ones for good. One with sandboxes stays, down,
	// so that they go Lost after the lost timeout.
	s.mu.Lock()
	st := a.status
	s.mu.Unlock()
	if st != nil && s.cfg.Registry.RemoveIfEmpty(st.GetAgentId()) {
		s.mu.Lock()
		s.dropLocked(a)
		s.mu.Unlock()
	}
}

// errRemoved is why a removed agent is down.
var errRemoved = errors.New("removed from the agents by their source")

// Listed says the source has added every agent it knew at its start:
// Synced closes once each of them has been seen or found down once.
func (s *Set) Listed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listed = true
	s.syncedLocked()
}

// startLocked starts following a, if Run runs. s.mu must be held.
func (s *Set) startLocked(a *agent) {
	if s.run == nil || s.stopped {
		return
	}
	ctx, stop := context.WithCancel(s.run)
	a.stop, a.done = stop, make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(a.done)
		defer stop()
		s.follow(ctx, a)
	}()
}

// Transport returns the transport that reaches agents over HTTP/2: over
// TLS for an https:// agent URL, trusting the CA certificates (PEM) in
// caFile (empty: the system's roots) and verifying that the agent's
// certificate names serverName (empty: the host dialed), and cleartext
// (h2c) for http://. A name is needed where agents are dialed by pod IP:
// their certificate names a Service (fsb-agent.fsb-system.svc), not every
// pod's address.
func Transport(caFile, serverName string) (*http.Transport, error) {
	if caFile == "" {
		t := transport(nil)
		t.TLSClientConfig.ServerName = serverName
		return t, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("agent CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("agent CA file %s holds no PEM certificate", caFile)
	}
	t := transport(pool)
	t.TLSClientConfig.ServerName = serverName
	return t, nil
}

// transport is Transport trusting roots (nil: the system's).
func transport(roots *x509.CertPool) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	var p http.Protocols
	p.SetHTTP2(true)
	// h2c for http:// needs HTTP/1 off: with it on, http:// would speak
	// HTTP/1.1, which Connect's streams (WatchStatus) do not want.
	p.SetUnencryptedHTTP2(true)
	t.Protocols = &p
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	return t
}

// Run follows every agent's status, those added later too, until ctx
// ends; then it waits for every goroutine that followed one.
func (s *Set) Run(ctx context.Context) {
	s.mu.Lock()
	s.run = ctx
	for _, a := range s.byKey {
		s.startLocked(a)
	}
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.wg.Wait()
}

// Synced is closed once the agents are listed (at New for a fixed list,
// at Listed for a source's) and every agent listed has sent a status or
// been found down once (or been removed), so the registry holds what the
// agents already run.
func (s *Set) Synced() <-chan struct{} { return s.synced }

// settle records that a has been seen or found down. s.mu must be held.
func (s *Set) settleLocked(a *agent) {
	if a.seen {
		return
	}
	a.seen = true
	if a.counted {
		s.pending--
		s.syncedLocked()
	}
}

// syncedLocked closes synced once the listing is done and nothing listed
// is pending. s.mu must be held.
func (s *Set) syncedLocked() {
	if !s.listed || s.pending > 0 {
		return
	}
	select {
	case <-s.synced:
	default:
		close(s.synced)
	}
}

func (s *Set) settle(a *agent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked(a)
}

// follow keeps one agent's status current, reconnecting with back-off. A
// stream that carries nothing, not even a heartbeat, for three heartbeat
// intervals is cut: the agent counts as down.
func (s *Set) follow(ctx context.Context, a *agent) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.watch(ctx, a, func(st *fsbv1.AgentStatus) {
			backoff = 100 * time.Millisecond
			if st != nil {
				s.update(a, st)
			} else {
				s.heard(a)
			}
			s.settle(a)
		})
		if ctx.Err() != nil {
			return
		}
		s.down(a, err)
		s.settle(a)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxReconnectBackoff)
	}
}

// watch follows one WatchStatus stream until it breaks or falls silent,
// calling got with each status (nil for a heartbeat).
func (s *Set) watch(ctx context.Context, a *agent, got func(*fsbv1.AgentStatus)) error {
	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	silence := 3 * s.cfg.Heartbeat
	var silent atomic.Bool
	watchdog := time.AfterFunc(silence, func() { silent.Store(true); cancel() })
	defer watchdog.Stop()
	stream, err := a.client.WatchStatus(streamCtx, connect.NewRequest(&fsbv1.WatchStatusRequest{HeartbeatMillis: int32(s.cfg.Heartbeat.Milliseconds())}))
	if err != nil {
		return err
	}
	defer stream.Close()
	for stream.Receive() {
		watchdog.Reset(silence)
		got(stream.Msg().GetStatus())
	}
	if silent.Load() {
		return fmt.Errorf("no word from the agent for %s", silence)
	}
	return stream.Err()
}

func (s *Set) heard(a *agent) {
	s.mu.Lock()
	a.lastSeen = time.Now()
	s.mu.Unlock()
}

func (s *Set) update(a *agent, st *fsbv1.AgentStatus) {
	id := st.GetAgentId()
	s.mu.Lock()
	var unexpected bool
	if s.cfg.KeyIsID && id != a.key && id != a.warnedID {
		unexpected, a.warnedID = true, id
	}
	first := a.status == nil || !a.up
	if a.status != nil && a.status.GetAgentId() != id {
		s.dropLocked(a) // the address now runs another agent
	}
	a.status, a.up, a.lastSeen = st, true, time.Now()
	if first {
		a.alive, a.died = context.WithCancel(context.Background())
	}
	conflict := s.claimantsLocked(id)
	if len(conflict) < 2 {
		conflict = nil
		s.byID[id] = a
	}
	wasConflict := a.conflict
	for _, other := range s.byKey {
		if other.up && other.status.GetAgentId() == id {
			other.conflict = conflict != nil
		}
	}
	previous := a.reported
	s.mu.Unlock()
	if unexpected {
		s.cfg.Logger.Warn("agent reports an ID other than the one it was found with: is it started with --agent-id set to its pod's UID?",
			slog.String("expected", a.key), slog.String("reported", id), slog.String("address", a.addr))
	}

	if conflict != nil {
		// Two processes claim one identity: neither gets new sandboxes, and
		// what runs is left alone (its slots stay as they were counted).
		if !wasConflict {
			s.cfg.Logger.Error("two agents report the same agent ID: neither gets new sandboxes until one goes",
				slog.String("agent", id), slog.Any("addresses", conflict))
		}
		s.cfg.Registry.Upsert(registryAgent(st, a.addr, false))
		if s.cfg.Changed != nil {
			s.cfg.Changed(st)
		}
		return
	}
	if wasConflict {
		s.cfg.Logger.Info("agent ID no longer reported twice", slog.String("agent", id), slog.String("address", a.addr))
	}
	if first {
		s.cfg.Logger.Info("agent up", slog.String("agent", id), slog.String("address", a.addr),
			slog.Int("sandboxes", len(st.GetSandboxes())), slog.Int("capacity", int(st.GetCapacity())))
	}
	// The first status of an agent that runs sandboxes files it unhealthy
	// until they are assigned: in between it would look idle, and a pool's
	// scale-down cordons (and removes) only agents that run nothing.
	joining := first && len(st.GetSandboxes()) > 0
	s.cfg.Registry.Upsert(registryAgent(st, a.addr, !joining))
	reported := make(map[string]string, len(st.GetSandboxes()))
	// Running revisions first: of two revisions of one sandbox (the old
	// one not removed yet), the one that runs takes the slot.
	sandboxes := slices.Clone(st.GetSandboxes())
	slices.SortStableFunc(sandboxes, func(a, b *fsbv1.AgentSandbox) int {
		switch ea, eb := exited(a), exited(b); {
		case ea == eb:
			return 0
		case eb:
			return -1
		}
		return 1
	})
	for _, sb := range sandboxes {
		// What runs there holds its slot and ports, whoever placed it. A
		// sandbox the registry places on another agent (its old revision
		// still here) holds a slot under a key of its own.
		key := sb.GetSandboxId()
		p, held := s.cfg.Registry.Lookup(key)
		if held && p.AgentID != id {
			key = staleKey(key, id)
		}
		if _, dup := reported[sb.GetSandboxId()]; dup {
			continue
		}
		reported[sb.GetSandboxId()] = key
		if !held && previous[sb.GetSandboxId()] == key && exited(sb) {
			// Released since the last status, and ended: a delete that
			// finished (or a revision given up), which this status,
			// sent before the container went, does not know yet. Taking
			// the slot again would hold it until the next status and
			// refuse creates meanwhile.
			continue
		}
		_ = s.cfg.Registry.Assign(key, id, sb.GetSpec().GetExposedPorts())
	}
	if joining {
		s.cfg.Registry.Upsert(registryAgent(st, a.addr, true))
	}
	s.mu.Lock()
	a.reported = reported
	s.mu.Unlock()
	// A sandbox the agent reported and no longer does (or now under
	// another key) has no container left there: its slot and ports are
	// free, whoever deleted it.
	for sbID, key := range previous {
		if reported[sbID] == key {
			continue
		}
		if p, ok := s.cfg.Registry.Lookup(key); ok && p.AgentID == id {
			s.cfg.Registry.Release(key)
		}
	}
	if s.cfg.Changed != nil {
		s.cfg.Changed(st)
	}
	if (first || wasConflict) && s.cfg.Up != nil {
		// Newly up, or the ID is its own again after a conflict: its
		// sandboxes are reconciled.
		s.cfg.Up(st)
	}
}

// exited reports whether a sandbox's task has ended.
func exited(sb *fsbv1.AgentSandbox) bool {
	switch sb.GetPhase() {
	case fsbv1.Phase_PHASE_SUCCEEDED, fsbv1.Phase_PHASE_FAILED, fsbv1.Phase_PHASE_LOST:
		return true
	}
	return false
}

// staleKey is the registry key of a sandbox revision that runs on agentID
// while the registry places the sandbox elsewhere.
func staleKey(sandboxID, agentID string) string { return sandboxID + "@" + agentID }

func registryAgent(st *fsbv1.AgentStatus, addr string, healthy bool) registry.Agent {
	var warm map[string]int
	for _, w := range st.GetWarm() {
		if w.GetReady() > 0 {
			if warm == nil {
				warm = make(map[string]int, len(st.GetWarm()))
			}
			warm[w.GetKey()] += int(w.GetReady())
		}
	}
	return registry.Agent{
		ID: st.GetAgentId(), Address: addr, Pool: st.GetPool(), NodeName: st.GetNodeName(), Capacity: int(st.GetCapacity()),
		Images: st.GetImages(), Runtimes: st.GetRuntimes(), Healthy: healthy, Warm: warm,
	}
}

// claimantsLocked returns the addresses of the connected agents that report
// agent ID id, sorted. s.mu must be held.
func (s *Set) claimantsLocked(id string) []string {
	var out []string
	for _, a := range s.claimingLocked(id) {
		out = append(out, a.addr)
	}
	return out
}

// claimingLocked returns the connected agents that report agent ID id,
// sorted by address. s.mu must be held.
func (s *Set) claimingLocked(id string) []*agent {
	var out []*agent
	for _, a := range s.byKey {
		if a.up && a.status.GetAgentId() == id {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b *agent) int { return strings.Compare(a.addr, b.addr) })
	return out
}

// dropLocked forgets that a reported its old agent ID. s.mu must be held.
func (s *Set) dropLocked(a *agent) {
	if s.byID[a.status.GetAgentId()] == a {
		delete(s.byID, a.status.GetAgentId())
	}
}

func (s *Set) down(a *agent, err error) {
	s.mu.Lock()
	wasUp := a.up
	a.up = false
	if a.died != nil {
		a.died()
	}
	st := a.status
	var resolved *agent
	if st != nil && a.conflict {
		a.conflict = false
		// The other claimant, if only one is left, has the ID to itself.
		if left := s.claimingLocked(st.GetAgentId()); len(left) == 1 {
			resolved = left[0]
		}
	}
	s.mu.Unlock()
	if st == nil {
		if errors.Is(err, errRemoved) {
			s.cfg.Logger.Info("agent removed before it was heard from", slog.String("address", a.addr))
			return
		}
		s.cfg.Logger.Warn("agent unreachable", slog.String("address", a.addr), slog.Any("err", err))
		return
	}
	if wasUp {
		s.cfg.Logger.Warn("agent down", slog.String("agent", st.GetAgentId()), slog.String("address", a.addr), slog.Any("err", err))
	}
	if resolved != nil {
		s.mu.Lock()
		rst := resolved.status
		s.mu.Unlock()
		s.update(resolved, rst)
		return
	}
	s.cfg.Registry.Upsert(registryAgent(st, a.addr, false))
	if wasUp && s.cfg.Changed != nil {
		s.cfg.Changed(st)
	}
}

// Client returns the client of an agent by ID.
func (s *Set) Client(agentID string) (fsbv1connect.AgentServiceClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.byID[agentID]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownAgent, agentID)
	}
	if a.conflict {
		return nil, fmt.Errorf("agent %q is reported by %s: it takes no calls until only one address reports it",
			agentID, strings.Join(s.claimantsLocked(agentID), " and "))
	}
	return a.client, nil
}

// ErrAgentDown marks a call to an agent that is not connected, or that
// went down while the call ran.
var ErrAgentDown = errors.New("agent is not connected")

// Bind returns a context for calls to an agent: it ends with ctx, and as
// soon as the agent goes down (its stream breaks or falls silent), with
// ErrAgentDown as its cause. A call to a stopped or partitioned agent so
// fails within a few heartbeats instead of hanging.
func (s *Set) Bind(ctx context.Context, agentID string) (context.Context, context.CancelFunc) {
	s.mu.Lock()
	var alive context.Context
	if a, ok := s.byID[agentID]; ok && a.up {
		alive = a.alive
	}
	s.mu.Unlock()
	ctx, cancel := context.WithCancelCause(ctx)
	down := fmt.Errorf("agent %s: %w", agentID, ErrAgentDown)
	if alive == nil {
		cancel(down)
		return ctx, func() { cancel(nil) }
	}
	stop := context.AfterFunc(alive, func() { cancel(down) })
	return ctx, func() {
		stop()
		cancel(nil)
	}
}

// Address returns the address the controller reaches an agent at, or ""
// for an agent it does not know.
func (s *Set) Address(agentID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.byID[agentID]; ok {
		return a.addr
	}
	return ""
}

// Conflict returns the addresses that report agent ID agentID when more
// than one does, else nil.
func (s *Set) Conflict(agentID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.byID[agentID]; ok && a.conflict {
		return s.claimantsLocked(agentID)
	}
	return nil
}

// Reachable reports whether an agent is connected, and if not, since when
// it has not been heard from: its last message, or the Set's start for an
// agent never heard from since.
func (s *Set) Reachable(agentID string) (up bool, silentSince time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.byID[agentID]
	if !ok {
		return false, s.started
	}
	if a.up {
		return true, time.Time{}
	}
	if a.lastSeen.IsZero() {
		return false, s.started
	}
	return false, a.lastSeen
}

// Sandbox returns what an agent last reported of a sandbox revision, and
// whether the agent's status is known at all.
func (s *Set) Sandbox(agentID, sandboxID string, revision int64) (sb *fsbv1.AgentSandbox, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.byID[agentID]
	if !ok || a.status == nil || !a.up {
		return nil, false
	}
	for _, sb := range a.status.GetSandboxes() {
		if sb.GetSandboxId() == sandboxID && sb.GetRevision() == revision {
			return sb, true
		}
	}
	return nil, true
}

// Statuses returns the latest status of every agent that has sent one
// and is still followed, sorted by agent ID; an ID that several connected
// addresses report is listed once, with ConflictingAddresses naming them.
// A removed agent is left out: its last status says nothing of what runs
// now, and agents found from pods would otherwise pile up, one per pod
// that ever ran.
func (s *Set) Statuses() []*fsbv1.AgentStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*fsbv1.AgentStatus, 0, len(s.byID))
	for id, a := range s.byID {
		if a.status == nil || a.removed {
			continue
		}
		st := a.status
		if a.conflict {
			st = proto.CloneOf(st)
			st.ConflictingAddresses = s.claimantsLocked(id)
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b *fsbv1.AgentStatus) int { return strings.Compare(a.GetAgentId(), b.GetAgentId()) })
	return out
}

// Gone reports whether agent agentID is gone for good: the agents come
// from a source that keys them by the ID they must report (Discover and
// KeyIsID: pods, by UID), the source has listed them, and no agent is
// followed under that key or reports that ID. Such an agent never comes
// back (a new pod is a new agent), so nothing it ran will be reconciled by
// it; it holds only what the store holds. It stays gone across the
// controller's restarts, since it is read from the source, not remembered.
// With a fixed list no agent is gone: one not heard from may yet return.
func (s *Set) Gone(agentID string) bool {
	if !s.cfg.Discover || !s.cfg.KeyIsID {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.listed {
		return false
	}
	if _, ok := s.byKey[agentID]; ok {
		return false
	}
	for _, a := range s.byKey {
		if a.status != nil && a.status.GetAgentId() == agentID {
			return false
		}
	}
	return true
}

// Up reports whether an agent is connected now.
func (s *Set) Up(agentID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.byID[agentID]
	return ok && a.up
}

// Reach returns an agent's client with a context for a call to it (see
// Bind): the call ends with ctx, or as soon as the agent goes down, with
// ErrAgentDown as the context's cause. Exec and file calls, which may
// stream for as long as their caller wants, so never outlive their agent.
// The error is Client's; cancel must be called once the call is over.
func (s *Set) Reach(ctx context.Context, agentID string) (fsbv1connect.AgentServiceClient, context.Context, context.CancelFunc, error) {
	client, err := s.Client(agentID)
	if err != nil {
		return nil, nil, nil, err
	}
	callCtx, cancel := s.Bind(ctx, agentID)
	return client, callCtx, cancel, nil
}
