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

// DefaultPool is the name that stands for the default pool (the agents
// started without --pool; in Kubernetes, the agent DaemonSet's): a
// SandboxPool of this name gives the default pool its warm entries and is
// never a pool of its own, a Sandbox whose poolRef names it runs in the
// default pool, and an agent started with --pool default is a default-pool
// agent.
const DefaultPool = "default"

// PoolOf is the pool a Sandbox's poolRef or an agent's --pool names, as the
// registry knows pools: "" for the default pool, whether left empty or
// named DefaultPool.
func PoolOf(name string) string {
	if name == DefaultPool {
		return ""
	}
	return name
}
