package fastpath

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd/errdefs"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
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

// TestFastWriteIsRetriedWhileTheStoreIsUnreachable: the store is away
// (ServiceUnavailable) after a FAST create was acknowledged. Its object
// write is retried, the container keeps running however long that takes,
// one warning says so, and meanwhile new creates answer Unavailable at
// once without allocating anything. Once the store is back the object
// lands, the sandbox is listed Running from the store, and FAST creates
// resume.
func TestFastWriteIsRetriedWhileTheStoreIsUnreachable(t *testing.T) {
	o := &outage{}
	o.down.Store(true)
	p := newPlane(t, withStore(func(s store.Interface) store.Interface { return switchStore{s, o} }))
	ctx := context.Background()
	resp, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "kept", Spec: fastSpec("sleep", "300")}))
	if err != nil {
		t.Fatalf("FAST create with the store away: %v (it is acknowledged before the write)", err)
	}
	id := resp.Msg.GetSandbox().GetStatus().GetSandboxId()
	// Six failed writes take at least 20+40+...+320 ms: longer than the
	// orphan timeout after which this container used to be removed (the
	// old test set it to 500 ms).
	eventually(t, 10*time.Second, "six failed writes", func() bool { return o.failures.Load() >= 6 })
	if !p.hasContainer(id, 1) {
		t.Fatalf("the container of %s was removed while the store was away", id)
	}
	if got := p.listed(); got["kept"] != id {
		t.Errorf("list while the store is away: %v, want kept with %s", got, id)
	}
	if n := len(p.logs.Lines("level=WARN", "the store is unreachable")); n != 1 {
		t.Errorf("%d warnings that the store is unreachable after %d failed writes, want one:\n%s", n, o.failures.Load(), p.logs.String())
	}

	// Meanwhile: a FAST create is Unavailable at once and allocates
	// nothing; a STRONG one fails on its own write, as clearly.
	for _, tc := range []struct {
		name string
		mode fsbv1.ConsistencyMode
		want []string
	}{
		{"second", fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST, []string{"the store is unreachable", "injected", "FAST creates resume when it is back"}},
		{"strong", fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG, []string{"the store is unreachable", "injected"}},
	} {
		_, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: tc.name, Spec: busybox(tc.mode, "sleep", "300")}))
		if connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("%v create while the store is away: %v, want Unavailable", tc.mode, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v create's error %q does not say %q", tc.mode, err, w)
			}
		}
	}
	if cids := p.containerIDs(); len(cids) != 1 {
		t.Errorf("containers while the store is away: %v, want only the acknowledged one", cids)
	}
	for _, a := range p.reg.Agents() {
		if a.Used != 1 {
			t.Errorf("agent %s holds %d slots (%v), want 1", a.ID, a.Used, a.Sandboxes)
		}
	}

	o.down.Store(false)
	eventually(t, 10*time.Second, "the object in the store and the sandbox Running from it", func() bool {
		sb, ok := p.ctrl.Get("default", "kept")
		return ok && sb.Annotations[v1alpha1.AnnotationID] == id && sb.Status.Phase == v1alpha1.PhaseRunning
	})
	if got := p.listed(); got["kept"] != id || len(got) != 1 {
		t.Errorf("list once the store is back: %v, want only kept with %s", got, id)
	}
	if n := len(p.logs.Lines("level=INFO", "the store is reachable again")); n != 1 {
		t.Errorf("%d lines that the store is reachable again, want one", n)
	}
	if _, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "after", Spec: fastSpec("sleep", "300")})); err != nil {
		t.Errorf("FAST create once the store is back: %v", err)
	}
}

// rejectingStore is the real store, but every Create is refused with err.
type rejectingStore struct {
	store.Interface
	err error
}

func (r rejectingStore) Create(context.Context, *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	return nil, r.err
}

