// Package agent is the `fsb agent` role: flags, wiring, run.
package agent

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/fast-sandbox/fast-sandbox/pkg/agent"
	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/cgroup"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
	"github.com/fast-sandbox/fast-sandbox/pkg/logging"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
	"github.com/fast-sandbox/fast-sandbox/roles/internal/gctune"
)

// Command returns the `fsb agent` command.
func Command() *cli.Command {
	hostname, _ := os.Hostname()
	return &cli.Command{
		Name:  "agent",
		Usage: "run sandboxes on this node's containerd for the controller",
		Description: "The agent serves fsb.v1.AgentService (Connect, gRPC and gRPC-Web) on --http-port,\n" +
			"with /healthz and /readyz beside it; /metrics is on --metrics-bind-address. Every\n" +
			"call needs the bearer token in --token-file unless --insecure-no-auth is given.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "http-port", Value: 5758, Usage: "port of the API and probes"},
			&cli.IntFlag{Name: "max-request-bytes", Value: httpserver.DefaultMaxRequestBytes, Usage: "the largest request message the API reads; a larger one is refused with ResourceExhausted"},
			&cli.IntFlag{Name: "max-unauthenticated-connections", Value: httpserver.DefaultMaxUnauthenticated, Usage: "the most connections the API keeps open before a request on them presented a valid token; past it a new one closes the oldest"},
			&cli.DurationFlag{Name: "unauthenticated-timeout", Value: httpserver.DefaultUnauthenticatedTimeout, Usage: "how long a connection may stay open before a request on it presented a valid token"},
			&cli.StringFlag{Name: "bind-address", Value: "", Usage: "address to listen on (empty: every address)"},
			&cli.StringFlag{Name: "metrics-bind-address", Value: "127.0.0.1:9092", Usage: "address of /metrics (Prometheus), loopback unless opened here (such as :9092); empty: none"},
			&cli.StringFlag{Name: "pprof-address", Usage: "serve Go's pprof on this address, loopback when it is a port only (off when empty)"},
			&cli.StringFlag{Name: "containerd-socket", Value: "/run/containerd/containerd.sock", Usage: "containerd's socket"},
			&cli.StringFlag{Name: "containerd-namespace", Value: "fsb", Usage: "containerd namespace for sandboxes"},
			&cli.StringFlag{Name: "agent-id", Value: hostname, Usage: "this agent's ID, written into every sandbox's labels (the pod UID in Kubernetes)"},
			&cli.StringFlag{Name: "advertise-address", Value: "127.0.0.1", Usage: "address sandboxes' endpoints are reached at"},
			&cli.StringFlag{Name: "node-name", Value: hostname, EnvVars: []string{"NODE_NAME"}, Usage: "node this agent runs on"},
			&cli.StringFlag{Name: "log-dir", Value: "/var/log/fsb", Usage: "where sandbox logs are written"},
			&cli.Int64Flag{Name: "log-max-size", Value: 10 << 20, Usage: "rotate a sandbox's log file past this many bytes (0: never)"},
			&cli.IntFlag{Name: "log-max-files", Value: 3, Usage: "log files kept per sandbox, the live one included"},
			&cli.DurationFlag{Name: "log-retention", Value: agent.DefaultLogRetention, Usage: "how long the logs of a deleted sandbox are kept after they were last written (0: removed at delete)"},
			&cli.Int64Flag{Name: "log-max-total-bytes", Value: agent.DefaultLogMaxTotalBytes, Usage: "past this many bytes in --log-dir the logs of ended sandboxes are removed, oldest first (0: no bound)"},
			&cli.IntFlag{Name: "max-revision-logs", Value: 5, Usage: "revisions whose logs are kept per sandbox: a new revision removes older ones' (0: keep all)"},
			&cli.StringFlag{Name: "token-file", Usage: "file holding the bearer token the controller must present"},
			&cli.BoolFlag{Name: "insecure-no-auth", Usage: "serve the API without any token check (local experiments only)"},
			&cli.StringFlag{Name: "init-binary", Usage: "static fsb (or fsb-helper) binary mounted as every sandbox's PID 1 (default: fsb-helper beside this executable, else this executable)"},
			&cli.StringFlag{Name: "log-driver-binary", Usage: "fsb (or fsb-helper) binary containerd's shim runs to write logs (default: as --init-binary)"},
			&cli.StringFlag{Name: "pool", Usage: "the SandboxPool this agent serves: only sandboxes whose poolRef names it run here (empty or \"default\": the default pool, sandboxes without a poolRef or with poolRef default)"},
			&cli.StringFlag{Name: "runtimes", Usage: "comma-separated runtimes to offer, of runc, crun and gvisor: only these among the installed ones (empty: every installed one); an error when none of them is installed"},
			&cli.IntFlag{Name: "capacity", Value: 5, EnvVars: []string{"AGENT_CAPACITY"}, Usage: "the most sandboxes this agent runs at once"},
			&cli.Int64Flag{Name: "default-pids-limit", Value: 1024, Usage: "pids limit of a sandbox whose spec sets none (0: none)"},
			&cli.BoolFlag{Name: "seccomp-compat-arches", Usage: "let sandboxes make 32-bit compat system calls, as Docker's profile does (slower creates; off: native ABI only)"},
			&cli.StringSliceFlag{Name: "image-namespaces", Value: cli.NewStringSlice("k8s.io"), Usage: "other containerd namespaces whose images sandboxes may use without a pull"},
			&cli.DurationFlag{Name: "pull-timeout", Value: runtime.DefaultPullTimeout, Usage: "longest an image pull may take; past it the registry counts as unavailable"},
			&cli.StringFlag{Name: "registry-config-path", Usage: "directory of containerd hosts.toml files (<dir>/<registry>/hosts.toml): mirrors, TLS, plain HTTP"},
			&cli.StringFlag{Name: "gvisor-wrapper", Usage: "runsc wrapper the runc shim runs for runtime gvisor (default: one the agent writes into --state-dir when runsc is installed)"},
			&cli.StringFlag{Name: "state-dir", Value: "/run/fsb", Usage: "where the agent keeps files of its own, such as the runsc wrapper"},
			&cli.StringFlag{Name: "link-dir", Value: runtime.DefaultLinkDir, Usage: "where the agent makes each sandbox's link directory, the socket its fsb init dials (short: a socket path has at most 107 bytes; one per containerd daemon)"},
			&cli.StringFlag{Name: "cgroup-parent", Usage: "cgroup sandboxes' cgroups are made under, as <parent>/<containerd namespace>/<container ID>: " +
				"an absolute path, or auto for the parent of the agent's own cgroup (in a pod, the pod's: the node then accounts for the sandboxes as the pod's); empty: the root"},
			&cli.StringFlag{Name: "snapshotter", Value: "overlayfs", Usage: "containerd snapshotter for sandbox root filesystems"},
			&cli.StringFlag{Name: "tls-cert-file", Usage: "serve TLS with this certificate"},
			&cli.StringFlag{Name: "tls-key-file", Usage: "key of --tls-cert-file"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Value: "auto", Usage: "auto, text or json"},
		},
		Action: run,
	}
}

