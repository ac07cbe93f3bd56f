package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

func gvisorSpec(script string) *fsbv1.SandboxSpec {
	s := spec(script)
	s.Runtime = runtime.RuntimeGVisor
	return s
}

func TestGVisorRunsSandbox(t *testing.T) {
	h := newHarness(t)
	// gVisor's kernel reports its own release, not the host's.
	sb := h.create(gvisorSpec(`echo "kernel=$(uname -r)"; exit 4`))
	got := h.waitPhase(sb.GetSandboxId(), fsbv1.Phase_PHASE_FAILED)
	if got.GetExitCode() != 4 {
		t.Errorf("exit code %d, want 4", got.GetExitCode())
	}
	out := h.waitLog(sb, "kernel=")
	host, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	if strings.Contains(out, "kernel="+strings.TrimSpace(string(host))) {
		t.Errorf("the sandbox saw the host kernel: not gVisor:\n%s", out)
	}
	h.delete(sb.GetSandboxId(), 0)
	h.assertGone(sb)

	// SIGTERM reaches the sandbox through gVisor and fsb init.
	long := h.create(gvisorSpec("echo up; exec sleep 300"))
	h.waitLog(long, "up")
	resp := h.delete(long.GetSandboxId(), 10)
	if len(resp.GetSandboxes()) != 1 || resp.GetSandboxes()[0].GetExitCode() != 143 {
		t.Errorf("delete of a running gVisor sandbox: %v", resp.GetSandboxes())
	}
	h.assertGone(long)
}

func TestGVisorFailureLeavesNoStuckTask(t *testing.T) {
	real := rig.RunscWrapper(t)
	failing := filepath.Join(t.TempDir(), "runsc-failing")
	script := "#!/bin/sh\n" +
		"# runsc that fails to start a sandbox it has created.\n" +
		"for a in \"$@\"; do [ \"$a\" = start ] && { echo 'injected runsc failure' >&2; exit 1; }; done\n" +
		"exec " + real + " \"$@\"\n"
	if err := os.WriteFile(failing, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var ns string
	h := newHarness(t, func(s *harnessSetup) { s.runtime.Runtimes[runtime.RuntimeGVisor] = failing })
	ns = strings.TrimPrefix(h.agentID, "agent-")
	_, err := h.tryCreate(gvisorSpec("echo never"))
	if err == nil {
		t.Fatal("create with a failing runsc succeeded")
	}
	cs, err := h.cd.Containers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 0 {
		t.Errorf("%d containers left after the failed create", len(cs))
	}
	out, err := exec.Command(real, "--root", filepath.Join("/run/containerd/runc", ns), "list", "-quiet").CombinedOutput()
	if err != nil && !strings.Contains(string(out), "no such file") {
		t.Fatalf("runsc list: %v: %s", err, out)
	}
	if ids := strings.TrimSpace(string(out)); ids != "" && !strings.Contains(ids, "no such file") {
		t.Errorf("runsc still holds sandboxes: %s", ids)
	}
	if len(h.agent.creatingSnapshot()) != 0 {
		t.Errorf("the failed create still holds a slot")
	}
}
