//go:build !fsbhelper

package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// manifest is the part of a rendered object the checks below read.
type manifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Rules []struct {
		APIGroups []string `json:"apiGroups"`
		Resources []string `json:"resources"`
		Verbs     []string `json:"verbs"`
	} `json:"rules"`
	AutomountServiceAccountToken *bool `json:"automountServiceAccountToken"`
}

// TestDeployAppliesToARealAPIServer renders each way of installing deploy/
// as a user would (the install directory with the Secrets of
// scripts/deploy-secrets.sh, and each overlay from a kustomization in
// another directory, as the rig's per-run one is) and applies it to the
// run's API server with a server-side dry run, which checks every object
// against the server's schemas and admission. The rendering moves it to the
// test's namespace, which also shows that an overlay may choose its own.
// It then holds the base to the promises of docs/kubernetes.md: every
// object labelled app.kubernetes.io/name=fsb, no Secret without an
// overlay, no RBAC wildcard, no token for the agent and the janitor.
func TestDeployAppliesToARealAPIServer(t *testing.T) {
	k := rig.Kube(t)
	repo, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// The install directory reads deploy/secrets, which a clone lacks:
	// a copy of deploy/ gets its own.
	install := filepath.Join(t.TempDir(), "deploy")
	if out, err := exec.Command("cp", "-a", filepath.Join(repo, "deploy"), install).CombinedOutput(); err != nil {
		t.Fatalf("copy deploy/: %v: %s", err, out)
	}
	if err := os.RemoveAll(filepath.Join(install, "secrets")); err != nil {
		t.Fatal(err)
	}
	secrets(t, repo, filepath.Join(install, "secrets"))

	for _, tc := range []struct {
		name, dir  string
		addSecrets bool // the wrapper makes the Secrets, as the rig's does
	}{
		{"the install", install, false},
		{"base", filepath.Join(repo, "deploy", "base"), true},
		{"local", filepath.Join(repo, "deploy", "overlays", "local"), true},
		{"test", filepath.Join(repo, "deploy", "overlays", "test"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := t.TempDir()
			rel, err := filepath.Rel(w, tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			kust := "resources:\n- " + rel + "\nnamespace: " + k.Namespace + "\n"
			if tc.addSecrets {
				secrets(t, repo, filepath.Join(w, "secrets"))
				kust += secretGenerator
			}
			if err := os.WriteFile(filepath.Join(w, "kustomization.yaml"), []byte(kust), 0o600); err != nil {
				t.Fatal(err)
			}
			rendered, err := k.Kubectl(t, "kustomize", w)
			if err != nil {
				t.Fatalf("kubectl kustomize of %s: %v", tc.dir, err)
			}
			path := filepath.Join(w, "rendered.yaml")
			if err := os.WriteFile(path, []byte(rendered), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := k.Kubectl(t, "apply", "--dry-run=server", "--server-side", "--force-conflicts",
				"--field-manager", "fsb-deploy-test", "-f", path)
			if err != nil {
				t.Fatalf("a server-side dry run of %s refused it: %v\n%s", tc.dir, err, out)
			}
			for _, want := range []string{"deployment.apps/fsb-controller", "daemonset.apps/fsb-agent", "daemonset.apps/fsb-janitor",
				"service/fsb-controller", "poddisruptionbudget.policy/fsb-controller", "secret/fsb-controller", "secret/fsb-agent", "secret/fsb-janitor"} {
				if !strings.Contains(out, want) {
					t.Errorf("the dry run did not apply %s:\n%s", want, out)
				}
			}
		})
	}

	t.Run("the base's promises", func(t *testing.T) {
		rendered, err := k.Kubectl(t, "kustomize", filepath.Join(repo, "deploy", "base"))
		if err != nil {
			t.Fatal(err)
		}
		noToken := map[string]bool{"fsb-agent": true, "fsb-janitor": true}
		for _, doc := range strings.Split(rendered, "\n---\n") {
			var m manifest
			if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
				t.Fatalf("%v in:\n%s", err, doc)
			}
			what := m.Kind + " " + m.Metadata.Name
			if m.Metadata.Labels["app.kubernetes.io/name"] != "fsb" {
				t.Errorf("%s lacks the label app.kubernetes.io/name=fsb", what)
			}
			switch m.Kind {
			case "Secret":
				t.Errorf("the base holds %s: Secrets come from an overlay (scripts/deploy-secrets.sh)", what)
			case "ClusterRole", "Role":
				for _, r := range m.Rules {
					for _, s := range append(append(append([]string{}, r.APIGroups...), r.Resources...), r.Verbs...) {
						if s == "*" {
							t.Errorf("%s grants a wildcard: %+v", what, r)
						}
					}
				}
			case "ServiceAccount":
				if noToken[m.Metadata.Name] && (m.AutomountServiceAccountToken == nil || *m.AutomountServiceAccountToken) {
					t.Errorf("%s mounts a token: it never calls the API server", what)
				}
			}
			if m.Kind == "RoleBinding" || m.Kind == "ClusterRoleBinding" {
				if strings.Contains(doc, "name: fsb-agent") || strings.Contains(doc, "name: fsb-janitor") {
					t.Errorf("%s binds a role to the agent or the janitor, which call no API", what)
				}
			}
		}
	})
}

// secretGenerator makes the Secrets from a secrets directory beside the
// kustomization, as deploy/kustomization.yaml does.
const secretGenerator = `generatorOptions:
  disableNameSuffixHash: true
secretGenerator:
- name: fsb-controller
  files:
  - user-tokens=secrets/user-tokens
  - agent-token=secrets/agent-token
  - janitor-token=secrets/janitor-token
  - tls.crt=secrets/controller.crt
  - tls.key=secrets/controller.key
  - ca.crt=secrets/ca.crt
- name: fsb-agent
  files:
  - token=secrets/agent-token
  - tls.crt=secrets/agent.crt
  - tls.key=secrets/agent.key
- name: fsb-janitor
  files:
  - token=secrets/janitor-token
  - ca.crt=secrets/ca.crt
`

// secrets runs scripts/deploy-secrets.sh into dir.
func secrets(t *testing.T, repo, dir string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(repo, "scripts", "deploy-secrets.sh"), dir).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/deploy-secrets.sh %s: %v: %s", dir, err, out)
	}
}

