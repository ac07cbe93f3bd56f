package ctl

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

func TestRunRequest(t *testing.T) {
	tests := []struct {
		name string
		opts RunOptions
		want *fsbv1.CreateSandboxRequest
	}{{
		name: "image only: the controller's defaults",
		opts: RunOptions{Name: "demo", Image: "localhost/fsb/busybox:latest"},
		want: &fsbv1.CreateSandboxRequest{
			Name: "demo", Namespace: "team-a",
			Spec: &fsbv1.SandboxSpec{Image: "localhost/fsb/busybox:latest"},
		},
	}, {
		name: "every option",
		opts: RunOptions{
			Name:            "web",
			Image:           "img:1",
			Ports:           []string{"8080", "9090"},
			Env:             []string{"GREETING=hello, world", "EMPTY=", "EQ=a=b"},
			Labels:          []string{"app=web", "tier=front"},
			Pool:            "gpu-pool",
			Mode:            "strong",
			Runtime:         "crun",
			WorkDir:         "/srv",
			CPU:             "500m",
			Memory:          "256Mi",
			Pids:            64,
			FailurePolicy:   "auto-recreate",
			RecoveryTimeout: "10m",
			NoInit:          true,
			Command:         []string{"sh", "-c", "echo hi; sleep 1"},
		},
		want: &fsbv1.CreateSandboxRequest{
			Name: "web", Namespace: "team-a",
			Labels: map[string]string{"app": "web", "tier": "front"},
			Spec: &fsbv1.SandboxSpec{
				Image:   "img:1",
				Command: []string{"sh", "-c", "echo hi; sleep 1"},
				Envs: []*fsbv1.EnvVar{
					{Name: "GREETING", Value: "hello, world"},
					{Name: "EMPTY"},
					{Name: "EQ", Value: "a=b"},
				},
				WorkingDir:             "/srv",
				ExposedPorts:           []int32{8080, 9090},
				PoolRef:                "gpu-pool",
				ConsistencyMode:        fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG,
				FailurePolicy:          fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE,
				RecoveryTimeoutSeconds: 600,
				Resources:              &fsbv1.Resources{Cpu: "500m", Memory: "256Mi", Pids: 64},
				Runtime:                "crun",
				NoInit:                 true,
			},
		},
	}, {
		name: "fast mode, manual policy, case-insensitive",
		opts: RunOptions{Name: "f", Image: "img", Mode: "FAST", FailurePolicy: "Manual"},
		want: &fsbv1.CreateSandboxRequest{
			Name: "f", Namespace: "team-a",
			Spec: &fsbv1.SandboxSpec{
				Image:           "img",
				ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST,
				FailurePolicy:   fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL,
			},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			c, _, _ := client(t, serve(t, f), testToken, "team-a")
			if err := c.Run(context.Background(), tt.opts); err != nil {
				t.Fatal(err)
			}
			if got := f.lastCreate(t); !proto.Equal(got, tt.want) {
				t.Errorf("request:\n%s\nwant:\n%s", prototext.Format(got), prototext.Format(tt.want))
			}
		})
	}
}

func TestRunOutput(t *testing.T) {
	f := newFake()
	c, out, _ := client(t, serve(t, f), testToken, "")
	err := c.Run(context.Background(), RunOptions{Name: "demo", Image: "img", Ports: []string{"8080"}})
	if err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !regexp.MustCompile(`^sandbox demo created in [0-9.]+ ms\n`).MatchString(got) {
		t.Errorf("first line does not give the latency:\n%s", got)
	}
	for _, want := range []string{"namespace: default", "phase:     Running", "agent:     local", "endpoints: 127.0.0.1:8080"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if ns := f.lastCreate(t).GetNamespace(); ns != "default" {
		t.Errorf("namespace = %q, want default when none is given", ns)
	}
}

func TestRunUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		opts RunOptions
		want string
	}{
		{"no name", RunOptions{Image: "img"}, "run needs a sandbox name"},
		{"port not a number", RunOptions{Name: "d", Image: "i", Ports: []string{"http"}}, `--port "http": want a port number from 1 to 65535`},
		{"port out of range", RunOptions{Name: "d", Image: "i", Ports: []string{"70000"}}, `--port "70000"`},
		{"port zero", RunOptions{Name: "d", Image: "i", Ports: []string{"0"}}, `--port "0"`},
		{"env without =", RunOptions{Name: "d", Image: "i", Env: []string{"PATH"}}, `--env "PATH": want NAME=VALUE`},
		{"label without key", RunOptions{Name: "d", Image: "i", Labels: []string{"=x"}}, `--label "=x": want KEY=VALUE`},
		{"unknown mode", RunOptions{Name: "d", Image: "i", Mode: "eventual"}, `--mode "eventual": want fast`},
		{"unknown policy", RunOptions{Name: "d", Image: "i", FailurePolicy: "retry"}, `--failure-policy "retry"`},
		{"negative pids", RunOptions{Name: "d", Image: "i", Pids: -1}, "--pids -1"},
		{"expire-in zero", RunOptions{Name: "d", Image: "i", ExpireIn: "0s"}, "--expire-in 0s: want a positive duration"},
		{"expire-in not a duration", RunOptions{Name: "d", Image: "i", ExpireIn: "10 minutes"}, `--expire-in "10 minutes": want a duration such as 30s, 10m or 1h30m`},
		{"recovery timeout fractional", RunOptions{Name: "d", Image: "i", RecoveryTimeout: "90.5s"}, "--recovery-timeout 90.5s: want whole seconds"},
		{"recovery timeout zero", RunOptions{Name: "d", Image: "i", RecoveryTimeout: "0"}, "--recovery-timeout 0: want 1s or more"},
	}
	f := newFake()
	c, _, _ := client(t, serve(t, f), testToken, "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Run(context.Background(), tt.opts)
			if err == nil || !IsUsage(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v (usage error: %v), want a usage error with %q", err, IsUsage(err), tt.want)
			}
		})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.creates) != 0 {
		t.Errorf("%d requests reached the server; a usage error must send none", len(f.creates))
	}
}

