// Package controller is the `fsb controller` role: flags, wiring, run.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/fast-sandbox/fast-sandbox/pkg/agentlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/agentpool"
	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/controller"
	"github.com/fast-sandbox/fast-sandbox/pkg/fastpath"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
	"github.com/fast-sandbox/fast-sandbox/pkg/leader"
	"github.com/fast-sandbox/fast-sandbox/pkg/logging"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/warmpool"
	"github.com/fast-sandbox/fast-sandbox/roles/internal/gctune"
)

// poolWorkers is how many SandboxPools are synced at once.
const poolWorkers = 2

// Command returns the `fsb controller` command.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "controller",
		Usage: "serve the fast-path API and run the sandbox controller",
		Description: "The controller serves fsb.v1.FastPathService (Connect, gRPC and gRPC-Web) on\n" +
			"--fastpath-bind-address, keeps Sandbox objects in its store, and places sandboxes on the\n" +
			"agents named by --agents, or found from their pods with --agent-pod-selector. Health probes (/healthz, /readyz) are on\n" +
			"--health-probe-bind-address. Every API call needs a token from --user-token-file\n" +
			"or, with --kube-auth, a Kubernetes user's token, unless --insecure-no-auth is given.\n" +
			"With --e2b-bind-address it also serves E2B's API there, for E2B's own SDK (docs/e2b.md).",
		Flags: append(append(append(append(append(append(storeFlags(), leaderFlags()...), kubeAuthFlags()...), agentPodFlags()...), poolFlags()...), e2bFlags()...), []cli.Flag{
			&cli.StringFlag{Name: "fastpath-bind-address", Value: ":9090", Usage: "address of the fast-path API"},
			&cli.StringFlag{Name: "health-probe-bind-address", Value: ":8081", Usage: "address of /healthz and /readyz"},
			&cli.StringSliceFlag{Name: "agents", Value: cli.NewStringSlice("127.0.0.1:5758"), Usage: "agents' host:port (cleartext HTTP/2) or https://host:port (TLS, see --agent-ca-file), comma separated"},
			&cli.StringFlag{Name: "agent-ca-file", Usage: "CA certificates (PEM) that sign the certificates of https:// agents (default: the system's)"},
			&cli.IntFlag{Name: "agent-port", Value: 5758, Usage: "agents' port, for agents found without one"},
			&cli.StringFlag{Name: "fastpath-consistency-mode", Value: "fast", Usage: "default consistency mode of creates: fast or strong"},
			// The brief's flag. It once bounded how long a FAST sandbox could
			// run without its object before the controller removed it. Now
			// the controller never removes an acknowledged FAST sandbox
			// because the store is down (pkg/fastpath), and the janitor
			// decides when an unknown container is an orphan: the controller
			// takes the flag and says so.
			&cli.DurationFlag{Name: "fastpath-orphan-timeout", Usage: "ignored (accepted for old command lines): the controller never removes an acknowledged FAST sandbox because the store is down, however long; it retries the object write until the store is back. Only the janitor removes containers nothing knows, after its own --orphan-timeout"},
			&cli.StringFlag{Name: "user-token-file", Usage: "file of bearer tokens users present, one per line"},
			&cli.StringFlag{Name: "agent-token-file", Usage: "file of the bearer token sent to agents"},
			&cli.StringFlag{Name: "janitor-token-file", Usage: "file of the bearer tokens the janitor presents, one per line; they may call only the janitor's question (JanitorService/Classify)"},
			&cli.BoolFlag{Name: "insecure-no-auth", Usage: "serve the API without any token check (local experiments only)"},
			&cli.IntFlag{Name: "workers", Value: 8, Usage: "sandbox controller workers"},
			&cli.IntFlag{Name: "max-request-bytes", Value: httpserver.DefaultMaxRequestBytes, Usage: "the largest request message the API reads; a larger one is refused with ResourceExhausted"},
			&cli.IntFlag{Name: "max-unauthenticated-connections", Value: httpserver.DefaultMaxUnauthenticated, Usage: "the most connections the API keeps open before a request on them presented a valid token; past it a new one closes the oldest"},
			&cli.DurationFlag{Name: "unauthenticated-timeout", Value: httpserver.DefaultUnauthenticatedTimeout, Usage: "how long a connection may stay open before a request on it presented a valid token"},
			&cli.DurationFlag{Name: "agent-lost-timeout", Value: controller.DefaultLostTimeout, Usage: "how long an agent may be silent before its sandboxes are Lost (and, under AutoRecreate, re-created elsewhere)"},
			&cli.DurationFlag{Name: "agent-heartbeat-interval", Value: agentlink.DefaultHeartbeat, Usage: "how often each agent sends a heartbeat on its status stream; an agent silent for three intervals counts as down"},
			&cli.DurationFlag{Name: "recreate-backoff", Value: controller.DefaultRecreateBackoff, Usage: "AutoRecreate's first wait before a new revision, doubling after each one (create retries use the same spacing)"},
			&cli.DurationFlag{Name: "recreate-backoff-max", Value: controller.DefaultRecreateBackoffMax, Usage: "the longest wait between AutoRecreate's revisions"},
			&cli.DurationFlag{Name: "recreate-backoff-reset", Value: controller.DefaultStableAfter, Usage: "a revision that runs this long resets the back-off and ends a recovery"},
			&cli.DurationFlag{Name: "resync-period", Value: controller.DefaultResyncPeriod, Usage: "how often every sandbox is checked even when nothing changed"},
			&cli.StringFlag{Name: "metrics-bind-address", Value: "127.0.0.1:9091", Usage: "address of /metrics (Prometheus), loopback unless opened here (such as :9091); empty: none"},
			&cli.StringFlag{Name: "pprof-address", Usage: "serve Go's pprof on this address, loopback when it is a port only (off when empty)"},
			&cli.StringFlag{Name: "tls-cert-file", Usage: "serve the API over TLS with this certificate"},
			&cli.StringFlag{Name: "tls-key-file", Usage: "key of --tls-cert-file"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "auto", Usage: "auto, text or json"},
		}...),
		Action: run,
	}
}