// TestFastWriteRefusedForGoodRemovesTheContainer: the store refuses a FAST
// create's object in a way no retry can change. The container is removed
// — at once for an invalid object, after the Forbidden grace for a
// forbidden one (an API server that has just started refuses everything
// for a while) — the sandbox is hidden only once it is gone, its slot is
// free, an error line and a StoreRefused Event say why, and FAST creates
// go on (the store answered).
func TestFastWriteRefusedForGoodRemovesTheContainer(t *testing.T) {
	gk := v1alpha1.GroupVersion.WithKind("Sandbox").GroupKind()
	const grace = 1500 * time.Millisecond
	for _, tc := range []struct {
		name string
		err  error
		kept time.Duration // how long the container stays at least
	}{
		{"forbidden", apierrors.NewForbidden(store.GroupResource, "gone", errors.New("injected: exceeded quota")), grace},
		{"invalid", apierrors.NewInvalid(gk, "gone", field.ErrorList{field.Invalid(field.NewPath("spec", "image"), "x", "injected: not an image")}), 0},
		{"namespace not found", fmt.Errorf("injected: %w", apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "default")), grace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			events := &eventLog{}
			p := newPlane(t, withStore(func(s store.Interface) store.Interface { return rejectingStore{s, tc.err} }),
				withConfig(func(c *Config) { c.ForbiddenGrace, c.Events = grace, events }))
			ctx := context.Background()
			resp, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "gone", Spec: fastSpec("sleep", "300")}))
			if err != nil {
				t.Fatal(err)
			}
			acked := time.Now()
			id := resp.Msg.GetSandbox().GetStatus().GetSandboxId()
			// Within the grace the sandbox stays, running.
			for time.Since(acked) < tc.kept-300*time.Millisecond {
				if !p.hasContainer(id, 1) {
					t.Fatalf("the container of %s was removed %s after a Forbidden answer, within the grace of %s", id, time.Since(acked), grace)
				}
				time.Sleep(50 * time.Millisecond)
			}
			// Then at once: well within what a retry with back-off would take.
			eventually(t, tc.kept+5*time.Second, "the refused sandbox hidden", func() bool {
				_, err := p.fp.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "gone"}))
				if connect.CodeOf(err) != connect.CodeNotFound {
					return false
				}
				if p.hasContainer(id, 1) {
					t.Fatalf("the refused sandbox %s is hidden while its container is still there", id)
				}
				return true
			})
			eventually(t, 5*time.Second, "the refused sandbox's slot released", func() bool {
				_, held := p.reg.Lookup(id)
				return !held
			})
			if lines := p.logs.Lines("level=ERROR", "default/gone", id, "injected"); len(lines) == 0 {
				t.Errorf("no error line names default/gone, %s and the refusal:\n%s", id, p.logs.String())
			}
			if took := time.Since(acked); took < tc.kept {
				t.Errorf("the refused sandbox was removed %s after its create, within the grace of %s", took, tc.kept)
			}
			if got := events.String(); !strings.Contains(got, "Warning StoreRefused default/gone") || !strings.Contains(got, id) || !strings.Contains(got, "injected") {
				t.Errorf("events %q, want a Warning StoreRefused on default/gone naming %s and the refusal", got, id)
			}
			if _, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "next", Spec: fastSpec("sleep", "300")})); err != nil {
				t.Errorf("FAST create after a refusal: %v, want it acknowledged (the store answers)", err)
			}
		})
	}
}

// eventLog records Events as "type reason namespace/name: message" lines.
type eventLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *eventLog) Eventf(obj k8sruntime.Object, eventtype, reason, messageFmt string, args ...any) {
	m, _ := meta.Accessor(obj)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf("%s %s %s/%s: %s", eventtype, reason, m.GetNamespace(), m.GetName(), fmt.Sprintf(messageFmt, args...)))
}

