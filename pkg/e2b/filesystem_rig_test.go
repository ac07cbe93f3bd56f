package e2b

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// fsPlane is `fsb agent` and `fsb controller`, real processes on the rig
// as the root package's tests start them, and the controller's
// FastPathService client the E2B handlers drive.
type fsPlane struct {
	api API
}

// startFSPlane starts an agent and a controller over it; the test's end
// stops both and removes the sandboxes.
func startFSPlane(t *testing.T) *fsPlane {
	t.Helper()
	cd, ns := rig.Containerd(t)
	socket := rig.Env(t, rig.EnvSocket)
	dir := t.TempDir()
	// A short directory for the agent's state and link sockets: a socket
	// path has at most 107 bytes, more than t.TempDir leaves.
	state, err := os.MkdirTemp("", "fsb-e2bfs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	for name, token := range map[string]string{"agent-token": "agent-token-1", "user-token": "user-token-1"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	agentPort, agentMetrics := fsFreePort(t), fsFreePort(t)
	agentLog := &rig.Buffer{}
	fsStartProc(t, agentLog, fmt.Sprintf("http://127.0.0.1:%d/readyz", agentPort), func() {
		// After the agent, before the test's directories go: the
		// sandboxes' log drivers write into the agent's log dir.
		if err := rig.Cleanup(cd, ns); err != nil {
			t.Logf("remove the sandboxes of %s: %v", ns, err)
		}
	}, "agent",
		"--bind-address", "127.0.0.1", "--http-port", fmt.Sprint(agentPort),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", agentMetrics),
		"--containerd-socket", socket, "--containerd-namespace", ns,
		"--agent-id", "agent-e2bfs", "--token-file", filepath.Join(dir, "agent-token"),
		"--log-dir", filepath.Join(dir, "logs"), "--state-dir", state, "--link-dir", filepath.Join(state, "link"),
		"--capacity", "2", "--log-format", "json")
	port, health, metrics := fsFreePort(t), fsFreePort(t), fsFreePort(t)
	ctrlLog := &rig.Buffer{}
	fsStartProc(t, ctrlLog, fmt.Sprintf("http://127.0.0.1:%d/readyz", health), nil, "controller",
		"--fastpath-bind-address", fmt.Sprintf("127.0.0.1:%d", port),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", health),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metrics),
		"--agents", fmt.Sprintf("127.0.0.1:%d", agentPort),
		"--user-token-file", filepath.Join(dir, "user-token"), "--agent-token-file", filepath.Join(dir, "agent-token"),
		"--store", "embedded", "--data-dir", filepath.Join(dir, "data"), "--log-format", "json")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s\nagent log:\n%s", ctrlLog.String(), agentLog.String())
		}
	})
	// Cleartext HTTP/2, which WriteFile's client stream needs.
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	t.Cleanup(h2c.CloseIdleConnections)
	return &fsPlane{api: fsbv1connect.NewFastPathServiceClient(h2c, fmt.Sprintf("http://127.0.0.1:%d", port), connect.WithInterceptors(auth.Bearer("user-token-1")))}
}

// fsStartProc starts `fsb args...` logging to log, waits until ready
// answers 200, and kills it at the test's end, then runs after.
func fsStartProc(t *testing.T, log *rig.Buffer, ready string, after func(), args ...string) {
	t.Helper()
	cmd := exec.Command(rig.FsbBinary(t), args...)
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if after != nil {
			after()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if resp, err := http.Get(ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			t.Fatalf("fsb %s exited before it was ready:\n%s", args[0], log.String())
		case <-ctx.Done():
			t.Fatalf("fsb %s never became ready at %s:\n%s", args[0], ready, log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// fsFreePort returns a loopback port free a moment ago.
func fsFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// sandbox creates a long-running busybox sandbox and returns it once it
// runs.
func (p *fsPlane) sandbox(t *testing.T, name string) *Sandbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := p.api.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{
		Name: name, Namespace: "default", Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "3600"}},
	}))
	if err != nil {
		t.Fatalf("create sandbox %s: %v", name, err)
	}
	if ph := resp.Msg.GetSandbox().GetStatus().GetPhase(); ph != fsbv1.Phase_PHASE_RUNNING {
		t.Fatalf("sandbox %s is %v after its create, want running", name, ph)
	}
	return &Sandbox{ID: name, Namespace: "default"}
}

// fsWithSandbox is the router's part the handlers rely on: it puts sb in
// every request's context.
func fsWithSandbox(sb *Sandbox, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(WithSandbox(r.Context(), sb)))
	})
}
