package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"k8s.io/client-go/kubernetes"

	"github.com/fast-sandbox/fast-sandbox/pkg/leader"
)

// leaderFlags are the flags of leader election (kube store only).
func leaderFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "leader-elect", Value: true, Usage: "with the kube store, elect one replica (a Lease) to serve the fast path and place sandboxes; the others stand by, Ready, answering Unavailable with the leader's name (ignored with the embedded store)"},
		&cli.StringFlag{Name: "leader-election-namespace", Usage: "namespace of the Lease (default: --pod-namespace, else the service account's, else default)"},
		&cli.StringFlag{Name: "leader-election-id", Value: "fsb-controller", Usage: "name of the Lease"},
		&cli.DurationFlag{Name: "lease-duration", Value: leader.DefaultLeaseDuration, Usage: "how long standbys wait after the leader's last renewal before one takes over (whole seconds); a killed leader's successor serves within about this"},
		&cli.DurationFlag{Name: "renew-deadline", Value: leader.DefaultRenewDeadline, Usage: "how long the leader keeps trying to renew before it stops serving; it serves only while its last renewal is younger than this"},
		&cli.DurationFlag{Name: "retry-period", Value: leader.DefaultRetryPeriod, Usage: "spacing of the Lease's renewals and of standbys' tries"},
		&cli.StringFlag{Name: "pod-name", EnvVars: []string{"POD_NAME"}, Usage: "this replica's pod: the leader labels it " + leader.LabelLeader + "=true, which the fast path's Service selects (empty: no label, a local run)"},
		&cli.StringFlag{Name: "pod-namespace", EnvVars: []string{"POD_NAMESPACE"}, Usage: "namespace of --pod-name"},
	}
}

// serviceAccountNamespace holds the pod's namespace in a cluster.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// newElector returns the leader elector for opened's API server, or nil
// when there is no election: the embedded store, or --leader-elect=false.
func newElector(c *cli.Context, opened *openedStore, lead func(context.Context, int64), log *slog.Logger) (*leader.Elector, error) {
	if opened.Kind != storeKube {
		if c.IsSet("leader-elect") && c.Bool("leader-elect") {
			log.Warn("--leader-elect needs the kube store: one embedded controller serves alone")
		}
		return nil, nil
	}
	if !c.Bool("leader-elect") {
		log.Warn("leader election off: run exactly one replica of this controller")
		return nil, nil
	}
	client, err := kubernetes.NewForConfig(opened.Config)
	if err != nil {
		return nil, fmt.Errorf("leader election client: %w", err)
	}
	podNS := c.String("pod-namespace")
	if c.String("pod-name") != "" && podNS == "" {
		return nil, errors.New("--pod-name needs --pod-namespace (or POD_NAMESPACE)")
	}
	ns := c.String("leader-election-namespace")
	if ns == "" {
		ns = podNS
	}
	if ns == "" {
		if b, err := os.ReadFile(serviceAccountNamespace); err == nil {
			ns = strings.TrimSpace(string(b))
		}
	}
	if ns == "" {
		ns = "default"
	}
	return leader.New(leader.Config{
		Client: client, Namespace: ns, Name: c.String("leader-election-id"),
		LeaseDuration: c.Duration("lease-duration"), RenewDeadline: c.Duration("renew-deadline"), RetryPeriod: c.Duration("retry-period"),
		PodName: c.String("pod-name"), PodNamespace: podNS,
		Lead: lead, Logger: log,
	})
}
