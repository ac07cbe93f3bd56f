package gctune

import (
	"runtime/debug"
	"testing"
)

func TestApplyLeavesAGOGCSetAlone(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	t.Setenv("GOGC", "")
	Apply()
	if got := debug.SetGCPercent(123); got != Percent {
		t.Errorf("GOGC unset: the collector ran at %d, want %d", got, Percent)
	}
	t.Setenv("GOGC", "50")
	Apply()
	if got := debug.SetGCPercent(100); got != 123 {
		t.Errorf("GOGC set: the collector ran at %d, want it left at 123", got)
	}
}
