package controller

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"k8s.io/client-go/rest"

	"github.com/fast-sandbox/fast-sandbox/pkg/agentpool"
	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// TestPoolController: pools are served in every mode: where --agents names
// the agents (the embedded store, or the kube store without agent pods) in
// --pool-namespace, else fsb-system; where agents are found from their pods
// in --pool-namespace or else the agents' namespace. --agent-daemonset
// without agent pods is refused, naming what it needs.
func TestPoolController(t *testing.T) {
	const sel = "app.kubernetes.io/name=fsb,app.kubernetes.io/component=agent"
	kube, err := store.NewKube(&rest.Config{Host: "https://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	withKube := &openedStore{Kind: storeKube, Store: kube, Pools: kube.Pools(), Config: &rest.Config{Host: "https://127.0.0.1:1"}}
	emb, err := store.OpenEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Close()
	embedded := &openedStore{Kind: storeEmbedded, Store: emb, Pools: emb.Pools()}
	for _, tc := range []struct {
		name    string
		args    []string
		opened  *openedStore
		wantNS  string // "" means no pool controller
		wantErr string
	}{
		{name: "embedded: pools in fsb-system", opened: embedded, wantNS: "fsb-system"},
		{name: "embedded: pools in --pool-namespace", args: []string{"--pool-namespace", "pools"}, opened: embedded, wantNS: "pools"},
		{name: "embedded: a bad --pool-namespace", args: []string{"--pool-namespace", "Pools"}, opened: embedded,
			wantErr: "--pool-namespace"},
		{name: "kube, named agents: pools in fsb-system", args: []string{"--agents", "10.0.0.1"}, opened: withKube, wantNS: "fsb-system"},
		{name: "pools beside the agents", args: []string{"--agent-pod-selector", sel, "--pod-namespace", "fsb-system"}, opened: withKube,
			wantNS: "fsb-system"},
		{name: "pools in a namespace of their own", args: []string{"--agent-pod-selector", sel, "--agent-pod-namespace", "agents",
			"--pod-namespace", "ctl", "--pool-namespace", "pools"}, opened: withKube, wantNS: "pools"},
		{name: "--agent-daemonset without Kubernetes", args: []string{"--agent-daemonset", "x"}, opened: embedded,
			wantErr: "--agent-daemonset: pools' agent pods need the kube store and --agent-pod-selector"},
		{name: "kube, named agents: pools in --pool-namespace", args: []string{"--agents", "10.0.0.1", "--pool-namespace", "pools"},
			opened: withKube, wantNS: "pools"},
		{name: "kube, named agents: --agent-daemonset", args: []string{"--agents", "10.0.0.1", "--agent-daemonset", "x"}, opened: withKube,
			wantErr: "--agent-daemonset: pools' agent pods need the kube store and --agent-pod-selector"},
		{name: "no DaemonSet", args: []string{"--agent-pod-selector", sel, "--pod-namespace", "a", "--agent-daemonset", ""}, opened: withKube,
			wantErr: "--agent-daemonset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("POD_NAMESPACE", "")
			var ns string
			var err error
			app := &cli.App{Name: "controller", Flags: Command().Flags, Action: func(c *cli.Context) error {
				src, serr := newAgentSource(c, tc.opened)
				if serr != nil {
					return serr
				}
				pools, perr := newPools(c, tc.opened, src, registry.New(), nil, agentpool.SandboxesFunc(func() []*v1alpha1.Sandbox { return nil }), nil, nil, slog.New(slog.DiscardHandler))
				if err = perr; pools != nil {
					ns = pools.server.Namespace()
				}
				return nil
			}}
			if runErr := app.Run(append([]string{"controller"}, tc.args...)); runErr != nil {
				t.Fatal(runErr)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ns != tc.wantNS {
				t.Errorf("pool namespace %q, want %q", ns, tc.wantNS)
			}
		})
	}
}
