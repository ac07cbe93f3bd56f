package ctl

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

const token = "t0ken"

// recorder answers every call with an empty success and keeps the last
// request of each kind, so that tests see what a command line sends.
type recorder struct {
	fsbv1connect.UnimplementedFastPathServiceHandler
	mu   sync.Mutex
	last map[string]proto.Message
}

func (r *recorder) keep(m proto.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last[string(m.ProtoReflect().Descriptor().Name())] = proto.Clone(m)
}

func (r *recorder) get(name string) proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last[name]
}

func (r *recorder) CreateSandbox(_ context.Context, req *connect.Request[fsbv1.CreateSandboxRequest]) (*connect.Response[fsbv1.CreateSandboxResponse], error) {
	r.keep(req.Msg)
	return connect.NewResponse(&fsbv1.CreateSandboxResponse{Sandbox: &fsbv1.Sandbox{Name: req.Msg.GetName()}}), nil
}

func (r *recorder) GetSandbox(_ context.Context, req *connect.Request[fsbv1.GetSandboxRequest]) (*connect.Response[fsbv1.GetSandboxResponse], error) {
	r.keep(req.Msg)
	if req.Msg.GetName() == "ghost" {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such sandbox"))
	}
	return connect.NewResponse(&fsbv1.GetSandboxResponse{Sandbox: &fsbv1.Sandbox{Name: req.Msg.GetName()}}), nil
}

func (r *recorder) ListSandboxes(_ context.Context, req *connect.Request[fsbv1.ListSandboxesRequest]) (*connect.Response[fsbv1.ListSandboxesResponse], error) {
	r.keep(req.Msg)
	return connect.NewResponse(&fsbv1.ListSandboxesResponse{}), nil
}

func (r *recorder) StreamLogs(_ context.Context, req *connect.Request[fsbv1.StreamLogsRequest], _ *connect.ServerStream[fsbv1.StreamLogsResponse]) error {
	r.keep(req.Msg)
	return nil
}

func (r *recorder) UpdateSandbox(_ context.Context, req *connect.Request[fsbv1.UpdateSandboxRequest]) (*connect.Response[fsbv1.UpdateSandboxResponse], error) {
	r.keep(req.Msg)
	return connect.NewResponse(&fsbv1.UpdateSandboxResponse{Sandbox: &fsbv1.Sandbox{Name: req.Msg.GetName(), Labels: req.Msg.GetLabels()}}), nil
}

func (r *recorder) DeleteSandbox(_ context.Context, req *connect.Request[fsbv1.DeleteSandboxRequest]) (*connect.Response[fsbv1.DeleteSandboxResponse], error) {
	r.keep(req.Msg)
	return connect.NewResponse(&fsbv1.DeleteSandboxResponse{}), nil
}

func (r *recorder) ListAgents(context.Context, *connect.Request[fsbv1.ListAgentsRequest]) (*connect.Response[fsbv1.ListAgentsResponse], error) {
	return connect.NewResponse(&fsbv1.ListAgentsResponse{}), nil
}

// serve starts a recorder and points the config file at an empty
// directory, so that no developer's contexts take part.
func serve(t *testing.T) (*recorder, string) {
	t.Helper()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	r := &recorder{last: map[string]proto.Message{}}
	mux := http.NewServeMux()
	path, api := fsbv1connect.NewFastPathServiceHandler(r)
	mux.Handle(path, auth.Middleware(auth.Tokens{token}.As(auth.RoleUser), auth.FastPathPolicy, nil, api))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return r, srv.URL
}

// runCtl runs one command line and returns its stdout, stderr and error.
func runCtl(args ...string) (string, string, error) {
	var out, errw bytes.Buffer
	err := run(context.Background(), &out, &errw, args)
	return out.String(), errw.String(), err
}

