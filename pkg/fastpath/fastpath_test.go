package fastpath

import (
	"context"
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

func newPlane(t *testing.T) *plane {
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
	fp := New(ctx, Config{Store: st, Registry: reg, Agents: set, Controller: ctrl})
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