func TestRunCommandVerbatim(t *testing.T) {
	// The command after -- goes through verbatim, flags-looking words included.
	f := newFake()
	c, _, _ := client(t, serve(t, f), testToken, "")
	cmdline := []string{"python3", "-m", "http.server", "--bind", "0.0.0.0", "8000"}
	if err := c.Run(context.Background(), RunOptions{Name: "py", Image: "python", Command: cmdline}); err != nil {
		t.Fatal(err)
	}
	want := &fsbv1.SandboxSpec{Image: "python", Command: cmdline}
	if got := f.lastCreate(t).GetSpec(); !proto.Equal(got, want) {
		t.Errorf("spec = %v, want %v", got, want)
	}
}

// TestRunExpireIn checks that --expire-in sends the time that long from the
// create, in whole seconds, and that --expire-in fills the editor's
// template with that time.
func TestRunExpireIn(t *testing.T) {
	f := newFake()
	before := time.Now()
	c, out, _ := client(t, serve(t, f), testToken, "")
	if err := c.Run(context.Background(), RunOptions{Name: "short", Image: "img", ExpireIn: "10m"}); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	if !regexp.MustCompile(`\n  expires:   20\S+Z \(in (9m5\d|10m)s?\)\n`).MatchString(out.String()) {
		t.Errorf("output does not say when it expires:\n%s", out)
	}
	at := f.lastCreate(t).GetSpec().GetExpireTime()
	if at == nil {
		t.Fatal("no expire_time sent")
	}
	if got := at.AsTime(); got.Before(before.Add(10*time.Minute).Truncate(time.Second)) || got.After(after.Add(10*time.Minute)) || got.Nanosecond() != 0 {
		t.Errorf("expire_time %v, want now + 10m in whole seconds (between %v and %v)", got, before, after)
	}

	req, err := c.createRequest(RunOptions{Name: "edited", ExpireIn: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	want := "\nexpireTime: \"" + req.GetSpec().GetExpireTime().AsTime().UTC().Format(time.RFC3339) + "\"\n"
	if text := string(editTemplate(req)); !strings.Contains(text, want) {
		t.Errorf("template lacks %q:\n%s", want, text)
	}
}

// TestCreateWhoseAnswerWasLost checks that a create whose request reached
// the controller but whose answer did not says the sandbox may exist, how
// to check, and that trying again is safe; and that a create that could
// not connect at all says nothing of the kind.
func TestCreateWhoseAnswerWasLost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()

	const check = "sandbox demo may have been created; check with fsb ctl get demo -n team. " +
		"Running the same command again is safe: a create with the same spec returns the sandbox it made"
	tests := []struct {
		name    string
		hold    bool          // the controller holds the call rather than hang up
		timeout time.Duration // the caller's deadline
		cancel  bool          // the caller is interrupted once the request arrived
		refused bool          // nothing listens
		want    string        // the start of the message
		lost    bool          // the message says the sandbox may exist
	}{
		{name: "connection dropped", want: "the controller at ", lost: true},
		{name: "deadline", hold: true, timeout: 200 * time.Millisecond, want: "the controller at ", lost: true},
		{name: "interrupted", hold: true, cancel: true, want: "interrupted before the controller answered: ", lost: true},
		{name: "connection refused", refused: true, want: "cannot reach the controller at " + refused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A controller that reads the create, then hangs up or holds
			// it until the caller gives up.
			received := make(chan struct{}, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				received <- struct{}{}
				if tt.hold {
					<-r.Context().Done()
					return
				}
				if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
					conn.Close()
				}
			}))
			t.Cleanup(srv.Close)
			url := srv.URL
			if tt.refused {
				url = refused
			}
			c, _, _ := client(t, url, testToken, "team")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.timeout > 0 {
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			if tt.cancel {
				go func() {
					select {
					case <-received:
						cancel()
					case <-ctx.Done():
					}
				}()
			}
			err := c.Run(ctx, RunOptions{Name: "demo", Image: "busybox"})
			if err == nil {
				t.Fatal("the create succeeded")
			}
			if !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), check) != tt.lost {
				t.Errorf("err = %v\nwant it to start with %q and to say %q: %v", err, tt.want, check, tt.lost)
			}
		})
	}
}
