package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

func TestStepsAddOneFeatureEach(t *testing.T) {
	plain := Baseline{Image: "img", Snapshotter: "overlayfs"}
	agent := Agent{Snapshotter: "native", DefaultPidsLimit: 7}
	steps := Steps(plain, agent, "own")
	if len(steps) < 3 || !steps[0].Baseline.plain() || steps[0].Baseline.Namespace != "" {
		t.Fatalf("the first step is not the plain baseline: %+v", steps[0])
	}
	if b := steps[1].Baseline; b.Namespace != "own" || b.Snapshotter != "native" || b.Features != 0 {
		t.Errorf("the second step = %+v; want namespace own, the agent's snapshotter and no feature", b)
	}
	for i := 2; i < len(steps); i++ {
		added := steps[i].Baseline.Features &^ steps[i-1].Baseline.Features
		if added == 0 || added&(added-1) != 0 || steps[i-1].Baseline.Features&^steps[i].Baseline.Features != 0 {
			t.Errorf("step %q adds %b to %q; want exactly one feature", steps[i].Name, added, steps[i-1].Name)
		}
	}
	if last := steps[len(steps)-1].Baseline; last.Features != Equivalent || EquivalentOf(plain, agent, "own").Features != Equivalent {
		t.Errorf("the last step has features %b; want every one (%b)", last.Features, Equivalent)
	}
}

