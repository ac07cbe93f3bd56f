package fastpath

import (
	"context"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/controller"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// agentTransport is the controller's transport to agents (cleartext
// HTTP/2), with a hook that runs around every CreateSandbox call.
type agentTransport struct {
	base http.RoundTripper
	// aroundCreate runs in its own goroutine when a CreateSandbox call is
	// sent; the call's answer is handed over only once it has returned.
	aroundCreate func()
}

func newAgentTransport(aroundCreate func()) *agentTransport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	t.Protocols = &p
	return &agentTransport{base: t, aroundCreate: aroundCreate}
}

func (a *agentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(req.URL.Path, "/CreateSandbox") || a.aroundCreate == nil {
		return a.base.RoundTrip(req)
	}
	hook := make(chan struct{})
	go func() {
		defer close(hook)
		a.aroundCreate()
	}()
	resp, err := a.base.RoundTrip(req)
	<-hook
	return resp, err
}

// TestFastCreateWhoseCallerGoesAwayIsNotHidden: the caller of a FAST create
// goes away while the agent makes the container. The create still ends
// server-side: the sandbox gets its object, list shows it and the registry
// counts its slot; no container runs that the API does not show.
func TestFastCreateWhoseCallerGoesAwayIsNotHidden(t *testing.T) {
	callerCtx, callerGone := context.WithCancel(context.Background())
	defer callerGone()
	var p *plane
	p = newPlane(t, withAgentHTTP(&http.Client{Transport: newAgentTransport(func() {
		// The caller leaves once the agent has made the container, before
		// its answer reaches the fast path.
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if cs, err := p.cd.Containers(context.Background()); err == nil && len(cs) > 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		callerGone()
	})}))
	_, err := p.fp.CreateSandbox(callerCtx, connect.NewRequest(&fsbv1.CreateSandboxRequest{
		Name: "left", Spec: fastSpec("sleep", "300"),
	}))
	t.Logf("create whose caller went away: %v", err)
	cids := p.containerIDs()
	if len(cids) != 1 {
		t.Fatalf("containers after the create: %v, want one", cids)
	}
	c, err := p.cd.LoadContainer(context.Background(), cids[0])
	if err != nil {
		t.Fatal(err)
	}
	labels, err := c.Labels(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	id := labels[runtime.LabelID]
	eventually(t, 10*time.Second, "the sandbox's object in the store", func() bool {
		sb, err := p.store.Get(context.Background(), "default", "left")
		return err == nil && sb.Annotations["sandbox.fast.io/id"] == id
	})
	if got := p.listed(); got["left"] != id || len(got) != 1 {
		t.Errorf("list shows %v, want left with the running container's ID %s", got, id)
	}
	if _, ok := p.reg.Lookup(id); !ok {
		t.Errorf("the registry does not count sandbox %s's slot", id)
	}
	if !p.hasContainer(id, 1) {
		t.Errorf("the container of %s is gone", id)
	}
}

// gatedStore is the real store whose Create waits until gate is closed:
// a write still under way.
type gatedStore struct {
	store.Interface
	gate <-chan struct{}
}

func (g gatedStore) Create(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	<-g.gate
	return g.Interface.Create(ctx, sb)
}

// TestGracefulStopKeepsAcknowledgedSandboxes: the controller stops (its
// context ends) while a FAST create's object is not written yet. The
// container is never removed for that: a write under way finishes within
// the shutdown timeout, and one the store does not take is left for the
// next start, whose recovery re-creates the object from the agent.
func TestGracefulStopKeepsAcknowledgedSandboxes(t *testing.T) {
	for _, tc := range []struct {
		name string
		// store wraps the fast path's store; the gate opens once the stop
		// has begun.
		store func(s store.Interface, gate <-chan struct{}) store.Interface
		// landed says the object is in the store right after the stop.
		landed bool
	}{
		{"a write under way finishes", func(s store.Interface, gate <-chan struct{}) store.Interface {
			return gatedStore{s, gate}
		}, true},
		{"an unwritten object is left for the next start", func(s store.Interface, _ <-chan struct{}) store.Interface {
			return refusingStore{s}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gate := make(chan struct{})
			p := newPlane(t, withStore(func(s store.Interface) store.Interface { return tc.store(s, gate) }))
			ctx := context.Background()
			resp, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "kept", Spec: fastSpec("sleep", "300")}))
			if err != nil {
				t.Fatal(err)
			}
			id := resp.Msg.GetSandbox().GetStatus().GetSandboxId()

			p.control.cancel() // SIGTERM
			close(gate)
			start := time.Now()
			p.control.stop()
			if took := time.Since(start); took > 15*time.Second {
				t.Errorf("the stop took %v: the pending write was not bounded", took)
			}
			if !p.hasContainer(id, 1) {
				t.Fatalf("a graceful stop removed the acknowledged sandbox %s", id)
			}
			_, err = p.store.Get(ctx, "default", "kept")
			if tc.landed != (err == nil) {
				t.Fatalf("object in the store after the stop: %v, want landed=%v", err, tc.landed)
			}

			// The next start: recovery gives the sandbox its object.
			p.control = p.startControl()
			if _, _, err := p.fp.Recover(ctx); err != nil {
				t.Fatal(err)
			}
			sb, err := p.store.Get(ctx, "default", "kept")
			if err != nil || sb.Annotations[v1alpha1.AnnotationID] != id {
				t.Fatalf("after the restart the object is %v (%v), want sandbox %s", sb, err, id)
			}
			if got := p.listed(); got["kept"] != id {
				t.Errorf("list after the restart: %v", got)
			}
			if !p.hasContainer(id, 1) {
				t.Errorf("the container of %s is gone after the restart", id)
			}
		})
	}
}

