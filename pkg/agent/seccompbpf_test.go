package agent

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/runtime/v2/runc/options"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// seccompProbe creates a user namespace, which needs no capability but
// which containerd's default seccomp profile refuses to a sandbox without
// CAP_SYS_ADMIN: it prints unshare-rc=0 only when no filter is in force.
const seccompProbe = `unshare -U true; echo unshare-rc=$?`

// TestCrunGetsPrecompiledSeccompFilter checks that the first crun sandbox
// compiles containerd's default profile itself, that later crun sandboxes
// get the very filter it compiled through crun's run.oci.seccomp_bpf_data
// annotation, and that the filter is in force either way, in the main
// process and in an exec. runc sandboxes never get the annotation.
func TestCrunGetsPrecompiledSeccompFilter(t *testing.T) {
	h := newHarness(t)
	// The probe itself: without a filter it succeeds, else this test
	// could pass with no filter at all.
	if out := runUnfiltered(t, h, "crun", seccompProbe); !strings.Contains(out, "unshare-rc=0") {
		t.Fatalf("without seccomp the probe should succeed; it printed:\n%s", out)
	}

	probe := runtimeSpec(runtime.RuntimeCrun, seccompProbe+"; exec sleep 300")
	first := h.create(probe)
	if out := h.waitLog(first, "unshare-rc="); !strings.Contains(out, "unshare-rc=1") {
		t.Errorf("first crun sandbox: the profile did not refuse unshare:\n%s", out)
	}
	if got := bpfAnnotation(t, h, first.GetContainerId()); got != "" {
		t.Errorf("first crun sandbox got a precompiled filter (%d bytes of base64) before any was compiled", len(got))
	}
	compiled, err := os.ReadFile(filepath.Join("/run/containerd/runc", h.namespace(), first.GetContainerId(), "seccomp.bpf"))
	if err != nil {
		t.Fatalf("crun's compiled filter: %v", err)
	}

	second := h.create(probe)
	if out := h.waitLog(second, "unshare-rc="); !strings.Contains(out, "unshare-rc=1") {
		t.Errorf("crun sandbox with a precompiled filter: unshare was not refused:\n%s", out)
	}
	if got := bpfAnnotation(t, h, second.GetContainerId()); got != base64.StdEncoding.EncodeToString(compiled) {
		t.Errorf("second crun sandbox's filter annotation (%d bytes of base64) is not the %d-byte program crun compiled for the first",
			len(got), len(compiled))
	}
	// crun exec applies the filter it loaded for the container.
	if out := h.sh(second.GetSandboxId(), seccompProbe); !strings.Contains(out, "unshare-rc=1") {
		t.Errorf("exec in a crun sandbox with a precompiled filter: unshare was not refused: %s", out)
	}

	other := h.create(runtimeSpec(runtime.RuntimeRunc, seccompProbe+"; exec sleep 300"))
	if out := h.waitLog(other, "unshare-rc="); !strings.Contains(out, "unshare-rc=1") {
		t.Errorf("runc sandbox: unshare was not refused:\n%s", out)
	}
	if got := bpfAnnotation(t, h, other.GetContainerId()); got != "" {
		t.Errorf("a runc sandbox got crun's filter annotation")
	}
	for _, sb := range []string{first.GetSandboxId(), second.GetSandboxId(), other.GetSandboxId()} {
		h.delete(sb, 0)
	}
}

// bpfAnnotation returns the precompiled filter a container's spec carries.
func bpfAnnotation(t *testing.T, h *harness, containerID string) string {
	t.Helper()
	c, err := h.cd.LoadContainer(context.Background(), containerID)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Spec(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s.Annotations[runtime.AnnotationSeccompBPF]
}

// runUnfiltered runs script in a plain container of the test image on
// h's containerd, with the OCI runtime binary and containerd's default
// spec, which has no seccomp filter, and returns its output.
func runUnfiltered(t *testing.T, h *harness, binary, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), h.namespace()), time.Minute)
	defer cancel()
	img, err := h.cd.GetImage(ctx, rig.ImageRef)
	if err != nil {
		t.Fatal(err)
	}
	id := h.newID() + "-unfiltered"
	c, err := h.cd.NewContainer(ctx, id,
		containerd.WithSnapshotter(rig.Snapshotter),
		containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime("io.containerd.runc.v2", &options.Options{BinaryName: binary}),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sh", "-c", script)),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
	out := filepath.Join(t.TempDir(), "out")
	task, err := c.NewTask(ctx, cio.LogFile(out))
	if err != nil {
		t.Fatal(err)
	}
	defer task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	exited, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-ctx.Done():
		t.Fatal("the unfiltered container did not exit")
	}
	// The shim may still be copying the output into the file.
	for {
		b, _ := os.ReadFile(out)
		if strings.Contains(string(b), "unshare-rc=") || ctx.Err() != nil {
			return string(b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
