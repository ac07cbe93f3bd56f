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

// Two E2B API keys of two namespaces: each sees only its own sandboxes.
const (
	keyA = "e2b_0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
	keyB = "e2b_0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"
	nsA  = "e2b-team-a"
	nsB  = "e2b-team-b"

	userToken = "user-token-1"
	// tokenSecret derives the sandboxes' access tokens, in the controller
	// and in the tests' own servers.
	tokenSecret = "e2b-token-secret-of-the-tests"
)

// plane is `fsb agent` and `fsb controller --e2b-bind-address` as
// processes on the rig's containerd, as `make up` runs them. The handlers
// under test drive the controller's FastPathService through api; the REST
// tests call the controller's own E2B API at e2b.
type plane struct {
	// t is the test that started the plane: a restarted controller is
	// stopped at its end, not at the end of a subtest.
	t *testing.T
	// api is the controller's FastPathService as a user, over cleartext
	// HTTP/2: WriteFile's client stream needs it.
	api API
	// e2b is the base URL of the controller's E2B API.
	e2b string
	// keys is the file of E2B API keys the controller reads.
	keys    string
	ctrlLog *rig.Buffer
	// ctrlArgs and ctrlReady start the controller again (restartController);
	// stopCtrl stops the running one.
	ctrlArgs  []string
	ctrlReady string
	stopCtrl  func()
}

// startPlane starts an agent and a controller over it serving E2B's API,
// whose template base is the rig's busybox image running a sleep. The
// test's end stops both and removes the sandboxes.
func startPlane(t *testing.T) *plane {
	t.Helper()
	cd, ns := rig.Containerd(t)
	socket := rig.Env(t, rig.EnvSocket)
	dir := t.TempDir()
	// The agent's state dir, with its link dir inside, is a short one of
	// its own: a socket path has at most 107 bytes, more than t.TempDir
	// leaves. Its own, not the daemon's link dir the root's tests share nor
	// the default /run/fsb: an agent starting sweeps its link dir of what it
	// takes for leftovers, judged by what the daemon holds and what
	// listens, and /run/fsb is the machine's, where an agent writes its
	// runsc wrapper. A private one leaves parallel tests, and other rigs on
	// the machine, nothing to share, and goes with the test.
	state, err := os.MkdirTemp("", "fsb-e2b-")
	if err != nil {
		t.Fatal(err)
	}
	// Clean-ups run last registered first: the controller stops, then the
	// agent, then its sandboxes are removed, the logs dumped, and only then
	// do the state dir and t.TempDir go.
	t.Cleanup(func() { os.RemoveAll(state) })
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	agentToken := write("agent-token", "agent-token-1\n")
	agentPort := freePort(t)
	agentLog, ctrlLog := &rig.Buffer{}, &rig.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s\nagent log:\n%s", ctrlLog.String(), agentLog.String())
		}
	})
	startFsb(t, agentLog, fmt.Sprintf("http://127.0.0.1:%d/readyz", agentPort), func() {
		// After the agent, before the test's directories go: the
		// sandboxes' log drivers write into the agent's log dir until
		// their containers are gone.
		if err := rig.Cleanup(cd, ns); err != nil {
			t.Logf("remove the sandboxes of %s: %v", ns, err)
		}
	}, "agent",
		"--bind-address", "127.0.0.1", "--http-port", fmt.Sprint(agentPort),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--containerd-socket", socket, "--containerd-namespace", ns,
		"--agent-id", "e2b-agent", "--token-file", agentToken, "--log-dir", filepath.Join(dir, "logs"),
		"--state-dir", state, "--link-dir", filepath.Join(state, "link"),
		"--log-format", "json")

	keys := write("e2b-keys", "# test keys\n"+keyA+" "+nsA+"\n"+keyB+" "+nsB+"\n")
	templates := write("e2b-templates", fmt.Sprintf(`templates:
  base:
    image: %s
    resources: {memory: 64Mi}
    command: [sleep, "3600"]
`, rig.ImageRef))
	port, e2bPort, health := freePort(t), freePort(t), freePort(t)
	p := &plane{t: t, e2b: fmt.Sprintf("http://127.0.0.1:%d", e2bPort), keys: keys, ctrlLog: ctrlLog,
		ctrlReady: fmt.Sprintf("http://127.0.0.1:%d/readyz", health)}
	p.ctrlArgs = []string{"controller",
		"--fastpath-bind-address", fmt.Sprintf("127.0.0.1:%d", port),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", health),
		"--metrics-bind-address", "",
		"--agents", fmt.Sprintf("127.0.0.1:%d", agentPort),
		"--store", "embedded", "--data-dir", filepath.Join(dir, "data"),
		"--user-token-file", write("user-token", userToken+"\n"), "--agent-token-file", agentToken,
		"--e2b-bind-address", fmt.Sprintf("127.0.0.1:%d", e2bPort),
		"--e2b-api-keys-file", keys, "--e2b-templates-file", templates,
		"--e2b-token-secret-file", write("e2b-token-secret", tokenSecret+"\n"),
		"--log-format", "json"}
	p.stopCtrl = startFsb(t, p.ctrlLog, p.ctrlReady, nil, p.ctrlArgs...)
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	t.Cleanup(h2c.CloseIdleConnections)
	p.api = fsbv1connect.NewFastPathServiceClient(h2c, fmt.Sprintf("http://127.0.0.1:%d", port), connect.WithInterceptors(auth.Bearer(userToken)))
	return p
}

// restartController kills the controller and starts it again, on the
// same ports and data.
func (p *plane) restartController() {
	p.stopCtrl()
	p.stopCtrl = startFsb(p.t, p.ctrlLog, p.ctrlReady, nil, p.ctrlArgs...)
}

// startFsb starts `fsb args...` logging to log and waits until ready
// answers 200, failing the test with the log when it exits first or takes
// too long. The returned stop, or t's end, kills it and then runs after;
// stop may be called more than once.
func startFsb(t *testing.T, log *rig.Buffer, ready string, after func(), args ...string) (stop func()) {
	t.Helper()
	cmd := exec.Command(rig.FsbBinary(t), args...)
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start fsb %s: %v", args[0], err)
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

// freePort returns a loopback port free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// sandbox creates a long-running busybox sandbox through the
// FastPathService and returns it, with envs as the router would give it,
// once it runs.
func (p *plane) sandbox(t *testing.T, name string, envs map[string]string) *Sandbox {
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

// withSandbox is the router's part the handlers rely on: it puts sb in
// every request's context.
func withSandbox(sb *Sandbox, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(WithSandbox(r.Context(), sb)))
	})
}
