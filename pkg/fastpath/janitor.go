package fastpath

import (
	"context"
	"fmt"
	"net/http"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/strictjson"
)

// MaxClassify is the most SandboxRefs one Classify call may carry.
const MaxClassify = 10000

// maxRefIDBytes bounds a ref's sandbox and agent IDs: a DNS subdomain's
// length, which a pod's name or UID (an agent ID in Kubernetes) keeps.
const maxRefIDBytes = 253

// Janitor answers the node janitor's question (fsb.v1.JanitorService):
// which of the sandboxes it found does the controller know? Its answers
// are the janitor's only licence to remove anything, so they lean to
// keeping: "unknown" needs every source of truth to agree.
//
//   - known: an object (in the controller's cache) or a pending FAST create
//     holds the sandbox ID, whatever the revision — unless the container's
//     agent is gone for good (Config.AgentGone) and the object has moved on
//     to a newer revision: that container can never be needed again;
//   - undecided: the container's agent is down, has two claimants, or has
//     not been reconciled since it last connected (recover.go) — what it
//     runs is not known yet; or an agent runs the sandbox in a way the
//     recovery would keep: with a spec and no persisted mark (a FAST
//     create whose object was lost: the question queues that agent's
//     recovery, which gives it its object), or another revision of it;
//   - unknown: the rest, which is what a recovery would remove: nothing
//     holds the sandbox, or its agent reports it only as deleted
//     (persisted mark, object gone) or without a spec; what an agent gone
//     for good left, when no object or other agent holds it. A file (a ref
//     without an agent) is unknown when no object, pending create or
//     agent holds its sandbox.
//
// Until the controller is Ready (Recover has succeeded) every call is
// Unavailable.
type Janitor struct{ s *Server }

// Janitor returns the JanitorService handler of the server.
func (s *Server) Janitor() *Janitor { return &Janitor{s: s} }

// Handler returns the path and handler of JanitorService, with opts; JSON
// is decoded strictly, as for the fast path.
func (j *Janitor) Handler(opts ...connect.HandlerOption) (string, http.Handler) {
	return fsbv1connect.NewJanitorServiceHandler(j, append(strictjson.HandlerOptions(), opts...)...)
}

// Classify implements JanitorService.Classify.
func (j *Janitor) Classify(_ context.Context, req *connect.Request[fsbv1.ClassifyRequest]) (*connect.Response[fsbv1.ClassifyResponse], error) {
	refs := req.Msg.GetSandboxes()
	if len(refs) > MaxClassify {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("sandboxes: %d entries, at most %d per call", len(refs), MaxClassify))
	}
	for i, ref := range refs {
		if err := validRef(ref); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("sandboxes[%d]: %w", i, err))
		}
	}
	select {
	case <-j.s.recovered:
	default:
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("the controller is not Ready: it is still comparing the store with the agents' sandboxes"))
	}
	// Each agent's state before the statuses: a status read after it is at
	// least as new, so an agent that connected again in between is judged
	// on its new status, never "reconciled" on its old one.
	agents := map[string]string{} // agent ID -> why it cannot be judged, or ""
	for _, ref := range refs {
		if id := ref.GetAgentId(); id != "" {
			if _, done := agents[id]; !done {
				agents[id] = j.undecidedAgent(id)
			}
		}
	}
	// What every agent reports, by sandbox ID.
	reported := map[string][]reportedSandbox{}
	for _, st := range j.s.cfg.Agents.Statuses() {
		// The Set keeps a removed agent's last status (its sandboxes are
		// Lost counted from it), but an agent gone for good runs nothing
		// the controller will hear of again: its old report holds no
		// sandbox, or another agent's container and every log file of a
		// sandbox it once ran would stay undecided for as long as this
		// controller runs.
		if j.gone(st.GetAgentId()) {
			continue
		}
		for _, asb := range st.GetSandboxes() {
			reported[asb.GetSandboxId()] = append(reported[asb.GetSandboxId()], reportedSandbox{st.GetAgentId(), asb})
		}
	}
	resp := &fsbv1.ClassifyResponse{Classifications: make([]*fsbv1.Classification, 0, len(refs))}
	for _, ref := range refs {
		verdict, reason := j.classify(ref, agents[ref.GetAgentId()], reported[ref.GetSandboxId()])
		resp.Classifications = append(resp.Classifications, &fsbv1.Classification{Sandbox: ref, Verdict: verdict, Reason: reason})
	}
	return connect.NewResponse(resp), nil
}

// reportedSandbox is a sandbox revision as an agent's latest status
// reports it.
type reportedSandbox struct {
	agent string
	sb    *fsbv1.AgentSandbox
}

// undecidedAgent says why what an agent runs cannot be judged now, or ""
// when it can: it is connected, alone with its ID, and reconciled since
// it last connected — or gone for good, so that nothing it runs can ever
// be heard of again.
func (j *Janitor) undecidedAgent(agentID string) string {
	if j.gone(agentID) {
		return ""
	}
	if up, _ := j.s.cfg.Agents.Reachable(agentID); !up {
		return fmt.Sprintf("agent %s is not connected: what it runs is not known", agentID)
	}
	if len(j.s.cfg.Agents.Conflict(agentID)) > 1 {
		return fmt.Sprintf("two agents claim ID %s", agentID)
	}
	if !j.s.reconciledSinceConnect(agentID) {
		return fmt.Sprintf("agent %s has not been reconciled since it connected", agentID)
	}
	return ""
}

