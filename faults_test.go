//go:build !fsbhelper

package main

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// countScript is every fault-suite sandbox's command: numbered lines from 1,
// so that a gap or a duplicate in its log shows.
const countScript = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"

// faultConfig sizes the fault suite: a short one for make test, a long one
// (FSB_CHAOS=1, make chaos) with more load and the default timeouts where
// a run can afford them.
type faultConfig struct {
	capacity int // the agent's slots
	workers  int // load workers, each creating and deleting in turn
	// maxLive is how many acknowledged sandboxes a worker keeps before it
	// deletes its oldest: workers*(maxLive+1) plus the two sentinels stay
	// within capacity, so the load never asks for more than is free.
	maxLive int
	pace    time.Duration // a worker's pause between operations
	steady  time.Duration // load before each fault
	rounds  int           // how many times the faults run in turn
	// orphanTimeout is the janitor's orphan timeout.
	orphanTimeout time.Duration
	// settle bounds how long the system may take to be whole again.
	settle time.Duration
	// controller flags after startPlane's short lifecycle settings.
	controller []string
}

func faultSuiteConfig() faultConfig {
	if os.Getenv("FSB_CHAOS") == "1" {
		return faultConfig{
			capacity: 20, workers: 4, maxLive: 3, pace: 100 * time.Millisecond, steady: 10 * time.Second, rounds: 2,
			// The janitor's default (5m) would make a run last hours; the
			// controller's timeouts are its defaults.
			orphanTimeout: 30 * time.Second, settle: 2 * time.Minute,
			controller: []string{"--agent-lost-timeout", "30s", "--agent-heartbeat-interval", "2s",
				"--recreate-backoff", "1s", "--recreate-backoff-max", "30s"},
		}
	}
	return faultConfig{
		capacity: 8, workers: 3, maxLive: 1, pace: 100 * time.Millisecond, steady: 3 * time.Second, rounds: 1,
		orphanTimeout: 2 * time.Second, settle: 45 * time.Second,
	}
}

// TestFaultSuite runs a steady create/delete load on one private containerd,
// one agent and one controller (real processes) and, in turn, kills each
// piece: the agent and the controller with SIGKILL, the controller with
// SIGTERM, containerd with SIGKILL, a sandbox's PID 1, the janitor. After
// each, once the system is whole again, it checks what a user relies on:
// every acknowledged sandbox is there (or ended per its policy), no
// container is left without an object once the janitor has run, no slot or
// port is held twice, the agent, the registry and containerd count alike,
// nothing is left without its sandbox, and the logs written before the
// fault have no gap and no duplicate.
func TestFaultSuite(t *testing.T) {
	began := time.Now()
	cfg := faultSuiteConfig()
	d := rig.PrivateContainerd(t)
	_, ns := rig.ContainerdAt(t, d.Socket)
	dir := t.TempDir()
	agentArgs := []string{"--containerd-socket", d.Socket, "--capacity", strconv.Itoa(cfg.capacity)}
	a := startAgent(t, ns, "agent-1", dir, agentArgs...)
	janitorToken := filepath.Join(dir, "janitor-token")
	if err := os.WriteFile(janitorToken, []byte("janitor-token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startPlane(t, dir, []*agentProc{a}, append([]string{"--janitor-token-file", janitorToken}, cfg.controller...)...)
	s := &faultSuite{t: t, cfg: cfg, d: d, ns: ns, dir: dir, agentArgs: agentArgs, agent: a, p: p, janitorToken: janitorToken,
		load: &load{api: p.api, cfg: cfg, acked: map[string]*tracked{}}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last agent log:\n%s", s.agent.stderr.String())
			if s.janitor != nil {
				t.Logf("janitor log:\n%s", s.janitor.log.String())
			}
		}
	})
	s.janitor = s.startJanitorLoop()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stopLoad := sync.OnceFunc(func() { cancel(); wg.Wait() })
	defer stopLoad()
	for w := range cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.load.work(ctx, w)
		}()
	}

	faults := []struct {
		name   string
		inject func(t *testing.T)
	}{
		{"agent-kill9", s.killAgent},
		{"controller-kill9", func(*testing.T) { s.p.ctrl.kill(); s.p.ctrl.start() }},
		{"controller-sigterm", s.terminateController},
		{"containerd-kill9", func(*testing.T) { s.d.Kill(); s.d.Start() }},
		{"sandbox-pid1-kill9", s.killSandboxPID1},
		{"janitor-kill9", s.killJanitor},
	}
	for round := range cfg.rounds {
		s.makeSentinels(ctx, round)
		for _, f := range faults {
			name := f.name
			if cfg.rounds > 1 {
				name = fmt.Sprintf("%s-%d", f.name, round+1)
			}
			// A failed fault does not stop the suite: the next ones say
			// whether the system recovers from it.
			t.Run(name, func(t *testing.T) { s.run(t, name, f.inject) })
		}
		s.dropSentinels(ctx)
	}
	stopLoad()

	l := s.load
	t.Logf("load: %d acknowledged creates, %d refused or given up, %d acknowledged deletes", l.created, l.refused, l.deleted)
	for _, r := range s.rows {
		t.Log(r)
	}
	for _, p := range l.problems {
		t.Errorf("load: %s", p)
	}
	t.Logf("fault suite took %s", time.Since(began).Round(time.Second))
}

