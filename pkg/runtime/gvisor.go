package runtime

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// WriteRunscWrapper writes at path the program the runc shim runs for the
// gvisor runtime: runsc with the flags a sandbox needs. Debian ships no
// gVisor shim, so gVisor runs behind containerd's runc shim with this
// wrapper as its BinaryName. --host-uds=open lets fsb init dial the agent's
// socket in its link directory through the gofer. --network=host keeps the sandbox in the
// agent's network namespace (gVisor's own network stack does not work on
// these kernels); the platform is systrap where this runsc has it, else
// ptrace (KVM hangs on virtual machines without nested virtualization).
func WriteRunscWrapper(path, runsc string) error {
	runsc, err := exec.LookPath(runsc)
	if err != nil {
		return fmt.Errorf("runsc wrapper: %w", err)
	}
	if runsc, err = filepath.Abs(runsc); err != nil {
		return fmt.Errorf("runsc wrapper: %w", err)
	}
	platform := "ptrace"
	out, _ := exec.Command(runsc, "help", "platforms").Output()
	if slices.Contains(strings.Fields(string(out)), "systrap") {
		platform = "systrap"
	}
	script := fmt.Sprintf("#!/bin/sh\n# Written by fsb agent: gVisor behind containerd's runc shim.\nexec %s --network=host --host-uds=open --platform=%s \"$@\"\n", runsc, platform)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("runsc wrapper: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		return fmt.Errorf("runsc wrapper: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("runsc wrapper: %w", err)
	}
	return nil
}