// gone reports whether an agent is gone for good (Config.AgentGone).
func (j *Janitor) gone(agentID string) bool {
	return j.s.cfg.AgentGone != nil && j.s.cfg.AgentGone(agentID)
}

// classify answers for one ref, given why its agent cannot be judged (or
// "") and what the agents report of its sandbox ID.
func (j *Janitor) classify(ref *fsbv1.SandboxRef, undecidedAgent string, reports []reportedSandbox) (fsbv1.Verdict, string) {
	id, agentID := ref.GetSandboxId(), ref.GetAgentId()
	if ref.GetWarm() {
		return j.classifyWarm(agentID)
	}
	// The pending table before the cache: a create leaves the table only
	// once the cache has its object or its container is gone.
	if j.s.pendingID(id) {
		return fsbv1.Verdict_VERDICT_KNOWN, "a FAST create of the sandbox is under way"
	}
	gone := agentID != "" && j.gone(agentID)
	if sb, ok := j.s.cfg.Controller.ByID(id); ok {
		// Revisions only grow: a newer one in the object means this
		// container's revision was replaced, and its agent, gone for good,
		// will never report it again for the controller to remove.
		if gone && sb.Status.Revision > ref.GetRevision() {
			return fsbv1.Verdict_VERDICT_UNKNOWN, fmt.Sprintf("agent %s is gone for good and sandbox %s/%s runs as revision %d now", agentID, sb.Namespace, sb.Name, sb.Status.Revision)
		}
		return fsbv1.Verdict_VERDICT_KNOWN, fmt.Sprintf("sandbox %s/%s holds it", sb.Namespace, sb.Name)
	}
	if agentID == "" {
		if len(reports) > 0 {
			return fsbv1.Verdict_VERDICT_UNDECIDED, fmt.Sprintf("agent %s runs the sandbox", reports[0].agent)
		}
		return fsbv1.Verdict_VERDICT_UNKNOWN, "no object, no pending create and no agent holds the sandbox"
	}
	if undecidedAgent != "" {
		return fsbv1.Verdict_VERDICT_UNDECIDED, undecidedAgent
	}
	var asb *fsbv1.AgentSandbox
	if gone {
		// Its agent reports nothing any more; another agent running the
		// sandbox would be a recovery's to settle.
		for _, r := range reports {
			if r.agent != agentID {
				return fsbv1.Verdict_VERDICT_UNDECIDED, fmt.Sprintf("agent %s runs revision %d of the sandbox", r.agent, r.sb.GetRevision())
			}
		}
		return fsbv1.Verdict_VERDICT_UNKNOWN, fmt.Sprintf("no object or pending create holds the sandbox, and agent %s is gone for good", agentID)
	}
	for _, r := range reports {
		if r.agent != agentID || r.sb.GetRevision() != ref.GetRevision() {
			return fsbv1.Verdict_VERDICT_UNDECIDED, fmt.Sprintf("agent %s runs revision %d of the sandbox", r.agent, r.sb.GetRevision())
		}
		asb = r.sb
	}
	// What the agent reports without an object is what the recovery of an
	// agent settles (recover.go); the janitor may remove what it would.
	switch {
	case asb == nil:
		return fsbv1.Verdict_VERDICT_UNKNOWN, fmt.Sprintf("no object or pending create holds the sandbox, and agent %s, reconciled since it connected, does not report it", agentID)
	case asb.GetPersisted():
		return fsbv1.Verdict_VERDICT_UNKNOWN, fmt.Sprintf("its object was written and is gone (the sandbox was deleted), though agent %s still reports it", agentID)
	case asb.GetSpec() == nil:
		return fsbv1.Verdict_VERDICT_UNKNOWN, fmt.Sprintf("no object or pending create holds the sandbox, and agent %s reports it without the spec an object would need", agentID)
	default:
		// A FAST create whose object was lost after the agent's last
		// recovery: the recovery gives it its object back.
		j.s.queue(agentID)
		return fsbv1.Verdict_VERDICT_UNDECIDED, fmt.Sprintf("agent %s runs it with a spec and no object yet: the controller's recovery of the agent gives it one", agentID)
	}
}

// validRef checks what a ref names against the bounds every sandbox ID
// and agent ID keeps.
func validRef(ref *fsbv1.SandboxRef) error {
	if ref.GetSandboxId() == "" {
		return fmt.Errorf("sandbox_id is required")
	}
	if n := len(ref.GetSandboxId()); n > maxRefIDBytes {
		return fmt.Errorf("sandbox_id: %d bytes, at most %d", n, maxRefIDBytes)
	}
	if n := len(ref.GetAgentId()); n > maxRefIDBytes {
		return fmt.Errorf("agent_id: %d bytes, at most %d", n, maxRefIDBytes)
	}
	if ref.GetRevision() < 0 {
		return fmt.Errorf("revision %d: want 0 or more", ref.GetRevision())
	}
	return nil
}

// classifyWarm answers for a warm sandbox: its agent keeps it (and removes
// those no longer wanted), so only an agent gone for good leaves one that
// nobody will remove.
func (j *Janitor) classifyWarm(agentID string) (fsbv1.Verdict, string) {
	if agentID != "" && j.gone(agentID) {
		return fsbv1.Verdict_VERDICT_UNKNOWN, fmt.Sprintf("a warm sandbox of agent %s, which is gone for good", agentID)
	}
	return fsbv1.Verdict_VERDICT_KNOWN, fmt.Sprintf("a warm sandbox: agent %s keeps it", agentID)
}
