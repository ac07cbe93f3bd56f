package v1alpha1

import "strconv"

// Placement reads where a sandbox is: its agent, ID and revision, from the
// status or, for a FAST create whose status the API dropped, from the
// annotations the fast path set.
func Placement(sb *Sandbox) (agent, id string, revision int64) {
	agent, id, revision = sb.Status.AssignedPod, sb.Status.SandboxID, sb.Status.Revision
	if agent == "" {
		agent = sb.Annotations[AnnotationAgent]
	}
	if id == "" {
		id = sb.Annotations[AnnotationID]
	}
	if revision == 0 {
		revision, _ = strconv.ParseInt(sb.Annotations[AnnotationRevision], 10, 64)
	}
	return agent, id, revision
}