func exitCode(err error) int {
	var e cli.ExitCoder
	if errors.As(err, &e) {
		return e.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestCommandLines(t *testing.T) {
	rec, url := serve(t)
	grace := int32(0)
	recovery := int32(90)
	tests := []struct {
		args []string
		// want is the request the command line must send, by message name.
		want proto.Message
	}{{
		args: []string{"run", "demo", "--image", "img", "-p", "8080", "--port", "9090", "-e", "LIST=a,b", "-e", "B=",
			"--label", "app=web", "-l", "tier=a,b", "--mode", "strong", "--runtime", "crun", "--pool", "p1",
			"-w", "/srv", "--cpu", "500m", "--memory", "64Mi", "--pids", "32", "--failure-policy", "auto-recreate",
			"--recovery-timeout", "10m", "--no-init", "--", "sh", "-c", "echo hi --image x"},
		want: &fsbv1.CreateSandboxRequest{
			Name: "demo", Namespace: "default",
			Labels: map[string]string{"app": "web", "tier": "a,b"},
			Spec: &fsbv1.SandboxSpec{
				Image: "img", Command: []string{"sh", "-c", "echo hi --image x"},
				Envs:                   []*fsbv1.EnvVar{{Name: "LIST", Value: "a,b"}, {Name: "B"}},
				WorkingDir:             "/srv",
				ExposedPorts:           []int32{8080, 9090},
				PoolRef:                "p1",
				ConsistencyMode:        fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG,
				FailurePolicy:          fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE,
				RecoveryTimeoutSeconds: 600,
				Resources:              &fsbv1.Resources{Cpu: "500m", Memory: "64Mi", Pids: 32},
				Runtime:                "crun",
				NoInit:                 true,
			},
		},
	}, {
		// Global flag first, flags before the name, the command without "--":
		// its own flag-looking words stay its own.
		args: []string{"-n", "team", "run", "--mode=fast", "demo", "--image", "img", "ls", "-l", "--image", "/"},
		want: &fsbv1.CreateSandboxRequest{
			Name: "demo", Namespace: "team",
			Spec: &fsbv1.SandboxSpec{
				Image: "img", Command: []string{"ls", "-l", "--image", "/"},
				ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST,
			},
		},
	}, {
		// A global flag after the command's arguments.
		args: []string{"get", "demo", "-o", "json", "-n", "team"},
		want: &fsbv1.GetSandboxRequest{Name: "demo", Namespace: "team"},
	}, {
		args: []string{"list", "-A", "-l", "app=web,tier!=db"},
		want: &fsbv1.ListSandboxesRequest{LabelSelector: "app=web,tier!=db"},
	}, {
		args: []string{"ls", "--namespace", "team"},
		want: &fsbv1.ListSandboxesRequest{Namespace: "team"},
	}, {
		args: []string{"logs", "demo", "-f", "--tail", "5", "--timestamps"},
		want: &fsbv1.StreamLogsRequest{Name: "demo", Namespace: "default", Tail: 5, Follow: true},
	}, {
		args: []string{"logs", "crash", "--revision", "1"},
		want: &fsbv1.StreamLogsRequest{Name: "crash", Namespace: "default", Revision: 1},
	}, {
		args: []string{"logs", "crash", "-p", "--tail", "3"},
		want: &fsbv1.StreamLogsRequest{Name: "crash", Namespace: "default", Previous: true, Tail: 3},
	}, {
		args: []string{"rm", "a", "--grace-period", "0", "--no-wait"},
		want: &fsbv1.DeleteSandboxRequest{Name: "a", Namespace: "default", GracePeriodSeconds: &grace, NoWait: true},
	}, {
		// GetSandbox answers with no labels: the merged map is the new ones.
		args: []string{"update", "demo", "-l", "a=1", "--label", "b=2", "--remove-label", "c", "--failure-policy", "manual", "-n", "team"},
		want: &fsbv1.UpdateSandboxRequest{
			Name: "demo", Namespace: "team",
			Labels:        map[string]string{"a": "1", "b": "2"},
			FailurePolicy: fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL,
		},
	}, {
		args: []string{"update", "crash", "--failure-policy", "auto-recreate", "--recovery-timeout", "90s", "--no-expire", "--reset-revision"},
		want: &fsbv1.UpdateSandboxRequest{
			Name: "crash", Namespace: "default",
			FailurePolicy:          fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE,
			RecoveryTimeoutSeconds: &recovery,
			ClearExpireTime:        true,
			ResetRevision:          true,
		},
	}, {
		args: []string{"delete", "b"},
		want: &fsbv1.DeleteSandboxRequest{Name: "b", Namespace: "default"},
	}}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			args := append([]string{"--server", url, "--token", token}, tt.args...)
			if _, stderr, err := runCtl(args...); err != nil {
				t.Fatalf("exit %d: %v\n%s", exitCode(err), err, stderr)
			}
			got := rec.get(string(tt.want.ProtoReflect().Descriptor().Name()))
			if !proto.Equal(got, tt.want) {
				t.Errorf("request:\n%v\nwant:\n%s", prototext.Format(got), prototext.Format(tt.want))
			}
		})
	}
}

func TestEnvironment(t *testing.T) {
	rec, url := serve(t)
	t.Setenv("FSB_SERVER", url)
	t.Setenv("FSB_TOKEN", token)
	t.Setenv("FSB_NAMESPACE", "from-env")
	if _, stderr, err := runCtl("get", "demo"); err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	want := &fsbv1.GetSandboxRequest{Name: "demo", Namespace: "from-env"}
	if got := rec.get("GetSandboxRequest"); !proto.Equal(got, want) {
		t.Errorf("request %v, want %v", got, want)
	}
	// A flag beats the environment.
	if _, _, err := runCtl("get", "demo", "-n", "flag"); err != nil {
		t.Fatal(err)
	}
	if got := rec.get("GetSandboxRequest").(*fsbv1.GetSandboxRequest).GetNamespace(); got != "flag" {
		t.Errorf("namespace %q, want flag", got)
	}
}

