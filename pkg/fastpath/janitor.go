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
//     holds the sandbox ID, whatever the revision;
//   - undecided: an agent's latest status reports the sandbox (the
//     controller's own recovery settles it), or the container's agent is
//     down, has two claimants, or has not been reconciled since it last
//     connected (recover.go) — what it runs is not known yet;
//   - unknown: none of the above. A file (a ref without an agent) needs no
//     agent: no object, no pending create, no agent reporting it.
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
	// What every agent reports, by sandbox ID.
	reportedBy := map[string]string{}
	for _, st := range j.s.cfg.Agents.Statuses() {
		for _, asb := range st.GetSandboxes() {
			reportedBy[asb.GetSandboxId()] = st.GetAgentId()
		}
	}
	resp := &fsbv1.ClassifyResponse{Classifications: make([]*fsbv1.Classification, 0, len(refs))}
	for _, ref := range refs {
		verdict, reason := j.classify(ref, reportedBy)
		resp.Classifications = append(resp.Classifications, &fsbv1.Classification{Sandbox: ref, Verdict: verdict, Reason: reason})
	}
	return connect.NewResponse(resp), nil
}

func (j *Janitor) classify(ref *fsbv1.SandboxRef, reportedBy map[string]string) (fsbv1.Verdict, string) {
	id, agentID := ref.GetSandboxId(), ref.GetAgentId()
	// The pending table before the cache: a create leaves the table only
	// once the cache has its object or its container is gone.
	if j.s.pendingID(id) {
		return fsbv1.Verdict_VERDICT_KNOWN, "a FAST create of the sandbox is under way"
	}
	if sb, ok := j.s.cfg.Controller.ByID(id); ok {
		return fsbv1.Verdict_VERDICT_KNOWN, fmt.Sprintf("sandbox %s/%s holds it", sb.Namespace, sb.Name)
	}
	if by, ok := reportedBy[id]; ok {
		return fsbv1.Verdict_VERDICT_UNDECIDED, fmt.Sprintf("agent %s reports it; the controller's recovery settles it", by)
	}
	if agentID == "" {
		return fsbv1.Verdict_VERDICT_UNKNOWN, "no object, no pending create and no agent holds the sandbox"
	}
	if up, _ := j.s.cfg.Agents.Reachable(agentID); !up {
		return fsbv1.Verdict_VERDICT_UNDECIDED, fmt.Sprintf("agent %s is not connected: what it runs is not known", agentID)
	}
	if len(j.s.cfg.Agents.Conflict(agentID)) > 1 {
		return fsbv1.Verdict_VERDICT_UNDECIDED, fmt.Sprintf("two agents claim ID %s", agentID)
	}
	if !j.s.reconciledSinceConnect(agentID) {
		return fsbv1.Verdict_VERDICT_UNDECIDED, fmt.Sprintf("agent %s has not been reconciled since it connected", agentID)
	}
	return fsbv1.Verdict_VERDICT_UNKNOWN, fmt.Sprintf("no object or pending create holds the sandbox, and agent %s, reconciled since it connected, does not report it", agentID)
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
