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

// TestTokenWithANewlineIsABadToken passes tokens with a stray newline or
// space through FSB_TOKEN and --token: fsb ctl reports a bad token (a
// usage mistake, exit 2), not an HTTP header error; a token file's
// trailing newline is trimmed.
func TestTokenWithANewlineIsABadToken(t *testing.T) {
	for _, tt := range []struct {
		name  string
		token string // FSB_TOKEN
		args  []string
		want  string
	}{
		{"env with a trailing newline", "tok\n", nil, "error: the token holds a newline (at its end)"},
		{"flag with a newline inside", "", []string{"--token", "tok\nen"}, "error: the token holds a newline (character 4 of 6)"},
		{"env with a space", "tok en", nil, "error: the token holds a space (character 4 of 6)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runCtl(t, "http://127.0.0.1:1", tt.token, append(tt.args, "list")...)
			if code != 2 || !strings.HasPrefix(stderr, tt.want) || !strings.Contains(stderr, "check FSB_TOKEN or --token") {
				t.Errorf("exit %d, stderr %q\nwant exit 2 and %q ... check FSB_TOKEN or --token", code, stderr, tt.want)
			}
			if strings.Contains(stderr, "header") {
				t.Errorf("the message speaks of HTTP headers: %q", stderr)
			}
		})
	}
}

// TestNamespaceErrors checks what fsb ctl says of namespaces in embedded
// mode, where a namespace exists once a sandbox is in it: an invalid one
// is a usage mistake stating the rule, before any call; an unknown one
// reads "not found in namespace ..." for a sandbox and lists nothing.
func TestNamespaceErrors(t *testing.T) {
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	p := startPlane(t, dir, []*agentProc{startAgent(t, ns, "agent-1", dir)})

	_, stderr, code := p.ctl("get", "x", "-n", "Bad_NS")
	if code != 2 || !strings.HasPrefix(stderr, `error: namespace "Bad_NS" is not valid: a lowercase RFC 1123 label must consist of`) {
		t.Errorf("get -n Bad_NS: exit %d, %q; want exit 2 and the rule", code, stderr)
	}
	_, stderr, code = p.ctl("get", "x", "-n", "nope")
	if code != 1 || stderr != "error: sandbox x not found in namespace nope\n" {
		t.Errorf("get x -n nope: exit %d, %q", code, stderr)
	}
	out, stderr, code := p.ctl("list", "-n", "nope", "-o", "json")
	if code != 0 || !strings.Contains(out, `"items": []`) {
		t.Errorf("list -n nope: exit %d, %q %q; want an empty list", code, out, stderr)
	}
}