func run(c *cli.Context) error {
	log, err := logging.New(os.Stderr, c.String("log-level"), c.String("log-format"))
	if err != nil {
		return err
	}
	gctune.Apply()
	tokens, err := auth.Required(c.Bool("insecure-no-auth"), "token-file", c.String("token-file"))
	if err != nil {
		return err
	}
	if c.Duration("log-retention") < 0 || c.Int64("log-max-total-bytes") < 0 {
		return fmt.Errorf("--log-retention %s and --log-max-total-bytes %d: want 0 or more", c.Duration("log-retention"), c.Int64("log-max-total-bytes"))
	}
	if err := agent.ValidatePool(c.String("pool")); err != nil {
		return err
	}
	wanted, err := agent.ParseRuntimes(c.String("runtimes"))
	if err != nil {
		return err
	}
	helper, err := defaultHelper()
	if err != nil {
		return err
	}
	initBinary := or(c.String("init-binary"), helper)
	logDriverBinary := or(c.String("log-driver-binary"), helper)

	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	client, err := containerd.New(c.String("containerd-socket"), containerd.WithDefaultNamespace(c.String("containerd-namespace")))
	if err != nil {
		return fmt.Errorf("connect to containerd at %s: %w", c.String("containerd-socket"), err)
	}
	defer client.Close()

	installed, err := availableRuntimes(c.String("gvisor-wrapper"), c.String("state-dir"), wanted)
	if err != nil {
		return err
	}
	runtimes, err := agent.SelectRuntimes(installed, wanted)
	if err != nil {
		return err
	}
	// The agent removes logs in --log-dir that it does not run: the dir
	// must be its alone.
	unlock, err := logfile.LockDir(c.String("log-dir"))
	if err != nil {
		return err
	}
	defer unlock()
	cgroupParent, err := resolveCgroupParent(c.String("cgroup-parent"))
	if err != nil {
		return err
	}
	rt, err := runtime.New(runtime.Config{
		Client:              client,
		AgentID:             c.String("agent-id"),
		InitBinary:          initBinary,
		LogDriverBinary:     logDriverBinary,
		LogDir:              c.String("log-dir"),
		LogMaxSize:          c.Int64("log-max-size"),
		LogMaxFiles:         c.Int("log-max-files"),
		MaxRevisionLogs:     c.Int("max-revision-logs"),
		DefaultPidsLimit:    c.Int64("default-pids-limit"),
		Snapshotter:         c.String("snapshotter"),
		SeccompCompatArches: c.Bool("seccomp-compat-arches"),
		ImageNamespaces:     c.StringSlice("image-namespaces"),
		RegistryConfigPath:  c.String("registry-config-path"),
		PullTimeout:         c.Duration("pull-timeout"),
		Runtimes:            runtimes,
		LinkDir:             c.String("link-dir"),
		CgroupParent:        cgroupParent,
		Logger:              log,
	})
	if err != nil {
		return err
	}
	a, err := agent.New(ctx, agent.Config{
		Runtime:          rt,
		AgentID:          c.String("agent-id"),
		Containerd:       c.String("containerd-socket"),
		AdvertiseAddress: c.String("advertise-address"),
		NodeName:         c.String("node-name"),
		Capacity:         c.Int("capacity"),
		Pool:             v1alpha1.PoolOf(c.String("pool")), // --pool default: the default pool
		Logs:             &agent.LogPolicy{Retention: c.Duration("log-retention"), MaxTotalBytes: c.Int64("log-max-total-bytes")},
		Logger:           log,
	})
	if err != nil {
		return err
	}
	defer func() {
		stop() // the agent's watch ends with ctx, even when serving failed
		a.Wait()
	}()
	addr := net.JoinHostPort(c.String("bind-address"), strconv.Itoa(c.Int("http-port")))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// The side servers listen before the API does, so that a taken port
	// stops the agent before it reports ready.
	side := map[string]http.Handler{}
	if addr := c.String("metrics-bind-address"); addr != "" {
		side[httpserver.LoopbackUnlessHost(addr)] = a.MetricsHandler()
	}
	if addr := c.String("pprof-address"); addr != "" {
		side[httpserver.LoopbackUnlessHost(addr)] = httpserver.Pprof()
	}
	g, gctx := errgroup.WithContext(ctx)
	for addr, h := range side {
		sln, err := net.Listen("tcp", addr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		g.Go(func() error { return httpserver.Serve(gctx, sln, httpserver.Config{Handler: h, Logger: log}) })
	}
	log.Info("agent serving",
		slog.String("address", ln.Addr().String()),
		slog.String("metrics", httpserver.LoopbackUnlessHost(c.String("metrics-bind-address"))),
		slog.String("agent", c.String("agent-id")),
		slog.String("containerd", c.String("containerd-socket")),
		slog.String("namespace", c.String("containerd-namespace")),
		slog.String("cgroupParent", or(cgroupParent, "/")),
		slog.Int("capacity", c.Int("capacity")),
		slog.String("pool", or(v1alpha1.PoolOf(c.String("pool")), "(the default pool)")),
		slog.Any("runtimes", rt.Runtimes()),
		slog.Bool("auth", tokens != nil))
	cfg := httpserver.Config{
		Handler:                a.Handler(tokens, connect.WithReadMaxBytes(c.Int("max-request-bytes"))),
		CertFile:               c.String("tls-cert-file"),
		KeyFile:                c.String("tls-key-file"),
		Logger:                 log,
		UnauthenticatedTimeout: c.Duration("unauthenticated-timeout"),
	}
	if tokens != nil {
		// Without a token check nobody is ever authenticated: no bound.
		cfg.MaxUnauthenticated = c.Int("max-unauthenticated-connections")
	}
	g.Go(func() error { return httpserver.Serve(gctx, ln, cfg) })
	err = g.Wait()
	log.Info("agent stopped")
	return err
}

// availableRuntimes maps each runtime whose OCI binary is installed to the
// binary the runc shim runs for it; gvisor gets a runsc wrapper, written
// only when gvisor is wanted (nil wants every runtime).
func availableRuntimes(gvisorWrapper, stateDir string, wanted []string) (map[string]string, error) {
	out := make(map[string]string)
	for _, name := range []string{runtime.RuntimeRunc, runtime.RuntimeCrun} {
		if _, err := exec.LookPath(name); err == nil {
			out[name] = name
		}
	}
	if wanted != nil && !slices.Contains(wanted, runtime.RuntimeGVisor) {
		return out, nil
	}
	if gvisorWrapper != "" {
		out[runtime.RuntimeGVisor] = gvisorWrapper
	} else if _, err := exec.LookPath("runsc"); err == nil {
		wrapper := filepath.Join(stateDir, "runsc-fsb")
		if err := runtime.WriteRunscWrapper(wrapper, "runsc"); err != nil {
			return nil, err
		}
		out[runtime.RuntimeGVisor] = wrapper
	}
	return out, nil
}

// resolveCgroupParent returns the cgroup parent --cgroup-parent names: auto
// is the parent of the agent's own cgroup.
func resolveCgroupParent(flag string) (string, error) {
	if flag != "auto" {
		return flag, nil
	}
	p, err := cgroup.OwnParent()
	if err != nil {
		return "", fmt.Errorf("--cgroup-parent auto: %w", err)
	}
	return p, nil
}

// defaultHelper returns the binary containerd runs as each sandbox's init
// and log driver: fsb-helper beside this executable when it is there (it
// starts several times faster), else this executable itself.
func defaultHelper() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own executable: %w", err)
	}
	helper := filepath.Join(filepath.Dir(self), "fsb-helper")
	if _, err := os.Stat(helper); err == nil {
		return helper, nil
	}
	return self, nil
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
