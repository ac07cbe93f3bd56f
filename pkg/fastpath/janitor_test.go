package fastpath

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

func classify(t *testing.T, p *plane, refs ...*fsbv1.SandboxRef) ([]*fsbv1.Classification, error) {
	t.Helper()
	resp, err := p.fp.Janitor().Classify(context.Background(), connect.NewRequest(&fsbv1.ClassifyRequest{Sandboxes: refs}))
	if err != nil {
		return nil, err
	}
	if got := len(resp.Msg.GetClassifications()); got != len(refs) {
		t.Fatalf("%d answers to %d questions", got, len(refs))
	}
	return resp.Msg.GetClassifications(), nil
}

// TestJanitorHearsUnknownOnlyOfReconciledAgents: before the controller is
// Ready every question is Unavailable; after, a sandbox ID nobody holds is
// unknown on an agent reconciled since it connected, and undecided on an
// agent that is down or was never reconciled; a stored sandbox is known at
// any revision; a sandbox an agent reports is undecided; a file (no agent)
// is unknown once nothing holds its sandbox.
func TestJanitorHearsUnknownOnlyOfReconciledAgents(t *testing.T) {
	p := newAgentsOnly(t, 2)
	runOnAgent(t, p.agents[1], "sb-reported", "reported", false)
	p.agents[0].serve(t)
	p.control = p.startControl() // agent-2 does not serve yet
	ref := func(agent, id string, rev int64) *fsbv1.SandboxRef {
		return &fsbv1.SandboxRef{AgentId: agent, SandboxId: id, Revision: rev}
	}
	if _, err := classify(t, p, ref("agent-1", "sb-x", 1)); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("before Ready: %v, want Unavailable", err)
	}
	ctx := context.Background()
	if _, _, err := p.fp.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	created, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "kept", Spec: fastSpec("sleep", "300")}))
	if err != nil {
		t.Fatal(err)
	}
	keptID := created.Msg.GetSandbox().GetStatus().GetSandboxId()

	want := []struct {
		ref     *fsbv1.SandboxRef
		verdict fsbv1.Verdict
		reason  string
	}{
		{ref("agent-1", "sb-x", 1), fsbv1.Verdict_VERDICT_UNKNOWN, "reconciled since it connected"},
		{ref("agent-1", keptID, 7), fsbv1.Verdict_VERDICT_KNOWN, ""},
		{ref("agent-2", "sb-x", 1), fsbv1.Verdict_VERDICT_UNDECIDED, "not connected"},
		{ref("agent-9", "sb-x", 1), fsbv1.Verdict_VERDICT_UNDECIDED, "not connected"},
		{ref("", "sb-x", 0), fsbv1.Verdict_VERDICT_UNKNOWN, ""},
		{ref("", keptID, 0), fsbv1.Verdict_VERDICT_KNOWN, ""},
	}
	refs := make([]*fsbv1.SandboxRef, len(want))
	for i, w := range want {
		refs[i] = w.ref
	}
	got, err := classify(t, p, refs...)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if got[i].GetVerdict() != w.verdict || !strings.Contains(got[i].GetReason(), w.reason) {
			t.Errorf("%v: %v (%s), want %v (%q)", w.ref, got[i].GetVerdict(), got[i].GetReason(), w.verdict, w.reason)
		}
	}

	// agent-2 connects: what it reports is undecided (its recovery
	// settles it) and, once reconciled, what it does not report is unknown.
	p.agents[1].serve(t)
	eventually(t, 15*time.Second, "agent-2 reconciled", func() bool {
		got, err := classify(t, p, ref("agent-2", "sb-other", 1))
		return err == nil && got[0].GetVerdict() == fsbv1.Verdict_VERDICT_UNKNOWN
	})
	got, err = classify(t, p, ref("agent-2", "sb-reported", 1))
	if err != nil {
		t.Fatal(err)
	}
	if v := got[0].GetVerdict(); v == fsbv1.Verdict_VERDICT_UNKNOWN {
		t.Errorf("the sandbox agent-2 runs (its object re-created by the recovery): %v (%s)", v, got[0].GetReason())
	}
}

