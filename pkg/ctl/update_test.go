package ctl

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

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
		"sandbox web updated",
		"labels:         app=web,owner=ops,tier=front",
		"failure policy: Manual",
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
		{"auto-recreate refused by the controller", UpdateOptions{Name: "web", FailurePolicy: "auto-recreate"}, false,
			"failurePolicy AutoRecreate is not supported yet: it arrives with self-healing"},
		{"missing sandbox", UpdateOptions{Name: "ghost", Labels: []string{"a=b"}}, false, "sandbox ghost not found in namespace default"},
		{"every label removed", UpdateOptions{Name: "web", RemoveLabels: []string{"app"}}, false, "cannot remove every label of sandbox web"},
		{"no name", UpdateOptions{Labels: []string{"a=b"}}, true, "update needs a sandbox name"},
		{"nothing to do", UpdateOptions{Name: "web"}, true, "nothing to update"},
		{"bad label", UpdateOptions{Name: "web", Labels: []string{"novalue"}}, true, `--label "novalue": want KEY=VALUE`},
		{"bad remove", UpdateOptions{Name: "web", RemoveLabels: []string{"a=b"}}, true, `--remove-label "a=b": want a label KEY`},
		{"set and removed", UpdateOptions{Name: "web", Labels: []string{"a=b"}, RemoveLabels: []string{"a"}}, true, "label a is both set"},
		{"bad policy", UpdateOptions{Name: "web", FailurePolicy: "retry"}, true, `--failure-policy "retry"`},
		{"bad output", UpdateOptions{Name: "web", Labels: []string{"a=b"}, Output: "xml"}, true, `-o "xml"`},
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
