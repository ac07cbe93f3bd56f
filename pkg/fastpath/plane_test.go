package fastpath

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"

	"github.com/fast-sandbox/fast-sandbox/pkg/agent"
	"github.com/fast-sandbox/fast-sandbox/pkg/agentlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/controller"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

const agentToken = "agent-token"

// plane is the control plane in one process, on the real rig: real agents
// on containerd, the embedded store, the registry, the controller and the
// fast path.
type plane struct {
	t      *testing.T
	cd     *containerd.Client
	store  *store.Embedded
	agents []*testAgent
	*control
}

// testAgent is one agent on the rig, served over HTTP as in production.
type testAgent struct {
	id  string
	ag  *agent.Agent
	srv *httptest.Server
	// addr is the agent's host:port, fixed even while it does not serve.
	addr string
}

// control is what a controller process holds: registry, agents link,
// controller and fast path. A test may stop it and start another on the
// same store and agents, as a controller restart would.
type control struct {
	fp     *Server
	reg    *registry.Registry
	set    *agentlink.Set
	ctrl   *controller.Controller
	logs   *rig.Buffer
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// planeSetup is what options may change before a control part starts.
type planeSetup struct {
	cfg Config
	// agentHTTP reaches the agents; nil means the agents link's default.
	agentHTTP *http.Client
	// agents is how many agents newPlane starts (agent-1, agent-2, ...).
	agents int
	// wrapStore wraps the store the fast path writes to (not the
	// controller's).
	wrapStore func(store.Interface) store.Interface
	// noWaitAgents starts the fast path without waiting for every agent's
	// first status or refusal.
	noWaitAgents bool
	// ctrlCfg changes the controller's Config before it starts.
	ctrlCfg func(*controller.Config)
}

// planeOption changes a plane before it starts.
type planeOption func(*planeSetup)

func withConfig(fn func(*Config)) planeOption {
	return func(s *planeSetup) { fn(&s.cfg) }
}

func withStore(wrap func(store.Interface) store.Interface) planeOption {
	return func(s *planeSetup) { s.wrapStore = wrap }
}

func withControllerConfig(fn func(*controller.Config)) planeOption {
	return func(s *planeSetup) { s.ctrlCfg = fn }
}

func withAgents(n int) planeOption {
	return func(s *planeSetup) { s.agents = n }
}

func withAgentHTTP(c *http.Client) planeOption {
	return func(s *planeSetup) { s.agentHTTP = c }
}

func newPlane(t *testing.T, opts ...planeOption) *plane {
	t.Helper()
	setup := planeSetup{agents: 1}
	for _, o := range opts {
		o(&setup)
	}
	p := newAgentsOnly(t, setup.agents)
	for _, a := range p.agents {
		a.serve(t)
	}
	p.control = p.startControl(opts...)
	return p
}

// newAgentsOnly starts n agents (not yet serving) and the store, without a
// control part.
func newAgentsOnly(t *testing.T, n int) *plane {
	t.Helper()
	cd, _ := rig.Containerd(t)
	st, err := store.OpenEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	p := &plane{t: t, cd: cd, store: st}
	for i := range n {
		p.agents = append(p.agents, startAgent(t, cd, "agent-"+string(rune('1'+i))))
	}
	return p
}

// startAgent starts an agent of the default pool on the rig's containerd;
// it serves once serve is called.
func startAgent(t *testing.T, cd *containerd.Client, id string) *testAgent {
	t.Helper()
	return startPoolAgent(t, cd, id, "")
}

// startPoolAgent starts an agent of the given pool ("" is the default
// pool) on the rig's containerd; it serves once serve is called.
func startPoolAgent(t *testing.T, cd *containerd.Client, id, pool string) *testAgent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	helper := rig.HelperBinary(t)
	// A link dir of its own, short enough for the sockets in it (t.TempDir
	// can be too long): an agent removes the link dirs its containerd
	// knows no container of, and other tests' agents use other daemons.
	linkDir, err := os.MkdirTemp("", "fsbl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(linkDir) })
	rt, err := runtime.New(runtime.Config{
		Client: cd, AgentID: id, InitBinary: helper, LogDriverBinary: helper, LogDir: t.TempDir(), LinkDir: linkDir,
		DefaultPidsLimit: 1024, Snapshotter: rig.Snapshotter, Runtimes: map[string]string{runtime.RuntimeRunc: "runc"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ag, err := agent.New(ctx, agent.Config{Runtime: rt, AgentID: id, AdvertiseAddress: "127.0.0.1", Capacity: 5, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	// A create goes on after its caller has gone (a stopped control part),
	// and an HTTP/2 connection whose streams were all cancelled counts as
	// idle: the server's Close does not wait for such a handler. The
	// cleanup does, before the rig's cleanup of containerd races it.
	var handlers sync.WaitGroup
	api := ag.Handler(auth.Tokens{agentToken})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		api.ServeHTTP(w, r)
	}))
	// The controller speaks HTTP/2 without TLS to agents, as they serve it.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &protocols
	// Keep the address, but refuse connections until serve.
	addr := srv.Listener.Addr().String()
	srv.Listener.Close()
	a := &testAgent{id: id, ag: ag, srv: srv, addr: addr}
	t.Cleanup(func() {
		if a.srv.Listener != nil && a.srv.URL != "" {
			a.srv.Close()
		}
		cancel()
		ag.Wait()
		// No request starts once the server is closed.
		handlers.Wait()
	})
	return a
}

// serve starts serving the agent's API at its address.
func (a *testAgent) serve(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		t.Fatalf("agent %s: listen again on %s: %v", a.id, a.addr, err)
	}
	a.srv.Listener = ln
	a.srv.Start()
}

// client is a Connect client of the agent, as the controller has.
func (a *testAgent) client() fsbv1connect.AgentServiceClient {
	return fsbv1connect.NewAgentServiceClient(http.DefaultClient, "http://"+a.addr, connect.WithInterceptors(auth.Bearer(agentToken)))
}

// startControl starts a control part on the plane's store and agents.
func (p *plane) startControl(opts ...planeOption) *control {
	t := p.t
	t.Helper()
	setup := planeSetup{}
	for _, o := range opts {
		o(&setup)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &control{reg: registry.New(), logs: &rig.Buffer{}, cancel: cancel, done: make(chan struct{})}
	logger := slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	addrs := make([]string, 0, len(p.agents))
	for _, a := range p.agents {
		addrs = append(addrs, a.addr)
	}
	c.set = agentlink.New(agentlink.Config{
		Addresses: addrs, Token: agentToken, Registry: c.reg, Logger: logger, HTTPClient: setup.agentHTTP,
		Changed: func(s *fsbv1.AgentStatus) { c.ctrl.AgentChanged(s) },
		Up:      func(s *fsbv1.AgentStatus) { c.fp.AgentUp(s) },
	})
	ctrlCfg := controller.Config{Store: p.store, Registry: c.reg, Agents: c.set, NewID: NewID, Logger: logger}
	if setup.ctrlCfg != nil {
		setup.ctrlCfg(&ctrlCfg)
	}
	c.ctrl = controller.New(ctrlCfg)
	cfg := setup.cfg
	cfg.Registry, cfg.Agents, cfg.Controller, cfg.Logger = c.reg, c.set, c.ctrl, logger
	cfg.Store = p.store
	if setup.wrapStore != nil {
		cfg.Store = setup.wrapStore(p.store)
	}
	c.fp = New(ctx, cfg)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.set.Run(ctx) }()
	synced := make(chan struct{})
	go func() { defer wg.Done(); _ = c.ctrl.Run(ctx, 4, synced) }()
	go func() { wg.Wait(); close(c.done) }()
	<-synced
	if !setup.noWaitAgents {
		<-c.set.Synced()
	}
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("control plane log:\n%s", c.logs.String())
		}
	})
	return c
}

