package fastpath

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd/errdefs"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

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
	p := newPlane(t, withStore(func(s store.Interface) store.Interface { return refusingStore{s} }),
		withConfig(func(c *Config) { c.OrphanTimeout = 500 * time.Millisecond }))
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
	// Hidden once the container is gone (a moment after, not before).
	eventually(t, 5*time.Second, "GetSandbox NotFound after the orphan was removed", func() bool {
		_, err := p.fp.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "unwritten"}))
		return connect.CodeOf(err) == connect.CodeNotFound
	})
}
