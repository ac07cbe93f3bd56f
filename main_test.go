//go:build !fsbhelper

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// These tests run the built binaries (make build) as a user would.

func fsb(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(rig.FsbBinary(t), args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func TestHelpListsRoles(t *testing.T) {
	out, code := fsb(t, "--help")
	if code != 0 {
		t.Fatalf("fsb --help exited %d", code)
	}
	for _, role := range []string{"controller", "agent", "janitor", "ctl", "version"} {
		if !strings.Contains(out, "\n   "+role+" ") {
			t.Errorf("fsb --help does not list %s:\n%s", role, out)
		}
	}
	if strings.Contains(out, "log-driver") || strings.Contains(out, "\n   init ") {
		t.Errorf("fsb --help shows the hidden helper roles:\n%s", out)
	}
}

func TestVersion(t *testing.T) {
	out, code := fsb(t, "version")
	if code != 0 || !strings.HasPrefix(out, "fsb ") || !strings.Contains(out, "commit ") {
		t.Errorf("fsb version = %q (exit %d)", out, code)
	}
}

func TestAgentRefusesToStartWithoutToken(t *testing.T) {
	out, code := fsb(t, "agent", "--http-port", "0")
	if code == 0 || !strings.Contains(out, "--token-file is required") {
		t.Errorf("fsb agent without a token: exit %d, %q", code, out)
	}
}

// agentProc is `fsb agent` running as a process on the rig.
type agentProc struct {
	t       testing.TB
	cmd     *exec.Cmd
	base    string
	metrics string // its /metrics URL
	token   string
	stderr  *rig.Buffer
	done    chan error
}

// startAgent starts `fsb agent` for containerd namespace ns with agent ID id,
// keeping its logs and token under dir, and waits until it is ready.
func startAgent(t testing.TB, ns, id, dir string, extra ...string) *agentProc {
	t.Helper()
	return startAgentAt(t, freePort(t), ns, id, dir, extra...)
}

// restartAgent starts an agent again as a was: same port, ID and
// directory.
func restartAgent(t testing.TB, a *agentProc, ns, id, dir string, extra ...string) *agentProc {
	t.Helper()
	port, err := strconv.Atoi(a.base[strings.LastIndex(a.base, ":")+1:])
	if err != nil {
		t.Fatal(err)
	}
	return startAgentAt(t, port, ns, id, dir, extra...)
}

// startAgentAt is startAgent on a given port.
func startAgentAt(t testing.TB, port int, ns, id, dir string, extra ...string) *agentProc {
	t.Helper()
	a := launchAgent(t, "http", port, ns, id, dir, extra...)
	waitReady(t, http.DefaultClient, a.base+"/readyz", a.stderr)
	return a
}

// launchAgent starts `fsb agent` on port, reached at scheme://, without
// waiting for it; the test's end kills it and removes its sandboxes.
func launchAgent(t testing.TB, scheme string, port int, ns, id, dir string, extra ...string) *agentProc {
	t.Helper()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("e2e-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	metrics := freePort(t)
	a := &agentProc{t: t, base: fmt.Sprintf("%s://127.0.0.1:%d", scheme, port), token: "e2e-token", stderr: &rig.Buffer{}, done: make(chan error, 1),
		metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics)}
	socket := rig.Env(t, rig.EnvSocket)
	ownLinkDir := false
	for i, arg := range extra {
		if arg == "--containerd-socket" && i+1 < len(extra) {
			socket = extra[i+1]
		}
		ownLinkDir = ownLinkDir || arg == "--link-dir"
	}
	if !ownLinkDir {
		// One link dir per containerd daemon, as --link-dir asks: the
		// default one is shared by every daemon on the machine, and an
		// agent starting on one removes the link dirs it finds of
		// containers its daemon does not hold (another rig's, a private
		// daemon's). The daemon's own directory is short enough for the
		// sockets.
		extra = append([]string{"--link-dir", filepath.Join(filepath.Dir(socket), "link")}, extra...)
	}
	a.cmd = exec.Command(rig.FsbBinary(t), "agent",
		"--bind-address", "127.0.0.1", "--http-port", fmt.Sprint(port),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metrics),
		"--containerd-socket", socket, "--containerd-namespace", ns,
		"--agent-id", id, "--token-file", tokenFile, "--log-dir", filepath.Join(dir, "logs"),
		"--log-format", "json")
	a.cmd.Args = append(a.cmd.Args, extra...)
	a.cmd.Stderr = a.stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.done <- a.cmd.Wait() }()
	t.Cleanup(func() {
		a.cmd.Process.Kill()
		<-a.done
		removeSandboxes(t, socket, ns)
	})
	return a
}

