// Package controller is the `fsb controller` role: flags, wiring, run.
package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/fast-sandbox/fast-sandbox/pkg/agentlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/controller"
	"github.com/fast-sandbox/fast-sandbox/pkg/fastpath"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
	"github.com/fast-sandbox/fast-sandbox/pkg/logging"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
)

// Command returns the `fsb controller` command.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "controller",
		Usage: "serve the fast-path API and run the sandbox controller",
		Description: "The controller serves fsb.v1.FastPathService (Connect, gRPC and gRPC-Web) on\n" +
			"--fastpath-bind-address, keeps Sandbox objects in its store, and places sandboxes on the\n" +
			"agents named by --agents. Health probes (/healthz, /readyz) are on\n" +
			"--health-probe-bind-address. Every API call needs a token from --user-token-file\n" +
			"unless --insecure-no-auth is given.",
		Flags: append(storeFlags(), []cli.Flag{
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
	if c.IsSet("fastpath-orphan-timeout") {
		log.Warn("--fastpath-orphan-timeout is ignored: the controller never removes an acknowledged FAST sandbox because the store is down; the janitor's --orphan-timeout decides when a container nothing knows is an orphan (docs/janitor.md)")
	}
	mode := v1alpha1.ConsistencyMode(c.String("fastpath-consistency-mode"))
	if mode != v1alpha1.ConsistencyFast && mode != v1alpha1.ConsistencyStrong {
		return fmt.Errorf("--fastpath-consistency-mode %q: want fast or strong", mode)
	}
	userTokens, err := auth.Required(c.Bool("insecure-no-auth"), "user-token-file", c.String("user-token-file"))
	if err != nil {
		return err
	}
	agentToken := ""
	if f := c.String("agent-token-file"); f != "" {
		if agentToken, err = auth.ReadTokenFile(f); err != nil {
			return err
		}
	}
	// Who may call what: users the user API, the janitor its question.
	keys := userTokens.As(auth.RoleUser)
	if f := c.String("janitor-token-file"); f != "" && userTokens != nil {
		janitor, err := auth.ReadTokensFile(f)
		if err != nil {
			return err
		}
		keys = append(keys, janitor.As(auth.RoleJanitor)...)
	}
	opened, err := openStore(c, log)
	if err != nil {
		return err
	}
	defer opened.Close()
	st := opened.Store

	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	reg := registry.New()
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerRegistryGauges(promReg, reg)
	metrics := fastpath.NewMetrics(promReg)
	var ctrl *controller.Controller
	// An agent that connects or comes back is recovered (its lost objects
	// re-created, its deleted sandboxes removed) by the fast path, once
	// the start-up Recover below is done.
	var agentUp func(*fsbv1.AgentStatus)
	agentTransport, err := agentlink.Transport(c.String("agent-ca-file"))
	if err != nil {
		return err
	}
	set := agentlink.New(agentlink.Config{
		HTTPClient: &http.Client{Transport: agentTransport},
		Addresses:  withPort(c.StringSlice("agents"), c.Int("agent-port")),
		Token:      agentToken,
		Registry:   reg,
		Changed:    func(s *fsbv1.AgentStatus) { ctrl.AgentChanged(s) },
		Up:         func(s *fsbv1.AgentStatus) { agentUp(s) },
		Logger:     log,
		Heartbeat:  c.Duration("agent-heartbeat-interval"),
	})
	ctrl = controller.New(controller.Config{
		Store: st, Registry: reg, Agents: set, Logger: log, NewID: fastpath.NewID, Phases: metrics,
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
	})
	agentUp = fp.AgentUp

	var ready atomic.Bool
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { set.Run(gctx); return nil })
	ctrlSynced := make(chan struct{})
	g.Go(func() error { return ctrl.Run(gctx, c.Int("workers"), ctrlSynced) })
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
		// Ready, and serving the fast path, once the store's objects and
		// every agent's sandboxes are known: the registry is rebuilt.
		for _, ch := range []<-chan struct{}{ctrlSynced, set.Synced()} {
			select {
			case <-ch:
			case <-gctx.Done():
				return nil
			}
		}
		recreated, removed, err := fp.Recover(gctx)
		if err != nil {
			return fmt.Errorf("recover sandboxes from the agents: %w", err)
		}
		if recreated+removed > 0 {
			log.Info("store brought in line with the agents", slog.Int("recreated", recreated), slog.Int("removed", removed))
		}
		mux := http.NewServeMux()
		for _, handler := range []func(...connect.HandlerOption) (string, http.Handler){fp.Handler, fp.Janitor().Handler} {
			path, api := handler(connect.WithReadMaxBytes(c.Int("max-request-bytes")))
			if userTokens != nil {
				api = auth.Middleware(keys, auth.FastPathPolicy, log, api)
			}
			mux.Handle(path, api)
		}
		// Plain HTTP GET and PUT of one file, for curl: the user role's.
		path, files := fp.FilesHandler()
		if userTokens != nil {
			files = auth.Route(keys, auth.FastPathPolicy, log, auth.FilesRoute, files)
		}
		mux.Handle(path, files)
		ready.Store(true)
		log.Info("controller ready", slog.String("fastpath", c.String("fastpath-bind-address")),
			slog.Int("agents", len(c.StringSlice("agents"))), slog.String("mode", string(mode)),
			slog.String("store", opened.Kind), slog.Bool("auth", userTokens != nil))
		cfg := httpserver.Config{
			CertFile: c.String("tls-cert-file"), KeyFile: c.String("tls-key-file"), Logger: log,
			UnauthenticatedTimeout: c.Duration("unauthenticated-timeout"),
		}
		if userTokens != nil {
			// Without a token check nobody is ever authenticated: no bound.
			cfg.MaxUnauthenticated = c.Int("max-unauthenticated-connections")
		}
		return serve(gctx, c.String("fastpath-bind-address"), mux, cfg)
	})
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
