//go:build !fsbhelper

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// kubeAuthRig is a controller with --kube-auth in front of one agent, on the
// run's API server: Kubernetes users in namespace a (dev, who may create,
// get and list sandboxes there; debugger, who may read their logs and exec
// into them), a token-file user, and the tokens of both ServiceAccounts.
type kubeAuthRig struct {
	*cluster
	kube            *rig.KubeEnv
	nsA, nsB        string
	devToken        string
	debuggerToken   string
	devKubeconfig   string // a context of dev's token, namespace a
	adminKubeconfig string // the rig's: a client certificate
}

func startKubeAuth(t *testing.T) *kubeAuthRig {
	t.Helper()
	kube := rig.Kube(t)
	r := &kubeAuthRig{kube: kube, nsA: kube.Namespace, nsB: kube.Namespace + "-b", adminKubeconfig: kube.Kubeconfig}
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := kube.Kubectl(t, args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	kubectl("create", "namespace", r.nsB)
	t.Cleanup(func() { kube.Kubectl(t, "delete", "namespace", r.nsB, "--wait=false") })

	// The controller's identity: a ServiceAccount bound to the ClusterRole
	// deploy/ ships, and nothing else.
	kubectl("apply", "-f", "deploy/rbac/controller-auth.yaml")
	kubectl("-n", r.nsA, "create", "serviceaccount", "controller")
	binding := "fsb-controller-auth-" + r.nsA
	kubectl("create", "clusterrolebinding", binding, "--clusterrole=fsb-controller-auth", "--serviceaccount="+r.nsA+":controller")
	t.Cleanup(func() { kube.Kubectl(t, "delete", "clusterrolebinding", binding) })

	// The users.
	kubectl("-n", r.nsA, "create", "serviceaccount", "dev")
	kubectl("-n", r.nsA, "create", "role", "sandbox-dev", "--verb=create,get,list", "--resource=sandboxes.sandbox.fast.io")
	kubectl("-n", r.nsA, "create", "rolebinding", "sandbox-dev", "--role=sandbox-dev", "--serviceaccount="+r.nsA+":dev")
	kubectl("-n", r.nsA, "create", "serviceaccount", "debugger")
	kubectl("-n", r.nsA, "create", "role", "sandbox-debugger", "--verb=get", "--resource=sandboxes.sandbox.fast.io/log")
	kubectl("-n", r.nsA, "create", "role", "sandbox-exec", "--verb=create", "--resource=sandboxes.sandbox.fast.io/exec")
	kubectl("-n", r.nsA, "create", "rolebinding", "sandbox-debugger", "--role=sandbox-debugger", "--serviceaccount="+r.nsA+":debugger")
	kubectl("-n", r.nsA, "create", "rolebinding", "sandbox-exec", "--role=sandbox-exec", "--serviceaccount="+r.nsA+":debugger")

	token := func(sa string) string {
		return strings.TrimSpace(kubectl("-n", r.nsA, "create", "token", sa, "--duration=1h"))
	}
	dir := t.TempDir()
	controllerKubeconfig := writeTokenKubeconfig(t, kube.Kubeconfig, filepath.Join(dir, "controller.kubeconfig"), token("controller"), "")
	r.devToken, r.debuggerToken = token("dev"), token("debugger")
	r.devKubeconfig = writeTokenKubeconfig(t, kube.Kubeconfig, filepath.Join(dir, "dev.kubeconfig"), r.devToken, r.nsA)

	r.cluster = startClusterWith(t, "fast", "--kube-auth", "--kubeconfig", controllerKubeconfig)
	return r
}

// writeTokenKubeconfig writes to path the kubeconfig from, its user
// replaced by one presenting token, in namespace (if set).
func writeTokenKubeconfig(t *testing.T, from, path, token, namespace string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(from)
	if err == nil {
		err = clientcmd.ResolveLocalPaths(cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil {
		t.Fatalf("%s has no current context", from)
	}
	cfg.AuthInfos = map[string]*clientcmdapi.AuthInfo{"sa": {Token: token}}
	ctx.AuthInfo = "sa"
	ctx.Namespace = namespace
	cfg.Contexts = map[string]*clientcmdapi.Context{"sa": ctx}
	cfg.CurrentContext = "sa"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// startClusterWith is startCluster with more flags for the controller.
func startClusterWith(t testing.TB, mode string, controllerArgs ...string) *cluster {
	t.Helper()
	return startClusterArgs(t, embeddedStore, mode, nil, controllerArgs)
}

// TestKubernetesIdentities: a ServiceAccount token allowed to create
// sandboxes in namespace a can create there and gets PermissionDenied in
// namespace b; logs and exec need their subresources; a token the API
// server does not know is Unauthenticated; a token-file user may use every
// namespace; fsb ctl --kubeconfig presents a context's token and refuses a
// client certificate.
func TestKubernetesIdentities(t *testing.T) {
	r := startKubeAuth(t)
	// The token-file user runs a sandbox in each namespace, for the
	// Kubernetes users to read and exec into.
	for _, ns := range []string{r.nsA, r.nsB} {
		mustRunCtl(t, r.server, r.token, "-n", ns, "run", "byfile", "--image", rig.ImageRef, "--", "sh", "-c", "echo from-file; exec sleep 300")
	}

	const bad = "not-a-token-anyone-knows"
	local := filepath.Join(t.TempDir(), "note")
	if err := os.WriteFile(local, []byte("copied-in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token string
		args        []string
		code        int
		want        string // in stdout (code 0) or stderr
	}{
		{"dev creates in a", r.devToken, []string{"-n", r.nsA, "run", "mine", "--image", rig.ImageRef, "--", "sleep", "300"}, 0, "mine"},
		{"dev gets in a", r.devToken, []string{"-n", r.nsA, "get", "mine"}, 0, "Running"},
		{"dev lists a", r.devToken, []string{"-n", r.nsA, "list"}, 0, "byfile"},
		{"dev may not create in b", r.devToken, []string{"-n", r.nsB, "run", "mine", "--image", rig.ImageRef, "--", "sleep", "300"}, 1,
			fmt.Sprintf(`user "system:serviceaccount:%s:dev" may not create sandboxes.sandbox.fast.io in namespace %q`, r.nsA, r.nsB)},
		{"dev may not list every namespace", r.devToken, []string{"list", "-A"}, 1, "may not list sandboxes.sandbox.fast.io in all namespaces"},
		{"dev may not delete in a", r.devToken, []string{"-n", r.nsA, "delete", "byfile"}, 1, "may not delete sandboxes.sandbox.fast.io"},
		{"dev may not read logs", r.devToken, []string{"-n", r.nsA, "logs", "byfile"}, 1, "may not get sandboxes/log.sandbox.fast.io"},
		{"dev may not exec", r.devToken, []string{"-n", r.nsA, "exec", "byfile", "--", "true"}, 1, "may not create sandboxes/exec.sandbox.fast.io"},
		{"dev may not list agents", r.devToken, []string{"agents"}, 1, "may not list agents.sandbox.fast.io (cluster-scoped)"},
		{"debugger reads logs in a", r.debuggerToken, []string{"-n", r.nsA, "logs", "byfile"}, 0, "from-file"},
		{"debugger execs in a", r.debuggerToken, []string{"-n", r.nsA, "exec", "byfile", "--", "echo", "inside"}, 0, "inside"},
		// cp writes through a client stream, authorized on its first message.
		{"debugger copies into a", r.debuggerToken, []string{"-n", r.nsA, "cp", local, "byfile:/tmp/note"}, 0, ""},
		{"debugger reads the copy", r.debuggerToken, []string{"-n", r.nsA, "exec", "byfile", "--", "cat", "/tmp/note"}, 0, "copied-in"},
		{"dev may not copy", r.devToken, []string{"-n", r.nsA, "cp", local, "byfile:/tmp/other"}, 1, "may not create sandboxes/exec.sandbox.fast.io"},
		{"debugger may not exec in b", r.debuggerToken, []string{"-n", r.nsB, "exec", "byfile", "--", "true"}, 1, fmt.Sprintf("may not create sandboxes/exec.sandbox.fast.io in namespace %q", r.nsB)},
		{"debugger may not create", r.debuggerToken, []string{"-n", r.nsA, "run", "dbg", "--image", rig.ImageRef, "--", "sleep", "300"}, 1, "may not create sandboxes.sandbox.fast.io"},
		{"an unknown token", bad, []string{"-n", r.nsA, "list"}, 1, "the controller refused the token"},
		{"the token file's user in b", r.token, []string{"-n", r.nsB, "exec", "byfile", "--", "echo", "anywhere"}, 0, "anywhere"},
		{"the token file's user everywhere", r.token, []string{"list", "-A"}, 0, r.nsB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runCtl(t, r.server, tc.token, tc.args...)
			got := out
			if tc.code != 0 {
				got = errOut
			}
			if code != tc.code || !strings.Contains(got, tc.want) {
				t.Errorf("fsb ctl %s: exit %d, want %d saying %q\nstdout: %s\nstderr: %s", strings.Join(tc.args, " "), code, tc.code, tc.want, out, errOut)
			}
		})
	}

	// The codes, as a client of the API sees them: who is unknown, who
	// may not.
	for _, tc := range []struct {
		token string
		want  connect.Code // 0: the call succeeds
	}{
		{bad, connect.CodeUnauthenticated},
		{r.devToken, connect.CodePermissionDenied},
		{r.token, 0},
	} {
		api := fsbv1connect.NewFastPathServiceClient(http.DefaultClient, r.server, connect.WithInterceptors(auth.Bearer(tc.token)))
		_, err := api.GetSandbox(t.Context(), connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "byfile", Namespace: r.nsB}))
		if (err == nil) != (tc.want == 0) || err != nil && connect.CodeOf(err) != tc.want {
			t.Errorf("GetSandbox in b: %v, want %v", err, tc.want)
		}
	}

	// The plain HTTP file route, authorized in the namespace of its path.
	for _, tc := range []struct {
		token, ns string
		status    int
		want      string
	}{
		{r.debuggerToken, r.nsA, http.StatusOK, "copied-in"},
		{r.devToken, r.nsA, http.StatusForbidden, "may not create sandboxes/exec.sandbox.fast.io"},
		{r.debuggerToken, r.nsB, http.StatusForbidden, fmt.Sprintf("in namespace %q", r.nsB)},
		{bad, r.nsA, http.StatusUnauthorized, "invalid bearer token"},
	} {
		req, err := http.NewRequest(http.MethodGet, r.server+"/files/"+tc.ns+"/byfile?path=/tmp/note", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tc.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got := string(b)
		if resp.StatusCode != http.StatusOK {
			// A refusal is Connect's JSON error.
			var e struct{ Message string }
			_ = json.Unmarshal(b, &e)
			got = e.Message
		}
		if resp.StatusCode != tc.status || !strings.Contains(got, tc.want) {
			t.Errorf("GET /files/%s/byfile: HTTP %d %s, want %d with %q", tc.ns, resp.StatusCode, b, tc.status, tc.want)
		}
	}

	// fsb ctl --kubeconfig: dev's context, its namespace a; the rig's admin
	// context, a client certificate, is refused before any call.
	t.Run("kubeconfig", func(t *testing.T) {
		out, errOut, code := runCtl(t, r.server, "", "--kubeconfig", r.devKubeconfig, "run", "viakubeconfig", "--image", rig.ImageRef, "--", "sleep", "300")
		if code != 0 {
			t.Fatalf("fsb ctl --kubeconfig run: exit %d\n%s%s", code, out, errOut)
		}
		out = mustRunCtl(t, r.server, r.token, "-n", r.nsA, "get", "viakubeconfig")
		if !strings.Contains(out, "viakubeconfig") {
			t.Errorf("the sandbox created through the kubeconfig is not in namespace a: %s", out)
		}
		out, errOut, code = runCtl(t, r.server, "", "--kubeconfig", r.adminKubeconfig, "list")
		want := "authenticates with a client certificate; fsb ctl needs a bearer token: use a ServiceAccount token (kubectl create token"
		if code != 2 || !strings.Contains(errOut, want) {
			t.Errorf("fsb ctl --kubeconfig ADMIN list: exit %d, want 2 saying %q\n%s%s", code, want, out, errOut)
		}
	})
}

// TestKubeAuthFlagsRefuseWhatCannotWork: --kube-auth without an API server
// to ask, or beside --insecure-no-auth, stops the controller at start with
// what to do.
func TestKubeAuthFlagsRefuseWhatCannotWork(t *testing.T) {
	dir := t.TempDir()
	userToken := filepath.Join(dir, "user-token")
	if err := os.WriteFile(userToken, []byte("user-token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") && !strings.HasPrefix(kv, "KUBERNETES_SERVICE_") {
			env = append(env, kv)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no API server", []string{"--kube-auth", "--user-token-file", userToken}, "--kube-auth: no Kubernetes API server: give --kubeconfig"},
		{"no auth at all", []string{"--kube-auth", "--insecure-no-auth"}, "--kube-auth and --insecure-no-auth exclude each other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A controller that starts instead is stopped, and fails the test.
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, rig.FsbBinary(t), append([]string{"controller", "--store", "embedded", "--data-dir", filepath.Join(dir, "data"),
				"--fastpath-bind-address", "127.0.0.1:0", "--health-probe-bind-address", "127.0.0.1:0", "--metrics-bind-address", ""}, tc.args...)...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("fsb controller %s: %v, want a refusal saying %q\n%s", strings.Join(tc.args, " "), err, tc.want, out)
			}
		})
	}
}
