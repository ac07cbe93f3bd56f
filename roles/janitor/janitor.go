// Package janitor is the `fsb janitor` role: flags, wiring, run.
package janitor

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/fast-sandbox/fast-sandbox/pkg/agent"
	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
	"github.com/fast-sandbox/fast-sandbox/pkg/janitor"
	"github.com/fast-sandbox/fast-sandbox/pkg/logging"
)

const description = `The janitor runs on every node (a DaemonSet, or beside a local agent) and removes
what sandboxes leave behind when an agent, the controller or containerd is killed:

  - sandbox containers (with their task, cgroup and snapshot) in the --containerd-namespace
    namespaces that carry fsb's labels (sandbox ID and agent) and that the controller
    calls unknown: no object, no pending create and no agent holds them. It asks the
    controller (fsb.v1.JanitorService/Classify, with the --token-file token) every pass, and
    removes a container only when it is older than --orphan-timeout and was unknown at two
    answers at least half that timeout apart (--once: when it is older and unknown now).
    Its task gets SIGTERM, then SIGKILL after --grace-period;
  - snapshots without a container, shims of tasks that are gone and root filesystems
    still mounted after their task, older than --orphan-timeout;
  - log files in the --log-dir directories of sandboxes the controller calls unknown,
    once --log-retention has passed since they were last written.

It never removes: anything while the controller cannot be asked (unreachable, not Ready,
or refusing the token; the pass says why and removes nothing), a sandbox the controller
knows or cannot decide about (its agent is down or not reconciled yet), a pending FAST
create, containers without fsb's labels, anything in other containerd namespaces, or
anything it cannot tie to a sandbox that is gone.

Every flag can also come from the environment variable named beside it; after
'make up', 'source .fsb/env; fsb janitor --once' runs one pass on the local machine.
See docs/janitor.md.`

// Command returns the `fsb janitor` command.
func Command() *cli.Command {
	return &cli.Command{
		Name:        "janitor",
		Usage:       "reap orphan sandbox containers, snapshots, shims, mounts and log files on this node",
		Description: description,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "server", Value: "http://127.0.0.1:9090", EnvVars: []string{"FSB_SERVER"}, Usage: "the controller's fast-path `URL` (http:// or https://)"},
			&cli.StringFlag{Name: "token-file", EnvVars: []string{"FSB_JANITOR_TOKEN_FILE"}, Usage: "file whose first line is the janitor's bearer token (the controller's --janitor-token-file)"},
			&cli.BoolFlag{Name: "insecure-no-auth", EnvVars: []string{"FSB_JANITOR_INSECURE_NO_AUTH"}, Usage: "call the controller without a token (a controller started with --insecure-no-auth; local experiments only)"},
			&cli.StringFlag{Name: "ca-file", EnvVars: []string{"FSB_CA_FILE"}, Usage: "CA certificates (PEM) that sign an https:// controller's certificate (default: the system's)"},
			&cli.StringFlag{Name: "server-name", EnvVars: []string{"FSB_SERVER_NAME"}, Usage: "the `NAME` an https:// controller's certificate must carry (default: the host of --server); in a pod, where --server is the Service's ClusterIP, fsb-controller.<namespace>.svc"},
			&cli.StringFlag{Name: "containerd-socket", Value: "/run/containerd/containerd.sock", EnvVars: []string{"FSB_CONTAINERD_SOCKET"}, Usage: "containerd's socket"},
			&cli.StringSliceFlag{Name: "containerd-namespace", Value: cli.NewStringSlice("fsb"), EnvVars: []string{"FSB_CONTAINERD_NAMESPACE"}, Usage: "containerd namespace of fsb's sandboxes; repeat it, or separate them with commas in the environment"},
			&cli.StringSliceFlag{Name: "log-dir", EnvVars: []string{"FSB_LOG_DIR"}, Usage: "an agent's --log-dir whose files of gone sandboxes are removed; repeatable (none: no file is looked at). " +
				"A pattern (/var/log/fsb-pools/*) stands for every dir it matches at each pass: the log dirs of SandboxPool agents, one per pod, each removed once its agent is gone and its logs are"},
			&cli.DurationFlag{Name: "log-retention", Value: agent.DefaultLogRetention, EnvVars: []string{"FSB_LOG_RETENTION"}, Usage: "how long a gone sandbox's log file is kept after it was last written (the agents' --log-retention)"},
			&cli.DurationFlag{Name: "orphan-timeout", Value: 5 * time.Minute, EnvVars: []string{"FSB_ORPHAN_TIMEOUT"}, Usage: "a leftover is removed only once older than this (and unknown at two answers half of it apart)"},
			&cli.DurationFlag{Name: "interval", Value: time.Minute, EnvVars: []string{"FSB_JANITOR_INTERVAL"}, Usage: "time between passes"},
			&cli.DurationFlag{Name: "grace-period", Value: janitor.DefaultGracePeriod, EnvVars: []string{"FSB_JANITOR_GRACE_PERIOD"}, Usage: "time a reaped sandbox's task gets between SIGTERM and SIGKILL"},
			&cli.BoolFlag{Name: "once", EnvVars: []string{"FSB_JANITOR_ONCE"}, Usage: "make one pass (a leftover's age alone counts), print what it did and exit: 0 after the pass, 1 when it could not ask the controller or list what it looks at"},
			&cli.BoolFlag{Name: "dry-run", EnvVars: []string{"FSB_JANITOR_DRY_RUN"}, Usage: "find, ask and log what would be removed, and remove nothing"},
			&cli.StringFlag{Name: "metrics-bind-address", Value: "127.0.0.1:9093", EnvVars: []string{"FSB_JANITOR_METRICS_ADDRESS"}, Usage: "address of /metrics, /healthz and /readyz, loopback unless opened here (such as :9093); empty: none; not served with --once"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"FSB_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "auto", EnvVars: []string{"FSB_LOG_FORMAT"}, Usage: "auto, text or json"},
		},
		Action: run,
	}
}

