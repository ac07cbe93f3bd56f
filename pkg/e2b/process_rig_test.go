package e2b

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// procPlane is `fsb agent` and `fsb controller`, real processes on the
// rig as the root package's tests start them, and the controller's
// FastPathService client the process handler drives.
type procPlane struct {
	api API
	// controller is the running controller's args, log and stop.
	controller     []string
	controllerLog  *rig.Buffer
	stopController func()
	ready          string
	// t is the test that started the plane: the restarted controller
	// is stopped at its end, not at the end of a subtest.
	t *testing.T
}

// startProcPlane starts an agent and a controller over it; the test's
// end stops both and removes the sandboxes.
func startProcPlane(t *testing.T) *procPlane {
	t.Helper()
	cd, ns := rig.Containerd(t)
	socket := rig.Env(t, rig.EnvSocket)
	dir := t.TempDir()
	// A short directory for the agent's state and link sockets: a socket
	// path has at most 107 bytes, more than t.TempDir leaves.
	state, err := os.MkdirTemp("", "fsb-e2bproc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	for name, token := range map[string]string{"agent-token": "agent-token-1", "user-token": "user-token-1"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	agentPort, agentMetrics := procFreePort(t), procFreePort(t)
	agentLog := &rig.Buffer{}
	_ = procStartFsb(t, agentLog, fmt.Sprintf("http://127.0.0.1:%d/readyz", agentPort), func() {
		// After the agent, before the test's directories go: the
		// sandboxes' log drivers write into the agent's log dir.
		if err := rig.Cleanup(cd, ns); err != nil {
			t.Logf("remove the sandboxes of %s: %v", ns, err)
		}
	}, "agent",
		"--bind-address", "127.0.0.1", "--http-port", fmt.Sprint(agentPort),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", agentMetrics),
		"--containerd-socket", socket, "--containerd-namespace", ns,
		"--agent-id", "agent-e2bproc", "--token-file", filepath.Join(dir, "agent-token"),
		"--log-dir", filepath.Join(dir, "logs"), "--state-dir", state, "--link-dir", filepath.Join(state, "link"),
		"--capacity", "2", "--log-format", "json")
	port, health, metrics := procFreePort(t), procFreePort(t), procFreePort(t)
	ctrlLog := &rig.Buffer{}
	ctrlArgs := []string{"controller",
		"--fastpath-bind-address", fmt.Sprintf("127.0.0.1:%d", port),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", health),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metrics),
		"--agents", fmt.Sprintf("127.0.0.1:%d", agentPort),
		"--user-token-file", filepath.Join(dir, "user-token"), "--agent-token-file", filepath.Join(dir, "agent-token"),
		"--store", "embedded", "--data-dir", filepath.Join(dir, "data"), "--log-format", "json"}
	ready := fmt.Sprintf("http://127.0.0.1:%d/readyz", health)
	stop := procStartFsb(t, ctrlLog, ready, nil, ctrlArgs...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s\nagent log:\n%s", ctrlLog.String(), agentLog.String())
		}
	})
	// Cleartext HTTP/2, as the controller serves it.
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	t.Cleanup(h2c.CloseIdleConnections)
	return &procPlane{
		api:        fsbv1connect.NewFastPathServiceClient(h2c, fmt.Sprintf("http://127.0.0.1:%d", port), connect.WithInterceptors(auth.Bearer("user-token-1"))),
		controller: ctrlArgs, controllerLog: ctrlLog, stopController: stop, ready: ready, t: t,
	}
}

// restartController kills the controller and starts it again, on the
// same ports and data.
func (p *procPlane) restartController() {
	p.stopController()
	p.stopController = procStartFsb(p.t, p.controllerLog, p.ready, nil, p.controller...)
}

// procStartFsb starts `fsb args...` logging to log, waits until ready
// answers 200, and kills it at the test's end, or when the returned stop
// is called, then runs after.
func procStartFsb(t *testing.T, log *rig.Buffer, ready string, after func(), args ...string) (stop func()) {
	t.Helper()
	cmd := exec.Command(rig.FsbBinary(t), args...)
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop = sync.OnceFunc(func() {
		_ = cmd.Process.Kill()
		<-done
		if after != nil {
			after()
		}
	})
	t.Cleanup(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if resp, err := http.Get(ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return stop
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

// procFreePort returns a loopback port free a moment ago.
func procFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// sandbox creates a long-running busybox sandbox with envs and returns it
// once it runs.
func (p *procPlane) sandbox(t *testing.T, name string, envs map[string]string) *Sandbox {
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
	return &Sandbox{ID: name, Namespace: "default", EnvVars: envs}
}

// procWithSandbox is the router's part the handler relies on: it puts sb
// in every request's context.
func procWithSandbox(sb *Sandbox, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(WithSandbox(r.Context(), sb)))
	})
}
