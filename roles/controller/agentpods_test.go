package controller

import (
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"k8s.io/client-go/rest"
)

// TestAgentSource: where the flags say agents come from, and the
// combinations refused with a message naming the flags.
func TestAgentSource(t *testing.T) {
	const sel = "app.kubernetes.io/name=fsb,app.kubernetes.io/component=agent"
	withAPI := &openedStore{Config: &rest.Config{Host: "https://127.0.0.1:1"}}
	for _, tc := range []struct {
		name     string
		args     []string
		opened   *openedStore
		wantErr  string
		wantList []string // the fixed list, when agents are not found from pods
		wantPods string   // namespace/selector
		wantTLS  bool
	}{
		{name: "the default agent", opened: &openedStore{}, wantList: []string{"127.0.0.1:5758"}},
		{name: "named agents get the port", args: []string{"--agents", "10.0.0.1,https://a.example:6000", "--agent-port", "7000"}, opened: &openedStore{},
			wantList: []string{"10.0.0.1:7000", "https://a.example:6000"}},
		{name: "pods in the controller's namespace", args: []string{"--agent-pod-selector", sel, "--pod-namespace", "fsb-system"}, opened: withAPI,
			wantPods: "fsb-system/app.kubernetes.io/component=agent,app.kubernetes.io/name=fsb"},
		{name: "pods in a namespace of their own, over TLS", args: []string{"--agent-pod-selector", sel, "--pod-namespace", "a", "--agent-pod-namespace", "b", "--agent-ca-file", "/ca.crt"}, opened: withAPI,
			wantPods: "b/app.kubernetes.io/component=agent,app.kubernetes.io/name=fsb", wantTLS: true},
		{name: "both --agents and the selector", args: []string{"--agent-pod-selector", sel, "--agents", "10.0.0.1", "--pod-namespace", "a"}, opened: withAPI,
			wantErr: "--agents and --agent-pod-selector exclude each other"},
		{name: "a selector of every pod", args: []string{"--agent-pod-selector", " ", "--pod-namespace", "a"}, opened: withAPI, wantErr: "selects every pod"},
		{name: "a selector that does not parse", args: []string{"--agent-pod-selector", "a in (", "--pod-namespace", "a"}, opened: withAPI, wantErr: "--agent-pod-selector"},
		{name: "no namespace", args: []string{"--agent-pod-selector", sel}, opened: withAPI, wantErr: "needs --agent-pod-namespace"},
		{name: "no API server", args: []string{"--agent-pod-selector", sel, "--pod-namespace", "a"}, opened: &openedStore{}, wantErr: "no Kubernetes API server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("POD_NAMESPACE", "")
			var src *agentSource
			var err error
			app := &cli.App{Name: "controller", Flags: Command().Flags, Action: func(c *cli.Context) error {
				src, err = newAgentSource(c, tc.opened)
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
			if tc.wantPods == "" {
				if src.pods != nil || !slices.Equal(src.addresses, tc.wantList) {
					t.Fatalf("agents %v (pods: %v), want the list %v", src.addresses, src.pods != nil, tc.wantList)
				}
				return
			}
			if src.pods == nil {
				t.Fatalf("agents %v, want them found from pods", src.addresses)
			}
			if got := src.pods.Namespace + "/" + src.pods.Selector.String(); got != tc.wantPods || src.pods.TLS != tc.wantTLS {
				t.Errorf("pods %s (TLS %v), want %s (TLS %v)", got, src.pods.TLS, tc.wantPods, tc.wantTLS)
			}
		})
	}
}
