package controller

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"
	"k8s.io/client-go/kubernetes"

	"github.com/fast-sandbox/fast-sandbox/pkg/agentpool"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
)

// poolFlags are the flags of the SandboxPool controller.
func poolFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "pool-namespace", Usage: "the one namespace of SandboxPools and their agent pods " +
			"(default: --agent-pod-namespace); pools elsewhere are not served and say so in their Ready condition"},
		&cli.StringFlag{Name: "agent-daemonset", Value: "fsb-agent", Usage: "the agent DaemonSet, in --pool-namespace, " +
			"whose pod template a pool's agent pods start from"},
		&cli.DurationFlag{Name: "pool-resync-period", Value: agentpool.DefaultResyncPeriod, Usage: "how often every pool is " +
			"scaled anew without an API event (its agents fill and empty in the controller's memory)"},
	}
}

// newPoolController returns the SandboxPool controller, or nil when pools
// are not served: they need the kube store and agents found from their
// pods (an embedded controller declares no pools; a Sandbox naming one
// gets NotFound).
func newPoolController(c *cli.Context, opened *openedStore, agents *agentSource, reg *registry.Registry,
	agentsSynced <-chan struct{}, sandboxes agentpool.Sandboxes, changed func(pool string), log *slog.Logger) (*agentpool.Controller, error) {
	if opened.Kind != storeKube || agents.pods == nil {
		for _, f := range []string{"pool-namespace", "agent-daemonset"} {
			if c.IsSet(f) {
				return nil, fmt.Errorf("--%s: SandboxPools need the kube store and --agent-pod-selector", f)
			}
		}
		return nil, nil
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
	return agentpool.New(agentpool.Config{
		Config: opened.Config, Client: client, Namespace: ns, DaemonSet: c.String("agent-daemonset"),
		Registry: reg, Sandboxes: sandboxes, AgentsSynced: agentsSynced, Events: opened.Events,
		Logger: log.With(slog.String("controller", "sandboxpool")), ResyncPeriod: c.Duration("pool-resync-period"),
		Changed: changed,
	})
}