// racingStore is the real store where, just before the fast path's write
// of name, another writer (kubectl, say) creates an object of that name
// with another sandbox ID.
type racingStore struct {
	store.Interface
	name, otherID string
}

func (r racingStore) Create(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	if sb.Name == r.name {
		other := &v1alpha1.Sandbox{
			ObjectMeta: metav1.ObjectMeta{Name: sb.Name, Namespace: sb.Namespace,
				Annotations: map[string]string{v1alpha1.AnnotationID: r.otherID}},
			Spec: v1alpha1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"}},
		}
		if _, err := r.Interface.Create(ctx, other); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
	}
	return r.Interface.Create(ctx, sb)
}

// TestFastWriteFindingTheNameTakenRemovesTheContainer: a FAST create's
// object write finds its name taken by another sandbox ID. That is no
// success: the container is removed, its slot released, and an error log
// line names the sandbox and both IDs.
func TestFastWriteFindingTheNameTakenRemovesTheContainer(t *testing.T) {
	const otherID = "sb-other"
	p := newPlane(t, withStore(func(s store.Interface) store.Interface { return racingStore{s, "taken", otherID} }))
	ctx := context.Background()
	resp, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "taken", Spec: fastSpec("sleep", "300")}))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Msg.GetSandbox().GetStatus().GetSandboxId()
	eventually(t, 10*time.Second, "the container of the sandbox that lost its name removed", func() bool {
		return !p.hasContainer(id, 1)
	})
	eventually(t, 5*time.Second, "the slot of the sandbox that lost its name released", func() bool {
		_, held := p.reg.Lookup(id)
		return !held
	})
	if lines := p.logs.Lines("level=ERROR", "default/taken", id, otherID); len(lines) == 0 {
		t.Errorf("no error log line names default/taken, %s and %s:\n%s", id, otherID, p.logs.String())
	}
	// Running, too: the controller places the name's holder, and a create
	// still under way when the test ends would race the rig's clean-up.
	eventually(t, 10*time.Second, "get shows the sandbox that has the name, running", func() bool {
		got, err := p.fp.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "taken"}))
		return err == nil && got.Msg.GetSandbox().GetStatus().GetSandboxId() == otherID &&
			got.Msg.GetSandbox().GetStatus().GetPhase() == fsbv1.Phase_PHASE_RUNNING
	})
}

