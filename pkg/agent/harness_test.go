package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

const testToken = "test-token-0123456789"

// harness is one agent on the real rig: its own containerd namespace, log
// directory and HTTP server, reached through a Connect client.
type harness struct {
	t       testing.TB
	cd      *containerd.Client
	rt      *runtime.Runtime
	agent   *Agent
	url     string
	client  fsbv1connect.AgentServiceClient
	logDir  string
	agentID string
	seq     atomic.Int64

	rcfg      runtime.Config
	acfg      Config
	handler   atomic.Pointer[http.Handler]
	stopAgent func()
}

// harnessSetup is what options may change before the agent starts.
type harnessSetup struct {
	runtime *runtime.Config
	agent   *Config
	// socket is the containerd to use; empty means the shared rig's.
	socket string
	// before runs once containerd and the runtime are ready, before the
	// agent starts: to leave something for it to find.
	before func(h *harness)
}

type harnessOption func(*harnessSetup)

func withCapacity(n int) harnessOption {
	return func(s *harnessSetup) { s.agent.Capacity = n }
}

func withContainerd(socket string) harnessOption {
	return func(s *harnessSetup) { s.socket = socket }
}

func beforeStart(fn func(h *harness)) harnessOption {
	return func(s *harnessSetup) { s.before = fn }
}

func newHarness(t testing.TB, opts ...harnessOption) *harness {
	t.Helper()
	helper := rig.HelperBinary(t)
	h := &harness{t: t, logDir: t.TempDir()}
	rcfg := runtime.Config{
		LinkDir:          shortTempDir(t),
		InitBinary:       helper,
		LogDriverBinary:  helper,
		LogDir:           h.logDir,
		DefaultPidsLimit: 1024,
		Snapshotter:      rig.Snapshotter,
		Runtimes: map[string]string{
			runtime.RuntimeRunc:   "runc",
			runtime.RuntimeCrun:   "crun",
			runtime.RuntimeGVisor: rig.RunscWrapper(t),
		},
	}
	acfg := Config{AdvertiseAddress: "127.0.0.1", NodeName: "test-node", Capacity: 5}
	setup := harnessSetup{runtime: &rcfg, agent: &acfg}
	for _, o := range opts {
		o(&setup)
	}
	// The client's default namespace is the test's own, as the agent's is
	// --containerd-namespace in production.
	var ns string
	if setup.socket != "" {
		h.cd, ns = rig.ContainerdAt(t, setup.socket)
	} else {
		h.cd, ns = rig.Containerd(t)
	}
	h.agentID = "agent-" + ns
	rcfg.Client, rcfg.AgentID, acfg.AgentID = h.cd, h.agentID, h.agentID
	h.rcfg, h.acfg = rcfg, acfg
	h.newRuntime()
	if setup.before != nil {
		setup.before(h)
	}
	h.startAgent()
	t.Cleanup(func() { h.stopAgent() })
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*h.handler.Load()).ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.Start()
	t.Cleanup(srv.Close)
	h.url = srv.URL
	h.client = fsbv1connect.NewAgentServiceClient(http.DefaultClient, srv.URL, connect.WithInterceptors(auth.Bearer(testToken)))
	return h
}

// shortTempDir returns a temporary directory with a short path: a unix
// socket's path must fit 107 bytes, and t.TempDir's carry the test's name.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fsbl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Open to all, as a directory made by hand may be: the runtime closes
	// its link dir to others.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// newRuntime makes the runtime a new agent process would have.
func (h *harness) newRuntime() {
	h.t.Helper()
	rt, err := runtime.New(h.rcfg)
	if err != nil {
		h.t.Fatalf("runtime: %v", err)
	}
	h.rt = rt
}

// startAgent starts an agent on h.rt and serves it at h.url.
func (h *harness) startAgent() {
	h.t.Helper()
	acfg := h.acfg
	acfg.Runtime = h.rt
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(ctx, acfg)
	if err != nil {
		cancel()
		h.t.Fatalf("agent: %v", err)
	}
	h.agent = a
	h.stopAgent = func() {
		cancel()
		a.Wait()
	}
	handler := a.Handler(auth.Tokens{testToken})
	h.handler.Store(&handler)
}

// restart stops the agent, runs between (while no agent runs), and starts
// a new agent with the same configuration, as a new process would.
func (h *harness) restart(between func()) {
	h.t.Helper()
	h.stopAgent()
	if between != nil {
		between()
	}
	h.newRuntime()
	h.startAgent()
}

// spec returns a busybox spec running cmd under sh.
func spec(script string) *fsbv1.SandboxSpec {
	return &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sh", "-c", script}}
}

// create starts a sandbox with a fresh ID and fails the test on error.
func (h *harness) create(spec *fsbv1.SandboxSpec) *fsbv1.AgentSandbox {
	h.t.Helper()
	sb, err := h.tryCreate(spec)
	if err != nil {
		h.t.Fatalf("CreateSandbox: %v", err)
	}
	return sb
}

func (h *harness) tryCreate(spec *fsbv1.SandboxSpec) (*fsbv1.AgentSandbox, error) {
	id := h.newID()
	resp, err := h.client.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{
		SandboxId: id,
		Revision:  1,
		Namespace: "default",
		Name:      "test-" + id,
		Spec:      spec,
	}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetSandbox(), nil
}

// newID returns a sandbox ID unique within the test.
func (h *harness) newID() string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(h.t.Name()))
	name = strings.Trim(name[:min(24, len(name))], "-")
	return "sb-" + name + "-" + strconv.FormatInt(h.seq.Add(1), 10)
}

// get returns the agent's view of one sandbox, or nil when it has none.
func (h *harness) get(id string) *fsbv1.AgentSandbox {
	h.t.Helper()
	resp, err := h.client.GetStatus(context.Background(), connect.NewRequest(&fsbv1.GetStatusRequest{}))
	if err != nil {
		h.t.Fatalf("GetStatus: %v", err)
	}
	for _, sb := range resp.Msg.GetStatus().GetSandboxes() {
		if sb.GetSandboxId() == id {
			return sb
		}
	}
	return nil
}

// waitPhase polls GetStatus until the sandbox reaches phase.
func (h *harness) waitPhase(id string, phase fsbv1.Phase) *fsbv1.AgentSandbox {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		sb := h.get(id)
		if sb != nil && sb.GetPhase() == phase {
			return sb
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("sandbox %s never reached %v; last seen %v", id, phase, sb)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLog polls the sandbox's log file until it contains want.
func (h *harness) waitLog(sb *fsbv1.AgentSandbox, want string) string {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(sb.GetLogPath())
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("log %s never showed %q; it holds:\n%s", sb.GetLogPath(), want, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// delete deletes a sandbox with the given grace period in seconds.
func (h *harness) delete(id string, grace int32) *fsbv1.AgentServiceDeleteSandboxResponse {
	h.t.Helper()
	resp, err := h.client.DeleteSandbox(context.Background(), connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{
		SandboxId: id, GracePeriodSeconds: &grace,
	}))
	if err != nil {
		h.t.Fatalf("DeleteSandbox %s: %v", id, err)
	}
	return resp.Msg
}
