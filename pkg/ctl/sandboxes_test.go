package ctl

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// fields splits a table into rows of whitespace-separated cells.
func fields(table string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(table, "\n"), "\n") {
		rows = append(rows, strings.Fields(line))
	}
	return rows
}

func TestListTable(t *testing.T) {
	f := newFake()
	f.add("default", "web", "nginx:1", 5*time.Minute, "127.0.0.1:8080", "127.0.0.1:8443")
	f.add("default", "api", "busybox", 3*time.Hour)
	f.add("other", "hidden", "busybox", time.Minute)
	f.add("default", "gone", "busybox", time.Hour).Status.Phase = fsbv1.Phase_PHASE_LOST
	short := f.add("default", "short", "busybox", 10*time.Minute)
	short.Status.Phase = fsbv1.Phase_PHASE_EXPIRED
	short.Spec.ExpireTime = timestamppb.Now()
	c, out, _ := client(t, serve(t, f), testToken, "default")
	if err := c.List(context.Background(), ListOptions{}); err != nil {
		t.Fatal(err)
	}
	// The same six columns whatever the phase or the expiry.
	want := [][]string{
		{"NAME", "PHASE", "AGENT", "ENDPOINTS", "IMAGE", "AGE"},
		{"api", "Running", "local", "<none>", "busybox", "3h"},
		{"gone", "Lost", "local", "<none>", "busybox", "60m"},
		{"short", "Expired", "local", "<none>", "busybox", "10m"},
		{"web", "Running", "local", "127.0.0.1:8080,127.0.0.1:8443", "nginx:1", "5m"},
	}
	if got := fields(out.String()); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("table:\n%s\nwant rows %q", out, want)
	}
	if got := f.lists[0].GetNamespace(); got != "default" {
		t.Errorf("listed namespace %q, want default", got)
	}
}

func TestListAllNamespacesAndSelector(t *testing.T) {
	f := newFake()
	f.add("b", "one", "busybox", time.Minute).Labels = map[string]string{"app": "demo"}
	f.add("a", "two", "busybox", time.Minute).Labels = map[string]string{"app": "demo"}
	f.add("a", "three", "busybox", time.Minute)
	c, out, _ := client(t, serve(t, f), testToken, "default")
	if err := c.List(context.Background(), ListOptions{AllNamespaces: true, Selector: "app=demo"}); err != nil {
		t.Fatal(err)
	}
	req := f.lists[0]
	if req.GetNamespace() != "" || req.GetLabelSelector() != "app=demo" {
		t.Errorf("request namespace %q selector %q, want every namespace and app=demo", req.GetNamespace(), req.GetLabelSelector())
	}
	rows := fields(out.String())
	if len(rows) != 3 || rows[0][0] != "NAMESPACE" || rows[1][0] != "a" || rows[1][1] != "two" || rows[2][0] != "b" || rows[2][1] != "one" {
		t.Errorf("want a NAMESPACE column and a/two then b/one:\n%s", out)
	}
}

