package janitor

import (
	"context"
	"time"
)

// Kind names what a leftover is; it labels the janitor's metrics and log
// lines, and docs/janitor.md lists each with the test that shows it.
type Kind string

// The kinds of leftovers the janitor removes.
const (
	// KindContainer is a sandbox container (with its task and snapshot)
	// that the controller does not know.
	KindContainer Kind = "container"
	// KindSnapshot is a snapshot an agent made for a container that is
	// gone (an agent killed between preparing the snapshot and making the
	// container, say).
	KindSnapshot Kind = "snapshot"
	// KindShim is a containerd shim process whose task is gone.
	KindShim Kind = "shim"
	// KindMount is a sandbox root filesystem still mounted after its task
	// is gone.
	KindMount Kind = "mount"
	// KindLog is a sandbox log file whose sandbox is gone, past the log
	// retention.
	KindLog Kind = "log"
)

// Leftover is one thing on the node that the janitor may remove.
type Leftover struct {
	Kind Kind
	// Namespace is the containerd namespace it belongs to ("" for a file).
	Namespace string
	// Name says which one: a container ID, a snapshot key, "pid <n>" of a
	// shim, a mount point, a file path.
	Name string
	// The sandbox it belongs to, as far as it names one. AgentID is empty
	// for what names no agent (a log file).
	AgentID   string
	SandboxID string
	Revision  int64
	// Warm marks a warm sandbox's container (runtime.LabelWarm): it names
	// no sandbox, so SandboxID holds its container ID, and the controller
	// knows it while its agent is around.
	Warm bool
	// Created is when it was made (a container's or snapshot's creation,
	// a shim's start, a file's last write): the orphan timeout counts
	// from it.
	Created time.Time
	// Reason says why it is a leftover, for the removal's log line.
	Reason string
	// Remove removes it; removing what is already gone succeeds.
	Remove func(ctx context.Context) error
}