func TestExitStatus(t *testing.T) {
	_, url := serve(t)
	t.Setenv("EDITOR", "true")
	srv := []string{"--server", url, "--token", token}
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"get", "ghost"}, 1, "error: sandbox ghost not found in namespace default"},
		{[]string{"--token", "wrong", "list"}, 1, "error: the controller refused the token: set FSB_TOKEN or --token (see .fsb/env after make up), or --kubeconfig with a Kubernetes token"},
		// EDITOR is "true": the spec is saved unchanged.
		{[]string{"run", "demo"}, 1, "error: cancelled: the file was not changed"},
		{[]string{"run"}, 2, "error: run needs a sandbox name"},
		{[]string{"run", "demo", "--image", "i", "-p", "http"}, 2, `error: --port "http"`},
		{[]string{"run", "demo", "--image", "i", "--expire-in", "-1m"}, 2, "error: --expire-in -1m: want a positive duration"},
		{[]string{"run", "demo", "--image", "i", "--recovery-timeout", "100ms"}, 2, "error: --recovery-timeout 100ms: want 1s or more"},
		{[]string{"get"}, 2, "error: get needs exactly one sandbox name"},
		{[]string{"get", "a", "b"}, 2, "error: get needs exactly one sandbox name"},
		{[]string{"get", "demo", "-o", "xml"}, 2, `error: -o "xml": want table, wide, json or yaml`},
		{[]string{"update", "demo"}, 2, "error: nothing to update"},
		{[]string{"update", "demo", "--expire-in", "0"}, 2, "error: --expire-in 0: want a positive duration such as 10m (to remove an expiry: --no-expire)"},
		{[]string{"update", "demo", "--expire-in", "1m", "--no-expire"}, 2, "error: --expire-in and --no-expire contradict each other"},
		{[]string{"update", "demo", "--recovery-timeout", "1.5s"}, 2, "error: --recovery-timeout 1.5s: want whole seconds"},
		{[]string{"config", "set"}, 2, "error: config set needs exactly one context name"},
		{[]string{"config", "use-context", "nope"}, 1, "error: no context nope"},
		{[]string{"config", "bogus"}, 2, `error: unknown config command "bogus"`},
		{[]string{"get", "demo", "--bogus"}, 2, "error: flag provided but not defined: -bogus (see fsb ctl get --help)"},
		{[]string{"--bogus", "list"}, 2, "error: flag provided but not defined: -bogus (see fsb ctl --help)"},
		{[]string{"list", "extra"}, 2, `error: list takes no arguments (got "extra")`},
		{[]string{"logs"}, 2, "error: logs needs exactly one sandbox name"},
		{[]string{"logs", "crash", "--revision", "0"}, 2, "error: --revision 0: want a revision number, 1 or more"},
		{[]string{"logs", "crash", "--revision", "one"}, 2, `error: invalid value "one" for flag -revision`},
		{[]string{"logs", "crash", "--revision", "2", "--previous"}, 2, "error: --revision and --previous both name a revision: pick one"},
		{[]string{"top"}, 2, "error: top needs exactly one sandbox name"},
		{[]string{"top", "a", "b"}, 2, "error: top needs exactly one sandbox name"},
		{[]string{"top", "demo", "-o", "yaml"}, 2, `error: -o "yaml": want table or json`},
		{[]string{"delete"}, 2, "error: delete needs at least one sandbox name"},
		{[]string{"delete", "x", "--grace-period", "-1"}, 2, "error: --grace-period -1"},
		{[]string{"delete", "x", "--timeout", "0s"}, 2, "error: --timeout 0s: want a positive duration such as 1m"},
		{[]string{"delete", "x", "--timeout", "soon"}, 2, `error: invalid value "soon" for flag -timeout`},
		{[]string{"--server", "ftp://x", "list"}, 2, `error: --server "ftp://x" is not a controller address`},
		{[]string{"bogus", "x"}, 2, `error: unknown command "bogus" (see fsb ctl --help)`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, _, err := runCtl(append(slices.Clone(srv), tt.args...)...)
			if code := exitCode(err); code != tt.code {
				t.Errorf("exit status %d (%v), want %d", code, err, tt.code)
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.msg) {
				t.Errorf("message %q, want it to start with %q", err, tt.msg)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {}, {"help", "run"},
		{"run", "--help"}, {"list", "-h"}, {"get", "--help"}, {"logs", "--help"}, {"delete", "--help"}, {"agents", "--help"}, {"top", "--help"},
		{"update", "--help"}, {"config", "--help"}, {"config", "set", "--help"}, {"config", "view", "-h"}, {"config", "use-context", "--help"},
	} {
		out, _, err := runCtl(args...)
		if err != nil {
			t.Errorf("%q: %v", args, err)
		}
		if !strings.Contains(out, "Example") && !slices.Contains(args, "help") {
			t.Errorf("%q: help without an example:\n%s", args, out)
		}
	}
}

