//go:build !fsbhelper

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// TestPoolsOnTheCommandLine runs a controller over two agents, one started
// with --pool p1 and one in the default pool, as a user sees them:
// `fsb ctl agents` shows each one's pool; a sandbox naming a pool nobody
// declared (no SandboxPool is applied, so p1 too) is NotFound with
// the pool named, through `fsb ctl run --pool` and the API, in either mode,
// and nothing of it is left; sandboxes without a pool all land on the
// default pool's agent, though the other has more free slots. On either
// store.
func TestPoolsOnTheCommandLine(t *testing.T) {
	onEachStore(t, testPoolsOnTheCommandLine)
}

func testPoolsOnTheCommandLine(t *testing.T, kind storeKind) {
	_, ns := rig.Containerd(t)
	_, ns2 := rig.Containerd(t)
	dir1, dir2 := t.TempDir(), t.TempDir()
	def := startAgent(t, ns, "default-agent", dir1, "--capacity", "6")
	pooled := startAgent(t, ns2, "p1-agent", dir2, "--pool", "p1", "--runtimes", "runc", "--capacity", "10")
	p := startPlaneOn(t, kind, dir1, []*agentProc{def, pooled})

	// (c) The agents and their pools.
	var rows map[string][]string
	deadline := time.Now().Add(10 * time.Second)
	for {
		rows = map[string][]string{}
		for _, line := range strings.Split(strings.TrimSpace(p.mustCtl("agents")), "\n") {
			f := strings.Fields(line)
			rows[f[0]] = f
		}
		if len(rows) == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := strings.Join(rows["ID"], " "); !strings.HasPrefix(got, "ID POOL STATE ADDRESS") {
		t.Fatalf("fsb ctl agents header %q: want ID POOL STATE ADDRESS ...", got)
	}
	if r := rows["default-agent"]; len(r) < 3 || r[1] != "-" || r[2] != "-" {
		t.Errorf("fsb ctl agents row of the default agent %q: want POOL - and STATE -", r)
	}
	if r := rows["p1-agent"]; len(r) < 7 || r[1] != "p1" || r[2] != "-" || r[6] != "runc" {
		t.Errorf("fsb ctl agents row of the pooled agent %q: want POOL p1, STATE -, RUNTIMES runc", r)
	}
	var listed struct {
		Items []struct {
			AgentID string `json:"agentId"`
			Pool    string `json:"pool"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(p.mustCtl("agents", "-o", "json")), &listed); err != nil {
		t.Fatal(err)
	}
	pools := map[string]string{}
	for _, a := range listed.Items {
		pools[a.AgentID] = a.Pool
	}
	if len(pools) != 2 || pools["p1-agent"] != "p1" || pools["default-agent"] != "" {
		t.Errorf("fsb ctl agents -o json pools %v: want p1-agent in p1, default-agent in none", pools)
	}

	// (a) A pool nobody declared, through the CLI and the API, both modes.
	for _, pool := range []string{"gpu", "p1"} {
		for _, mode := range []string{"fast", "strong"} {
			name := fmt.Sprintf("in-%s-%s", pool, mode)
			out, errOut, code := p.ctl("run", name, "--pool", pool, "--mode", mode, "--image", rig.ImageRef, "--", "sleep", "300")
			if code == 0 || !strings.Contains(errOut, fmt.Sprintf("sandbox pool %q not found", pool)) {
				t.Errorf("fsb ctl run --pool %s --mode %s: exit %d, want an error naming the pool:\n%s%s", pool, mode, code, out, errOut)
			}
			spec := &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"}, PoolRef: pool,
				ConsistencyMode: map[string]fsbv1.ConsistencyMode{"fast": fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST, "strong": fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG}[mode]}
			_, err := p.api.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: name + "-api", Spec: spec}))
			if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), fmt.Sprintf("sandbox pool %q not found", pool)) {
				t.Errorf("CreateSandbox with poolRef %s in mode %s: %v, want NotFound naming the pool", pool, mode, err)
			}
			for _, n := range []string{name, name + "-api"} {
				if sb := p.get(n); sb != nil {
					t.Errorf("a refused create left sandbox %s: %v", n, sb.GetStatus())
				}
			}
		}
	}
	if n := len(def.sandboxes()) + len(pooled.sandboxes()); n != 0 {
		t.Errorf("refused creates left %d sandboxes on the agents", n)
	}

	// (b) No poolRef: the default pool's agent only, in either mode.
	for i := range 6 {
		mode := []string{"fast", "strong"}[i%2]
		name := fmt.Sprintf("plain-%d", i)
		p.mustCtl("run", name, "--mode", mode, "--image", rig.ImageRef, "--", "sleep", "300")
		sb := p.waitFor(name, 10*time.Second, "Running", phaseIs(fsbv1.Phase_PHASE_RUNNING))
		if got := sb.GetStatus().GetAssignedPod(); got != "default-agent" {
			t.Errorf("sandbox %s (%s, no pool) went to %s, want default-agent", name, mode, got)
		}
	}
	if n := len(pooled.sandboxes()); n != 0 {
		t.Errorf("the pooled agent runs %d sandboxes that named no pool", n)
	}
	// The default pool is full now: the pooled agent's free slots do not
	// count for it.
	_, errOut, code := p.ctl("run", "plain-7", "--image", rig.ImageRef, "--", "sleep", "300")
	if code == 0 || !strings.Contains(errOut, "no agent") {
		t.Errorf("a create past the default pool's slots: exit %d, %q; want a refusal", code, errOut)
	}
	if row := agentsRow(t, p, "default-agent"); len(row) < 6 || row[5] != "6/6" {
		t.Errorf("fsb ctl agents row of the default agent %q: want SANDBOXES 6/6", row)
	}
}

// agentsRow returns the fields of agent id's row in `fsb ctl agents`.
func agentsRow(t *testing.T, p *plane, id string) []string {
	t.Helper()
	for _, line := range strings.Split(p.mustCtl("agents"), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == id {
			return f
		}
	}
	return nil
}

// TestPoolFlagsOfTheAgent: an agent refuses to start with a --pool that no
// SandboxPool can be named, or a --runtimes entry that is no runtime, and
// says which flag is wrong.
func TestPoolFlagsOfTheAgent(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--pool", "GPU_Pool"}, `--pool "GPU_Pool": a SandboxPool's name must be a DNS-1123 label`},
		{[]string{"--pool", strings.Repeat("p", 64)}, "at most 63 characters"},
		{[]string{"--runtimes", "runc,kata"}, `"kata" is not a runtime`},
	} {
		out, code := fsb(t, append([]string{"agent", "--http-port", "0", "--insecure-no-auth"}, tc.args...)...)
		if code == 0 || !strings.Contains(out, tc.want) {
			t.Errorf("fsb agent %s: exit %d, %q; want it refused, saying %q", strings.Join(tc.args, " "), code, out, tc.want)
		}
	}
}
