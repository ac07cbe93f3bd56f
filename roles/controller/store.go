package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/controller"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// Store kinds of --store.
const (
	storeAuto     = "auto"
	storeEmbedded = "embedded"
	storeKube     = "kube"
)

// eventComponent is the source of the Events the controller records.
const eventComponent = "fsb-controller"

// Client-side rate limits of Event writes.
const (
	eventsQPS   = 50
	eventsBurst = 200
)

// storeFlags are the flags that choose and open the store.
func storeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "store", Value: storeAuto, Usage: "where Sandbox objects live: embedded (a bbolt file in --data-dir, one machine), " +
			"kube (the Sandbox CRD on a Kubernetes API server) or auto (kube when --kubeconfig or $KUBECONFIG is set or the controller runs in a pod, else embedded)"},
		&cli.StringFlag{Name: "data-dir", Value: "/var/lib/fsb", Usage: "directory of the embedded store"},
		&cli.StringFlag{Name: "kubeconfig", Usage: "kubeconfig of the API server of the kube store (default: $KUBECONFIG, then the pod's service account)"},
	}
}

// openedStore is the store the controller runs on, and what goes with it.
type openedStore struct {
	Store store.Interface
	// Pools keeps SandboxPools in the same store.
	Pools store.PoolInterface
	// Kind is embedded or kube.
	Kind string
	// Config reaches the API server; nil with the embedded store unless
	// --kubeconfig (or $KUBECONFIG) names one, which other Kubernetes
	// features (identities) may use.
	Config *rest.Config
	// Events records the controller's Events: to the API server with the
	// kube store, to the log with the embedded one.
	Events record.EventRecorder
	close  []func()
}

// Close flushes and stops what openStore started: the event broadcaster of
// the kube store, or the embedded store's file.
func (o *openedStore) Close() {
	for i := len(o.close) - 1; i >= 0; i-- {
		o.close[i]()
	}
}

// openStore opens the store --store names.
func openStore(c *cli.Context, log *slog.Logger) (*openedStore, error) {
	kind, cfg, source, err := resolveStore(c.String("store"), c.String("kubeconfig"))
	if err != nil {
		return nil, err
	}
	o := &openedStore{Kind: kind, Config: cfg}
	switch kind {
	case storeKube:
		st, err := store.NewKube(cfg)
		if err != nil {
			return nil, err
		}
		if err := checkCRD(c.Context, st); err != nil {
			return nil, fmt.Errorf("--store kube on %s (%s): %w", cfg.Host, source, err)
		}
		o.Store, o.Pools = st, st.Pools()
		events, stop, err := kubeEvents(cfg, log)
		if err != nil {
			return nil, err
		}
		o.Events = events
		o.close = append(o.close, stop)
		log.Info("store: Sandbox objects on the Kubernetes API server", slog.String("server", cfg.Host), slog.String("config", source))
	default:
		dir := c.String("data-dir")
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		st, err := store.OpenEmbedded(dir)
		if err != nil {
			return nil, err
		}
		o.Store, o.Pools = st, st.Pools()
		o.close = append(o.close, func() { _ = st.Close() })
		o.Events = controller.LogEvents(log)
	}
	return o, nil
}

// resolveStore decides which store --store (and --kubeconfig, $KUBECONFIG,
// a pod's service account) names, and finds its API server.
func resolveStore(kind, kubeconfig string) (string, *rest.Config, string, error) {
	cfg, source, err := kubeConfig(kubeconfig)
	switch kind {
	case storeAuto, storeEmbedded:
		// Kubernetes is optional for embedded; a broken kubeconfig is not.
		if err != nil {
			return "", nil, "", err
		}
		if kind == storeAuto && cfg != nil {
			return storeKube, cfg, source, nil
		}
		return storeEmbedded, cfg, source, nil
	case storeKube:
		if err != nil {
			return "", nil, "", err
		}
		if cfg == nil {
			return "", nil, "", errors.New("--store kube: no API server: give --kubeconfig, set $KUBECONFIG, or run in a pod with a service account")
		}
		return storeKube, cfg, source, nil
	}
	return "", nil, "", fmt.Errorf("--store %q: want auto, embedded or kube", kind)
}

// kubeConfig finds the API server: --kubeconfig, then $KUBECONFIG, then the
// pod's service account. nil, nil when there is none. source says which.
func kubeConfig(path string) (*rest.Config, string, error) {
	env := os.Getenv("KUBECONFIG")
	if path != "" || env != "" {
		// The default rules read $KUBECONFIG (a list of files); an explicit
		// path wins over it.
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = path
		source := "--kubeconfig " + path
		if path == "" {
			source = "$KUBECONFIG " + env
		}
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", source, err)
		}
		return cfg, source, nil
	}
	cfg, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("in-cluster config: %w", err)
	}
	return cfg, "the pod's service account", nil
}

// checkCRD fails early, with what to do, when the API server does not serve
// the Sandbox CRD (or refuses this identity).
func checkCRD(ctx context.Context, st *store.Kube) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := st.List(ctx, "", nil); err != nil {
		return fmt.Errorf("list sandboxes.sandbox.fast.io (are the CRDs in deploy/crds applied, and may this identity list them?): %w", err)
	}
	return nil
}

// kubeEvents records Events to the API server (and the log). stop flushes
// and ends the broadcaster.
func kubeEvents(cfg *rest.Config, log *slog.Logger) (record.EventRecorder, func(), error) {
	// Events have a client of their own, with a budget of their own: a
	// burst of creates records a burst of Placed, which must neither wait
	// behind client-go's default 5 requests a second nor take the
	// sandboxes' budget (store.KubeQPS).
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = eventsQPS, eventsBurst
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("events client: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	b.StartEventWatcher(func(e *corev1.Event) { controller.LogEvent(log, e) })
	return b.NewRecorder(scheme, corev1.EventSource{Component: eventComponent}), b.Shutdown, nil
}