// stop stops the control part as a graceful shutdown does: its context
// ends, then it waits for the fast path's pending work.
func (c *control) stop() {
	c.once.Do(func() {
		c.cancel()
		<-c.done
		c.fp.Wait()
	})
}

func busybox(mode fsbv1.ConsistencyMode, cmd ...string) *fsbv1.SandboxSpec {
	return &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: cmd, ConsistencyMode: mode}
}

func fastSpec(cmd ...string) *fsbv1.SandboxSpec {
	return busybox(fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST, cmd...)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// containerIDs lists the containers in the test's containerd namespace.
func (p *plane) containerIDs() []string {
	p.t.Helper()
	cs, err := p.cd.Containers(context.Background())
	if err != nil {
		p.t.Fatal(err)
	}
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.ID())
	}
	return ids
}

// hasContainer reports whether the container of a sandbox revision exists.
func (p *plane) hasContainer(id string, revision int64) bool {
	p.t.Helper()
	_, err := p.cd.LoadContainer(context.Background(), runtime.ContainerID(id, revision))
	return err == nil
}

// listed returns the names ListSandboxes shows, with their sandbox IDs.
func (p *plane) listed() map[string]string {
	p.t.Helper()
	resp, err := p.fp.ListSandboxes(context.Background(), connect.NewRequest(&fsbv1.ListSandboxesRequest{}))
	if err != nil {
		p.t.Fatal(err)
	}
	out := map[string]string{}
	for _, sb := range resp.Msg.GetSandboxes() {
		out[sb.GetName()] = sb.GetStatus().GetSandboxId()
	}
	return out
}
