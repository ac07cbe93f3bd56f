package ctl

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
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

func (r *recorder) DeleteSandbox(_ context.Context, req *connect.Request[fsbv1.DeleteSandboxRequest]) (*connect.Response[fsbv1.DeleteSandboxResponse], error) {
	r.keep(req.Msg)
	return connect.NewResponse(&fsbv1.DeleteSandboxResponse{}), nil
}

func (r *recorder) ListAgents(context.Context, *connect.Request[fsbv1.ListAgentsRequest]) (*connect.Response[fsbv1.ListAgentsResponse], error) {
	return connect.NewResponse(&fsbv1.ListAgentsResponse{}), nil
}

func serve(t *testing.T) (*recorder, string) {
	t.Helper()
	r := &recorder{last: map[string]proto.Message{}}
	mux := http.NewServeMux()
	mux.Handle(fsbv1connect.NewFastPathServiceHandler(r, connect.WithInterceptors(auth.Require(auth.Tokens{token}))))
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
	tests := []struct {
		args []string
		// want is the request the command line must send, by message name.
		want proto.Message
	}{{
		args: []string{"run", "demo", "--image", "img", "-p", "8080", "--port", "9090", "-e", "LIST=a,b", "-e", "B=",
			"--label", "app=web", "-l", "tier=a,b", "--mode", "strong", "--runtime", "crun", "--pool", "p1",
			"-w", "/srv", "--cpu", "500m", "--memory", "64Mi", "--pids", "32", "--failure-policy", "auto-recreate",
			"--no-init", "--", "sh", "-c", "echo hi --image x"},
		want: &fsbv1.CreateSandboxRequest{
			Name: "demo", Namespace: "default",
			Labels: map[string]string{"app": "web", "tier": "a,b"},
			Spec: &fsbv1.SandboxSpec{
				Image: "img", Command: []string{"sh", "-c", "echo hi --image x"},
				Envs:            []*fsbv1.EnvVar{{Name: "LIST", Value: "a,b"}, {Name: "B"}},
				WorkingDir:      "/srv",
				ExposedPorts:    []int32{8080, 9090},
				PoolRef:         "p1",
				ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG,
				FailurePolicy:   fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE,
				Resources:       &fsbv1.Resources{Cpu: "500m", Memory: "64Mi", Pids: 32},
				Runtime:         "crun",
				NoInit:          true,
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
		args: []string{"rm", "a", "--grace-period", "0", "--no-wait"},
		want: &fsbv1.DeleteSandboxRequest{Name: "a", Namespace: "default", GracePeriodSeconds: &grace, NoWait: true},
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
	srv := []string{"--server", url, "--token", token}
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"get", "ghost"}, 1, "error: sandbox ghost not found in namespace default"},
		{[]string{"--token", "wrong", "list"}, 1, "error: the controller refused the token: set FSB_TOKEN or --token (see .fsb/env after make up)"},
		{[]string{"run", "demo"}, 2, "error: an image is required: fsb ctl run demo --image IMAGE [-- COMMAND...]"},
		{[]string{"run"}, 2, "error: run needs a sandbox name"},
		{[]string{"run", "demo", "--image", "i", "-p", "http"}, 2, `error: --port "http"`},
		{[]string{"get"}, 2, "error: get needs exactly one sandbox name"},
		{[]string{"get", "a", "b"}, 2, "error: get needs exactly one sandbox name"},
		{[]string{"get", "demo", "-o", "yaml"}, 2, `error: -o "yaml": want table or json`},
		{[]string{"get", "demo", "--bogus"}, 2, "error: flag provided but not defined: -bogus (see fsb ctl get --help)"},
		{[]string{"--bogus", "list"}, 2, "error: flag provided but not defined: -bogus (see fsb ctl --help)"},
		{[]string{"list", "extra"}, 2, `error: list takes no arguments (got "extra")`},
		{[]string{"logs"}, 2, "error: logs needs exactly one sandbox name"},
		{[]string{"delete"}, 2, "error: delete needs at least one sandbox name"},
		{[]string{"delete", "x", "--grace-period", "-1"}, 2, "error: --grace-period -1"},
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
		{"run", "--help"}, {"list", "-h"}, {"get", "--help"}, {"logs", "--help"}, {"delete", "--help"}, {"agents", "--help"},
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
	}
	for _, tt := range tests {
		got := strings.Join(interspersed(app, strings.Fields(tt.in)), " ")
		if got != tt.want {
			t.Errorf("interspersed(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