// faultSuite is the system under faults and what the suite learnt of it.
type faultSuite struct {
	t            *testing.T
	cfg          faultConfig
	d            *rig.Daemon
	ns, dir      string
	agentArgs    []string
	agent        *agentProc
	p            *plane
	janitorToken string
	janitor      *janitorProc
	load         *load
	sentinels    []string
	rows         []string // one line per fault, for the lead's table
}

// run is one fault: load, the fault, and the checks once the system is
// whole again.
func (s *faultSuite) run(t *testing.T, name string, inject func(t *testing.T)) {
	time.Sleep(s.cfg.steady) // the load runs for a while before the fault
	before := s.revisions(t)
	inFlight, live := s.load.busy.Load(), s.load.live()
	at := time.Now()
	inject(t)
	whole := s.waitWhole(t, at)

	s.load.gate.Lock() // the checks see a still system
	defer s.load.gate.Unlock()
	lost := s.lostOnes()
	for _, l := range lost {
		t.Errorf("acknowledged sandbox lost: %s", l)
	}
	orphans, reaped := s.checkOrphans(t)
	s.checkCounts(t)
	s.checkLeftovers(t)
	logs := s.checkLogs(t, before)
	row := fmt.Sprintf("fault=%s in_flight=%d live=%d lost=%d whole_after=%dms orphans=%d logs_checked=%d janitor=%q",
		name, inFlight, live, len(lost), whole.Milliseconds(), orphans, logs, reaped)
	s.rows = append(s.rows, row)
	t.Log(row)
}

// killAgent kills the agent with SIGKILL and starts it again with the same
// ID, port and directories.
func (s *faultSuite) killAgent(*testing.T) {
	s.agent.kill()
	// restartAgent registers its clean-up with the suite's test: the agent
	// must outlive this fault's subtest.
	s.agent = restartAgent(s.t, s.agent, s.ns, "agent-1", s.dir, s.agentArgs...)
}

// terminateController stops the controller with SIGTERM, as a rolling
// update would, and starts it again.
func (s *faultSuite) terminateController(t *testing.T) {
	c := s.p.ctrl
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the controller is still running 20s after SIGTERM\n%s", c.log.String())
	}
	c.mu.Lock()
	c.cmd = nil
	c.mu.Unlock()
	c.start()
}

