package agentpool

import "github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"

// Counts is what a pool has now. Total counts its pods not being deleted;
// each is exactly one of Busy (its agent runs a sandbox), Idle (its agent
// is healthy, not cordoned and runs none) or Pending (anything else: the
// pod is starting, its agent has not connected or is unhealthy), so
// Total = Busy + Idle + Pending.
type Counts struct {
	Total, Busy, Idle, Pending int
}

// Plan is what one sync does: add pods, or remove idle agents' pods and
// pending pods. Never both, and never an agent that runs a sandbox.
type Plan struct {
	Add           int
	RemoveIdle    int
	RemovePending int
}

// Scale is the pool's scaling rule (docs/kubernetes.md, "SandboxPools"):
//
//	add = max(poolMin − total, bufferMin − (idle + pending)),
//	      capped at poolMax − total, never below 0.
//
// A pending pod counts as an idle agent to come, so a starting pod is not
// doubled by the next sync. When nothing is added, idle agents beyond
// bufferMax are removed as long as the pool stays at poolMin or more —
// min(idle − bufferMax, total − poolMin) — and pods beyond poolMax (a
// lowered poolMax) are removed, idle agents first, then pending pods. A
// busy agent is never removed, so a pool whose busy agents alone exceed
// poolMax stays above it until they empty.
//
// A pool without capacity (nil: its agents are started by other means) is
// never scaled: no pod is added or removed.
func Scale(c *v1alpha1.PoolCapacity, n Counts) Plan {
	if c == nil {
		return Plan{}
	}
	poolMin, poolMax := int(c.PoolMin), int(c.PoolMax)
	bufferMin, bufferMax := int(c.BufferMin), int(c.BufferMax)

	add := max(poolMin-n.Total, bufferMin-(n.Idle+n.Pending))
	add = max(min(add, poolMax-n.Total), 0)
	if add > 0 {
		return Plan{Add: add}
	}
	// Idle agents beyond the buffer, down to poolMin; and anything beyond
	// poolMax whatever the buffer says.
	surplus := max(min(n.Idle-bufferMax, n.Total-poolMin), 0)
	excess := max(n.Total-poolMax, 0)
	idle := min(max(surplus, excess), n.Idle)
	pending := min(max(excess-idle, 0), n.Pending)
	return Plan{RemoveIdle: idle, RemovePending: pending}
}