// TestJanitorOnWhatAnAgentReports: what a reconciled agent reports with
// no object is judged as its recovery would judge it: deleted (persisted
// mark, object gone) is unknown; run with a spec and no mark (a FAST
// create whose object was lost) is undecided, and the question has the
// recovery give it its object, after which it is known.
func TestJanitorOnWhatAnAgentReports(t *testing.T) {
	p := newPlane(t)
	if _, _, err := p.fp.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	runOnAgent(t, p.agents[0], "sb-deleted", "deleted", true)
	runOnAgent(t, p.agents[0], "sb-lost", "lost", false)
	eventually(t, 10*time.Second, "agent-1 reports both", func() bool {
		n := 0
		for _, st := range p.set.Statuses() {
			n += len(st.GetSandboxes())
		}
		return n == 2
	})
	deleted := &fsbv1.SandboxRef{AgentId: "agent-1", SandboxId: "sb-deleted", Revision: 1}
	lost := &fsbv1.SandboxRef{AgentId: "agent-1", SandboxId: "sb-lost", Revision: 1}
	got, err := classify(t, p, deleted, lost)
	if err != nil {
		t.Fatal(err)
	}
	if v := got[0].GetVerdict(); v != fsbv1.Verdict_VERDICT_UNKNOWN || !strings.Contains(got[0].GetReason(), "was deleted") {
		t.Errorf("a deleted sandbox its agent still reports: %v (%s), want unknown", v, got[0].GetReason())
	}
	if v := got[1].GetVerdict(); v != fsbv1.Verdict_VERDICT_UNDECIDED {
		t.Errorf("a FAST create whose object was lost: %v (%s), want undecided", v, got[1].GetReason())
	}
	eventually(t, 10*time.Second, "the lost create's object back, and known", func() bool {
		got, err := classify(t, p, lost)
		return err == nil && got[0].GetVerdict() == fsbv1.Verdict_VERDICT_KNOWN
	})
}

// TestJanitorOnAnAgentGoneForGood: what an agent gone for good (its pod
// deleted) left is judged without hearing from it: a sandbox nothing holds
// is unknown, a revision the object has replaced is unknown, while the
// object's own revision, a newer one, and a sandbox another agent runs
// stay kept. A gone agent's ID is never "not connected". Its warm
// sandboxes are unknown; another agent's stay.
func TestJanitorOnAnAgentGoneForGood(t *testing.T) {
	p := newPlane(t, withConfig(func(c *Config) {
		c.AgentGone = func(id string) bool { return id == "agent-gone" }
	}))
	ctx := context.Background()
	if _, _, err := p.fp.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	created, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "moved", Spec: fastSpec("sleep", "300")}))
	if err != nil {
		t.Fatal(err)
	}
	movedID := created.Msg.GetSandbox().GetStatus().GetSandboxId()
	eventually(t, 10*time.Second, "the object's status at revision 1", func() bool {
		sb, ok := p.ctrl.ByID(movedID)
		return ok && sb.Status.Revision == 1
	})
	runOnAgent(t, p.agents[0], "sb-elsewhere", "elsewhere", false)
	eventually(t, 10*time.Second, "agent-1 reports sb-elsewhere", func() bool {
		for _, st := range p.set.Statuses() {
			for _, sb := range st.GetSandboxes() {
				if sb.GetSandboxId() == "sb-elsewhere" {
					return true
				}
			}
		}
		return false
	})
	ref := func(id string, rev int64) *fsbv1.SandboxRef {
		return &fsbv1.SandboxRef{AgentId: "agent-gone", SandboxId: id, Revision: rev}
	}
	want := []struct {
		ref     *fsbv1.SandboxRef
		verdict fsbv1.Verdict
		reason  string
	}{
		{ref("sb-nobody", 1), fsbv1.Verdict_VERDICT_UNKNOWN, "gone for good"},
		{ref(movedID, 0), fsbv1.Verdict_VERDICT_UNKNOWN, "runs as revision 1 now"},
		{ref(movedID, 1), fsbv1.Verdict_VERDICT_KNOWN, "holds it"},
		{ref(movedID, 2), fsbv1.Verdict_VERDICT_KNOWN, "holds it"},
		{ref("sb-elsewhere", 1), fsbv1.Verdict_VERDICT_UNDECIDED, "agent-1 runs"},
		{&fsbv1.SandboxRef{AgentId: "agent-away", SandboxId: "sb-nobody", Revision: 1}, fsbv1.Verdict_VERDICT_UNDECIDED, "not connected"},
		// A warm sandbox is its agent's to keep, unless the agent is gone.
		{&fsbv1.SandboxRef{AgentId: "agent-gone", SandboxId: "warm-1", Warm: true}, fsbv1.Verdict_VERDICT_UNKNOWN, "gone for good"},
		{&fsbv1.SandboxRef{AgentId: "agent-1", SandboxId: "warm-2", Warm: true}, fsbv1.Verdict_VERDICT_KNOWN, "agent agent-1 keeps it"},
		{&fsbv1.SandboxRef{AgentId: "agent-away", SandboxId: "warm-3", Warm: true}, fsbv1.Verdict_VERDICT_KNOWN, "keeps it"},
	}
	refs := make([]*fsbv1.SandboxRef, len(want))
	for i, w := range want {
		refs[i] = w.ref
	}
	got, err := classify(t, p, refs...)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if got[i].GetVerdict() != w.verdict || !strings.Contains(got[i].GetReason(), w.reason) {
			t.Errorf("%v: %v (%s), want %v (%q)", w.ref, got[i].GetVerdict(), got[i].GetReason(), w.verdict, w.reason)
		}
	}
}