// TestFailedDeleteOfPendingSandboxLeavesItVisible: a delete of a FAST
// sandbox whose object is not written yet, cancelled before or during the
// agent's stop, leaves the sandbox visible with its slot held and its
// container there; a delete that completes hides it only once the
// container is gone.
func TestFailedDeleteOfPendingSandboxLeavesItVisible(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cmd   []string
		grace int32
		ctx   func() (context.Context, context.CancelFunc)
	}{
		{"cancelled before", []string{"sleep", "300"}, 0, func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}},
		{"cancelled during the grace period", []string{"sh", "-c", "trap '' TERM; echo " + ignoresTerm + "; while true; do sleep 1; done"}, 30, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 500*time.Millisecond)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The store never takes the object: the sandbox stays pending.
			p := newPlane(t, withStore(func(s store.Interface) store.Interface { return refusingStore{s} }))
			ctx := context.Background()
			resp, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "pending", Spec: fastSpec(tc.cmd...)}))
			if err != nil {
				t.Fatal(err)
			}
			id := resp.Msg.GetSandbox().GetStatus().GetSandboxId()
			if tc.grace > 0 {
				// A SIGTERM before the trap is set would end the sandbox
				// within the grace period, and the delete with it.
				p.agents[0].awaitLogLine(t, id, "pending", ignoresTerm)
			}

			delCtx, cancel := tc.ctx()
			_, err = p.fp.DeleteSandbox(delCtx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{Name: "pending", GracePeriodSeconds: &tc.grace}))
			cancel()
			if err == nil {
				t.Fatal("the cancelled delete succeeded")
			}
			if _, err := p.fp.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "pending"})); err != nil {
				t.Errorf("GetSandbox after a failed delete: %v", err)
			}
			if got := p.listed(); got["pending"] != id {
				t.Errorf("list after a failed delete: %v", got)
			}
			if _, held := p.reg.Lookup(id); !held {
				t.Errorf("the slot of %s was released by a failed delete", id)
			}
			if !p.hasContainer(id, 1) {
				t.Errorf("the container of %s is gone though its delete failed", id)
			}

			zero := int32(0)
			if _, err := p.fp.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{Name: "pending", GracePeriodSeconds: &zero})); err != nil {
				t.Fatal(err)
			}
			if p.hasContainer(id, 1) {
				t.Errorf("the container of %s outlived its delete", id)
			}
			if _, err := p.fp.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "pending"})); connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("GetSandbox after the delete: %v, want NotFound", err)
			}
			if _, held := p.reg.Lookup(id); held {
				t.Errorf("the slot of %s is held after the delete", id)
			}
		})
	}
}

// ignoresTerm is the line a sandbox prints once it ignores SIGTERM.
const ignoresTerm = "ignoring-TERM"

// awaitLogLine waits until revision 1 of sandbox id (named name) has
// logged a line containing want.
func (a *testAgent) awaitLogLine(t *testing.T, id, name, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	in, err := a.client().StreamLogs(ctx, connect.NewRequest(&fsbv1.AgentServiceStreamLogsRequest{
		SandboxId: id, Revision: 1, Namespace: "default", Name: name, Follow: true,
	}))
	if err != nil {
		t.Fatalf("logs of %s: %v", id, err)
	}
	defer in.Close()
	for in.Receive() {
		for _, l := range in.Msg().GetLines() {
			if strings.Contains(l.GetText(), want) {
				return
			}
		}
	}
	t.Fatalf("sandbox %s never logged %q: %v", id, want, in.Err())
}

// outage is a store's unavailability that a test switches on and off.
type outage struct {
	down     atomic.Bool
	failures atomic.Int32 // Creates that failed while down
}

// switchStore is the real store whose Create fails with ServiceUnavailable
// while the outage is on: an API server that is away for a while.
type switchStore struct {
	store.Interface
	o *outage
}

func (s switchStore) Create(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	if s.o.down.Load() {
		s.o.failures.Add(1)
		return nil, apierrors.NewServiceUnavailable("injected: the store is unreachable")
	}
	return s.Interface.Create(ctx, sb)
}

