//go:build !fsbhelper

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// These tests run the built binaries (make build) as a user would.

func fsb(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(rig.FsbBinary(t), args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func TestHelpListsRoles(t *testing.T) {
	out, code := fsb(t, "--help")
	if code != 0 {
		t.Fatalf("fsb --help exited %d", code)
	}
	for _, role := range []string{"controller", "agent", "janitor", "ctl", "version"} {
		if !strings.Contains(out, "\n   "+role+" ") {
			t.Errorf("fsb --help does not list %s:\n%s", role, out)
		}
	}
	if strings.Contains(out, "log-driver") || strings.Contains(out, "\n   init ") {
		t.Errorf("fsb --help shows the hidden helper roles:\n%s", out)
	}
}

func TestVersion(t *testing.T) {
	out, code := fsb(t, "version")
	if code != 0 || !strings.HasPrefix(out, "fsb ") || !strings.Contains(out, "commit ") {
		t.Errorf("fsb version = %q (exit %d)", out, code)
	}
}

func TestRolesNotBuiltSaySo(t *testing.T) {
	for _, role := range []string{"controller", "janitor", "ctl"} {
		out, code := fsb(t, role)
		if code == 0 || !strings.Contains(out, "not built yet") {
			t.Errorf("fsb %s: exit %d, %q", role, code, out)
		}
	}
}

func TestAgentRefusesToStartWithoutToken(t *testing.T) {
	out, code := fsb(t, "agent", "--http-port", "0")
	if code == 0 || !strings.Contains(out, "--token-file is required") {
		t.Errorf("fsb agent without a token: exit %d, %q", code, out)
	}
}

// TestAgentRoleOverConnectJSON starts `fsb agent` as a process on the rig and
// drives it with plain HTTP+JSON, as the README's curl example does.
func TestAgentRoleOverConnectJSON(t *testing.T) {
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("e2e-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cmd := exec.Command(rig.FsbBinary(t), "agent",
		"--bind-address", "127.0.0.1", "--http-port", fmt.Sprint(port),
		"--containerd-socket", rig.Env(t, rig.EnvSocket), "--containerd-namespace", ns,
		"--agent-id", "e2e-agent", "--token-file", tokenFile, "--log-dir", filepath.Join(dir, "logs"),
		"--log-format", "json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitReady(t, base+"/readyz", &stderr)

	call := func(method, token string, body any) (int, map[string]any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, base+"/fsb.v1.AgentService/"+method, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}

	if code, _ := call("GetStatus", "wrong", map[string]any{}); code != http.StatusUnauthorized {
		t.Errorf("GetStatus with a wrong token: HTTP %d, want 401", code)
	}
	code, out := call("CreateSandbox", "e2e-token", map[string]any{
		"sandboxId": "sb-e2e", "revision": 1, "namespace": "default", "name": "e2e",
		"spec": map[string]any{"image": rig.ImageRef, "command": []string{"sh", "-c", "echo hello from e2e; exec sleep 300"}},
	})
	if code != http.StatusOK {
		t.Fatalf("CreateSandbox: HTTP %d %v\nagent log:\n%s", code, out, stderr.String())
	}
	sb := out["sandbox"].(map[string]any)
	if sb["phase"] != "PHASE_RUNNING" {
		t.Errorf("created sandbox phase %v", sb["phase"])
	}
	logPath := sb["logPath"].(string)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), "stdout F hello from e2e") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %s never showed the output: %q", logPath, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, out = call("DeleteSandbox", "e2e-token", map[string]any{"sandboxId": "sb-e2e", "gracePeriodSeconds": 5})
	if code != http.StatusOK {
		t.Fatalf("DeleteSandbox: HTTP %d %v", code, out)
	}
	ended := out["sandboxes"].([]any)[0].(map[string]any)
	if ended["exitCode"] != float64(143) {
		t.Errorf("deleted sandbox exit code %v, want 143", ended["exitCode"])
	}

	// SIGTERM stops the agent cleanly.
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Errorf("agent exited with %v after SIGTERM\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Errorf("agent still running 15s after SIGTERM")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitReady(t *testing.T, url string, log *bytes.Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never became ready; agent log:\n%s", url, log.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
