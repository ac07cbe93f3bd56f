// Package gctune sets the garbage collector of fsb's long-running servers,
// the agent and the controller.
package gctune

import (
	"os"
	"runtime/debug"
)

// Percent is the GOGC the servers run with unless GOGC is set. Creates
// allocate little but often, and at Go's default of 100 the small heap is
// collected every few of them, on their path. 400 took a quarter off warm
// claims' p90 on a 2-core machine, for a heap of tens of MiB
// (docs/benchmarks.md).
const Percent = 400

// Apply sets Percent unless the GOGC environment variable says otherwise.
func Apply() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(Percent)
	}
}