func run(c *cli.Context) error {
	log, err := logging.New(os.Stderr, c.String("log-level"), c.String("log-format"))
	if err != nil {
		return err
	}
	interceptors, err := bearer(c.Bool("insecure-no-auth"), c.String("token-file"))
	if err != nil {
		return err
	}
	httpClient, err := controllerClient(c.String("ca-file"), c.String("server-name"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	socket := c.String("containerd-socket")
	client, err := containerd.New(socket)
	if err != nil {
		return fmt.Errorf("connect to containerd at %s: %w", socket, err)
	}
	defer client.Close()

	var reg *prometheus.Registry
	if !c.Bool("once") {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	server := c.String("server")
	cfg := janitor.Config{
		Client:            client,
		ContainerdAddress: socket,
		Namespaces:        c.StringSlice("containerd-namespace"),
		Controller:        fsbv1connect.NewJanitorServiceClient(httpClient, server, connect.WithInterceptors(interceptors...)),
		ControllerURL:     server,
		OrphanTimeout:     c.Duration("orphan-timeout"),
		Once:              c.Bool("once"),
		DryRun:            c.Bool("dry-run"),
		LogDirs:           c.StringSlice("log-dir"),
		LogRetention:      c.Duration("log-retention"),
		GracePeriod:       c.Duration("grace-period"),
		Interval:          c.Duration("interval"),
		Logger:            log,
	}
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = -1 // the flag's 0 means no grace, not the default
	}
	if reg != nil {
		cfg.Registerer = reg
	}
	j, err := janitor.New(cfg)
	if err != nil {
		return err
	}

	if c.Bool("once") {
		rep, err := j.Pass(ctx)
		if err != nil {
			return fmt.Errorf("janitor: %w", err)
		}
		fmt.Fprintln(c.App.Writer, rep.String())
		return nil
	}

	g, gctx := errgroup.WithContext(ctx)
	if addr := c.String("metrics-bind-address"); addr != "" {
		addr = httpserver.LoopbackUnlessHost(addr)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		ok := func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }
		mux.HandleFunc("/healthz", ok)
		// Ready once the first pass has ended, whatever its result: a
		// controller that cannot be asked is the controller's trouble.
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
			if j.LastPass().IsZero() {
				http.Error(w, "the first pass has not ended yet", http.StatusServiceUnavailable)
				return
			}
			ok(w, r)
		})
		g.Go(func() error { return httpserver.Serve(gctx, ln, httpserver.Config{Handler: mux, Logger: log}) })
	}
	log.Info("janitor running",
		slog.String("controller", server),
		slog.String("containerd", socket),
		slog.Any("namespaces", cfg.Namespaces),
		slog.Any("log_dirs", cfg.LogDirs),
		slog.String("orphan_timeout", cfg.OrphanTimeout.String()),
		slog.String("interval", c.Duration("interval").String()),
		slog.Bool("dry_run", cfg.DryRun),
		slog.String("metrics", httpserver.LoopbackUnlessHost(c.String("metrics-bind-address"))))
	g.Go(func() error {
		j.Run(gctx)
		return nil
	})
	err = g.Wait()
	log.Info("janitor stopped")
	return err
}

// bearer returns the interceptor that sends the janitor's token, from the
// first line of tokenFile; none with insecure, which excludes a token file.
func bearer(insecure bool, tokenFile string) ([]connect.Interceptor, error) {
	switch {
	case insecure && tokenFile != "":
		return nil, errors.New("--insecure-no-auth and --token-file exclude each other")
	case insecure:
		return nil, nil
	case tokenFile == "":
		return nil, errors.New("--token-file (FSB_JANITOR_TOKEN_FILE) is required: the controller answers the janitor only with the token of its --janitor-token-file (or --insecure-no-auth, for local experiments only)")
	}
	tok, err := auth.ReadTokenFile(tokenFile)
	if err != nil {
		return nil, err
	}
	return []connect.Interceptor{auth.Bearer(tok)}, nil
}

// controllerClient speaks HTTP/1.1 to an http:// controller and HTTP/2 to
// an https:// one, as fsb ctl does, trusting the CA certificates in caFile
// (empty: the system's) and verifying that the certificate names
// serverName (empty: the host dialed). A janitor pod dials the Service's
// ClusterIP, which no certificate names. The dial is bounded so that an
// unreachable controller fails the pass at once.
func controllerClient(caFile, serverName string) (*http.Client, error) {
	var roots *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	return &http.Client{
		// One question is small; an answer that takes longer than this is
		// a controller in trouble, and the pass removes nothing.
		Timeout: time.Minute,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			Protocols:           &protocols,
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: serverName},
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     90 * time.Second,
		},
	}, nil
}
