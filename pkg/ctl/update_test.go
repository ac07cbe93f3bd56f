package ctl

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

func TestUpdateMergesLabels(t *testing.T) {
	f := newFake()
	f.add("team", "web", "nginx:1", time.Minute).Labels = map[string]string{"app": "web", "canary": "yes", "tier": "back"}
	c, out, _ := client(t, serve(t, f), testToken, "team")
	err := c.Update(context.Background(), UpdateOptions{
		Name:          "web",
		Labels:        []string{"tier=front", "owner=ops"},
		RemoveLabels:  []string{"canary", "absent"},
		FailurePolicy: "manual",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"app": "web", "tier": "front", "owner": "ops"}
	req := f.updates[0]
	if !maps.Equal(req.GetLabels(), want) || req.GetNamespace() != "team" ||
		req.GetFailurePolicy() != fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL {
		t.Errorf("request = %v, want the full merged labels %v and Manual", req, want)
	}
	for _, line := range []string{
		"sandbox web updated: labels app=web,owner=ops,tier=front; failure policy Manual\n",
		"labels:           app=web,owner=ops,tier=front",
		"failure policy:   Manual",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("output lacks %q:\n%s", line, out)
		}
	}
}

func TestUpdatePolicyOnlySendsNoLabels(t *testing.T) {
	f := newFake()
	f.add("default", "web", "nginx:1", time.Minute).Labels = map[string]string{"app": "web"}
	c, out, _ := client(t, serve(t, f), testToken, "")
	if err := c.Update(context.Background(), UpdateOptions{Name: "web", FailurePolicy: "Manual", Output: OutputJSON}); err != nil {
		t.Fatal(err)
	}
	if l := f.updates[0].GetLabels(); l != nil {
		t.Errorf("labels %v sent; a policy change must leave them alone", l)
	}
	if !strings.Contains(out.String(), `"app": "web"`) {
		t.Errorf("-o json does not print the sandbox:\n%s", out)
	}
}

func TestUpdateErrors(t *testing.T) {
	f := newFake()
	f.add("default", "web", "nginx:1", time.Minute).Labels = map[string]string{"app": "web"}
	c, _, _ := client(t, serve(t, f), testToken, "")
	tests := []struct {
		name  string
		opts  UpdateOptions
		usage bool
		want  string
	}{
		{"missing sandbox", UpdateOptions{Name: "ghost", Labels: []string{"a=b"}}, false, "sandbox ghost not found in namespace default"},
		{"every label removed", UpdateOptions{Name: "web", RemoveLabels: []string{"app"}}, false, "cannot remove every label of sandbox web"},
		{"no name", UpdateOptions{Labels: []string{"a=b"}}, true, "update needs a sandbox name"},
		{"nothing to do", UpdateOptions{Name: "web"}, true, "nothing to update"},
		{"bad label", UpdateOptions{Name: "web", Labels: []string{"novalue"}}, true, `--label "novalue": want KEY=VALUE`},
		{"bad remove", UpdateOptions{Name: "web", RemoveLabels: []string{"a=b"}}, true, `--remove-label "a=b": want a label KEY`},
		{"set and removed", UpdateOptions{Name: "web", Labels: []string{"a=b"}, RemoveLabels: []string{"a"}}, true, "label a is both set"},
		{"bad policy", UpdateOptions{Name: "web", FailurePolicy: "retry"}, true, `--failure-policy "retry"`},
		{"bad output", UpdateOptions{Name: "web", Labels: []string{"a=b"}, Output: "xml"}, true, `-o "xml"`},
		{"expire-in zero", UpdateOptions{Name: "web", ExpireIn: "0"}, true, "--expire-in 0: want a positive duration such as 10m (to remove an expiry: --no-expire)"},
		{"expire-in negative", UpdateOptions{Name: "web", ExpireIn: "-5m"}, true, "--expire-in -5m: want a positive duration"},
		{"expire-in not a duration", UpdateOptions{Name: "web", ExpireIn: "tomorrow"}, true, `--expire-in "tomorrow": want a duration such as 30s, 10m or 1h30m`},
		{"expire-in a bare number", UpdateOptions{Name: "web", ExpireIn: "30"}, true, `--expire-in "30": want a duration`},
		{"expiry set and removed", UpdateOptions{Name: "web", ExpireIn: "1m", NoExpire: true}, true, "--expire-in and --no-expire contradict each other"},
		{"recovery timeout below a second", UpdateOptions{Name: "web", RecoveryTimeout: "500ms"}, true, "--recovery-timeout 500ms: want 1s or more"},
		{"recovery timeout zero", UpdateOptions{Name: "web", RecoveryTimeout: "0s"}, true, "--recovery-timeout 0s: want 1s or more"},
		{"recovery timeout fractional", UpdateOptions{Name: "web", RecoveryTimeout: "1.5s"}, true, "--recovery-timeout 1.5s: want whole seconds"},
		{"recovery timeout too long", UpdateOptions{Name: "web", RecoveryTimeout: "1000000h"}, true, "--recovery-timeout 1000000h: want at most 2147483647s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Update(context.Background(), tt.opts)
			if err == nil || IsUsage(err) != tt.usage || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v (usage %v), want %q (usage %v)", err, IsUsage(err), tt.want, tt.usage)
			}
		})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := f.sandboxes[key("default", "web")].GetLabels(); !maps.Equal(got, map[string]string{"app": "web"}) {
		t.Errorf("labels after failed updates = %v, want them unchanged", got)
	}
}

