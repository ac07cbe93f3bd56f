// Package agents is the controller's link to its agents: one Connect client
// per agent, and a monitor per agent that follows its WatchStatus stream,
// keeps the latest status, and feeds the registry (capacity, images,
// runtimes, health, and the sandboxes already placed there).
package agents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
)

// Config is what a Set needs.
type Config struct {
	// Addresses are the agents' host:port.
	Addresses []string
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
}

// Set is the controller's agents.
type Set struct {
	cfg Config

	mu      sync.Mutex
	byAddr  map[string]*agent
	byID    map[string]*agent
	synced  chan struct{}
	pending int // agents that have not sent a first status yet
	wg      sync.WaitGroup
}

type agent struct {
	addr     string
	client   fsbv1connect.AgentServiceClient
	status   *fsbv1.AgentStatus // nil until the first one
	up       bool
	reported map[string]bool // sandbox IDs in the last status
}

// ErrUnknownAgent marks an agent ID the controller does not know.
var ErrUnknownAgent = errors.New("unknown agent")

// New returns a Set for cfg; Run starts following the agents.
func New(cfg Config) *Set {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: h2cTransport()}
	}
	s := &Set{cfg: cfg, byAddr: make(map[string]*agent), byID: make(map[string]*agent), synced: make(chan struct{})}
	var opts []connect.ClientOption
	if cfg.Token != "" {
		opts = append(opts, connect.WithInterceptors(auth.Bearer(cfg.Token)))
	}
	for _, addr := range cfg.Addresses {
		url := addr
		if !strings.Contains(url, "://") {
			url = "http://" + url
		}
		s.byAddr[addr] = &agent{addr: addr, client: fsbv1connect.NewAgentServiceClient(cfg.HTTPClient, url, opts...)}
	}
	s.pending = len(s.byAddr)
	if s.pending == 0 {
		close(s.synced)
	}
	return s
}

func h2cTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	t.Protocols = &p
	return t
}

// Run follows every agent's status until ctx ends.
func (s *Set) Run(ctx context.Context) {
	for _, a := range s.byAddr {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.follow(ctx, a)
		}()
	}
	s.wg.Wait()
}

// Synced is closed once every agent has sent a status or been found down
// once, so the registry holds what the agents already run.
func (s *Set) Synced() <-chan struct{} { return s.synced }

func (s *Set) markSeen(a *agent, seen *bool) {
	if *seen {
		return
	}
	*seen = true
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending--; s.pending == 0 {
		close(s.synced)
	}
}

// follow keeps one agent's status current, reconnecting with back-off.
func (s *Set) follow(ctx context.Context, a *agent) {
	backoff := 100 * time.Millisecond
	seen := false
	for ctx.Err() == nil {
		stream, err := a.client.WatchStatus(ctx, connect.NewRequest(&fsbv1.WatchStatusRequest{}))
		if err == nil {
			for stream.Receive() {
				backoff = 100 * time.Millisecond
				s.update(a, stream.Msg().GetStatus())
				s.markSeen(a, &seen)
			}
			err = stream.Err()
			stream.Close()
		}
		if ctx.Err() != nil {
			return
		}
		s.down(a, err)
		s.markSeen(a, &seen)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (s *Set) update(a *agent, st *fsbv1.AgentStatus) {
	reported := make(map[string]bool, len(st.GetSandboxes()))
	for _, sb := range st.GetSandboxes() {
		reported[sb.GetSandboxId()] = true
	}
	s.mu.Lock()
	first := a.status == nil || !a.up
	a.status, a.up = st, true
	s.byID[st.GetAgentId()] = a
	gone := make([]string, 0)
	for id := range a.reported {
		if !reported[id] {
			gone = append(gone, id)
		}
	}
	a.reported = reported
	s.mu.Unlock()
	// A sandbox the agent reported and no longer does has no container
	// left: its slot and ports are free, whoever deleted it.
	for _, id := range gone {
		s.cfg.Registry.Release(id)
	}
	if first {
		s.cfg.Logger.Info("agent up", slog.String("agent", st.GetAgentId()), slog.String("address", a.addr),
			slog.Int("sandboxes", len(st.GetSandboxes())), slog.Int("capacity", int(st.GetCapacity())))
	}
	s.cfg.Registry.Upsert(registry.Agent{
		ID:       st.GetAgentId(),
		Address:  a.addr,
		NodeName: st.GetNodeName(),
		Capacity: int(st.GetCapacity()),
		Images:   st.GetImages(),
		Runtimes: st.GetRuntimes(),
		Healthy:  true,
	})
	for _, sb := range st.GetSandboxes() {
		// What runs there holds its slot and ports, whoever placed it.
		_ = s.cfg.Registry.Assign(sb.GetSandboxId(), st.GetAgentId(), sb.GetSpec().GetExposedPorts())
	}
	if s.cfg.Changed != nil {
		s.cfg.Changed(st)
	}
	if first && s.cfg.Up != nil {
		s.cfg.Up(st)
	}
}

func (s *Set) down(a *agent, err error) {
	s.mu.Lock()
	wasUp := a.up
	a.up = false
	st := a.status
	s.mu.Unlock()
	if st == nil {
		s.cfg.Logger.Warn("agent unreachable", slog.String("address", a.addr), slog.Any("err", err))
		return
	}
	if wasUp {
		s.cfg.Logger.Warn("agent down", slog.String("agent", st.GetAgentId()), slog.String("address", a.addr), slog.Any("err", err))
	}
	s.cfg.Registry.Upsert(registry.Agent{
		ID: st.GetAgentId(), Address: a.addr, NodeName: st.GetNodeName(), Capacity: int(st.GetCapacity()),
		Images: st.GetImages(), Runtimes: st.GetRuntimes(), Healthy: false,
	})
}

// Client returns the client of an agent by ID.
func (s *Set) Client(agentID string) (fsbv1connect.AgentServiceClient, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.byID[agentID]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownAgent, agentID)
	}
	return a.client, nil
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

// Statuses returns the latest status of every agent that has sent one,
// sorted by agent ID.
func (s *Set) Statuses() []*fsbv1.AgentStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*fsbv1.AgentStatus, 0, len(s.byID))
	for _, a := range s.byID {
		if a.status != nil {
			out = append(out, a.status)
		}
	}
	slices.SortFunc(out, func(a, b *fsbv1.AgentStatus) int { return strings.Compare(a.GetAgentId(), b.GetAgentId()) })
	return out
}

// Up reports whether an agent is connected now.
func (s *Set) Up(agentID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.byID[agentID]
	return ok && a.up
}