func TestListEmpty(t *testing.T) {
	f := newFake()
	c, out, errw := client(t, serve(t, f), testToken, "team")
	if err := c.List(context.Background(), ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "" || !strings.Contains(errw.String(), "No sandboxes found in namespace team.") {
		t.Errorf("stdout %q, stderr %q", out, errw)
	}
	out2 := &syncBuffer{}
	c.out = out2
	if err := c.List(context.Background(), ListOptions{Output: OutputJSON}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(strings.Fields(out2.String()), ""); got != `{"items":[]}` {
		t.Errorf("empty JSON list = %s, want {\"items\":[]}", out2)
	}
}

func TestListJSON(t *testing.T) {
	f := newFake()
	f.add("default", "web", "nginx:1", time.Minute, "127.0.0.1:8080")
	f.add("default", "api", "busybox", time.Minute)
	c, out, _ := client(t, serve(t, f), testToken, "default")
	if err := c.List(context.Background(), ListOptions{Output: OutputJSON}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if len(got.Items) != 2 || got.Items[0]["name"] != "api" || got.Items[1]["name"] != "web" {
		t.Fatalf("items = %v, want api then web", got.Items)
	}
	if eps := got.Items[1]["endpoints"]; !slices.Equal(toStrings(eps), []string{"127.0.0.1:8080"}) {
		t.Errorf("web endpoints = %v", eps)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestGetJSON(t *testing.T) {
	f := newFake()
	sb := f.add("default", "done", "busybox", time.Minute)
	sb.Status.Phase = fsbv1.Phase_PHASE_SUCCEEDED
	sb.Status.Message = "Completed"
	sb.Spec.Command = []string{"true"}
	running := f.add("default", "live", "busybox", time.Minute)
	running.Labels = map[string]string{"app": "demo"}
	c, out, _ := client(t, serve(t, f), testToken, "default")

	if err := c.Get(context.Background(), "done", OutputJSON); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	want := map[string]any{
		"name": "done", "namespace": "default", "sandboxID": "sb-done", "phase": "Succeeded",
		"agent": "local", "node": "node-1", "image": "busybox", "revision": 1.0, "exitCode": 0.0,
		"message": "Completed",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	for _, k := range []string{"endpoints", "labels", "createTime", "spec"} {
		if _, ok := got[k]; !ok {
			t.Errorf("key %s missing: %s", k, out)
		}
	}
	if spec, _ := got["spec"].(map[string]any); spec["image"] != "busybox" || spec["command"] == nil {
		t.Errorf("spec = %v, want the full spec with lowerCamel keys", got["spec"])
	}

	// A running sandbox has no exit code yet: null, not 0.
	out.buf.Reset()
	if err := c.Get(context.Background(), "live", OutputJSON); err != nil {
		t.Fatal(err)
	}
	got = nil
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatal(err)
	}
	if v, ok := got["exitCode"]; !ok || v != nil {
		t.Errorf("exitCode of a running sandbox = %#v (present %v), want null", v, ok)
	}
	if l, _ := got["labels"].(map[string]any); l["app"] != "demo" {
		t.Errorf("labels = %v", got["labels"])
	}
}

func TestGetTable(t *testing.T) {
	f := newFake()
	f.add("team", "web", "nginx:1", 90*time.Second, "127.0.0.1:8080")
	c, out, _ := client(t, serve(t, f), testToken, "team")
	if err := c.Get(context.Background(), "web", ""); err != nil {
		t.Fatal(err)
	}
	want := `NAME   PHASE     AGENT   ENDPOINTS        IMAGE     AGE
web    Running   local   127.0.0.1:8080   nginx:1   90s

Revision:        1
Started:         cold
Failure policy:  Manual
Expires:         never
Exit code:       <none>
Message:         <none>
Conditions:      <none>
`
	if out.String() != want {
		t.Errorf("get:\n%s\nwant:\n%s", out, want)
	}
}

// TestGetLifecycle checks that get shows what a user needs to follow a
// sandbox's lifecycle: its revision, policy, expiry, exit code, message
// and every condition.
func TestGetLifecycle(t *testing.T) {
	f := newFake()
	now := time.Now()
	crash := f.add("default", "crash", "busybox", time.Hour)
	crash.Spec.FailurePolicy = fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE
	crash.Spec.RecoveryTimeoutSeconds = 600
	crash.Spec.ExpireTime = timestamppb.New(now.Add(30*time.Hour + 30*time.Minute).Truncate(time.Second))
	crash.Status.Phase = fsbv1.Phase_PHASE_FAILED
	crash.Status.Revision = 4
	crash.Status.ExitCode = 137
	crash.Status.Message = "gave up after 10m0s without a running revision"
	crash.Status.Conditions = []*fsbv1.Condition{
		{Type: "Ready", Status: "False", Reason: "OOMKilled", Message: "revision 4 was killed at its memory limit", LastTransitionTime: timestamppb.New(now.Add(-2 * time.Minute))},
		{Type: "Recovering", Status: "False", Reason: "GaveUp", Message: "no revision ran for 10m0s", LastTransitionTime: timestamppb.New(now.Add(-time.Minute))},
		{Type: "Lost", Status: "True", Reason: "AgentLost"},
	}
	stuck := f.add("default", "stuck", "busybox", time.Minute)
	stuck.Status.Phase = fsbv1.Phase_PHASE_TERMINATING
	stuck.Status.Message = "waiting for agent local: containerd unavailable"
	c, out, _ := client(t, serve(t, f), testToken, "")

	if err := c.Get(context.Background(), "crash", ""); err != nil {
		t.Fatal(err)
	}
	_, details, _ := strings.Cut(out.String(), "\n\n")
	want := `Revision:        4
Started:         cold
Failure policy:  AutoRecreate, recovery timeout 10m0s
Expires:         ` + crash.Spec.ExpireTime.AsTime().UTC().Format(time.RFC3339) + ` (in 30h)
Exit code:       137
Message:         gave up after 10m0s without a running revision
Conditions:
  TYPE         STATUS   REASON      AGE         MESSAGE
  Ready        False    OOMKilled   2m          revision 4 was killed at its memory limit
  Recovering   False    GaveUp      60s         no revision ran for 10m0s
  Lost         True     AgentLost   <unknown>   <none>
`
	if details != want {
		t.Errorf("details:\n%s\nwant:\n%s", details, want)
	}

	out.buf.Reset()
	if err := c.Get(context.Background(), "stuck", ""); err != nil {
		t.Fatal(err)
	}
	rows := fields(out.String())
	if rows[1][1] != "Terminating" || !strings.Contains(out.String(), "\nMessage:         waiting for agent local: containerd unavailable\n") {
		t.Errorf("a Terminating sandbox does not show what it waits for:\n%s", out)
	}

	out.buf.Reset()
	if err := c.Get(context.Background(), "crash", OutputJSON); err != nil {
		t.Fatal(err)
	}
	var got struct {
		FailurePolicy string     `json:"failurePolicy"`
		ExpireTime    *time.Time `json:"expireTime"`
		ExitCode      *int32     `json:"exitCode"`
		Conditions    []struct {
			Type, Status, Reason, Message string
			LastTransitionTime            *time.Time `json:"lastTransitionTime"`
		} `json:"conditions"`
	}
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatal(err)
	}
	if got.FailurePolicy != "AutoRecreate" || got.ExpireTime == nil || !got.ExpireTime.Equal(crash.Spec.ExpireTime.AsTime()) ||
		got.ExitCode == nil || *got.ExitCode != 137 || len(got.Conditions) != 3 ||
		got.Conditions[0].Reason != "OOMKilled" || got.Conditions[0].LastTransitionTime == nil || got.Conditions[2].LastTransitionTime != nil {
		t.Errorf("JSON lacks the lifecycle:\n%s", out)
	}

	// Without conditions or expiry, the keys are there: [] and null.
	out.buf.Reset()
	if err := c.Get(context.Background(), "stuck", OutputJSON); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"conditions": []`, `"expireTime": null`, `"failurePolicy": "Manual"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("JSON lacks %s:\n%s", want, out)
		}
	}
}

func TestOutputFormatChecked(t *testing.T) {
	c, _, _ := client(t, serve(t, newFake()), testToken, "")
	for name, tt := range map[string]struct {
		err  error
		want string
	}{
		"get":    {c.Get(context.Background(), "x", "xml"), "want table, wide, json or yaml"},
		"list":   {c.List(context.Background(), ListOptions{Output: "csv"}), "want table, wide, json or yaml"},
		"agents": {c.Agents(context.Background(), "wide"), "want table or json"},
	} {
		if !IsUsage(tt.err) || !strings.Contains(tt.err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want a usage error with %q", name, tt.err, tt.want)
		}
	}
}

func TestListWide(t *testing.T) {
	f := newFake()
	web := f.add("default", "web", "nginx:1", 5*time.Minute, "127.0.0.1:8080")
	web.Labels = map[string]string{"tier": "front", "app": "web"}
	web.Spec.Runtime = "crun"
	done := f.add("default", "job", "busybox", time.Hour)
	done.Status.Phase = fsbv1.Phase_PHASE_FAILED
	done.Status.ExitCode = 3
	done.Status.Revision = 2
	done.Status.Message = "exited with code 3"
	web.Spec.ExpireTime = timestamppb.New(time.Now().Add(30*time.Hour + 30*time.Minute))
	old := f.add("default", "old", "busybox", time.Hour)
	old.Spec.ExpireTime = timestamppb.New(time.Now().Add(-time.Second))
	old.Status.Phase = fsbv1.Phase_PHASE_EXPIRED
	c, out, _ := client(t, serve(t, f), testToken, "default")
	if err := c.List(context.Background(), ListOptions{Output: OutputWide}); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"NAME", "PHASE", "AGENT", "ENDPOINTS", "IMAGE", "AGE", "SANDBOX-ID", "NODE", "RUNTIME", "REVISION", "EXPIRES", "EXIT", "LABELS", "MESSAGE"},
		{"job", "Failed", "local", "<none>", "busybox", "60m", "sb-job", "node-1", "<default>", "2", "-", "3", "<none>", "exited", "with", "code", "3"},
		{"old", "Expired", "local", "<none>", "busybox", "60m", "sb-old", "node-1", "<default>", "1", "passed", "0", "<none>", "<none>"},
		{"web", "Running", "local", "127.0.0.1:8080", "nginx:1", "5m", "sb-web", "node-1", "crun", "1", "30h", "<none>", "app=web,tier=front", "<none>"},
	}
	if got := fields(out.String()); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("table:\n%s\nwant rows %q", out, want)
	}
}