// TestUpdateLifecycle checks the request each lifecycle flag sends and the
// summary line that says what changed.
func TestUpdateLifecycle(t *testing.T) {
	recovery := int32(600)
	tests := []struct {
		name string
		opts UpdateOptions
		// want is the request without its expire_time, checked apart.
		want     *fsbv1.UpdateSandboxRequest
		expireIn time.Duration
		summary  string
		lines    []string
	}{{
		name:    "auto-recreate",
		opts:    UpdateOptions{FailurePolicy: "auto-recreate"},
		want:    &fsbv1.UpdateSandboxRequest{FailurePolicy: fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE},
		summary: "sandbox crash updated: failure policy AutoRecreate",
		lines:   []string{"failure policy:   AutoRecreate", "recovery timeout: the controller's default", "expires:          20"},
	}, {
		name:    "recovery timeout in minutes",
		opts:    UpdateOptions{RecoveryTimeout: "10m"},
		want:    &fsbv1.UpdateSandboxRequest{RecoveryTimeoutSeconds: &recovery},
		summary: "sandbox crash updated: recovery timeout 10m0s",
		lines:   []string{"recovery timeout: 10m0s"},
	}, {
		name:     "expire in 30s",
		opts:     UpdateOptions{ExpireIn: "30s"},
		want:     &fsbv1.UpdateSandboxRequest{},
		expireIn: 30 * time.Second,
		summary:  "sandbox crash updated: expires 20",
		lines:    []string{"expires:          20"},
	}, {
		name:    "no expiry",
		opts:    UpdateOptions{NoExpire: true},
		want:    &fsbv1.UpdateSandboxRequest{ClearExpireTime: true},
		summary: "sandbox crash updated: expiry removed",
		lines:   []string{"expires:          never"},
	}, {
		name:    "reset revision",
		opts:    UpdateOptions{ResetRevision: true},
		want:    &fsbv1.UpdateSandboxRequest{ResetRevision: true},
		summary: "sandbox crash updated: new revision requested (at revision 1 now; fsb ctl get crash shows the next one)",
		lines:   []string{"revision:         1"},
	}, {
		name: "several at once",
		opts: UpdateOptions{FailurePolicy: "Auto-Recreate", ExpireIn: "1h", RecoveryTimeout: "600s", Labels: []string{"a=b"}},
		want: &fsbv1.UpdateSandboxRequest{
			Labels:                 map[string]string{"a": "b", "app": "crash"},
			FailurePolicy:          fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE,
			RecoveryTimeoutSeconds: &recovery,
		},
		expireIn: time.Hour,
		summary:  "sandbox crash updated: labels a=b,app=crash; failure policy AutoRecreate; recovery timeout 10m0s; expires 20",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			sb := f.add("default", "crash", "busybox", time.Minute)
			sb.Labels = map[string]string{"app": "crash"}
			sb.Spec.ExpireTime = timestamppb.New(time.Now().Add(time.Hour))
			c, out, _ := client(t, serve(t, f), testToken, "")
			tt.opts.Name = "crash"
			before := time.Now()
			if err := c.Update(context.Background(), tt.opts); err != nil {
				t.Fatal(err)
			}
			after := time.Now()
			f.mu.Lock()
			req := f.updates[0]
			f.mu.Unlock()
			if tt.expireIn != 0 {
				at := req.GetExpireTime().AsTime()
				// The time is sent in whole seconds.
				if at.Before(before.Add(tt.expireIn).Truncate(time.Second)) || at.After(after.Add(tt.expireIn)) {
					t.Errorf("expire_time %v, want now + %v", at, tt.expireIn)
				}
			} else if req.ExpireTime != nil {
				t.Errorf("expire_time %v sent, want none", req.GetExpireTime().AsTime())
			}
			got := proto.Clone(req).(*fsbv1.UpdateSandboxRequest)
			got.ExpireTime = nil
			want := proto.Clone(tt.want).(*fsbv1.UpdateSandboxRequest)
			want.Name, want.Namespace = "crash", "default"
			if !proto.Equal(got, want) {
				t.Errorf("request:\n%s\nwant:\n%s", prototext.Format(got), prototext.Format(want))
			}
			first, _, _ := strings.Cut(out.String(), "\n")
			if !strings.HasPrefix(first, tt.summary) {
				t.Errorf("summary %q, want it to start with %q", first, tt.summary)
			}
			for _, l := range tt.lines {
				if !strings.Contains(out.String(), "\n  "+l) {
					t.Errorf("output lacks %q:\n%s", l, out)
				}
			}
		})
	}
}