// TestSpecIsTheAgentsMinusInit compares the equivalent baseline's spec with
// the one the agent builds for the same sandbox, and checks that each
// feature left out is out.
func TestSpecIsTheAgentsMinusInit(t *testing.T) {
	agent := Agent{NetNSPath: "/proc/1/ns/net", DefaultPidsLimit: 321}
	b := EquivalentOf(Baseline{Image: "img", Command: []string{"echo", "hi"}, RuntimeName: "crun"}, agent, "own")
	cfg := ocispec.ImageConfig{Env: []string{"PATH=/bin"}}
	got, err := b.spec("c1", "own", "img", cfg)
	if err != nil {
		t.Fatal(err)
	}
	want, err := runtime.BuildSpec(runtime.Config{NetNSPath: agent.NetNSPath, DefaultPidsLimit: 321, InitBinary: "/x"},
		runtime.Sandbox{ID: "c1", Revision: 1, Name: "c1", Spec: &fsbv1.SandboxSpec{Image: "img", Command: []string{"echo", "hi"}, Runtime: "crun"}},
		"img", cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range got.Mounts {
		if m.Destination == runtime.InitPath {
			t.Errorf("init is mounted: %+v", m)
		}
	}
	if strings.Join(got.Process.Args, " ") != "echo hi" || !strings.Contains(strings.Join(want.Process.Args, " "), runtime.InitPath) {
		t.Errorf("args = %q (the agent's without init: %q); want echo hi", got.Process.Args, want.Process.Args)
	}
	if got.Linux.CgroupsPath != "/own/c1" {
		t.Errorf("cgroup = %q; want containerd's default /own/c1", got.Linux.CgroupsPath)
	}
	if got.Linux.Seccomp == nil || len(got.Linux.Seccomp.Syscalls) != len(want.Linux.Seccomp.Syscalls) || !got.Process.NoNewPrivileges ||
		got.Linux.Resources.Pids == nil || got.Linux.Resources.Pids.Limit != 321 || netns(got) != "/proc/1/ns/net" {
		t.Errorf("the equivalent spec lacks one of the agent's seccomp profile, no-new-privileges, pids limit 321 and netns: %+v", got.Linux)
	}
	if fmt.Sprint(got.Process.Capabilities) != fmt.Sprint(want.Process.Capabilities) || got.Hostname != want.Hostname || fmt.Sprint(got.Process.Env) != fmt.Sprint(want.Process.Env) {
		t.Errorf("capabilities, hostname or env differ from the agent's")
	}

	b.Features = FeatureSpec
	bare, err := b.spec("c1", "own", "img", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if bare.Linux.Seccomp != nil || (bare.Linux.Resources != nil && bare.Linux.Resources.Pids != nil) || netns(bare) != "" {
		t.Errorf("FeatureSpec alone keeps a feature: %+v", bare.Linux)
	}
}

func netns(s *specs.Spec) string {
	for _, n := range s.Linux.Namespaces {
		if n.Type == specs.NetworkNamespace {
			return n.Path
		}
	}
	return "none"
}

func TestColdResourcesChangeTheWarmKeyOnly(t *testing.T) {
	for _, warm := range []*fsbv1.Resources{nil, {}, {Pids: 1024}, {Pids: 50, Memory: "64Mi", Cpu: "500m"}} {
		cold := ColdResources(warm, 1024)
		if cold.GetCpu() != warm.GetCpu() || cold.GetMemory() != warm.GetMemory() {
			t.Errorf("ColdResources(%v) = %v: cpu or memory changed", warm, cold)
		}
		// The same limit in effect (the agent applies its default to 0),
		// or for a limit of the user's, one process more.
		eff := func(p int64) int64 {
			if p == 0 {
				return 1024
			}
			return p
		}
		if d := eff(cold.GetPids()) - eff(warm.GetPids()); d != 0 && (warm.GetPids() != 50 || d != 1) {
			t.Errorf("ColdResources(%v) = %v: another pids limit in effect", warm, cold)
		}
		spec := func(r *fsbv1.Resources) *fsbv1.SandboxSpec {
			return &fsbv1.SandboxSpec{Image: "localhost/fsb/busybox:latest", Runtime: "runc", Resources: r}
		}
		wk, ok1 := v1alpha1.WarmKey(spec(warm))
		ck, ok2 := v1alpha1.WarmKey(spec(cold))
		if !ok1 || !ok2 || wk == ck {
			t.Errorf("ColdResources(%v) = %v has the same warm key %s", warm, cold, wk)
		}
	}
}

func TestReportWarmAndAttribution(t *testing.T) {
	r := LoadResult{Mode: "fast", Runtime: "runc", N: 4, Concurrency: 1, Warm: true,
		Create: ms(100, 100, 100, 100), Delete: ms(50, 50, 50, 50),
		WarmCreate: ms(3, 4, 5), WarmDelete: ms(40, 40, 40), WarmHits: 3, WarmMisses: 1,
		Baselines: []BaselineTimes{
			{Name: "plain", Plain: true, Create: ms(80, 80, 80, 80), Delete: ms(30, 30, 30, 30)},
			{Name: "+seccomp", Features: FeatureSpec | FeatureSeccomp, Create: ms(85, 85, 85, 85), Delete: ms(30, 30, 30, 30)},
			{Name: "+fsb's delete", Features: Equivalent, Create: ms(90, 90, 90, 90), Delete: ms(35, 35, 35, 35)},
		}}
	rep := r.Report()
	if rep.Warm == nil || rep.Warm.P50 != 4 || *rep.WarmHits != 3 || *rep.WarmMisses != 1 || rep.WarmDelete.P50 != 40 {
		t.Errorf("warm report = %+v, hits %v, misses %v", rep.Warm, rep.WarmHits, rep.WarmMisses)
	}
	if rep.Baseline.P50 != 90 || rep.PlainBaseline.P50 != 80 || *rep.RatioP50 != 1.11 || *rep.PlainRatioP50 != 1.25 {
		t.Errorf("baselines = %+v / %+v, ratios %v / %v; want 90 and 80, 1.11 and 1.25", rep.Baseline, rep.PlainBaseline, *rep.RatioP50, *rep.PlainRatioP50)
	}
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	table := buf.String()
	for _, want := range []string{"fsb warm hits", "3 hits, 1 misses", "containerd equivalent", "containerd plain", "1.11", "1.25", "+seccomp", "+5.0"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}

	r.WarmHits, r.WarmMisses, r.WarmCreate, r.WarmDelete = 0, 4, nil, nil
	buf.Reset()
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "0 hits, 4 misses (no create claimed a warm sandbox") {
		t.Errorf("a run without hits does not say so:\n%s", buf.String())
	}
	if rep := r.Report(); rep.Warm != nil || *rep.WarmMisses != 4 {
		t.Errorf("without hits warm_ms = %+v, misses %v; want null and 4", rep.Warm, *rep.WarmMisses)
	}
}

// TestEquivalentBaselineRuns runs the equivalent baseline on the rig's
// containerd beside the plain one: the equivalent container runs in its
// own namespace (the image copied there), in this process's network
// namespace, with seccomp, no-new-privileges and the pids limit, and its
// delete sends SIGTERM first; the plain one has none of that but
// no-new-privileges (containerd's default spec sets it).
func TestEquivalentBaselineRuns(t *testing.T) {
	client, _ := rig.Containerd(t)
	_, own := rig.Containerd(t)
	ctx := context.Background()
	ownCtx := namespaces.WithNamespace(ctx, own)
	// The own namespace starts without the image: prepare copies it.
	if err := client.ImageService().Delete(ownCtx, rig.ImageRef, images.SynchronousDelete()); err != nil {
		t.Fatal(err)
	}
	hostNet, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	// The first write holds the evidence, so that it is all there when
	// the delete follows the first byte; then it waits for SIGTERM. It
	// writes only after a while, in which the test reads the container's
	// pids limit from the host.
	script := `trap 'echo term; exit 0' TERM
sleep 0.5
s=$(grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; readlink /proc/self/ns/net)
echo "$s"
while :; do sleep 0.05; done`
	plain := Baseline{Client: client, Image: rig.ImageRef, Snapshotter: rig.Snapshotter, BinaryName: "runc", RuntimeName: "runc",
		Command: []string{"sh", "-c", script}, Resources: &fsbv1.Resources{Pids: 64}, Dir: t.TempDir()}
	const grace = 5 * time.Second
	eq := EquivalentOf(plain, Agent{NetNSPath: fmt.Sprintf("/proc/%d/ns/net", os.Getpid()), Snapshotter: rig.Snapshotter, DefaultPidsLimit: 1024, Grace: grace}, own)
	if err := eq.prepare(ctx); err != nil {
		t.Fatalf("prepare: %v", err)
	}

	// run runs b as container id and returns its output and the pids
	// limit its cgroup had on the host.
	run := func(b Baseline, ns, id string) (string, string, time.Duration) {
		// The last value read before the delete: runc writes the limit
		// after it makes the directory.
		limit := make(chan string, 1)
		stop := make(chan struct{})
		go func() {
			last := ""
			defer func() { limit <- last }()
			for {
				for _, p := range []string{"/sys/fs/cgroup/pids/" + ns + "/" + id + "/pids.max", "/sys/fs/cgroup/" + ns + "/" + id + "/pids.max"} {
					if v, err := os.ReadFile(p); err == nil {
						last = strings.TrimSpace(string(v))
					}
				}
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
		_, del, err := b.Run(ctx, id)
		close(stop)
		if err != nil {
			t.Fatalf("%s Run: %v", id, err)
		}
		out, _ := os.ReadFile(filepath.Join(b.Dir, id+".log"))
		return string(out), <-limit, del
	}

	out, pids, del := run(eq, own, "eq")
	for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2", hostNet, "term"} {
		if !strings.Contains(out, want) {
			t.Errorf("the equivalent container's output lacks %q:\n%s", want, out)
		}
	}
	if pids != "64" {
		t.Errorf("the equivalent container's pids limit = %q; want 64", pids)
	}
	if del >= grace {
		t.Errorf("the delete took %v: the SIGTERM was not taken, the grace period ran out", del)
	}
	if cs, err := client.Containers(ownCtx); err != nil || len(cs) != 0 {
		t.Errorf("containers left in %s: %d, %v", own, len(cs), err)
	}

	out, pids, _ = run(plain, client.DefaultNamespace(), "plain")
	for _, unwanted := range []string{"Seccomp:\t2", hostNet, "term"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("the plain container's output has %q:\n%s", unwanted, out)
		}
	}
	if pids != "max" {
		t.Errorf("the plain container's pids limit = %q; want none (max)", pids)
	}
	if cs, err := client.Containers(ctx); err != nil || len(cs) != 0 {
		t.Errorf("plain containers left: %d, %v", len(cs), err)
	}
}

func ms(vs ...int) []time.Duration {
	var ds []time.Duration
	for _, v := range vs {
		ds = append(ds, time.Duration(v)*time.Millisecond)
	}
	return ds
}
