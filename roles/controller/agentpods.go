package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/fast-sandbox/fast-sandbox/pkg/agentlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/agentpods"
)

// agentPodFlags are the flags that find agents from their pods.
func agentPodFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "agent-pod-selector", Usage: "find the agents from their pods: the label selector of the agents' pods " +
			"(e.g. app.kubernetes.io/name=fsb,app.kubernetes.io/component=agent); a Running pod with an IP is an agent, " +
			"its ID the pod's UID, reached at the pod's IP and --agent-port (https:// with --agent-ca-file). Excludes --agents"},
		&cli.StringFlag{Name: "agent-pod-namespace", Usage: "namespace of the agents' pods (default: --pod-namespace)"},
		&cli.StringFlag{Name: "agent-server-name", Usage: "the name https:// agents' certificates must carry (default: the host dialed); " +
			"agents found from pods are dialed by IP, so their certificate names one name for all, e.g. fsb-agent.fsb-system.svc"},
	}
}

// agentSource is where the controller's agents come from: the fixed list
// of --agents, or the pods --agent-pod-selector picks.
type agentSource struct {
	// addresses is the fixed list; nil when agents come from pods.
	addresses []string
	// pods finds agents from their pods; nil for a fixed list.
	pods *agentpods.Config
	// describe says where agents come from, for the start-up log line.
	describe []any
}

// newAgentSource reads the flags that say where agents come from.
// opened's API server is where the agents' pods are read.
func newAgentSource(c *cli.Context, opened *openedStore) (*agentSource, error) {
	sel := c.String("agent-pod-selector")
	if sel == "" {
		addrs := withPort(c.StringSlice("agents"), c.Int("agent-port"))
		return &agentSource{addresses: addrs, describe: []any{slog.Any("agents", addrs)}}, nil
	}
	if c.IsSet("agents") {
		return nil, errors.New("--agents and --agent-pod-selector exclude each other: agents are either named or found from their pods")
	}
	selector, err := labels.Parse(sel)
	if err != nil {
		return nil, fmt.Errorf("--agent-pod-selector %q: %w", sel, err)
	}
	if selector.Empty() {
		return nil, fmt.Errorf("--agent-pod-selector %q selects every pod: name the agents' labels", sel)
	}
	ns := c.String("agent-pod-namespace")
	if ns == "" {
		ns = c.String("pod-namespace")
	}
	if ns == "" {
		return nil, errors.New("--agent-pod-selector needs --agent-pod-namespace (or --pod-namespace, POD_NAMESPACE)")
	}
	if opened.Config == nil {
		return nil, errors.New("--agent-pod-selector: no Kubernetes API server to read the agents' pods from: give --kubeconfig, set $KUBECONFIG, or run in a pod")
	}
	client, err := kubernetes.NewForConfig(opened.Config)
	if err != nil {
		return nil, fmt.Errorf("agents' pods client: %w", err)
	}
	tls := c.String("agent-ca-file") != ""
	return &agentSource{
		pods: &agentpods.Config{Client: client, Namespace: ns, Selector: selector, Port: c.Int("agent-port"), TLS: tls},
		describe: []any{slog.String("agentPods", ns+"/"+selector.String()), slog.Int("agentPort", c.Int("agent-port")),
			slog.Bool("agentTLS", tls), slog.String("agentServerName", c.String("agent-server-name"))},
	}, nil
}

// configure sets what cfg needs from the source.
func (s *agentSource) configure(cfg *agentlink.Config) {
	cfg.Addresses = s.addresses
	cfg.Discover = s.pods != nil
	cfg.KeyIsID = s.pods != nil
}

// run feeds set from the agents' pods until ctx ends; for a fixed list it
// returns at once.
func (s *agentSource) run(ctx context.Context, set *agentlink.Set, log *slog.Logger) error {
	if s.pods == nil {
		return nil
	}
	cfg := *s.pods
	cfg.Agents, cfg.Logger = set, log
	w, err := agentpods.New(cfg)
	if err != nil {
		return err
	}
	return w.Run(ctx)
}