// TestUpdateOfPendingSandboxSurvivesTheWrite: update finds a FAST sandbox
// whose object is not written yet, and the object that lands carries the
// update.
func TestUpdateOfPendingSandboxSurvivesTheWrite(t *testing.T) {
	o := &outage{}
	o.down.Store(true)
	p := newPlane(t, withStore(func(s store.Interface) store.Interface { return switchStore{s, o} }))
	ctx := context.Background()
	if _, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{
		Name: "upd", Labels: map[string]string{"app": "one"}, Spec: fastSpec("sleep", "300"),
	})); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"app": "two", "tier": "web"}
	resp, err := p.fp.UpdateSandbox(ctx, connect.NewRequest(&fsbv1.UpdateSandboxRequest{Name: "upd", Labels: want}))
	if err != nil {
		t.Fatalf("update of a pending sandbox: %v", err)
	}
	if got := resp.Msg.GetSandbox().GetLabels(); !maps.Equal(got, want) {
		t.Errorf("update answered labels %v, want %v", got, want)
	}
	got, err := p.fp.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "upd"}))
	if err != nil || !maps.Equal(got.Msg.GetSandbox().GetLabels(), want) {
		t.Errorf("get after the update: %v, %v", got, err)
	}

	o.down.Store(false)
	eventually(t, 10*time.Second, "the object with the updated labels in the store", func() bool {
		sb, err := p.store.Get(ctx, "default", "upd")
		return err == nil && maps.Equal(sb.Labels, want)
	})
}

// statusHold is the real store whose UpdateStatus fails while held: the
// controller cannot write a sandbox's status, so a FAST create's pending
// entry keeps answering Get after the object is written.
type statusHold struct {
	store.Interface
	held *atomic.Bool
}

func (s statusHold) UpdateStatus(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	if s.held.Load() {
		return nil, apierrors.NewServiceUnavailable("injected: status writes are held")
	}
	return s.Interface.UpdateStatus(ctx, sb)
}

// TestUpdateBeforeTheStatusIsWrittenIsRead: a FAST sandbox whose object is
// in the store but whose status the controller has not written yet (the
// pending entry still gives its status) is updated through the store; a
// Get and a List right after read the update, with the pending status.
func TestUpdateBeforeTheStatusIsWrittenIsRead(t *testing.T) {
	var held atomic.Bool
	held.Store(true)
	p := newPlane(t, withControllerConfig(func(c *controller.Config) { c.Store = statusHold{c.Store, &held} }))
	ctx := context.Background()
	if _, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{
		Name: "held", Labels: map[string]string{"app": "one"}, Spec: fastSpec("sleep", "300"),
	})); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the object in the controller's cache, without status", func() bool {
		sb, ok := p.ctrl.Get("default", "held")
		return ok && sb.Status.Phase == ""
	})
	want := map[string]string{"app": "two"}
	if _, err := p.fp.UpdateSandbox(ctx, connect.NewRequest(&fsbv1.UpdateSandboxRequest{Name: "held", Labels: want})); err != nil {
		t.Fatalf("update: %v", err)
	}
	got, err := p.fp.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "held"}))
	if err != nil {
		t.Fatal(err)
	}
	if l := got.Msg.GetSandbox().GetLabels(); !maps.Equal(l, want) {
		t.Errorf("get right after the update: labels %v, want %v", l, want)
	}
	if phase := got.Msg.GetSandbox().GetStatus().GetPhase(); phase != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("get right after the update: phase %v, want the pending entry's running", phase)
	}
	list, err := p.fp.ListSandboxes(ctx, connect.NewRequest(&fsbv1.ListSandboxesRequest{LabelSelector: "app=two"}))
	if err != nil {
		t.Fatal(err)
	}
	if items := list.Msg.GetSandboxes(); len(items) != 1 || items[0].GetStatus().GetPhase() != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("list app=two right after the update: %v, want the sandbox, running", items)
	}
	held.Store(false)
}