// TestDeploySecretsWritesWhatTheDeploymentVerifies: scripts/deploy-secrets.sh
// writes files only their owner reads, certificates that verify under its CA
// for the names the pods dial (the controller's Service names and loopback,
// the agents' one name, in the namespace given), keeps every file when run
// again, and with --force writes new ones.
func TestDeploySecretsWritesWhatTheDeploymentVerifies(t *testing.T) {
	repo, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(repo, "scripts", "deploy-secrets.sh")
	dir := filepath.Join(t.TempDir(), "secrets")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(script, args...).CombinedOutput(); err != nil {
			t.Fatalf("deploy-secrets.sh %v: %v: %s", args, err, out)
		}
	}
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	files := []string{"user-tokens", "agent-token", "janitor-token", "ca.crt", "ca.key", "controller.crt", "controller.key", "agent.crt", "agent.key"}
	run(dir, "team-x")
	first := map[string]string{}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
		first[f] = string(read(f))
	}
	for _, f := range []string{"user-tokens", "agent-token", "janitor-token"} {
		if tok := strings.TrimSpace(first[f]); len(tok) < 32 || strings.ContainsAny(tok, " \t\n") {
			t.Errorf("%s holds %d characters, want one random token of 32 or more", f, len(tok))
		}
	}
	if first["user-tokens"] == first["agent-token"] || first["agent-token"] == first["janitor-token"] {
		t.Error("two roles got the same token")
	}

	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(read("ca.crt")) {
		t.Fatal("ca.crt holds no certificate")
	}
	verify := func(certFile, keyFile, name string) error {
		t.Helper()
		pair, err := tls.X509KeyPair(read(certFile), read(keyFile))
		if err != nil {
			t.Fatalf("%s and %s: %v", certFile, keyFile, err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		_, err = leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err
	}
	for _, tc := range []struct {
		cert, name string
		ok         bool
	}{
		{"controller", "fsb-controller.team-x.svc", true},
		{"controller", "fsb-controller", true},
		{"controller", "fsb-controller.team-x.svc.cluster.local", true},
		{"controller", "localhost", true},
		{"controller", "127.0.0.1", true},
		{"controller", "fsb-controller.fsb-system.svc", false},
		{"agent", "fsb-agent.team-x.svc", true},
		{"agent", "fsb-controller.team-x.svc", false},
	} {
		err := verify(tc.cert+".crt", tc.cert+".key", tc.name)
		if tc.ok != (err == nil) {
			t.Errorf("%s.crt for %s: %v, want verified %v", tc.cert, tc.name, err, tc.ok)
		}
	}

	run(dir, "team-x")
	for _, f := range files {
		if string(read(f)) != first[f] {
			t.Errorf("a second run changed %s", f)
		}
	}
	// A certificate removed is signed anew by the CA kept.
	if err := os.Remove(filepath.Join(dir, "agent.crt")); err != nil {
		t.Fatal(err)
	}
	run(dir, "team-x")
	if string(read("ca.crt")) != first["ca.crt"] || string(read("agent-token")) != first["agent-token"] {
		t.Error("renewing agent.crt changed the CA or a token")
	}
	if err := verify("agent.crt", "agent.key", "fsb-agent.team-x.svc"); err != nil {
		t.Errorf("the renewed agent.crt: %v", err)
	}
	run("--force", dir, "team-x")
	for _, f := range files {
		if string(read(f)) == first[f] {
			t.Errorf("--force kept %s", f)
		}
	}
}