// killSandboxPID1 kills PID 1 of a running Manual sentinel and of a
// running AutoRecreate one: the first ends Failed, the second runs again
// as a new revision.
func (s *faultSuite) killSandboxPID1(t *testing.T) {
	cd, err := containerd.New(s.d.Socket, containerd.WithDefaultNamespace(s.ns), containerd.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cd.Close()
	ctx := context.Background()
	for _, name := range s.sentinels {
		sb := s.get(t, name)
		if sb == nil || sb.GetStatus().GetPhase() != fsbv1.Phase_PHASE_RUNNING {
			t.Fatalf("sentinel %s is not running before its PID 1 is killed: %v", name, sb.GetStatus())
		}
		id, rev := sb.GetStatus().GetSandboxId(), sb.GetStatus().GetRevision()
		c, err := cd.LoadContainer(ctx, runtime.ContainerID(id, rev))
		if err != nil {
			t.Fatal(err)
		}
		task, err := c.Task(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(int(task.Pid()), syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 PID 1 of %s (pid %d): %v", name, task.Pid(), err)
		}
		s.load.mu.Lock()
		e := s.load.acked[name]
		if e.auto {
			e.revision = rev + 1
		} else {
			e.failed = true
		}
		s.load.mu.Unlock()
	}
}

// killJanitor kills the janitor running in its loop with SIGKILL and starts
// it again.
func (s *faultSuite) killJanitor(t *testing.T) {
	select {
	case <-s.janitor.done:
		t.Fatalf("the janitor's loop had ended before it was killed:\n%s", s.janitor.log.String())
	default:
	}
	s.janitor.kill()
	s.janitor = s.startJanitorLoop()
}

// makeSentinels creates the two sandboxes that live through a round of
// faults: a FAST Manual one and a STRONG AutoRecreate one, the targets of
// the PID 1 kill.
func (s *faultSuite) makeSentinels(ctx context.Context, round int) {
	t := s.t
	s.sentinels = nil
	for _, auto := range []bool{false, true} {
		name := fmt.Sprintf("keep-manual-%d", round)
		spec := &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sh", "-c", countScript}}
		if auto {
			name = fmt.Sprintf("keep-auto-%d", round)
			spec.FailurePolicy = fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE
			spec.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG
		}
		if !s.load.create(ctx, name, spec) {
			t.Fatalf("sentinel %s was not created: %v", name, s.load.problems)
		}
		s.sentinels = append(s.sentinels, name)
	}
}

// dropSentinels deletes a round's sentinels, so that the next round's fit.
func (s *faultSuite) dropSentinels(ctx context.Context) {
	for _, name := range s.sentinels {
		s.load.delete(ctx, name)
	}
}

// revisions returns each listed sandbox's revision by name.
func (s *faultSuite) revisions(t *testing.T) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, sb := range s.list(t) {
		out[sb.GetName()] = sb.GetStatus().GetRevision()
	}
	return out
}

func (s *faultSuite) list(t *testing.T) []*fsbv1.Sandbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.p.api.ListSandboxes(ctx, connect.NewRequest(&fsbv1.ListSandboxesRequest{}))
	if err != nil {
		t.Fatalf("list sandboxes: %v", err)
	}
	return resp.Msg.GetSandboxes()
}

func (s *faultSuite) get(t *testing.T, name string) *fsbv1.Sandbox {
	t.Helper()
	resp, err := s.p.api.GetSandbox(context.Background(), connect.NewRequest(&fsbv1.GetSandboxRequest{Name: name}))
	if connect.CodeOf(err) == connect.CodeNotFound {
		return nil
	}
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return resp.Msg.GetSandbox()
}

