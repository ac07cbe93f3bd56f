//go:build !fsbhelper

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/runtime/v2/runc/options"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// runJanitor runs `fsb janitor ARGS...` once, as a user would after
// `source .fsb/env`: containerd's socket from FSB_CONTAINERD_SOCKET.
func runJanitor(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(rig.FsbBinary(t), append([]string{"janitor"}, args...)...)
	cmd.Env = append(os.Environ(), rig.EnvSocket+"="+rig.Env(t, rig.EnvSocket))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// orphan makes, straight on containerd, a running sandbox container of
// agent agentID for a sandbox ID nobody knows, without the spec an agent
// keeps with its own containers: no object can be made for it. Like an
// agent's, it mounts a link directory at /.fsb/link, which it returns.
func orphan(t *testing.T, cd *containerd.Client, agentID, sandboxID string) (string, string) {
	t.Helper()
	ctx := context.Background()
	img, err := cd.GetImage(ctx, rig.ImageRef)
	if err != nil {
		t.Fatal(err)
	}
	id := runtime.ContainerID(sandboxID, 1)
	link := filepath.Join(t.TempDir(), runtime.LinkDirName(id))
	if err := os.Mkdir(link, 0o700); err != nil {
		t.Fatal(err)
	}
	c, err := cd.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithNewSnapshot(id, img),
		containerd.WithContainerLabels(map[string]string{
			runtime.LabelID: sandboxID, runtime.LabelRevision: "1", runtime.LabelAgent: agentID,
			runtime.LabelNamespace: "default", runtime.LabelName: sandboxID,
		}),
		containerd.WithRuntime(rig.Runtime, &options.Options{BinaryName: "runc"}),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sleep", "300"),
			oci.WithMounts([]specs.Mount{{Destination: initlink.MountPath, Type: "bind", Source: link, Options: []string{"rbind", "ro"}}})),
	)
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return id, link
}

// running returns, by sandbox ID, whether each sandbox container of the
// clients' namespaces has a running task.
func running(t *testing.T, cds ...*containerd.Client) map[string]bool {
	t.Helper()
	ctx := context.Background()
	out := map[string]bool{}
	for _, cd := range cds {
		cs, err := cd.Containers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		addRunning(t, cs, out)
	}
	return out
}

func addRunning(t *testing.T, cs []containerd.Container, out map[string]bool) {
	ctx := context.Background()
	for _, c := range cs {
		labels, err := c.Labels(ctx)
		if err != nil {
			t.Fatal(err)
		}
		up := false
		if task, err := c.Task(ctx, nil); err == nil {
			st, err := task.Status(ctx)
			up = err == nil && st.Status == containerd.Running
		} else if !errdefs.IsNotFound(err) {
			t.Fatal(err)
		}
		out[labels[runtime.LabelID]] = up
	}
}

// TestJanitorOnce is the Must show on a real controller and agent:
// `fsb janitor --once --orphan-timeout 0s` removes a labelled container
// whose sandbox nobody knows and keeps the known ones (FAST and STRONG,
// on either agent) running and listed; with a user's token, or with the controller stopped,
// it removes nothing, exits 1 and says why.
func TestJanitorOnce(t *testing.T) {
	cd, ns := rig.Containerd(t)
	otherCD, otherNS := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir)
	other := startAgent(t, otherNS, "agent-2", t.TempDir())
	janitorToken := writeFile(t, dir, "janitor-token", "janitor-1\n")
	p := startPlane(t, dir, []*agentProc{a, other}, "--janitor-token-file", janitorToken)
	ctrl, server := p.ctrl, p.server
	mustRunCtl(t, server, "user-token-1", "run", "fast-one", "--image", rig.ImageRef, "--", "sleep", "300")
	mustRunCtl(t, server, "user-token-1", "run", "strong-one", "--mode", "strong", "--image", rig.ImageRef, "--", "sleep", "300")
	// The namespace's own agent adopts it and reports it: the controller
	// still calls it unknown, since it can never get an object.
	orphanID, orphanLink := orphan(t, cd, "agent-1", "sb-nobody-knows")

	once := []string{"--once", "--orphan-timeout", "0s", "--server", server, "--containerd-namespace", ns, "--grace-period", "1s", "--log-format", "json"}
	out, errOut, code := runJanitor(t, append(once, "--token-file", janitorToken)...)
	if code != 0 || !strings.HasPrefix(out, "reaped 1: 1 container;") {
		t.Fatalf("fsb janitor --once: exit %d, stdout %q\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, `"msg":"removed"`) || !strings.Contains(errOut, `"sandbox":"sb-nobody-knows"`) || !strings.Contains(errOut, `"reason":"no object or pending create`) {
		t.Errorf("no removal line naming the sandbox and the controller's reason:\n%s", errOut)
	}
	up := running(t, cd, otherCD)
	if _, ok := up["sb-nobody-knows"]; ok {
		t.Errorf("the orphan %s is left", orphanID)
	}
	if _, err := os.Stat(orphanLink); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the orphan's link directory is left: %v", err)
	}
	if len(up) != 2 {
		t.Errorf("sandbox containers after the pass: %v, want the two known ones", up)
	}
	for id, ok := range up {
		if !ok {
			t.Errorf("known sandbox %s is not running after the pass", id)
		}
	}
	list := mustRunCtl(t, server, "user-token-1", "list")
	for _, name := range []string{"fast-one", "strong-one"} {
		if !strings.Contains(list, name) {
			t.Errorf("%s is not listed after the pass:\n%s", name, list)
		}
	}

	second, _ := orphan(t, cd, "agent-2", "sb-nobody-knows-2")
	cases := []struct {
		name  string
		args  []string
		setup func()
		says  []string
	}{
		{"user token", []string{"--token-file", filepath.Join(dir, "user-token")}, func() {}, []string{"permission_denied", server, "nothing was removed"}},
		{"controller stopped", []string{"--token-file", janitorToken}, ctrl.kill, []string{"connection refused", server, "nothing was removed"}},
	}
	for _, tc := range cases {
		tc.setup()
		out, errOut, code := runJanitor(t, append(once, tc.args...)...)
		if code != 1 || out != "" {
			t.Errorf("%s: exit %d, stdout %q; want 1 and nothing", tc.name, code, out)
		}
		for _, s := range tc.says {
			if !strings.Contains(errOut, s) {
				t.Errorf("%s: stderr does not say %q:\n%s", tc.name, s, errOut)
			}
		}
		if up := running(t, cd, otherCD); len(up) != 3 || !up["sb-nobody-knows-2"] {
			t.Errorf("%s: removed something: %v (orphan %s)", tc.name, up, second)
		}
	}
}