func run(c *cli.Context) error {
	log, err := logging.New(os.Stderr, c.String("log-level"), c.String("log-format"))
	if err != nil {
		return err
	}
	gctune.Apply()
	if c.IsSet("fastpath-orphan-timeout") {
		log.Warn("--fastpath-orphan-timeout is ignored: the controller never removes an acknowledged FAST sandbox because the store is down; the janitor's --orphan-timeout decides when a container nothing knows is an orphan (docs/janitor.md)")
	}
	mode := v1alpha1.ConsistencyMode(c.String("fastpath-consistency-mode"))
	if mode != v1alpha1.ConsistencyFast && mode != v1alpha1.ConsistencyStrong {
		return fmt.Errorf("--fastpath-consistency-mode %q: want fast or strong", mode)
	}
	opened, err := openStore(c, log)
	if err != nil {
		return err
	}
	defer opened.Close()
	st := opened.Store
	agents, err := newAgentSource(c, opened)
	if err != nil {
		return err
	}
	userTokens, kube, secured, err := userAuth(c, opened, log)
	if err != nil {
		return err
	}
	agentToken := ""
	if f := c.String("agent-token-file"); f != "" {
		if agentToken, err = auth.ReadTokenFile(f); err != nil {
			return err
		}
	}
	e2bSrv, err := newE2BAPI(c)
	if err != nil {
		return err
	}
	// Who may call what: users the user API, the janitor its question.
	keys := userTokens.As(auth.RoleUser)
	if e2bSrv != nil && secured {
		// The E2B server calls the API as a user, in the namespace of
		// each request's E2B key.
		keys = append(keys, e2bSrv.userKeys()...)
	}
	if f := c.String("janitor-token-file"); f != "" && secured {
		janitor, err := auth.ReadTokensFile(f)
		if err != nil {
			return err
		}
		keys = append(keys, janitor.As(auth.RoleJanitor)...)
	}

	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	reg := registry.New()
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerRegistryGauges(promReg, reg)
	metrics := fastpath.NewMetrics(promReg)
	var ctrl *controller.Controller
	// With leader election, elector decides who serves; without, this
	// replica serves once it has recovered.
	var elector *leader.Elector
	// serving is true while a term (the leader's, or the only one without
	// an election) has recovered the sandboxes and not ended.
	var serving atomic.Bool
	// An agent that connects or comes back is recovered (its lost objects
	// re-created, its deleted sandboxes removed) by the fast path, once
	// a term's Recover is done, and only in a term: a standby or a deposed
	// leader acts on no agent (fastpath.Server.Recover). Every connection
	// is counted though, on a standby too: the janitor hears "unknown"
	// only of an agent reconciled since its last connection, which a term
	// that began after the agents connected must be able to say.
	var agentUp func(*fsbv1.AgentStatus)
	// warm plans the pools' warm sandboxes (below); the pools' declarer
	// hands it their entries once it runs.
	var warm *warmpool.Planner
	agentTransport, err := agentlink.Transport(c.String("agent-ca-file"), c.String("agent-server-name"))
	if err != nil {
		return err
	}
	var fence func() int64
	if opened.Kind == storeKube && c.Bool("leader-elect") {
		fence = func() int64 { return elector.Fence() }
	}
	linkCfg := agentlink.Config{
		HTTPClient: &http.Client{Transport: agentTransport},
		Token:      agentToken,
		Registry:   reg,
		Changed:    func(s *fsbv1.AgentStatus) { ctrl.AgentChanged(s) },
		Up:         func(s *fsbv1.AgentStatus) { agentUp(s) },
		Fence:      fence,
		Logger:     log,
		Heartbeat:  c.Duration("agent-heartbeat-interval"),
	}
	agents.configure(&linkCfg)
	set := agentlink.New(linkCfg)
	// The pool controller tells the sandbox controller of every pool it
	// declares, closes or forgets: the sandboxes waiting for it are placed
	// at once.
	pools, err := newPools(c, opened, agents, reg, set.Synced(),
		agentpool.SandboxesFunc(func() []*v1alpha1.Sandbox { return ctrl.List() }), func(pool string) { ctrl.PoolChanged(pool) },
		// Pools' warm entries go to the warm planner (made below, before
		// the pools' informer starts).
		func(pool string, entries []v1alpha1.WarmEntry) { warm.SetPool(pool, entries) }, log)
	if err != nil {
		return err
	}
	if pools.scaler != nil {
		if err := pools.scaler.Check(ctx); err != nil {
			return err
		}
	}
	poolNamespace, poolStore := pools.server.Namespace(), pools.store
	ctrl = controller.New(controller.Config{
		Store: st, Registry: reg, Agents: set, Logger: log, NewID: fastpath.NewID, Phases: metrics,
		PoolNamespace:      poolNamespace,
		Metrics:            controller.NewMetrics(promReg),
		Events:             opened.Events,
		LostTimeout:        c.Duration("agent-lost-timeout"),
		RecreateBackoff:    c.Duration("recreate-backoff"),
		RecreateBackoffMax: c.Duration("recreate-backoff-max"),
		StableAfter:        c.Duration("recreate-backoff-reset"),
		ResyncPeriod:       c.Duration("resync-period"),
	})
	fp := fastpath.New(ctx, fastpath.Config{
		Store: st, Registry: reg, Agents: set, Controller: ctrl,
		DefaultMode: mode, Logger: log, Metrics: metrics, Events: opened.Events,
		AgentGone: set.Gone,
		Pools:     poolStore, PoolNamespace: poolNamespace,
	})
	// The warm planner gives the agents their share of the pools' warm
	// sandboxes; it acts only in a term, and a reconnected agent is sent
	// its share again (it keeps it in memory only).
	warm = warmpool.New(warmpool.Config{Registry: reg, Agents: set, Logger: log.With(slog.String("controller", "warmpool"))})
	agentUp = func(s *fsbv1.AgentStatus) {
		fp.AgentUp(s)
		warm.AgentUp(s.GetAgentId())
	}

	var ready atomic.Bool
	g, gctx := errgroup.WithContext(ctx)
	// failed ends the controller with a term's error (a store that cannot
	// be read for the recovery).
	failed := make(chan error, 1)
	// lead runs one term: the agents learn its fence before anything else,
	// the store is brought in line with what they run, and only then are
	// the fast path served and the workers run, until the term ends.
	lead := func(ctx context.Context, fence int64) {
		if fence != 0 {
			set.RaiseFence(ctx)
		}
		recreated, removed, err := fp.Recover(ctx)
		if err != nil {
			if ctx.Err() == nil {
				select {
				case failed <- fmt.Errorf("recover sandboxes from the agents: %w", err):
				default:
				}
			}
			return
		}
		if recreated+removed > 0 {
			log.Info("store brought in line with the agents", slog.Int("recreated", recreated), slog.Int("removed", removed))
		}
		serving.Store(true)
		defer serving.Store(false)
		ready.Store(true)
		log.Info("serving the fast path", slog.Int64("fence", fence))
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); warm.Run(ctx) }()
		if pools.scaler != nil {
			wg.Add(1)
			go func() { defer wg.Done(); pools.scaler.Work(ctx, poolWorkers) }()
		}
		ctrl.Work(ctx, c.Int("workers"))
		wg.Wait()
	}
	if elector, err = newElector(c, opened, lead, log); err != nil {
		return err
	}
	g.Go(func() error { set.Run(gctx); return nil })
	g.Go(func() error { return agents.run(gctx, set, log) })
	g.Go(func() error {
		select {
		case err := <-failed:
			return err
		case <-gctx.Done():
			return nil
		}
	})
	ctrlSynced := make(chan struct{})
	g.Go(func() error {
		if err := ctrl.Start(gctx, ctrlSynced); err != nil && gctx.Err() == nil {
			return err
		}
		return nil
	})
	// Every replica declares the pools in its registry before it is
	// Ready: a create naming a pool must not get NotFound for a pool
	// simply not listed yet.
	poolsSynced := make(chan struct{})
	g.Go(func() error {
		if err := pools.server.Start(gctx, poolsSynced); err != nil && gctx.Err() == nil {
			return err
		}
		return nil
	})
	g.Go(func() error {
		return serve(gctx, c.String("health-probe-bind-address"), health(&ready), httpserver.Config{Logger: log})
	})
	if addr := c.String("metrics-bind-address"); addr != "" {
		g.Go(func() error {
			mux := http.NewServeMux()
			mux.Handle("GET /metrics", promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}))
			return serve(gctx, httpserver.LoopbackUnlessHost(addr), mux, httpserver.Config{Logger: log})
		})
	}
	if addr := c.String("pprof-address"); addr != "" {
		g.Go(func() error {
			return serve(gctx, httpserver.LoopbackUnlessHost(addr), httpserver.Pprof(), httpserver.Config{Logger: log})
		})
	}
	g.Go(func() error {
		// Caught up once the store's objects and every agent's sandboxes
		// are known: a standby is Ready then (a Deployment can roll), the
		// replica that leads (or the only one) once it has recovered too.
		for _, ch := range []<-chan struct{}{ctrlSynced, poolsSynced, set.Synced()} {
			select {
			case <-ch:
			case <-gctx.Done():
				return nil
			}
		}
		if elector == nil {
			lead(gctx, 0)
			return nil
		}
		ready.Store(true)
		log.Info("caught up: campaigning for the lease", slog.String("identity", elector.Identity()))
		elector.Run(gctx)
		return nil
	})
	gate := fastpath.Gate(func() error { return refusal(elector, &serving) })
	mux := http.NewServeMux()
	for _, handler := range []func(...connect.HandlerOption) (string, http.Handler){fp.Handler, fp.Janitor().Handler} {
		// The gate first: a standby refuses before any access review.
		path, api := handler(connect.WithReadMaxBytes(c.Int("max-request-bytes")), connect.WithInterceptors(gate.Interceptor(), kube.Interceptor()))
		if secured {
			api = kube.Middleware(keys, auth.FastPathPolicy, log, api)
		}
		mux.Handle(path, api)
	}
	// Plain HTTP GET and PUT of one file, for curl: the user role's.
	path, files := fp.FilesHandler()
	files = gate.HTTP(files)
	if secured {
		files = kube.Route(keys, auth.FastPathPolicy, log, auth.FilesRoute, files)
	}
	mux.Handle(path, files)
	log.Info("controller started", append([]any{slog.String("fastpath", c.String("fastpath-bind-address"))},
		append(agents.describe, slog.String("mode", string(mode)),
			slog.String("store", opened.Kind), slog.Bool("auth", secured), slog.Bool("kube_auth", kube != nil), slog.Bool("leaderElection", elector != nil))...)...)
	cfg := httpserver.Config{
		CertFile: c.String("tls-cert-file"), KeyFile: c.String("tls-key-file"), Logger: log,
		UnauthenticatedTimeout: c.Duration("unauthenticated-timeout"),
	}
	if secured {
		// Without a token check nobody is ever authenticated: no bound.
		cfg.MaxUnauthenticated = c.Int("max-unauthenticated-connections")
	}
	g.Go(func() error { return serve(gctx, c.String("fastpath-bind-address"), mux, cfg) })
	if e2bSrv != nil {
		g.Go(func() error { return e2bSrv.run(gctx, mux, cfg, log) })
	}
	err = g.Wait()
	stop()
	fp.Wait()
	log.Info("controller stopped")
	return err
}