func (l *eventLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// forbiddenAtFirst is the real store whose Creates are answered Forbidden
// until open: a kube-apiserver just started, whose RBAC caches have not
// filled yet.
type forbiddenAtFirst struct {
	store.Interface
	open      *atomic.Bool
	forbidden *atomic.Int32
}

func (s forbiddenAtFirst) Create(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	if !s.open.Load() {
		s.forbidden.Add(1)
		return nil, apierrors.NewForbidden(store.GroupResource, sb.Name, errors.New(`injected: User "fsb" cannot create resource "sandboxes"`))
	}
	return s.Interface.Create(ctx, sb)
}

// TestFastWriteForbiddenWithinTheGraceIsKept: the store answers a FAST
// object write with Forbidden for a while, as a restarted API server does
// until its authorization caches fill, then takes it. The sandbox is never
// removed, its object lands, and no StoreRefused Event is recorded.
func TestFastWriteForbiddenWithinTheGraceIsKept(t *testing.T) {
	open, forbidden := &atomic.Bool{}, &atomic.Int32{}
	events := &eventLog{}
	p := newPlane(t, withStore(func(s store.Interface) store.Interface { return forbiddenAtFirst{s, open, forbidden} }),
		withConfig(func(c *Config) { c.ForbiddenGrace, c.Events = 5*time.Second, events }))
	ctx := context.Background()
	resp, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "kept", Spec: fastSpec("sleep", "300")}))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Msg.GetSandbox().GetStatus().GetSandboxId()
	eventually(t, 5*time.Second, "three Forbidden answers", func() bool { return forbidden.Load() >= 3 })
	if !p.hasContainer(id, 1) {
		t.Fatalf("the container of %s was removed on a Forbidden answer within the grace", id)
	}
	open.Store(true)
	eventually(t, 10*time.Second, "the object in the store", func() bool {
		sb, ok := p.ctrl.Get("default", "kept")
		return ok && sb.Annotations[v1alpha1.AnnotationID] == id
	})
	if !p.hasContainer(id, 1) {
		t.Errorf("the container of %s is gone though its object landed", id)
	}
	if got := events.String(); got != "" {
		t.Errorf("events %q, want none", got)
	}
	if n := len(p.logs.Lines("level=WARN", "Forbidden", "default/kept")); n != 1 {
		t.Errorf("%d warnings of the Forbidden answers, want one:\n%s", n, p.logs.String())
	}
}

// hangingStore is the real store whose Creates never answer until their
// context ends: an API server behind a broken network.
type hangingStore struct {
	store.Interface
	hang *atomic.Bool
}

func (s hangingStore) Create(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	if s.hang.Load() {
		<-ctx.Done()
		return nil, fmt.Errorf("injected: no answer: %w", ctx.Err())
	}
	return s.Interface.Create(ctx, sb)
}

// TestFastWriteWithNoAnswerMakesTheStoreUnreachable: a store that takes a
// FAST object write and never answers counts as unreachable once an
// attempt has gone writeAttemptTimeout without an answer: new FAST creates
// are then Unavailable, and the acknowledged sandbox keeps running and
// gets its object once the store answers again.
func TestFastWriteWithNoAnswerMakesTheStoreUnreachable(t *testing.T) {
	hang := &atomic.Bool{}
	hang.Store(true)
	p := newPlane(t, withStore(func(s store.Interface) store.Interface { return hangingStore{s, hang} }))
	ctx := context.Background()
	resp, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "first", Spec: fastSpec("sleep", "300")}))
	if err != nil {
		t.Fatal(err)
	}
	acked := time.Now()
	id := resp.Msg.GetSandbox().GetStatus().GetSandboxId()
	var refused time.Duration
	eventually(t, writeAttemptTimeout+5*time.Second, "the store known unreachable", func() bool {
		refused = time.Since(acked)
		return p.fp.health.unreachable() != nil
	})
	_, err = p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "second", Spec: fastSpec("sleep", "300")}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "the store is unreachable") {
		t.Fatalf("FAST create while the store does not answer: %v, want Unavailable saying the store is unreachable", err)
	}
	t.Logf("FAST creates refused %s after the first write with no answer began", refused.Round(time.Millisecond))
	if refused < writeAttemptTimeout-time.Second {
		t.Errorf("refused after %s, before an attempt could run out (%s)", refused, writeAttemptTimeout)
	}
	if !p.hasContainer(id, 1) {
		t.Fatalf("the acknowledged sandbox %s was removed", id)
	}
	hang.Store(false)
	eventually(t, writeAttemptTimeout+10*time.Second, "the object in the store", func() bool {
		sb, ok := p.ctrl.Get("default", "first")
		return ok && sb.Annotations[v1alpha1.AnnotationID] == id
	})
}
