package fastpath

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fast-sandbox/fast-sandbox/pkg/agent"
	"github.com/fast-sandbox/fast-sandbox/pkg/agents"
	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/controller"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// plane is the control plane in one process, on the real rig: a real agent
// on containerd, the embedded store, the registry, the controller and the
// fast path.
type plane struct {
	cd    *containerd.Client
	store *store.Embedded
	fp    *Server
}

// planeOption changes the fast path's config before the plane starts.
type planeOption func(*Config)

func newPlane(t *testing.T, opts ...planeOption) *plane {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cd, _ := rig.Containerd(t)
	helper := rig.HelperBinary(t)
	rt, err := runtime.New(runtime.Config{
		Client: cd, AgentID: "agent-1", InitBinary: helper, LogDriverBinary: helper, LogDir: t.TempDir(),
		DefaultPidsLimit: 1024, Snapshotter: rig.Snapshotter, Runtimes: map[string]string{runtime.RuntimeRunc: "runc"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ag, err := agent.New(ctx, agent.Config{Runtime: rt, AgentID: "agent-1", AdvertiseAddress: "127.0.0.1", Capacity: 5})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(ag.Handler(auth.Tokens{"agent-token"}))
	// The controller speaks HTTP/2 without TLS to agents, as they serve it.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &protocols
	srv.Start()

	st, err := store.OpenEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New()
	var ctrl *controller.Controller
	set := agents.New(agents.Config{
		Addresses: []string{strings.TrimPrefix(srv.URL, "http://")}, Token: "agent-token", Registry: reg,
		Changed: func(s *fsbv1.AgentStatus) { ctrl.AgentChanged(s) },
	})
	ctrl = controller.New(controller.Config{Store: st, Registry: reg, Agents: set, NewID: NewID})
	cfg := Config{Store: st, Registry: reg, Agents: set, Controller: ctrl}
	for _, o := range opts {
		o(&cfg)
	}
	fp := New(ctx, cfg)
	done := make(chan struct{}, 2)
	go func() { set.Run(ctx); done <- struct{}{} }()
	synced := make(chan struct{})
	go func() { _ = ctrl.Run(ctx, 4, synced); done <- struct{}{} }()
	<-synced
	<-set.Synced()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		fp.Wait()
		ag.Wait()
		srv.Close()
		st.Close()
	})
	return &plane{cd: cd, store: st, fp: fp}
}

func busybox(mode fsbv1.ConsistencyMode, cmd ...string) *fsbv1.SandboxSpec {
	return &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: cmd, ConsistencyMode: mode}
}

func TestStrongPersistsBoundBeforeRunning(t *testing.T) {
	p := newPlane(t)
	w, err := p.store.Watch(context.Background(), "default", "")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	resp, err := p.fp.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.CreateSandboxRequest{
		Name: "strong", Spec: busybox(fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG, "sleep", "300"),
	}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Msg.GetSandbox().GetStatus().GetPhase() != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("STRONG answered with phase %v, want RUNNING", resp.Msg.GetSandbox().GetStatus().GetPhase())
	}
	// The store saw Bound, with the agent, before Running.
	var phases []string
	timeout := time.After(10 * time.Second)
	for !strings.Contains(strings.Join(phases, ","), "Running") {
		select {
		case ev := <-w.ResultChan():
			if ev.Type == watch.Added || ev.Type == watch.Modified {
				sb := ev.Object.(*v1alpha1.Sandbox)
				if n := len(phases); n == 0 || phases[n-1] != string(sb.Status.Phase) {
					phases = append(phases, string(sb.Status.Phase))
				}
				if sb.Status.Phase == v1alpha1.PhaseBound && sb.Status.AssignedPod != "agent-1" {
					t.Errorf("Bound without the agent: %+v", sb.Status)
				}
			}
		case <-timeout:
			t.Fatalf("store phases %v never reached Running", phases)
		}
	}
	got := strings.Join(phases, ",")
	if !strings.Contains(got, "Bound,Running") {
		t.Errorf("store phases %v, want Bound persisted before Running", phases)
	}
}

func TestFastSandboxIsVisibleAtOnceAndDeletable(t *testing.T) {
	p := newPlane(t)
	ctx := context.Background()
	resp, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{
		Name: "fast", Spec: busybox(fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST, "sleep", "300"),
	}))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Msg.GetSandbox().GetStatus().GetSandboxId()
	// Straight after the answer, before or after the object lands, the API
	// shows it.
	got, err := p.fp.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "fast"}))
	if err != nil || got.Msg.GetSandbox().GetStatus().GetSandboxId() != id {
		t.Fatalf("GetSandbox right after a FAST create: %v, %v", got, err)
	}
	list, err := p.fp.ListSandboxes(ctx, connect.NewRequest(&fsbv1.ListSandboxesRequest{}))
	if err != nil || len(list.Msg.GetSandboxes()) != 1 {
		t.Fatalf("ListSandboxes right after a FAST create: %v, %v", list, err)
	}
	if _, err := p.fp.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{Name: "fast"})); err != nil {
		t.Fatal(err)
	}
	if _, err := p.cd.LoadContainer(ctx, runtime.ContainerID(id, 1)); !errdefs.IsNotFound(err) {
		t.Errorf("the container outlived DeleteSandbox: %v", err)
	}
	if _, err := p.fp.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "fast"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("GetSandbox after delete: %v", err)
	}
	// And the object, written or not, does not come back.
	time.Sleep(300 * time.Millisecond)
	if _, err := p.store.Get(ctx, "default", "fast"); !apierrors.IsNotFound(err) {
		t.Errorf("the object is in the store after delete: %v", err)
	}
}

// refusingStore is the real store, but every Create fails: an API server
// that stays away.
type refusingStore struct {
	store.Interface
}

func (refusingStore) Create(context.Context, *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	return nil, errors.New("injected: the store is unreachable")
}

func TestFastObjectNeverWrittenIsRemovedAfterTheOrphanTimeout(t *testing.T) {
	p := newPlane(t, func(c *Config) {
		c.Store = refusingStore{c.Store}
		c.OrphanTimeout = 500 * time.Millisecond
	})
	ctx := context.Background()
	resp, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{
		Name: "unwritten", Spec: busybox(fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST, "sleep", "300"),
	}))
	if err != nil {
		t.Fatal(err)
	}
	cid := runtime.ContainerID(resp.Msg.GetSandbox().GetStatus().GetSandboxId(), 1)
	if _, err := p.cd.LoadContainer(ctx, cid); err != nil {
		t.Fatalf("the FAST container is not there: %v", err)
	}
	// Within the timeout the API still shows it; past it, the container
	// is removed and the sandbox is gone.
	if _, err := p.fp.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "unwritten"})); err != nil {
		t.Errorf("GetSandbox within the orphan timeout: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := p.cd.LoadContainer(ctx, cid)
		if errdefs.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the orphan container %s is still there long past the timeout", cid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := p.fp.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "unwritten"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("GetSandbox after the orphan was removed: %v", err)
	}
}
