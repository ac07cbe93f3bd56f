//go:build !fsbhelper

package main

import (
	"strings"
	"syscall"
	"testing"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// TestCLINamesUnreachableContainerd stops the agent's containerd and runs a
// create through fsb ctl: the message names containerd and the agent, not
// the controller.
func TestCLINamesUnreachableContainerd(t *testing.T) {
	d := rig.PrivateContainerd(t)
	_, ns := rig.ContainerdAt(t, d.Socket)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir, "--containerd-socket", d.Socket)
	p := startPlane(t, dir, []*agentProc{a})
	d.Kill()
	t.Cleanup(d.Start)

	_, stderr, code := p.ctl("run", "nocd", "--mode", "fast", "--image", rig.ImageRef, "--", "sleep", "300")
	t.Logf("fsb ctl run: exit %d: %s", code, stderr)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	want := "error: the agent agent-1 could not reach its containerd: containerd at " + d.Socket + " is unreachable"
	if !strings.HasPrefix(stderr, want) {
		t.Errorf("stderr = %q\nwant it to start with %q", stderr, want)
	}
}

// TestCLINamesUnreachableAgent stops the agent (SIGSTOP: its port still
// accepts connections, nothing answers) and runs a create through fsb ctl:
// the message names the agent and its address, not the controller.
func TestCLINamesUnreachableAgent(t *testing.T) {
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir)
	// The default heartbeat: the agent counts as up for 6 s after it stops,
	// long enough for the create to be placed on it.
	p := startPlane(t, dir, []*agentProc{a}, "--agent-heartbeat-interval", "2s")
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.cmd.Process.Signal(syscall.SIGCONT) })

	_, stderr, code := p.ctl("run", "noagent", "--mode", "fast", "--image", rig.ImageRef, "--", "sleep", "300")
	t.Logf("fsb ctl run: exit %d: %s", code, stderr)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	want := "error: the controller could not reach the agent agent-1: agent agent-1 at " + strings.TrimPrefix(a.base, "http://") + " is unreachable"
	if !strings.HasPrefix(stderr, want) {
		t.Errorf("stderr = %q\nwant it to start with %q", stderr, want)
	}
}