func serve(ctx context.Context, addr string, h http.Handler, cfg httpserver.Config) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	cfg.Handler = h
	return httpserver.Serve(ctx, ln, cfg)
}

// refusal is why this replica does not serve the fast path now, or nil
// when it does.
func refusal(elector *leader.Elector, serving *atomic.Bool) error {
	if elector == nil {
		if serving.Load() {
			return nil
		}
		return errors.New("not ready: loading the store and the agents' sandboxes; retry shortly")
	}
	if elector.Leading() {
		if serving.Load() {
			return nil
		}
		return errors.New("becoming the leader: recovering the sandboxes first; retry shortly")
	}
	switch who := elector.Leader(); who {
	case "", elector.Identity():
		return errors.New("not the leader; no leader is known yet: retry shortly")
	default:
		return fmt.Errorf("not the leader; the leader is %s", who)
	}
}

func health(ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready: loading the store and the agents' sandboxes", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// registerRegistryGauges exports the registry's agents and free slots.
func registerRegistryGauges(promReg prometheus.Registerer, reg *registry.Registry) {
	promReg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fsb_registry_agents", Help: "Agents the registry knows, healthy or not."},
			func() float64 { return float64(len(reg.Agents())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "fsb_registry_free_slots", Help: "Free sandbox slots on healthy agents."},
			func() float64 {
				free := 0
				for _, a := range reg.Agents() {
					if a.Healthy {
						free += max(a.Capacity-a.Used, 0)
					}
				}
				return float64(free)
			}),
	)
}

// withPort adds the agent port to addresses, host or URL, that have none.
func withPort(addrs []string, port int) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		scheme, hostport, isURL := strings.Cut(a, "://")
		if !isURL {
			hostport = a
		}
		if _, _, err := net.SplitHostPort(hostport); err != nil {
			hostport = net.JoinHostPort(hostport, fmt.Sprint(port))
		}
		if isURL {
			hostport = scheme + "://" + hostport
		}
		out = append(out, hostport)
	}
	return out
}