// TestFastCreateAnswersTheAgentsImageError: a FAST create whose image
// cannot be had answers at once with the code the agent gives for why
// (the agent decides which: NotFound for an image a registry does not
// have, Unavailable for a registry that cannot be reached,
// PermissionDenied for one that refuses), and leaves nothing: no
// container, no sandbox in list, no slot held.
func TestFastCreateAnswersTheAgentsImageError(t *testing.T) {
	reg := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"errors":[{"code":"DENIED","message":"no access"}]}`, http.StatusForbidden)
	}))
	t.Cleanup(refusing.Close)
	p := newPlane(t)
	for i, tc := range []struct {
		name, image string
		// want is the code when the agent's answer is fixed by this
		// package's contract with it; 0 takes the agent's word.
		want connect.Code
	}{
		{"missing on a real registry", strings.TrimPrefix(reg.URL, "http://") + "/fsb/missing:latest", connect.CodeNotFound},
		{"registry that cannot be reached", "127.0.0.1:1/fsb/x:y", 0},
		{"registry that refuses the pull", strings.TrimPrefix(refusing.URL, "http://") + "/fsb/private:latest", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := &fsbv1.SandboxSpec{Image: tc.image, Command: []string{"true"}}
			_, agentErr := p.agents[0].client().CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{
				SandboxId: fmt.Sprintf("sb-direct-%d", i), Revision: 1, Namespace: "default", Name: "direct", Spec: spec,
			}))
			want := connect.CodeOf(agentErr)
			if agentErr == nil || (tc.want != 0 && want != tc.want) {
				t.Fatalf("the agent itself answers %v, want an error with code %v", agentErr, tc.want)
			}
			start := time.Now()
			_, err := p.fp.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "img", Spec: spec}))
			took := time.Since(start)
			if connect.CodeOf(err) != want {
				t.Errorf("FAST create with image %s: %v, want the agent's code %v", tc.image, err, want)
			}
			if took > 10*time.Second {
				t.Errorf("the create answered after %v, not at once", took)
			}
			if cids := p.containerIDs(); len(cids) != 0 {
				t.Errorf("containers left: %v", cids)
			}
			if got := p.listed(); len(got) != 0 {
				t.Errorf("list shows %v", got)
			}
			for _, a := range p.reg.Agents() {
				if a.Used != 0 {
					t.Errorf("agent %s holds %d slots (%v)", a.ID, a.Used, a.Sandboxes)
				}
			}
		})
	}
}

// answerHeldStore is the real store whose Create lands at once but answers
// only once answer is closed: a write whose answer is slow to come back.
type answerHeldStore struct {
	store.Interface
	answer <-chan struct{}
}

func (a answerHeldStore) Create(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	out, err := a.Interface.Create(ctx, sb)
	<-a.answer
	return out, err
}

// TestFastSandboxDeletedBeforeItsWriteAnswersIsGone: a FAST create's
// object lands and is deleted, to the end, before the fast path hears that
// its write landed. Once the delete has answered, Get and List soon say the
// sandbox is gone (not only when the pending create's wait times out), and
// a create of the same name makes a new sandbox rather than answer with
// the deleted one.
func TestFastSandboxDeletedBeforeItsWriteAnswersIsGone(t *testing.T) {
	answer := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(answer) }) }
	p := newPlane(t, withStore(func(s store.Interface) store.Interface { return answerHeldStore{s, answer} }))
	t.Cleanup(release) // before the plane stops: its write must end
	ctx := context.Background()
	req := &fsbv1.CreateSandboxRequest{Name: "brief", Spec: fastSpec("sleep", "300")}
	resp, err := p.fp.CreateSandbox(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Msg.GetSandbox().GetStatus().GetSandboxId()
	// Once the cache has the object, a delete goes through the store.
	eventually(t, 10*time.Second, "the object in the controller's cache", func() bool {
		_, ok := p.ctrl.Get("default", "brief")
		return ok
	})
	zero := int32(0)
	if _, err := p.fp.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{Name: "brief", GracePeriodSeconds: &zero})); err != nil {
		t.Fatal(err)
	}
	if p.hasContainer(id, 1) {
		t.Fatalf("the container of %s outlived its delete", id)
	}
	release()
	eventually(t, 3*time.Second, "get says the deleted sandbox is not found", func() bool {
		_, err := p.fp.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "brief"}))
		return connect.CodeOf(err) == connect.CodeNotFound
	})
	if got := p.listed(); len(got) != 0 {
		t.Errorf("list after the delete: %v, want nothing", got)
	}
	again, err := p.fp.CreateSandbox(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("a create of the deleted sandbox's name: %v", err)
	}
	if got := again.Msg.GetSandbox().GetStatus().GetSandboxId(); got == id {
		t.Errorf("a create of the deleted sandbox's name answered with the deleted sandbox %s", id)
	}
}