// waitWhole waits until the system is whole again — the controller and
// the agent Ready, the registry holding the agent's sandboxes as the agent
// reports them, every acknowledged sandbox listed as its policy says — and
// returns how long that took from the fault at at. Right after a kill the
// controller may still list everything as running: the registry's view of
// the agent is what shows it has noticed, and caught up.
func (s *faultSuite) waitWhole(t *testing.T, at time.Time) time.Duration {
	t.Helper()
	deadline := at.Add(s.cfg.settle)
	var why []string
	for {
		why = s.notWhole(t)
		if len(why) == 0 {
			return time.Since(at)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not whole again %s after the fault: %v", s.cfg.settle, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// notWhole says what is not whole yet (the janitor's loop, when it runs,
// is part of the system); empty means whole.
func (s *faultSuite) notWhole(t *testing.T) []string {
	t.Helper()
	urls := []string{s.p.ctrl.health, s.agent.base + "/readyz"}
	if s.janitor != nil {
		urls = append(urls, s.janitor.ready)
	}
	for _, url := range urls {
		resp, err := http.Get(url)
		if err != nil {
			return []string{err.Error()}
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return []string{fmt.Sprintf("%s: HTTP %d", url, resp.StatusCode)}
		}
	}
	n, err := s.agentCount()
	if err != nil {
		return []string{err.Error()}
	}
	if used := s.cfg.capacity - metricSum(t, s.p.metrics, "fsb_registry_free_slots "); used != n {
		return []string{fmt.Sprintf("the registry holds %d slots of the agent, the agent runs %d sandboxes", used, n)}
	}
	return s.lostOnes()
}

// agentCount asks the agent how many sandboxes it holds.
func (s *faultSuite) agentCount() (int, error) {
	client := fsbv1connect.NewAgentServiceClient(http.DefaultClient, s.agent.base, connect.WithInterceptors(auth.Bearer(s.agent.token)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.GetStatus(ctx, connect.NewRequest(&fsbv1.GetStatusRequest{}))
	if err != nil {
		return 0, fmt.Errorf("agent status: %w", err)
	}
	return len(resp.Msg.GetStatus().GetSandboxes()), nil
}

// lostOnes lists the acknowledged sandboxes (other than those being
// deleted) that are not listed as their policy says: running, at their
// revision (Manual) or a later one (AutoRecreate), or Failed once their
// PID 1 was killed. An error listing counts as all of them.
func (s *faultSuite) lostOnes() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.p.api.ListSandboxes(ctx, connect.NewRequest(&fsbv1.ListSandboxesRequest{}))
	if err != nil {
		return []string{fmt.Sprintf("cannot list: %v", err)}
	}
	listed := map[string]*fsbv1.Sandbox{}
	for _, sb := range resp.Msg.GetSandboxes() {
		listed[sb.GetName()] = sb
	}
	s.load.mu.Lock()
	defer s.load.mu.Unlock()
	var out []string
	for _, name := range slices.Sorted(maps.Keys(s.load.acked)) {
		e := s.load.acked[name]
		if e.deleting {
			continue
		}
		sb := listed[name]
		st := sb.GetStatus()
		switch {
		case sb == nil:
			out = append(out, name+": not listed")
		case st.GetSandboxId() != e.id:
			out = append(out, fmt.Sprintf("%s: sandbox ID %s, acknowledged as %s", name, st.GetSandboxId(), e.id))
		case e.failed:
			if st.GetPhase() != fsbv1.Phase_PHASE_FAILED {
				out = append(out, fmt.Sprintf("%s: %s, want Failed after its PID 1 was killed", name, st.GetPhase()))
			}
		case st.GetPhase() != fsbv1.Phase_PHASE_RUNNING:
			out = append(out, fmt.Sprintf("%s: %s at revision %d (%s)", name, st.GetPhase(), st.GetRevision(), st.GetMessage()))
		case e.auto && st.GetRevision() < e.revision, !e.auto && st.GetRevision() != e.revision:
			out = append(out, fmt.Sprintf("%s: running at revision %d, want %d", name, st.GetRevision(), e.revision))
		}
	}
	return out
}

// checkOrphans runs the janitor once (past the orphan timeout, as often as
// it takes) until containerd holds exactly the objects' containers, and
// returns how many containers lack an object at the end and the janitor's
// last summary.
func (s *faultSuite) checkOrphans(t *testing.T) (int, string) {
	t.Helper()
	deadline := time.Now().Add(s.cfg.orphanTimeout + 15*time.Second)
	for {
		summary := s.janitorOnce(t)
		want := map[string]bool{}
		for _, sb := range s.list(t) {
			want[runtime.ContainerID(sb.GetStatus().GetSandboxId(), sb.GetStatus().GetRevision())] = true
		}
		got := readNodeState(t, s.d.Socket, s.ns, "").Containers
		var orphans, missing []string
		for id := range got {
			if !want[id] {
				orphans = append(orphans, id)
			}
		}
		for id := range want {
			if !got[id] {
				missing = append(missing, id)
			}
		}
		if len(orphans) == 0 && len(missing) == 0 {
			return 0, summary
		}
		if time.Now().After(deadline) {
			t.Errorf("past the orphan timeout and the janitor, containers without an object: %v; objects without a container: %v", orphans, missing)
			return len(orphans), summary
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// checkCounts compares the agent's count of its sandboxes (its status and
// its metric), the registry's (its used slots and ListAgents), containerd's
// containers and the objects, and checks that no sandbox ID or exposed
// port is held twice on the agent.
func (s *faultSuite) checkCounts(t *testing.T) {
	t.Helper()
	// The registry follows the agent's status stream: give it a moment to
	// catch up with what the agent reports.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		agents, err := s.p.api.ListAgents(ctx, connect.NewRequest(&fsbv1.ListAgentsRequest{}))
		cancel()
		if err != nil {
			t.Fatalf("list agents: %v", err)
		}
		if len(agents.Msg.GetAgents()) != 1 {
			t.Fatalf("ListAgents: %d agents, want 1", len(agents.Msg.GetAgents()))
		}
		listed := agents.Msg.GetAgents()[0]
		agentCount, err := s.agentCount()
		if err != nil {
			t.Fatal(err)
		}
		var problems []string
		ids, ports := map[string]bool{}, map[int32]string{}
		for _, sb := range listed.GetSandboxes() {
			if ids[sb.GetSandboxId()] {
				problems = append(problems, "sandbox "+sb.GetSandboxId()+" held twice")
			}
			ids[sb.GetSandboxId()] = true
			for _, port := range sb.GetSpec().GetExposedPorts() {
				if other, taken := ports[port]; taken {
					problems = append(problems, fmt.Sprintf("port %d held by %s and %s", port, other, sb.GetName()))
				}
				ports[port] = sb.GetName()
			}
		}
		counts := map[string]int{
			"ListAgents":            len(listed.GetSandboxes()),
			"registry used slots":   s.cfg.capacity - metricSum(t, s.p.metrics, "fsb_registry_free_slots "),
			"agent status":          agentCount,
			"agent metric":          metricSum(t, s.agent.metrics, "fsb_agent_sandboxes "),
			"containerd containers": len(readNodeState(t, s.d.Socket, s.ns, "").Containers),
			"objects":               len(s.list(t)),
		}
		n := counts["objects"]
		for _, c := range counts {
			if c != n {
				problems = append(problems, fmt.Sprintf("counts differ: %v", counts))
				break
			}
		}
		if n > s.cfg.capacity {
			problems = append(problems, fmt.Sprintf("%d sandboxes on an agent of capacity %d", n, s.cfg.capacity))
		}
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range problems {
				t.Error(p)
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkLeftovers checks that containerd and the host hold no task,
// snapshot, shim or mount without its sandbox once the janitor has run
// past the orphan timeout (it removes only what is older).
func (s *faultSuite) checkLeftovers(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(s.cfg.orphanTimeout + 10*time.Second)
	for {
		state := readNodeState(t, s.d.Socket, s.ns, "")
		left := state.leftovers()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("left without their sandbox after the janitor: %v (%s)", left, state.count())
			return
		}
		time.Sleep(500 * time.Millisecond)
		s.janitorOnce(t)
	}
}

// checkLogs reads, through fsb ctl logs, the log of the revision each
// still acknowledged sandbox ran at the fault: consecutive numbers from 1,
// no gap, no duplicate.
// It returns how many logs it read.
func (s *faultSuite) checkLogs(t *testing.T, before map[string]int64) int {
	t.Helper()
	read := 0
	s.load.mu.Lock()
	names := slices.Sorted(maps.Keys(s.load.acked))
	s.load.mu.Unlock()
	for _, name := range names {
		rev := before[name]
		if rev == 0 {
			continue // not yet placed at the fault (or acknowledged after it): nothing ran before it
		}
		read++
		out, errOut, code := s.p.ctl("logs", name, "--revision", strconv.FormatInt(rev, 10))
		if code != 0 {
			t.Errorf("fsb ctl logs %s --revision %d: exit %d: %s", name, rev, code, errOut)
			continue
		}
		if err := consecutive(out); err != nil {
			t.Errorf("log of %s revision %d: %v", name, rev, err)
		}
	}
	return read
}

// consecutive checks that out is the lines 1, 2, 3, ... and holds one at least.
func consecutive(out string) error {
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if out == "" {
		return fmt.Errorf("no line")
	}
	for i, l := range lines {
		if l != strconv.Itoa(i+1) {
			return fmt.Errorf("line %d is %q, want %d (of %d lines)", i+1, l, i+1, len(lines))
		}
	}
	return nil
}

// janitorArgs are `fsb janitor`'s arguments for this suite's node.
func (s *faultSuite) janitorArgs(extra ...string) []string {
	return append([]string{"janitor", "--orphan-timeout", s.cfg.orphanTimeout.String(),
		"--server", s.p.server, "--token-file", s.janitorToken,
		"--containerd-socket", s.d.Socket, "--containerd-namespace", s.ns,
		"--log-dir", filepath.Join(s.dir, "logs"), "--log-format", "json"}, extra...)
}

// janitorOnce runs one janitor pass and returns its summary line.
func (s *faultSuite) janitorOnce(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(rig.FsbBinary(t), s.janitorArgs("--once")...)
	var errOut rig.Buffer
	cmd.Stderr = &errOut
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fsb janitor --once: %v\n%s", err, errOut.String())
	}
	return strings.TrimSpace(string(out))
}

// janitorProc is `fsb janitor` running its loop.
type janitorProc struct {
	cmd   *exec.Cmd
	done  chan struct{}
	log   *rig.Buffer
	ready string // its /readyz URL: ready once its first pass has ended
}

// startJanitorLoop starts the janitor's loop, a pass a second, and waits
// until its first pass has ended.
func (s *faultSuite) startJanitorLoop() *janitorProc {
	t := s.t
	port := freePort(t)
	j := &janitorProc{done: make(chan struct{}), log: &rig.Buffer{}, ready: fmt.Sprintf("http://127.0.0.1:%d/readyz", port)}
	j.cmd = exec.Command(rig.FsbBinary(t), s.janitorArgs("--interval", "1s", "--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", port))...)
	j.cmd.Stdout, j.cmd.Stderr = j.log, j.log
	if err := j.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { j.cmd.Wait(); close(j.done) }()
	t.Cleanup(j.kill)
	waitReady(t, http.DefaultClient, j.ready, j.log)
	return j
}

// kill kills the janitor with SIGKILL and waits until it is gone.
func (j *janitorProc) kill() {
	j.cmd.Process.Kill()
	<-j.done
}

// tracked is a sandbox whose create was acknowledged and whose delete was
// not (yet).
type tracked struct {
	id   string
	auto bool // AutoRecreate: may run at a later revision
	// revision is the one it runs at (Manual) or the least (AutoRecreate).
	revision int64
	failed   bool // ended Failed: its PID 1 was killed
	deleting bool // a delete is under way: it may be gone any moment
}

// load is the steady create/delete load: workers create sandboxes, keep a
// few, and delete their oldest. Creates and deletes are retried while the
// system is away, as a client would; a create is idempotent by name and
// spec.
type load struct {
	api fsbv1connect.FastPathServiceClient
	cfg faultConfig
	// gate holds workers back while the suite checks: each operation
	// holds it for reading.
	gate sync.RWMutex
	busy atomic.Int32 // operations under way

	mu                        sync.Mutex
	acked                     map[string]*tracked
	created, refused, deleted int
	problems                  []string
}

func (l *load) live() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *load) problem(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.problems = append(l.problems, fmt.Sprintf(format, args...))
}

// work is one worker: FAST mostly, some STRONG, a few AutoRecreate, some
// asking for a port from a small shared pool (a taken one is refused).
func (l *load) work(ctx context.Context, w int) {
	var mine []string
	for i := 0; ctx.Err() == nil; i++ {
		l.gate.RLock()
		l.busy.Add(1)
		name := fmt.Sprintf("load-%d-%d", w, i)
		spec := &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sh", "-c", countScript}}
		if i%3 == 2 {
			spec.FailurePolicy = fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE
		}
		if i%4 == 3 {
			spec.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG
		} else {
			spec.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST
		}
		if i%5 == 0 {
			spec.ExposedPorts = []int32{int32(32100 + (w+i)%2)}
		}
		if l.create(ctx, name, spec) {
			mine = append(mine, name)
		}
		if len(mine) > l.cfg.maxLive {
			l.delete(ctx, mine[0])
			mine = mine[1:]
		}
		l.busy.Add(-1)
		l.gate.RUnlock()
		select {
		case <-ctx.Done():
		case <-time.After(l.cfg.pace):
		}
	}
}

// create creates a sandbox, retrying while the system is away, and says
// whether it was acknowledged. One given up is deleted, in case an earlier
// try made it.
func (l *load) create(ctx context.Context, name string, spec *fsbv1.SandboxSpec) bool {
	deadline := time.Now().Add(l.cfg.settle)
	for {
		callCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
		resp, err := l.api.CreateSandbox(callCtx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: name, Spec: spec}))
		cancel()
		if err == nil {
			st := resp.Msg.GetSandbox().GetStatus()
			l.mu.Lock()
			l.acked[name] = &tracked{id: st.GetSandboxId(), revision: st.GetRevision(),
				auto: spec.GetFailurePolicy() == fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE}
			l.created++
			l.mu.Unlock()
			return true
		}
		switch code := connect.CodeOf(err); {
		case code == connect.CodeResourceExhausted, code == connect.CodeInvalidArgument,
			code == connect.CodeAlreadyExists, ctx.Err() != nil, time.Now().After(deadline):
			if code != connect.CodeResourceExhausted && ctx.Err() == nil {
				l.problem("create %s given up: %v", name, err)
			}
			l.mu.Lock()
			l.refused++
			l.mu.Unlock()
			l.remove(ctx, name)
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// delete deletes an acknowledged sandbox, retrying while the system is
// away. NotFound at the first try means the sandbox was lost; after a
// failed try it means that try did it.
func (l *load) delete(ctx context.Context, name string) {
	l.mu.Lock()
	e := l.acked[name]
	if e == nil {
		l.mu.Unlock()
		return
	}
	e.deleting = true
	l.mu.Unlock()
	deadline := time.Now().Add(l.cfg.settle)
	for try := 0; ; try++ {
		err := l.deleteOnce(ctx, name)
		code := connect.CodeOf(err)
		if err == nil || code == connect.CodeNotFound {
			l.mu.Lock()
			delete(l.acked, name)
			l.deleted++
			l.mu.Unlock()
			if err != nil && try == 0 {
				l.problem("acknowledged sandbox %s was not found at its delete (lost)", name)
			}
			return
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			if ctx.Err() == nil {
				l.problem("delete %s never acknowledged: %v", name, err)
			}
			l.mu.Lock()
			e.deleting = false
			l.mu.Unlock()
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// remove deletes what may be left of a create given up: whatever a retry
// answers, it is not the suite's to track.
func (l *load) remove(ctx context.Context, name string) {
	deadline := time.Now().Add(l.cfg.settle)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		err := l.deleteOnce(ctx, name)
		if err == nil || connect.CodeOf(err) == connect.CodeNotFound {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (l *load) deleteOnce(ctx context.Context, name string) error {
	grace := int32(2)
	callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := l.api.DeleteSandbox(callCtx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{Name: name, GracePeriodSeconds: &grace}))
	return err
}

// TestCreatesCutByContainerdLeaveNothing: creates that containerd's death
// cuts short are answered with an error; their roll back fails too while
// containerd is down, and once it is back the agent rolls them back by
// itself (before, a half-made container stayed, holding its slot, until
// the agent's next start). Only a start that ran, its answer lost, may
// leave a running sandbox. Creates answered with success keep running.
func TestCreatesCutByContainerdLeaveNothing(t *testing.T) {
	d := rig.PrivateContainerd(t)
	_, ns := rig.ContainerdAt(t, d.Socket)
	a := startAgent(t, ns, "agent-1", t.TempDir(), "--containerd-socket", d.Socket, "--capacity", "200")
	client := fsbv1connect.NewAgentServiceClient(http.DefaultClient, a.base, connect.WithInterceptors(auth.Bearer(a.token)))
	failed, made := map[string]bool{}, map[string]bool{}
	for round := 0; round < 3 && len(failed) == 0; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var mu sync.Mutex
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil && i < 40; i++ {
					id := fmt.Sprintf("sb-r%d-w%d-%d", round, w, i)
					_, err := client.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{
						SandboxId: id, Revision: 1, Namespace: "default", Name: id,
						Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"}}}))
					mu.Lock()
					if err != nil {
						failed[id] = true
					} else {
						made[id] = true
					}
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
		time.Sleep(700 * time.Millisecond)
		d.Kill()
		cancel()
		wg.Wait()
		d.Start()
		waitReady(t, http.DefaultClient, a.base+"/readyz", a.stderr)
	}
	if len(failed) == 0 {
		t.Fatal("containerd's death cut no create short in 3 rounds")
	}
	// Two of the agent's resyncs (runtime.ResyncInterval): a task whose
	// state containerd does not know right after its restart is looked at
	// again at the next one.
	deadline := time.Now().Add(2*runtime.ResyncInterval + 5*time.Second)
	for {
		state, left := readNodeState(t, d.Socket, ns, ""), []string(nil)
		for id := range failed {
			cid := runtime.ContainerID(id, 1)
			// A start that ran, whose answer containerd's death lost,
			// leaves a running sandbox: the agent reports it, and a retry
			// or a delete decides. A half-made one must go.
			if state.Containers[cid] && state.Tasks[cid] != containerd.Running {
				left = append(left, id)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d creates answered with an error still have a container that runs nothing, two resyncs after containerd came back: %v\nagent log:\n%s",
				len(left), len(failed), left, a.stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	running := a.sandboxes()
	for id := range made {
		if ph := running[id]["phase"]; ph != "PHASE_RUNNING" {
			t.Errorf("acknowledged create %s: phase %v after containerd's restart, want running", id, ph)
		}
	}
	t.Logf("%d creates cut short and rolled back, %d acknowledged and running", len(failed), len(made))
}