// TestYAMLMirrorsJSON checks that -o yaml is the -o json document, key for
// key, for get and list.
func TestYAMLMirrorsJSON(t *testing.T) {
	f := newFake()
	sb := f.add("default", "web", "nginx:1", time.Minute, "127.0.0.1:8080")
	sb.Labels = map[string]string{"app": "web"}
	sb.Spec.Command = []string{"httpd", "-f"}
	f.add("default", "api", "busybox", time.Minute)
	c, out, _ := client(t, serve(t, f), testToken, "default")
	for name, call := range map[string]func(output string) error{
		"get":  func(o string) error { return c.Get(context.Background(), "web", o) },
		"list": func(o string) error { return c.List(context.Background(), ListOptions{Output: o}) },
	} {
		out.buf.Reset()
		if err := call(OutputJSON); err != nil {
			t.Fatal(err)
		}
		var fromJSON any
		if err := json.Unmarshal([]byte(out.String()), &fromJSON); err != nil {
			t.Fatal(err)
		}
		out.buf.Reset()
		if err := call(OutputYAML); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(strings.TrimSpace(out.String()), "{") {
			t.Errorf("%s -o yaml printed JSON:\n%s", name, out)
		}
		var fromYAML any
		if err := yaml.Unmarshal([]byte(out.String()), &fromYAML); err != nil {
			t.Fatalf("%s -o yaml is not YAML: %v\n%s", name, err, out)
		}
		if !reflect.DeepEqual(fromJSON, fromYAML) {
			t.Errorf("%s: yaml %v\ndiffers from json %v", name, fromYAML, fromJSON)
		}
	}
}
