//go:build !fsbhelper

package main

import (
	"bytes"
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
	"github.com/containerd/containerd"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// cluster is the quick start's shape on the rig: one `fsb agent` and one
// `fsb controller` (embedded store) as processes, driven with `fsb ctl`.
type cluster struct {
	t       testing.TB
	metrics string // the controller's /metrics URL
	dir     string
	fsb     string
	cd      *containerd.Client
	agent   *agentProc
	server  string
	token   string
	ctrl    *exec.Cmd
	log     *rig.Buffer
}

// startCluster is startClusterOn with the embedded store.
func startCluster(t testing.TB, mode string, agentArgs ...string) *cluster {
	t.Helper()
	return startClusterOn(t, embeddedStore, mode, agentArgs...)
}

// startClusterOn starts an agent and a controller on a store of kind whose
// creates default to mode.
func startClusterOn(t testing.TB, kind storeKind, mode string, agentArgs ...string) *cluster {
	t.Helper()
	return startClusterArgs(t, kind, mode, agentArgs, nil)
}

// startClusterArgs is startClusterOn with more flags for the controller.
func startClusterArgs(t testing.TB, kind storeKind, mode string, agentArgs, controllerArgs []string) *cluster {
	t.Helper()
	cd, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir, agentArgs...)
	userToken := filepath.Join(dir, "user-token")
	if err := os.WriteFile(userToken, []byte("user-token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port, health, metricsPort := freePort(t), freePort(t), freePort(t)
	c := &cluster{metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort), t: t, dir: dir, fsb: rig.FsbBinary(t), cd: cd, agent: a, server: fmt.Sprintf("http://127.0.0.1:%d", port), token: "user-token-1", log: &rig.Buffer{}}
	c.ctrl = exec.Command(rig.FsbBinary(t), "controller",
		"--fastpath-bind-address", fmt.Sprintf("127.0.0.1:%d", port),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", health),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		"--agents", strings.TrimPrefix(a.base, "http://"),
		"--user-token-file", userToken, "--agent-token-file", filepath.Join(dir, "token"),
		"--fastpath-consistency-mode", mode, "--log-format", "json")
	c.ctrl.Args = append(c.ctrl.Args, storeArgs(t, kind, dir)...)
	c.ctrl.Args = append(c.ctrl.Args, controllerArgs...)
	c.ctrl.Stderr = c.log
	if err := c.ctrl.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.ctrl.Wait(); close(done) }()
	t.Cleanup(func() {
		c.ctrl.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("controller log:\n%s\nagent log:\n%s", c.log.String(), a.stderr.String())
		}
	})
	waitReady(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/readyz", health), c.log)
	return c
}

// ctl runs `fsb ctl ARGS...` against the cluster.
func (c *cluster) ctl(args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	return runCtl(c.t, c.server, c.token, args...)
}

func (c *cluster) mustCtl(args ...string) string {
	c.t.Helper()
	return mustRunCtl(c.t, c.server, c.token, args...)
}

