package controller

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// kubeconfigFile writes a kubeconfig naming server and returns its path.
func kubeconfigFile(t *testing.T, server string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	data := `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "` + server + `"}
users:
- name: u
  user: {token: t}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestResolveStore(t *testing.T) {
	flagFile := kubeconfigFile(t, "https://127.0.0.1:1")
	envFile := kubeconfigFile(t, "https://127.0.0.2:2")
	broken := filepath.Join(t.TempDir(), "broken")
	if err := os.WriteFile(broken, []byte("clusters: ["), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, store, flag, env string
		wantKind, wantHost     string
		wantErr                string
	}{
		{name: "auto without Kubernetes is embedded", store: "auto", wantKind: "embedded"},
		{name: "auto with --kubeconfig is kube", store: "auto", flag: flagFile, wantKind: "kube", wantHost: "https://127.0.0.1:1"},
		{name: "auto with KUBECONFIG is kube", store: "auto", env: envFile, wantKind: "kube", wantHost: "https://127.0.0.2:2"},
		{name: "--kubeconfig wins over KUBECONFIG", store: "kube", flag: flagFile, env: envFile, wantKind: "kube", wantHost: "https://127.0.0.1:1"},
		{name: "embedded stays embedded with a kubeconfig", store: "embedded", env: envFile, wantKind: "embedded", wantHost: "https://127.0.0.2:2"},
		{name: "kube without an API server", store: "kube", wantErr: "--store kube: no API server"},
		{name: "a broken kubeconfig is an error", store: "auto", flag: broken, wantErr: "--kubeconfig " + broken},
		{name: "unknown kind", store: "etcd", wantErr: `--store "etcd": want auto, embedded or kube`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", tc.env)
			// Not in a pod: no service account.
			t.Setenv("KUBERNETES_SERVICE_HOST", "")
			t.Setenv("KUBERNETES_SERVICE_PORT", "")
			kind, cfg, _, err := resolveStore(tc.store, tc.flag)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if kind != tc.wantKind {
				t.Errorf("kind %s, want %s", kind, tc.wantKind)
			}
			host := ""
			if cfg != nil {
				host = cfg.Host
			}
			if host != tc.wantHost {
				t.Errorf("API server %q, want %q", host, tc.wantHost)
			}
		})
	}
}
