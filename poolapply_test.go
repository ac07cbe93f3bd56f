//go:build !fsbhelper

package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// TestPoolsApplied: a controller whose agents --agents names declares the
// SandboxPools applied with `fsb ctl apply`, with the embedded store or the
// kube store (in fsb-system, which deploy/ makes). An agent started
// with --pool gpu serves nothing until the pool gpu exists (a create naming
// it is NotFound); after apply it runs the pool's sandboxes; re-apply
// replaces the pool (configured, unchanged); get pools shows it with its
// agent and warm entries; after delete pool a create naming it is NotFound
// again. The pool named default gives the default pool its warm entries and
// is no pool of its own: poolRef default runs on the default agent.
func TestPoolsApplied(t *testing.T) {
	onEachStore(t, testPoolsApplied)
}

func testPoolsApplied(t *testing.T, kind storeKind) {
	_, ns := rig.Containerd(t)
	_, ns2 := rig.Containerd(t)
	dir1, dir2 := t.TempDir(), t.TempDir()
	def := startAgent(t, ns, "default-agent", dir1)
	gpu := startAgent(t, ns2, "gpu-agent", dir2, "--pool", "gpu")
	p := startPlaneOn(t, kind, dir1, []*agentProc{def, gpu})
	ctx := context.Background()

	create := func(name, pool string) error {
		spec := &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"}, PoolRef: pool}
		_, err := p.api.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: name, Spec: spec}))
		return err
	}
	if err := create("early", "gpu"); connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), `sandbox pool "gpu" not found`) {
		t.Fatalf("create naming gpu before it is applied: %v, want NotFound naming the pool", err)
	}

	file := filepath.Join(t.TempDir(), "objects.yaml")
	write := func(body string) {
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`apiVersion: sandbox.fast.io/v1alpha1
kind: SandboxPool
metadata:
  name: gpu
  labels: {tier: fast}
spec:
  warm:
  - image: ` + rig.ImageRef + `
    count: 1
---
apiVersion: sandbox.fast.io/v1alpha1
kind: SandboxPool
metadata: {name: default}
spec:
  warm:
  - {image: ` + rig.ImageRef + `, runtime: runc, count: 2}
---
apiVersion: sandbox.fast.io/v1alpha1
kind: Sandbox
metadata:
  name: applied
  labels: {app: demo}
spec:
  image: ` + rig.ImageRef + `
  command: [sleep, "300"]
  poolRef: gpu
`)
	out := p.mustCtl("apply", "-f", file)
	for _, want := range []string{"sandboxpool/gpu created", "sandboxpool/default created", "sandbox/applied created"} {
		if !strings.Contains(out, want) {
			t.Errorf("fsb ctl apply: %q, want a line %q", out, want)
		}
	}
	sb := p.waitFor("applied", 15*time.Second, "Running", phaseIs(fsbv1.Phase_PHASE_RUNNING))
	if got := sb.GetStatus().GetAssignedPod(); got != "gpu-agent" {
		t.Errorf("the applied sandbox with poolRef gpu runs on %s, want gpu-agent", got)
	}
	if err := create("later", "gpu"); err != nil {
		t.Fatalf("create naming gpu once applied: %v", err)
	}
	if got := p.waitFor("later", 15*time.Second, "Running", phaseIs(fsbv1.Phase_PHASE_RUNNING)).GetStatus().GetAssignedPod(); got != "gpu-agent" {
		t.Errorf("sandbox later (poolRef gpu) runs on %s, want gpu-agent", got)
	}
	if err := create("in-default", "default"); err != nil {
		t.Fatalf("create naming the default pool: %v", err)
	}
	if got := p.waitFor("in-default", 15*time.Second, "Running", phaseIs(fsbv1.Phase_PHASE_RUNNING)).GetStatus().GetAssignedPod(); got != "default-agent" {
		t.Errorf("sandbox in-default (poolRef default) runs on %s, want default-agent", got)
	}

	// The same file again: nothing changes. A changed count and label: the
	// pool is configured, the sandbox's labels replaced.
	out = p.mustCtl("apply", "-f", file)
	for _, want := range []string{"sandboxpool/gpu unchanged", "sandboxpool/default unchanged", "sandbox/applied unchanged"} {
		if !strings.Contains(out, want) {
			t.Errorf("fsb ctl apply again: %q, want a line %q", out, want)
		}
	}
	write(`apiVersion: sandbox.fast.io/v1alpha1
kind: SandboxPool
metadata: {name: gpu}
spec:
  warm:
  - {image: ` + rig.ImageRef + `, count: 3}
---
apiVersion: sandbox.fast.io/v1alpha1
kind: Sandbox
metadata:
  name: applied
  labels: {app: other}
spec:
  image: ` + rig.ImageRef + `
  command: [sleep, "300"]
  poolRef: gpu
`)
	out = p.mustCtl("apply", "-f", file)
	for _, want := range []string{"sandboxpool/gpu configured", "sandbox/applied configured"} {
		if !strings.Contains(out, want) {
			t.Errorf("fsb ctl apply of a changed file: %q, want a line %q", out, want)
		}
	}
	if got := p.get("applied").GetLabels()["app"]; got != "other" {
		t.Errorf("the re-applied sandbox's label app=%q, want other", got)
	}

	// get pools: the table and the objects.
	rows := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(p.mustCtl("get", "pools")), "\n") {
		f := strings.Fields(line)
		rows[f[0]] = f
	}
	if h := strings.Join(rows["NAME"], " "); h != "NAME AGENTS WARM AGE" {
		t.Errorf("fsb ctl get pools header %q, want NAME AGENTS WARM AGE", h)
	}
	if r := rows["gpu"]; len(r) < 3 || r[1] != "1" || r[2] != "3×"+rig.ImageRef {
		t.Errorf("fsb ctl get pools row of gpu %q: want 1 agent and warm 3×%s", r, rig.ImageRef)
	}
	if r := rows["default"]; len(r) < 3 || r[1] != "1" || r[2] != "2×"+rig.ImageRef {
		t.Errorf("fsb ctl get pools row of default %q: want 1 agent (the default one) and warm 2×%s", r, rig.ImageRef)
	}
	var obj struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name, Namespace string
			Labels          map[string]string
		} `json:"metadata"`
		Spec struct {
			Capacity *struct{} `json:"capacity"`
			Warm     []struct {
				Image string
				Count int
			} `json:"warm"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(p.mustCtl("get", "pool", "gpu", "-o", "json")), &obj); err != nil {
		t.Fatal(err)
	}
	if obj.Kind != "SandboxPool" || obj.APIVersion != "sandbox.fast.io/v1alpha1" || obj.Metadata.Namespace != "fsb-system" ||
		len(obj.Metadata.Labels) != 0 || obj.Spec.Capacity != nil || len(obj.Spec.Warm) != 1 || obj.Spec.Warm[0].Count != 3 {
		t.Errorf("fsb ctl get pool gpu -o json: %+v; want the SandboxPool in fsb-system, its labels replaced (none), no capacity, warm count 3", obj)
	}

	// Delete: a create naming it is NotFound again; the running sandboxes
	// go on.
	if out := p.mustCtl("delete", "pool", "gpu"); !strings.Contains(out, "sandboxpool/gpu deleted") {
		t.Errorf("fsb ctl delete pool gpu: %q", out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := create("after-delete", "gpu")
		if connect.CodeOf(err) == connect.CodeNotFound {
			break
		}
		// With the kube store the controller hears of the delete through
		// its watch of the API server, a moment later: a create in
		// between still lands in the pool, and is removed again.
		lag := err == nil && kind == kubeStore
		if (err == nil && !lag) || time.Now().After(deadline) {
			t.Fatalf("create naming gpu after its delete: %v, want NotFound", err)
		}
		if lag {
			p.mustCtl("delete", "after-delete")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, errOut, code := p.ctl("get", "pool", "gpu"); code == 0 || !strings.Contains(errOut, "gpu not found") {
		t.Errorf("fsb ctl get pool gpu after its delete: exit %d, %q", code, errOut)
	}
	if got := p.get("applied").GetStatus().GetPhase(); got != fsbv1.Phase_PHASE_RUNNING {
		t.Errorf("sandbox applied after its pool's delete: %s, want it running on", got)
	}

	// Mistakes name the document.
	write("apiVersion: sandbox.fast.io/v1alpha1\nkind: Sandbox\nmetadata: {name: ok}\nspec: {image: " + rig.ImageRef +
		", command: [sleep, \"300\"]}\n---\napiVersion: sandbox.fast.io/v1alpha1\nkind: Widget\nmetadata: {name: w}\n---\n" +
		"apiVersion: sandbox.fast.io/v1alpha1\nkind: SandboxPool\nmetadata: {name: bad}\nspec: {warm: [{image: " + rig.ImageRef + ", count: -1}]}\n")
	out, errOut, code := p.ctl("apply", "-f", file)
	if code != 1 || !strings.Contains(out, "sandbox/ok created") || !strings.Contains(errOut, `document 2: kind "Widget"`) ||
		!strings.Contains(errOut, "document 3 (sandboxpool/bad)") || !strings.Contains(errOut, "spec.warm[0].count -1") {
		t.Errorf("fsb ctl apply of a file with mistakes: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
}