// runCtl runs `fsb ctl ARGS...` against the controller at server with
// token, as a user would, with no config file of the machine's.
func runCtl(t testing.TB, server, token string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(rig.FsbBinary(t), append([]string{"ctl"}, args...)...)
	cmd.Env = append(os.Environ(), "FSB_SERVER="+server, "FSB_TOKEN="+token, "HOME="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// mustRunCtl is runCtl that fails the test unless the command succeeds.
func mustRunCtl(t testing.TB, server, token string, args ...string) string {
	t.Helper()
	out, errOut, code := runCtl(t, server, token, args...)
	if code != 0 {
		t.Fatalf("fsb ctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (c *cluster) getJSON(name string) map[string]any {
	c.t.Helper()
	var obj map[string]any
	out := c.mustCtl("get", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &obj); err != nil {
		c.t.Fatalf("get -o json: %v\n%s", err, out)
	}
	return obj
}

// TestControlPlaneEndToEnd drives run, get, logs, list, update, delete
// and the metrics through `fsb ctl`, in both modes, on both stores.
func TestControlPlaneEndToEnd(t *testing.T) {
	onEachStore(t, testControlPlaneEndToEnd)
}

func testControlPlaneEndToEnd(t *testing.T, kind storeKind) {
	for _, mode := range []string{"fast", "strong"} {
		t.Run(mode, func(t *testing.T) {
			c := startClusterOn(t, kind, mode)
			out := c.mustCtl("run", "demo", "--image", rig.ImageRef, "-p", "8080", "-e", "GREETING=hello", "--label", "app=demo",
				"--", "sh", "-c", "echo $GREETING from "+mode+"; exec sleep 300")
			if !strings.Contains(out, "demo") {
				t.Errorf("run printed %q", out)
			}
			obj := c.getJSON("demo")
			for k, want := range map[string]any{
				"name": "demo", "namespace": "default", "phase": "Running", "agent": "agent-1",
				"image": rig.ImageRef, "revision": float64(1),
			} {
				if fmt.Sprint(obj[k]) != fmt.Sprint(want) {
					t.Errorf("get: %s = %v, want %v (%v)", k, obj[k], want, obj)
				}
			}
			if eps, _ := obj["endpoints"].([]any); len(eps) != 1 || eps[0] != "127.0.0.1:8080" {
				t.Errorf("endpoints = %v", obj["endpoints"])
			}

			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(c.mustCtl("logs", "demo"), "hello from "+mode) {
				if time.Now().After(deadline) {
					t.Fatalf("logs never showed the output")
				}
				time.Sleep(50 * time.Millisecond)
			}

			var list struct {
				Items []map[string]any `json:"items"`
			}
			if err := json.Unmarshal([]byte(c.mustCtl("list", "-o", "json", "-l", "app=demo")), &list); err != nil {
				t.Fatal(err)
			}
			if len(list.Items) != 1 || list.Items[0]["name"] != "demo" {
				t.Errorf("list -l app=demo = %v", list.Items)
			}
			if err := json.Unmarshal([]byte(c.mustCtl("list", "-o", "json", "-l", "app=other")), &list); err != nil || len(list.Items) != 0 {
				t.Errorf("list -l app=other = %v (%v)", list.Items, err)
			}

			// Labels and the failure policy change through update.
			c.mustCtl("update", "demo", "--label", "tier=web")
			if err := json.Unmarshal([]byte(c.mustCtl("list", "-o", "json", "-l", "tier=web,app=demo")), &list); err != nil || len(list.Items) != 1 {
				t.Errorf("list -l tier=web,app=demo after update = %v (%v)", list.Items, err)
			}
			c.mustCtl("update", "demo", "--failure-policy", "auto-recreate")
			if got := c.getJSON("demo"); fmt.Sprint(got["failurePolicy"]) != "AutoRecreate" {
				t.Errorf("failure policy after update to auto-recreate: %v", got["failurePolicy"])
			}
			c.mustCtl("update", "demo", "--remove-label", "tier", "--failure-policy", "manual")

			// The same create again is answered with the sandbox; another
			// spec under the name is refused.
			c.mustCtl("run", "demo", "--image", rig.ImageRef, "-p", "8080", "-e", "GREETING=hello", "--label", "app=demo",
				"--", "sh", "-c", "echo $GREETING from "+mode+"; exec sleep 300")
			if _, errOut, code := c.ctl("run", "demo", "--image", rig.ImageRef, "--", "true"); code == 0 || !strings.Contains(errOut, "already exists") {
				t.Errorf("a second demo with another spec: exit %d, %q", code, errOut)
			}

			// The create shows in the metrics, by mode and phase.
			resp, err := http.Get(c.metrics)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, want := range []string{
				`fsb_fastpath_create_seconds_count{mode="` + mode + `",outcome="ok"}`,
				`fsb_fastpath_create_phase_seconds_count{mode="` + mode + `",phase="agent"}`,
				`fsb_fastpath_create_phase_seconds_count{mode="` + mode + `",phase="allocate"}`,
				`fsb_fastpath_create_phase_seconds_count{mode="` + mode + `",phase="store"}`,
				"fsb_registry_agents 1",
				"fsb_registry_free_slots 4",
			} {
				if !strings.Contains(string(body), want) {
					t.Errorf("metrics lack %s", want)
				}
			}

			id := obj["sandboxID"]
			c.mustCtl("delete", "demo", "--grace-period", "5")
			if _, errOut, code := c.ctl("get", "demo"); code == 0 || !strings.Contains(errOut, "not found") {
				t.Errorf("get after delete: exit %d, %q", code, errOut)
			}
			cs, err := c.cd.Containers(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(cs) != 0 {
				t.Errorf("%d containers left after delete (sandbox %v)", len(cs), id)
			}
		})
	}
}

// TestControlPlaneRefusesBadInput: bad names, ports, runtimes, images,
// expiries and policies, unknown sandboxes, a full agent and a wrong
// token are refused with what is wrong, on both stores.
func TestControlPlaneRefusesBadInput(t *testing.T) {
	onEachStore(t, testControlPlaneRefusesBadInput)
}

func testControlPlaneRefusesBadInput(t *testing.T, kind storeKind) {
	c := startClusterOn(t, kind, "fast", "--capacity", "1")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "Bad_Name", "--image", rig.ImageRef}, "Bad_Name"},
		{[]string{"run", "x", "--image", rig.ImageRef, "-p", "70000"}, "70000"},
		{[]string{"run", "x", "--image", rig.ImageRef, "--runtime", "kata"}, "kata"},
		{[]string{"run", "x", "--image", "localhost/fsb/nope:latest", "--", "true"}, "localhost/fsb/nope:latest"},
		{[]string{"run", "x", "--image", rig.ImageRef, "--expire-in", "-1m"}, "expire-in"},
		{[]string{"run", "x", "--image", rig.ImageRef, "--failure-policy", "sometimes"}, "sometimes"},
		{[]string{"get", "nothing-here"}, "not found"},
		{[]string{"delete", "nothing-here"}, "not found"},
	} {
		_, errOut, code := c.ctl(tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("fsb ctl %s: exit %d, stderr %q; want a failure naming %q", strings.Join(tc.args, " "), code, errOut, tc.want)
		}
	}
	// No slot left: ResourceExhausted, in both modes.
	c.mustCtl("run", "only", "--image", rig.ImageRef, "--", "sleep", "300")
	for _, mode := range []string{"fast", "strong"} {
		_, errOut, code := c.ctl("run", "one-too-many-"+mode, "--mode", mode, "--image", rig.ImageRef, "--", "sleep", "300")
		if code == 0 || !strings.Contains(errOut, "full") {
			t.Errorf("%s create beyond capacity: exit %d, %q", mode, code, errOut)
		}
		if _, _, code := c.ctl("get", "one-too-many-"+mode); code == 0 {
			t.Errorf("%s create beyond capacity left an object", mode)
		}
	}
	// A wrong token is refused.
	c.token = "wrong"
	if _, errOut, code := c.ctl("list"); code == 0 || !strings.Contains(errOut, "token") {
		t.Errorf("list with a wrong token: exit %d, %q", code, errOut)
	}
}

// TestControlPlaneOverCurl drives the fast path with plain HTTP+JSON and a
// user token, as the README shows.
func TestControlPlaneOverCurl(t *testing.T) {
	c := startCluster(t, "fast")
	call := func(method string, body any) (int, map[string]any) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, c.server+"/fsb.v1.FastPathService/"+method, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	code, out := call("CreateSandbox", map[string]any{"name": "curl", "spec": map[string]any{"image": rig.ImageRef, "command": []string{"sleep", "300"}}})
	if code != http.StatusOK {
		t.Fatalf("CreateSandbox: HTTP %d %v", code, out)
	}
	code, out = call("ListSandboxes", map[string]any{"namespace": "default"})
	if items, _ := out["sandboxes"].([]any); code != http.StatusOK || len(items) != 1 {
		t.Errorf("ListSandboxes: HTTP %d %v", code, out)
	}
	if code, out = call("DeleteSandbox", map[string]any{"name": "curl"}); code != http.StatusOK {
		t.Errorf("DeleteSandbox: HTTP %d %v", code, out)
	}
}

// TestRequestsOverTheReadLimitAreRefused sends request messages larger than
// --max-request-bytes to the controller (default 4 MiB) and to the agent
// (set to 1 MiB): both refuse them with ResourceExhausted naming the
// limit, and go on serving.
func TestRequestsOverTheReadLimitAreRefused(t *testing.T) {
	c := startCluster(t, "fast", "--max-request-bytes", "1048576")
	big := strings.Repeat("a", 5<<20)
	body := fmt.Sprintf(`{"name":"big","spec":{"image":%q,"workingDir":%q}}`, rig.ImageRef, big)
	req, _ := http.NewRequest(http.MethodPost, c.server+"/fsb.v1.FastPathService/CreateSandbox", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(msg), "resource_exhausted") || !strings.Contains(string(msg), "4194304") {
		t.Errorf("controller: HTTP %d %s, want 429 resource_exhausted naming 4194304", resp.StatusCode, msg)
	}

	code, out := c.agent.call("CreateSandbox", c.agent.token, map[string]any{
		"sandboxId": "sb-big", "revision": 1, "namespace": "default", "name": "big",
		"spec": map[string]any{"image": rig.ImageRef, "workingDir": big[:2<<20]},
	})
	if code != http.StatusTooManyRequests || !strings.Contains(fmt.Sprint(out), "1048576") {
		t.Errorf("agent: HTTP %d %v, want 429 naming 1048576", code, out)
	}
	c.mustCtl("run", "small", "--image", rig.ImageRef, "--", "true")
}

// TestJanitorTokenAsksOnly: the janitor's token may ask which sandboxes
// the controller knows, and nothing else; a user token may not ask it.
func TestJanitorTokenAsksOnly(t *testing.T) {
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir)
	janitorToken := filepath.Join(dir, "janitor-token")
	if err := os.WriteFile(janitorToken, []byte("janitor-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctrl, server := newControllerProc(t, dir, a, "--janitor-token-file", janitorToken)
	ctrl.start()
	janitor := fsbv1connect.NewFastPathServiceClient(http.DefaultClient, server, connect.WithInterceptors(auth.Bearer("janitor-1")))
	ctx := context.Background()
	_, err := janitor.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "x", Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef}}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("the janitor token created a sandbox: %v, want PermissionDenied", err)
	}
	ask := connect.NewRequest(&fsbv1.ClassifyRequest{Sandboxes: []*fsbv1.SandboxRef{{AgentId: "agent-1", SandboxId: "sb-x", Revision: 1}}})
	got, err := fsbv1connect.NewJanitorServiceClient(http.DefaultClient, server, connect.WithInterceptors(auth.Bearer("janitor-1"))).Classify(ctx, ask)
	if err != nil {
		t.Errorf("the janitor's question: %v", err)
	} else if v := got.Msg.GetClassifications()[0].GetVerdict(); v != fsbv1.Verdict_VERDICT_UNKNOWN {
		t.Errorf("a sandbox ID nobody knows on a reconciled agent: %v, want unknown", v)
	}
	_, err = fsbv1connect.NewJanitorServiceClient(http.DefaultClient, server, connect.WithInterceptors(auth.Bearer("user-token-1"))).Classify(ctx, ask)
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("a user token asked the janitor's question: %v, want PermissionDenied", err)
	}
	if !strings.Contains(ctrl.log.String(), "call denied") {
		t.Error("no log line for the denied calls")
	}
}
