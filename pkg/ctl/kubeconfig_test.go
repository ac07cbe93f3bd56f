package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadKubeCredentials reads a context's bearer token however the
// kubeconfig gives it, and refuses a context with a client certificate
// only, naming it.
func TestLoadKubeCredentials(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "sa-token")
	if err := os.WriteFile(tokenFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	plugin := filepath.Join(dir, "plugin.sh")
	if err := os.WriteFile(plugin, []byte(`#!/bin/sh
echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"from-plugin"}}'
`), 0o700); err != nil {
		t.Fatal(err)
	}
	// A PEM block is enough: the certificate is never used, only seen.
	kubeconfig := `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: https://127.0.0.1:1
    insecure-skip-tls-verify: true
users:
- name: token
  user:
    token: inline-token
- name: token-file
  user:
    tokenFile: ` + tokenFile + `
- name: exec
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ` + plugin + `
      interactiveMode: Never
- name: admin
  user:
    client-certificate-data: ` + "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=" + `
    client-key-data: ` + "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JSUIKLS0tLS1FTkQgUFJJVkFURSBLRVktLS0tLQo=" + `
- name: nobody
  user: {}
contexts:
- name: token
  context: {cluster: c, user: token, namespace: team-a}
- name: token-file
  context: {cluster: c, user: token-file}
- name: exec
  context: {cluster: c, user: exec}
- name: admin
  context: {cluster: c, user: admin}
- name: nobody
  context: {cluster: c, user: nobody}
current-context: token
`
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		context, token, namespace string
		err                       string // a part of the error's text; "" for none
	}{
		{context: "", token: "inline-token", namespace: "team-a"},
		{context: "token", token: "inline-token", namespace: "team-a"},
		{context: "token-file", token: "from-file"},
		{context: "exec", token: "from-plugin"},
		{context: "admin", err: "the context admin authenticates with a client certificate; fsb ctl needs a bearer token: use a ServiceAccount token (kubectl create token"},
		{context: "nobody", err: "the context nobody has no bearer token"},
		{context: "missing", err: `has no context "missing"`},
	} {
		t.Run(tc.context, func(t *testing.T) {
			got, err := LoadKubeCredentials(path, tc.context)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Token != tc.token || got.Namespace != tc.namespace {
				t.Errorf("got token %q namespace %q, want %q and %q", got.Token, got.Namespace, tc.token, tc.namespace)
			}
		})
	}
}

// TestLoadKubeCredentialsFromSeveralFiles reads a context spread over
// several kubeconfig files named as KUBECONFIG names them, and still names a
// missing one.
func TestLoadKubeCredentialsFromSeveralFiles(t *testing.T) {
	dir := t.TempDir()
	clusters := filepath.Join(dir, "clusters")
	users := filepath.Join(dir, "users")
	files := map[string]string{
		clusters: "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\n",
		users: "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user: {token: merged-token}\n" +
			"contexts:\n- name: x\n  context: {cluster: c, user: u, namespace: team-b}\ncurrent-context: x\n",
	}
	for path, body := range files {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	list := clusters + string(os.PathListSeparator) + users
	got, err := LoadKubeCredentials(list, "")
	if err != nil {
		t.Fatal(err)
	}
	if got.Token != "merged-token" || got.Namespace != "team-b" || got.Context != "x" {
		t.Errorf("got %+v, want context x, token merged-token, namespace team-b", got)
	}
	missing := filepath.Join(dir, "missing")
	if _, err := LoadKubeCredentials(list+string(os.PathListSeparator)+missing, ""); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("a list with a missing file: err = %v, want one naming %s", err, missing)
	}
}