// removeSandboxes removes every container of ns at the end of a test, after
// its agent and before the test's temporary directories: the sandboxes' log
// drivers write into the agent's log dir until their containers are gone,
// and a revision starting as the test ends (AutoRecreate) would make a file
// there while the directory is being removed. The rig's own clean-up of ns
// comes later and finds nothing left.
func removeSandboxes(t testing.TB, socket, ns string) {
	client, err := containerd.New(socket, containerd.WithDefaultNamespace(ns), containerd.WithTimeout(5*time.Second))
	if err != nil {
		t.Logf("remove the sandboxes of %s: %v", ns, err) // a private containerd may be gone already
		return
	}
	defer client.Close()
	if err := rig.Cleanup(client, ns); err != nil {
		t.Logf("remove the sandboxes of %s: %v", ns, err)
	}
}

// kill kills the agent with SIGKILL and waits until it is gone.
func (a *agentProc) kill() {
	a.cmd.Process.Kill()
	err := <-a.done
	a.done <- err // for the cleanup
}

// call makes one Connect JSON call, as curl would.
func (a *agentProc) call(method, token string, body any) (int, map[string]any) {
	a.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, a.base+"/fsb.v1.AgentService/"+method, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// create starts a sandbox running script and returns it as JSON.
func (a *agentProc) create(id, script string) map[string]any {
	a.t.Helper()
	code, out := a.call("CreateSandbox", a.token, map[string]any{
		"sandboxId": id, "revision": 1, "namespace": "default", "name": id,
		"spec": map[string]any{"image": rig.ImageRef, "command": []string{"sh", "-c", script}},
	})
	if code != http.StatusOK {
		a.t.Fatalf("CreateSandbox %s: HTTP %d %v\nagent log:\n%s", id, code, out, a.stderr.String())
	}
	return out["sandbox"].(map[string]any)
}

// sandboxes returns GetStatus's sandboxes by ID.
func (a *agentProc) sandboxes() map[string]map[string]any {
	a.t.Helper()
	code, out := a.call("GetStatus", a.token, map[string]any{})
	if code != http.StatusOK {
		a.t.Fatalf("GetStatus: HTTP %d %v", code, out)
	}
	got := map[string]map[string]any{}
	list, _ := out["status"].(map[string]any)["sandboxes"].([]any)
	for _, s := range list {
		sb := s.(map[string]any)
		got[sb["sandboxId"].(string)] = sb
	}
	return got
}

// TestAgentRoleOverConnectJSON starts `fsb agent` as a process on the rig and
// drives it with plain HTTP+JSON, as the README's curl example does.
func TestAgentRoleOverConnectJSON(t *testing.T) {
	_, ns := rig.Containerd(t)
	a := startAgent(t, ns, "e2e-agent", t.TempDir())

	if code, _ := a.call("GetStatus", "wrong", map[string]any{}); code != http.StatusUnauthorized {
		t.Errorf("GetStatus with a wrong token: HTTP %d, want 401", code)
	}
	sb := a.create("sb-e2e", "echo hello from e2e; exec sleep 300")
	if sb["phase"] != "PHASE_RUNNING" {
		t.Errorf("created sandbox phase %v", sb["phase"])
	}
	waitFile(t, sb["logPath"].(string), "stdout F hello from e2e")
	code, out := a.call("DeleteSandbox", a.token, map[string]any{"sandboxId": "sb-e2e", "gracePeriodSeconds": 5})
	if code != http.StatusOK {
		t.Fatalf("DeleteSandbox: HTTP %d %v", code, out)
	}
	ended := out["sandboxes"].([]any)[0].(map[string]any)
	if ended["exitCode"] != float64(143) {
		t.Errorf("deleted sandbox exit code %v, want 143", ended["exitCode"])
	}

	// SIGTERM stops the agent cleanly.
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-a.done:
		a.done <- err // for the cleanup
		if err != nil {
			t.Errorf("agent exited with %v after SIGTERM\n%s", err, a.stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Errorf("agent still running 15s after SIGTERM")
	}
}

// TestAgentKill9 kills the agent with SIGKILL and starts a new one: it adopts
// the sandboxes of its agent ID (and only those), streams their logs, and
// reports the exits that happen after it took over.
func TestAgentKill9(t *testing.T) {
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	first := startAgent(t, ns, "agent-a", dir)
	long := first.create("sb-long", "echo long-running; exec sleep 300")
	first.create("sb-short", "echo short-lived; sleep 4; exit 3")
	waitFile(t, long["logPath"].(string), "long-running")
	first.cmd.Process.Signal(syscall.SIGKILL)
	<-first.done
	first.done <- nil

	// Another agent ID on the same containerd namespace sees none of them.
	other := startAgent(t, ns, "agent-b", t.TempDir())
	if got := other.sandboxes(); len(got) != 0 {
		t.Errorf("agent-b adopted agent-a's sandboxes: %v", got)
	}

	second := startAgent(t, ns, "agent-a", dir)
	got := second.sandboxes()
	if got["sb-long"]["phase"] != "PHASE_RUNNING" || got["sb-short"] == nil {
		t.Fatalf("after the restart: %v", got)
	}
	// Logs still stream: the log driver never depended on the agent.
	client := fsbv1connect.NewAgentServiceClient(http.DefaultClient, second.base, connect.WithInterceptors(auth.Bearer(second.token)))
	stream, err := client.StreamLogs(context.Background(), connect.NewRequest(&fsbv1.AgentServiceStreamLogsRequest{SandboxId: "sb-long"}))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for stream.Receive() {
		for _, l := range stream.Msg().GetLines() {
			lines = append(lines, l.GetText())
		}
	}
	if stream.Err() != nil || strings.Join(lines, ",") != "long-running" {
		t.Errorf("StreamLogs after the restart: %v, %v", lines, stream.Err())
	}
	// Exits are still reported.
	deadline := time.Now().Add(20 * time.Second)
	for {
		sb := second.sandboxes()["sb-short"]
		if sb["phase"] == "PHASE_FAILED" {
			if sb["exitCode"] != float64(3) {
				t.Errorf("sb-short exit code %v, want 3", sb["exitCode"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sb-short's exit was never reported: %v", sb)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, id := range []string{"sb-long", "sb-short"} {
		if code, out := second.call("DeleteSandbox", second.token, map[string]any{"sandboxId": id, "gracePeriodSeconds": 0}); code != http.StatusOK {
			t.Errorf("delete %s: HTTP %d %v", id, code, out)
		}
	}
}

func waitFile(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed %q: %q", path, want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePort returns a loopback port that is free now, for a process the
// test starts to listen on. It is picked below the kernel's ephemeral
// range: a port from that range (what listening on :0 gives) may be taken
// as the source port of any outgoing connection between our check and the
// child's bind, and the kube tests make many ("bind: address already in
// use" in a CI run). A port is never handed out twice in one test binary.
func freePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	low, high := 20000, ephemeralLow()
	for range 200 {
		if high-low < 1000 {
			break
		}
		port := low + rand.IntN(high-low)
		if portsGiven[port] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		portsGiven[port] = true
		return port
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0
	}
	n, err := strconv.Atoi(fields[0])
	if err != nil {
		return 0
	}
	return n
}

func waitReady(t testing.TB, client *http.Client, url string, log *rig.Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never became ready; agent log:\n%s", url, log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