// TestJanitorIgnoresTheLastReportOfAnAgentGoneForGood: the Set keeps the
// last status of an agent removed by its source (a deleted pod), and that
// status still lists the sandboxes it ran. Once the sandbox's object is
// gone, a log file of it and another gone agent's container of it are
// unknown: the stale report of a gone agent keeps nothing. Here agent-1,
// connected, stands for the removed agent whose last status the Set
// keeps: AgentGone says it is gone.
func TestJanitorIgnoresTheLastReportOfAnAgentGoneForGood(t *testing.T) {
	p := newPlane(t, withConfig(func(c *Config) {
		c.AgentGone = func(id string) bool { return id == "agent-1" || id == "agent-gone" }
	}))
	ctx := context.Background()
	if _, _, err := p.fp.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	runOnAgent(t, p.agents[0], "sb-stale", "stale", true)
	eventually(t, 10*time.Second, "agent-1 reports sb-stale", func() bool {
		for _, st := range p.set.Statuses() {
			for _, sb := range st.GetSandboxes() {
				if sb.GetSandboxId() == "sb-stale" {
					return true
				}
			}
		}
		return false
	})
	want := []struct {
		ref     *fsbv1.SandboxRef
		verdict fsbv1.Verdict
		reason  string
	}{
		{&fsbv1.SandboxRef{SandboxId: "sb-stale", Revision: 1}, fsbv1.Verdict_VERDICT_UNKNOWN, "no agent holds the sandbox"},
		{&fsbv1.SandboxRef{AgentId: "agent-gone", SandboxId: "sb-stale", Revision: 1}, fsbv1.Verdict_VERDICT_UNKNOWN, "gone for good"},
	}
	refs := make([]*fsbv1.SandboxRef, len(want))
	for i, w := range want {
		refs[i] = w.ref
	}
	got, err := classify(t, p, refs...)
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if got[i].GetVerdict() != w.verdict || !strings.Contains(got[i].GetReason(), w.reason) {
			t.Errorf("%v: %v (%s), want %v (%q)", w.ref, got[i].GetVerdict(), got[i].GetReason(), w.verdict, w.reason)
		}
	}
}

// TestJanitorQuestionIsBounded: a question past MaxClassify, or naming no
// sandbox, is InvalidArgument.
func TestJanitorQuestionIsBounded(t *testing.T) {
	p := newPlane(t)
	if _, _, err := p.fp.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	many := make([]*fsbv1.SandboxRef, MaxClassify+1)
	for i := range many {
		many[i] = &fsbv1.SandboxRef{SandboxId: "sb-x"}
	}
	if _, err := classify(t, p, many...); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("%d refs: %v, want InvalidArgument", len(many), err)
	}
	if _, err := classify(t, p, &fsbv1.SandboxRef{AgentId: "agent-1"}); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "sandbox_id is required") {
		t.Errorf("no sandbox ID: %v, want InvalidArgument saying so", err)
	}
}