func TestInterspersed(t *testing.T) {
	app := newApp(nil, nil)
	tests := []struct{ in, want string }{
		{"list", "list"},
		{"get demo -o json", "get --output json -- demo"},
		{"get demo -n team -o=json", "--namespace team get --output=json -- demo"},
		{"-n team get demo", "--namespace team get -- demo"},
		{"--server=http://x logs demo -f --tail 3", "--server=http://x logs --follow --tail 3 -- demo"},
		{"run demo --image img -- sh -c 'x'", "run --image img -- demo sh -c 'x'"},
		{"run demo --image img sh -c x --image y", "run --image img -- demo sh -c x --image y"},
		{"run --image img demo -p 1 --port 2", "run --image img --port 1 --port 2 -- demo"},
		{"delete a b --no-wait c", "delete --no-wait -- a b c"},
		{"get demo --bogus value", "get --bogus -- demo value"},
		{"get demo -h", "get --help -- demo"},
		{"list -A -l a=b", "list --all-namespaces --selector a=b"},
		{"unknown demo -o x", "unknown demo -o x"},
		{"-- list", "-- list"},
		{"help run", "help run"},
		{"config set prod --server http://x -n team", "config set --server http://x --namespace team -- prod"},
		{"-n a config view", "--namespace a config view"},
		{"config bogus x", "config -- bogus x"},
	}
	for _, tt := range tests {
		got := strings.Join(interspersed(app, strings.Fields(tt.in)), " ")
		if got != tt.want {
			t.Errorf("interspersed(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestConfigPrecedence checks flags > environment > the config file's
// current context > the defaults, through the command line.
func TestConfigPrecedence(t *testing.T) {
	rec, url := serve(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"config", "set", "rig", "--server", url, "--token-file", tokenFile, "-n", "from-file"},
		{"config", "set", "other", "--server", "http://127.0.0.1:1"},
	} {
		if out, stderr, err := runCtl(args...); err != nil {
			t.Fatalf("%q: %v\n%s", args, err, stderr)
		} else if !strings.Contains(out, "context "+args[2]+" created") {
			t.Errorf("%q printed %q", args, out)
		}
	}
	view, _, err := runCtl("config", "view")
	if err != nil || !strings.Contains(view, "currentContext: rig") || strings.Contains(view, token) {
		t.Errorf("config view (%v):\n%s", err, view)
	}

	namespace := func(args ...string) string {
		t.Helper()
		if _, stderr, err := runCtl(append([]string{"get", "demo"}, args...)...); err != nil {
			t.Fatalf("%q: %v\n%s", args, err, stderr)
		}
		return rec.get("GetSandboxRequest").(*fsbv1.GetSandboxRequest).GetNamespace()
	}
	if got := namespace(); got != "from-file" {
		t.Errorf("namespace %q, want the context's", got)
	}
	t.Setenv("FSB_NAMESPACE", "from-env")
	if got := namespace(); got != "from-env" {
		t.Errorf("namespace %q, want the environment's over the context's", got)
	}
	if got := namespace("-n", "from-flag"); got != "from-flag" {
		t.Errorf("namespace %q, want the flag's over the environment's", got)
	}

	// Another current context: its server does not answer.
	if _, _, err := runCtl("config", "use-context", "other"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCtl("get", "demo"); err == nil || !strings.Contains(err.Error(), "cannot reach the controller at http://127.0.0.1:1") {
		t.Errorf("err = %v, want the other context's server", err)
	}
}

func TestRunEditorCommandLine(t *testing.T) {
	rec, url := serve(t)
	script := filepath.Join(t.TempDir(), "editor")
	edit := "#!/bin/sh\nsed -i 's|^image: \"\"|image: img|' \"$1\"\n"
	if err := os.WriteFile(script, []byte(edit), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EDITOR", "")
	t.Setenv("VISUAL", script)
	if _, stderr, err := runCtl("--server", url, "--token", token, "run", "demo", "--mode", "fast", "--pool", "p"); err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	want := &fsbv1.CreateSandboxRequest{Name: "demo", Namespace: "default", Spec: &fsbv1.SandboxSpec{
		Image: "img", PoolRef: "p", ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST,
	}}
	if got := rec.get("CreateSandboxRequest"); !proto.Equal(got, want) {
		t.Errorf("request:\n%s\nwant:\n%s", prototext.Format(got), prototext.Format(want))
	}
}
