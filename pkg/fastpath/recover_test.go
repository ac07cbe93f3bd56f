package fastpath

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// runOnAgent has an agent run a sandbox with no object, as a FAST create
// whose write was lost leaves it (persisted false), or as a sandbox whose
// object was written and then deleted while its agent was away leaves it
// (persisted true).
func runOnAgent(t *testing.T, a *testAgent, id, name string, persisted bool) {
	t.Helper()
	_, err := a.ag.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{
		SandboxId: id, Revision: 1, Namespace: "default", Name: name, Persisted: persisted,
		Labels: map[string]string{"app": name},
		Spec:   &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
}

// TestRecoveryRemovesDeletedSandboxesAndRecreatesLostObjects: at start, a
// container the store has seen (marked) whose object is gone was deleted:
// it is removed and gets no object. An unmarked one is a FAST create whose
// write was lost: its object is re-created from the agent.
func TestRecoveryRemovesDeletedSandboxesAndRecreatesLostObjects(t *testing.T) {
	p := newAgentsOnly(t, 1)
	runOnAgent(t, p.agents[0], "sb-lost", "lost", false)
	runOnAgent(t, p.agents[0], "sb-deleted", "deleted", true)
	p.agents[0].serve(t)
	p.control = p.startControl()
	ctx := context.Background()
	recreated, removed, err := p.fp.Recover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if recreated != 1 || removed != 1 {
		t.Errorf("Recover: %d re-created, %d removed; want 1 and 1", recreated, removed)
	}
	if p.hasContainer("sb-deleted", 1) {
		t.Errorf("the deleted sandbox's container is still there")
	}
	if _, err := p.store.Get(ctx, "default", "deleted"); !apierrors.IsNotFound(err) {
		t.Errorf("the deleted sandbox has an object again: %v", err)
	}
	if !p.hasContainer("sb-lost", 1) {
		t.Errorf("the lost sandbox's container is gone")
	}
	if got := p.listed(); len(got) != 1 || got["lost"] != "sb-lost" {
		t.Errorf("list after recovery: %v, want only lost", got)
	}
}

// TestAgentDownAtStartIsRecoveredWhenItComesBack: an agent that was down
// when the controller started is recovered when it comes back, not at the
// next controller start: its lost sandbox gets its object, its deleted one
// is removed.
func TestAgentDownAtStartIsRecoveredWhenItComesBack(t *testing.T) {
	p := newAgentsOnly(t, 1)
	runOnAgent(t, p.agents[0], "sb-late", "late", false)
	runOnAgent(t, p.agents[0], "sb-deleted", "deleted", true)
	p.control = p.startControl() // the agent does not serve yet
	ctx := context.Background()
	if recreated, removed, err := p.fp.Recover(ctx); err != nil || recreated+removed != 0 {
		t.Fatalf("Recover with the agent down: %d re-created, %d removed, %v", recreated, removed, err)
	}
	p.agents[0].serve(t)
	eventually(t, 15*time.Second, "the lost sandbox's object once its agent is back", func() bool {
		sb, err := p.store.Get(ctx, "default", "late")
		return err == nil && sb.Annotations["sandbox.fast.io/id"] == "sb-late"
	})
	eventually(t, 5*time.Second, "the deleted sandbox's container removed once its agent is back", func() bool {
		return !p.hasContainer("sb-deleted", 1)
	})
	if got := p.listed(); len(got) != 1 || got["late"] != "sb-late" {
		t.Errorf("list: %v, want only late", got)
	}
}

// TestNoRecoveryAfterTheTermEnds: an agent that comes back after the term
// of the Recover that started serving has ended (a leader deposed) is not
// recovered by this replica: no object written, no container removed;
// the next term's Recover does it.
func TestNoRecoveryAfterTheTermEnds(t *testing.T) {
	p := newAgentsOnly(t, 1)
	runOnAgent(t, p.agents[0], "sb-late", "late", false)
	runOnAgent(t, p.agents[0], "sb-deleted", "deleted", true)
	p.control = p.startControl() // the agent does not serve yet
	ctx := context.Background()
	term, endTerm := context.WithCancel(ctx)
	if recreated, removed, err := p.fp.Recover(term); err != nil || recreated+removed != 0 {
		t.Fatalf("Recover with the agent down: %d re-created, %d removed, %v", recreated, removed, err)
	}
	endTerm()
	p.agents[0].serve(t)
	eventually(t, 15*time.Second, "the agent connected", func() bool { return p.control.set.Up("agent-1") })
	// A recovery queued by the agent's return takes milliseconds: give it
	// ample time to show.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := p.store.Get(ctx, "default", "late"); err == nil {
			t.Fatal("a replica whose term ended wrote the object of the agent's lost sandbox")
		}
		if !p.hasContainer("sb-deleted", 1) {
			t.Fatal("a replica whose term ended removed the agent's deleted sandbox")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The next term recovers the agent.
	if recreated, removed, err := p.fp.Recover(ctx); err != nil || recreated != 1 || removed != 1 {
		t.Fatalf("the next term's Recover: %d re-created, %d removed, %v; want 1 and 1", recreated, removed, err)
	}
}

// TestRecoveryRemovesASandboxWhoseObjectTheStoreRefuses: at start, the
// store refuses for good the object of an unmarked container (a FAST
// create left by a stop, say, whose object the store cannot take). The
// recovery does not fail on it, at this start or any later one: the
// container is removed, its slot freed, and an error line says why.
func TestRecoveryRemovesASandboxWhoseObjectTheStoreRefuses(t *testing.T) {
	p := newAgentsOnly(t, 1)
	runOnAgent(t, p.agents[0], "sb-refused", "refused", false)
	p.agents[0].serve(t)
	gk := v1alpha1.GroupVersion.WithKind("Sandbox").GroupKind()
	refusal := apierrors.NewInvalid(gk, "refused", field.ErrorList{field.Invalid(field.NewPath("spec", "image"), "x", "injected: not an image")})
	p.control = p.startControl(withStore(func(s store.Interface) store.Interface { return rejectingStore{s, refusal} }))
	recreated, removed, err := p.fp.Recover(context.Background())
	if err != nil {
		t.Fatalf("Recover failed on the refused object: %v", err)
	}
	if recreated != 0 || removed != 1 {
		t.Errorf("Recover: %d re-created, %d removed; want 0 and 1", recreated, removed)
	}
	if p.hasContainer("sb-refused", 1) {
		t.Errorf("the container whose object the store refuses is still there")
	}
	if _, held := p.reg.Lookup("sb-refused"); held {
		t.Errorf("the slot of the removed sandbox is still held")
	}
	if lines := p.logs.Lines("level=ERROR", "default/refused", "sb-refused", "injected"); len(lines) == 0 {
		t.Errorf("no error line names default/refused and the refusal:\n%s", p.logs.String())
	}
}

// TestRecoveryGoesOnWhenOneAgentFails: at start, the removal of a deleted
// sandbox fails on one agent (its containerd is down). The controller
// still starts: Recover succeeds, another agent's lost sandbox gets its
// object, and the failing agent's recovery is retried while it is up: once
// its containerd is back, the deleted sandbox is removed.
func TestRecoveryGoesOnWhenOneAgentFails(t *testing.T) {
	p := newAgentsOnly(t, 1)
	d := rig.PrivateContainerd(t)
	cd2, _ := rig.ContainerdAt(t, d.Socket)
	p.agents = append(p.agents, startAgent(t, cd2, "agent-2"))
	runOnAgent(t, p.agents[0], "sb-lost", "lost", false)
	// Created last, so recovered first: its failure comes before the
	// other agent's sandbox.
	runOnAgent(t, p.agents[1], "sb-deleted", "deleted", true)
	for _, a := range p.agents {
		a.serve(t)
	}
	d.Kill()
	restarted := false
	t.Cleanup(func() {
		if !restarted { // the rig's cleanup of the namespace needs it
			d.Start()
			waitServing(t, cd2)
		}
	})
	p.control = p.startControl()
	ctx := context.Background()
	recreated, removed, err := p.fp.Recover(ctx)
	if err != nil {
		t.Fatalf("Recover failed on one agent's error: %v", err)
	}
	if recreated != 1 || removed != 0 {
		t.Errorf("Recover: %d re-created, %d removed; want 1 and 0", recreated, removed)
	}
	if sb, err := p.store.Get(ctx, "default", "lost"); err != nil || sb.Annotations[v1alpha1.AnnotationID] != "sb-lost" {
		t.Errorf("the other agent's lost sandbox has no object: %v", err)
	}
	if got := p.listed(); len(got) != 1 || got["lost"] != "sb-lost" {
		t.Errorf("list after recovery: %v, want only lost", got)
	}
	if _, err := p.store.Get(ctx, "default", "deleted"); !apierrors.IsNotFound(err) {
		t.Errorf("the deleted sandbox has an object again: %v", err)
	}
	if lines := p.logs.Lines("level=WARN", "not recovered at start", "agent-2", "sb-deleted"); len(lines) == 0 {
		t.Errorf("no warning names agent-2 and the sandbox it could not remove:\n%s", p.logs.String())
	}
	// The janitor hears "undecided" of agent-2 while its recovery fails:
	// what it runs is not settled. Of agent-1, reconciled, "unknown".
	got, err := classify(t, p, &fsbv1.SandboxRef{AgentId: "agent-2", SandboxId: "sb-other", Revision: 1},
		&fsbv1.SandboxRef{AgentId: "agent-1", SandboxId: "sb-other", Revision: 1})
	if err != nil {
		t.Fatal(err)
	}
	if v := got[0].GetVerdict(); v != fsbv1.Verdict_VERDICT_UNDECIDED || !strings.Contains(got[0].GetReason(), "not been reconciled") {
		t.Errorf("an agent whose recovery fails: %v (%s), want undecided: not reconciled", v, got[0].GetReason())
	}
	if v := got[1].GetVerdict(); v != fsbv1.Verdict_VERDICT_UNKNOWN {
		t.Errorf("a reconciled agent: %v (%s), want unknown", v, got[1].GetReason())
	}
	d.Start()
	restarted = true
	waitServing(t, cd2)
	eventually(t, 5*time.Second, "the deleted sandbox removed once agent-2's containerd is back", func() bool {
		_, err := cd2.LoadContainer(ctx, runtime.ContainerID("sb-deleted", 1))
		return errdefs.IsNotFound(err)
	})
	eventually(t, 5*time.Second, "agent-2 reconciled for the janitor", func() bool {
		got, err := classify(t, p, &fsbv1.SandboxRef{AgentId: "agent-2", SandboxId: "sb-other", Revision: 1})
		return err == nil && got[0].GetVerdict() == fsbv1.Verdict_VERDICT_UNKNOWN
	})
}

// waitServing waits until a client of a containerd that was restarted has
// its connection back.
func waitServing(t *testing.T, cd *containerd.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ok, err := cd.IsServing(ctx); !ok || err != nil {
		t.Fatalf("containerd is not back: %v", err)
	}
}

// heldWritesStore is the real store whose Create waits until gate is
// closed, except for the sandbox ID it lets through.
type heldWritesStore struct {
	store.Interface
	gate   <-chan struct{}
	except string
}

func (h heldWritesStore) Create(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	if sb.Annotations[v1alpha1.AnnotationID] != h.except {
		<-h.gate
	}
	return h.Interface.Create(ctx, sb)
}

// TestRecoveryLeavesANameToAPendingCreate: an agent runs a lost FAST
// create (no object, no mark) under a name, and a newer FAST create of the
// same name is acknowledged, its object not yet written (a caller who
// retried after the first create failed). A recovery then removes the lost
// one: an object for it would make the acknowledged create's write fail
// and remove that sandbox.
func TestRecoveryLeavesANameToAPendingCreate(t *testing.T) {
	gate := make(chan struct{})
	p := newPlane(t, withStore(func(s store.Interface) store.Interface { return heldWritesStore{s, gate, "sb-lost"} }))
	ctx := context.Background()
	if _, _, err := p.fp.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	runOnAgent(t, p.agents[0], "sb-lost", "dup", false)
	resp, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "dup", Spec: fastSpec("sleep", "300")}))
	if err != nil {
		t.Fatal(err)
	}
	acked := resp.Msg.GetSandbox().GetStatus().GetSandboxId()
	if _, _, err := p.fp.RecoverAgent(ctx, "agent-1"); err != nil {
		t.Fatal(err)
	}
	close(gate)
	eventually(t, 10*time.Second, "the acknowledged create's object", func() bool {
		sb, err := p.store.Get(ctx, "default", "dup")
		return err == nil && sb.Annotations[v1alpha1.AnnotationID] == acked
	})
	if !p.hasContainer(acked, 1) {
		t.Errorf("the acknowledged sandbox %s lost its container", acked)
	}
	if p.hasContainer("sb-lost", 1) {
		t.Errorf("the lost create's container is still there")
	}
}
