package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"
	"k8s.io/client-go/kubernetes"

	"github.com/fast-sandbox/fast-sandbox/pkg/agentpool"
	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// defaultPoolNamespace is the pool namespace of a controller whose agents
// --agents names, the namespace deploy/ installs Fast Sandbox in.
const defaultPoolNamespace = "fsb-system"

// poolFlags are the flags of the SandboxPool controller.
func poolFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "pool-namespace", Usage: "the one namespace of SandboxPools (and, in Kubernetes, their agent pods); " +
			"pools elsewhere are not served and say so in their Ready condition " +
			"(default: --agent-pod-namespace with --agent-pod-selector, else " + defaultPoolNamespace + ")"},
		&cli.StringFlag{Name: "agent-daemonset", Value: "fsb-agent", Usage: "the agent DaemonSet, in --pool-namespace, " +
			"whose pod template a pool's agent pods start from"},
		&cli.DurationFlag{Name: "pool-resync-period", Value: agentpool.DefaultResyncPeriod, Usage: "how often every pool is " +
			"scaled anew without an API event (its agents fill and empty in the controller's memory)"},
	}
}

// poolServer is what the controller runs for SandboxPools: on every
// replica the declarer (Start, HasSynced), on the leader of a Kubernetes
// controller with agent pods the pod scaler too (Work).
type poolServer interface {
	Start(ctx context.Context, synced chan<- struct{}) error
	Namespace() string
}

// pools is the controller's SandboxPool machinery.
type pools struct {
	server poolServer
	// scaler is set in Kubernetes with agent pods: it keeps pools' pods.
	scaler *agentpool.Controller
	// store is where the fast path reads and writes pools.
	store store.PoolInterface
}

// newPools returns the SandboxPool machinery. A controller whose agents
// are those --agents names (the embedded store, or the kube store without
// agent pods) declares the pools of its store, in --pool-namespace or else
// fsb-system; each agent is in the pool its --pool names, and no pod is
// started for a pool. A kube-store controller that finds its agents from
// their pods also keeps each pool's agent pods.
func newPools(c *cli.Context, opened *openedStore, agents *agentSource, reg *registry.Registry,
	agentsSynced <-chan struct{}, sandboxes agentpool.Sandboxes, changed func(pool string),
	warm func(pool string, entries []v1alpha1.WarmEntry), log *slog.Logger) (*pools, error) {
	plog := log.With(slog.String("controller", "sandboxpool"))
	if opened.Kind != storeKube || agents.pods == nil {
		if c.IsSet("agent-daemonset") {
			return nil, errors.New("--agent-daemonset: pools' agent pods need the kube store and --agent-pod-selector")
		}
		ns := c.String("pool-namespace")
		if ns == "" {
			ns = defaultPoolNamespace
		}
		if err := v1alpha1.ValidateNamespace(ns); err != nil {
			return nil, fmt.Errorf("--pool-namespace: %w", err)
		}
		d, err := agentpool.NewDeclarer(agentpool.DeclarerConfig{
			ListWatch: store.PoolListWatch(opened.Pools, ns), Namespace: ns, Registry: reg, Logger: plog,
			Changed: changed, Warm: warm,
		})
		if err != nil {
			return nil, err
		}
		return &pools{server: d, store: opened.Pools}, nil
	}
	ns := c.String("pool-namespace")
	if ns == "" {
		ns = agents.pods.Namespace
	}
	if c.String("agent-daemonset") == "" {
		return nil, errors.New("--agent-daemonset: empty; name the agent DaemonSet pools' pods start from")
	}
	client, err := kubernetes.NewForConfig(opened.Config)
	if err != nil {
		return nil, fmt.Errorf("sandbox pools' client: %w", err)
	}
	ctl, err := agentpool.New(agentpool.Config{
		Config: opened.Config, Client: client, Namespace: ns, DaemonSet: c.String("agent-daemonset"),
		Registry: reg, Sandboxes: sandboxes, AgentsSynced: agentsSynced, Events: opened.Events,
		Logger: plog, ResyncPeriod: c.Duration("pool-resync-period"),
		Changed: changed, Warm: warm,
	})
	if err != nil {
		return nil, err
	}
	return &pools{server: ctl, scaler: ctl, store: opened.Pools}, nil
}
