//go:build !fsbhelper

package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/agent"
	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/bench"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// Churn's slack: how much the goroutines and open fds of the agent and of
// the controller may grow between cycle 50 and the end. Both are read
// with the system idle (every sandbox deleted, the test's idle connections
// closed) and once two reads in a row agree, so what is left is the
// processes' own steady state: the controller's status stream to the
// agent, the informer, the store, the servers' listeners, the Go runtime.
// Measured here over 200 and 1000 cycles, the two points differ by a few
// at most (an HTTP/2 connection or timer that comes and goes). The slack
// is a few times that, and still at most a tenth of the cycles run
// between the two points: a leak of one goroutine or fd per cycle (150
// and more) fails by far.
const (
	churnGoroutineSlack = 10
	churnFDSlack        = 5
)

// procStats is what the churn test measures of one process.
type procStats struct {
	goroutines, fds int
	rss             int64 // bytes
}

// readProcStats reads the goroutines of the process at pid from its pprof
// server, and its open fds and resident memory from /proc.
func readProcStats(t *testing.T, pid int, pprof string) procStats {
	t.Helper()
	resp, err := http.Get(pprof + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("goroutines of pid %d: %v", pid, err)
	}
	defer resp.Body.Close()
	first, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		t.Fatalf("goroutines of pid %d: %v", pid, err)
	}
	// "goroutine profile: total 42"
	_, total, ok := strings.Cut(strings.TrimSpace(first), "total ")
	n, err := strconv.Atoi(total)
	if !ok || err != nil {
		t.Fatalf("goroutines of pid %d: no total in %q", pid, first)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("fds of pid %d: %v", pid, err)
	}
	return procStats{goroutines: n, fds: len(fds), rss: procStatusKB(t, pid, "VmRSS") << 10}
}

// settledStats reads the stats of pid until two reads in a row agree on
// goroutines and fds (what is shutting down has gone), for at most a few
// seconds, and returns the last read.
func settledStats(t *testing.T, pid int, pprof string) procStats {
	t.Helper()
	last := readProcStats(t, pid, pprof)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		s := readProcStats(t, pid, pprof)
		if s.goroutines == last.goroutines && s.fds == last.fds {
			return s
		}
		last = s
	}
	return last
}

// TestChurn runs workers doing create -> first output -> delete through
// the controller's API (the load driver behind `fsb ctl bench`) against
// one agent and one controller, real processes, and checks that the churn
// leaks nothing: goroutines and open fds of both at the end are within a
// small slack of what they were at cycle 50, and the namespace holds no
// container, task, snapshot, shim or mount afterwards, nor, once the
// agent's log retention has passed, any log file. Half the sandboxes of
// each stretch exit by themselves before their delete, half are killed by
// it, so both ends of a sandbox are churned. 200 cycles; 1000 with
// FSB_CHAOS=1.
func TestChurn(t *testing.T) {
	// One spare slot: a deleted sandbox's slot must be free when its
	// delete has answered (a status sent before the delete, read after the
	// slot's release, once took it again: pkg/agentlink).
	const (
		workers   = 4
		capacity  = 5
		warmup    = 50
		retention = time.Second
	)
	cycles := 200
	if os.Getenv("FSB_CHAOS") == "1" {
		cycles = 1000
	}
	_, ns := rig.Containerd(t)
	socket := rig.Env(t, rig.EnvSocket)
	dir := t.TempDir()
	logDir := filepath.Join(dir, "logs")

	agentStart := time.Now()
	agentPprof := freePort(t)
	agentArgs := []string{"--capacity", strconv.Itoa(capacity), "--log-retention", retention.String(),
		"--pprof-address", fmt.Sprintf("127.0.0.1:%d", agentPprof)}
	a := startAgent(t, ns, "churn-agent", dir, agentArgs...)
	ctrlPprof := freePort(t)
	ctrl, server := newControllerProc(t, dir, a, "--pprof-address", fmt.Sprintf("127.0.0.1:%d", ctrlPprof))
	ctrl.start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s", ctrl.log.String())
			t.Logf("agent log:\n%s", a.stderr.String())
		}
	})
	ctrl.mu.Lock()
	ctrlPid := ctrl.cmd.Process.Pid
	ctrl.mu.Unlock()
	agentPid := a.cmd.Process.Pid

	// The test's own transport, so that its idle connections can be closed
	// before each measure: the servers' goroutines for them must not count.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	api := fsbv1connect.NewFastPathServiceClient(&http.Client{Transport: transport}, server,
		connect.WithInterceptors(auth.Bearer("user-token-1")))

	var creates []time.Duration
	done := 0
	// churn runs n more cycles, half of sandboxes that exit at once, half
	// of ones still running when they are deleted.
	churn := func(n int) {
		t.Helper()
		for i, command := range [][]string{
			{"echo", "hello"},
			{"sh", "-c", "echo hello; exec sleep 300"},
		} {
			k := n / 2
			if i == 1 {
				k = n - n/2
			}
			r, err := bench.Load(context.Background(), api, bench.LoadOptions{
				N: k, Concurrency: min(workers, k), Image: rig.ImageRef, Command: command,
				LogDir: logDir, Prefix: fmt.Sprintf("churn-%d", done), StepTimeout: 30 * time.Second,
			})
			if err == nil {
				err = r.Err()
			}
			if err != nil {
				t.Fatalf("cycles %d to %d: %v", done, done+k, err)
			}
			creates = append(creates, r.Create...)
			done += k
		}
	}
	// measure waits until every sandbox is gone from containerd, closes
	// the test's idle connections and reads both processes once they
	// settle.
	measure := func() (agentStats, ctrlStats procStats) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for s := readNodeState(t, socket, ns, ""); len(s.Containers) > 0; s = readNodeState(t, socket, ns, "") {
			if time.Now().After(deadline) {
				t.Fatalf("after %d cycles sandboxes are still there: %s", done, s.count())
			}
			time.Sleep(100 * time.Millisecond)
		}
		transport.CloseIdleConnections()
		return settledStats(t, agentPid, fmt.Sprintf("http://127.0.0.1:%d", agentPprof)),
			settledStats(t, ctrlPid, fmt.Sprintf("http://127.0.0.1:%d", ctrlPprof))
	}

	start := time.Now()
	churn(warmup)
	agent50, ctrl50 := measure()
	churn(cycles - warmup)
	took := time.Since(start)
	lastDelete := time.Now()
	agentEnd, ctrlEnd := measure()

	s := bench.Summarize(creates)
	var table strings.Builder
	fmt.Fprintf(&table, "churn: %d cycles, %d workers, capacity %d, in %v; create -> first output p50 %.1f ms, p90 %.1f ms\n",
		done, workers, capacity, took.Round(time.Millisecond), bench.Millis(s.P50), bench.Millis(s.P90))
	fmt.Fprintf(&table, "| | goroutines | fds | RSS |\n|---|---|---|---|\n")
	for _, row := range []struct {
		name string
		s    procStats
	}{
		{"agent, cycle 50", agent50}, {fmt.Sprintf("agent, cycle %d", done), agentEnd},
		{"controller, cycle 50", ctrl50}, {fmt.Sprintf("controller, cycle %d", done), ctrlEnd},
	} {
		fmt.Fprintf(&table, "| %s | %d | %d | %.1f MB |\n", row.name, row.s.goroutines, row.s.fds, float64(row.s.rss)/(1<<20))
	}
	t.Log(table.String())

	for _, c := range []struct {
		what      string
		at50, end int
		slack     int
	}{
		{"agent goroutines", agent50.goroutines, agentEnd.goroutines, churnGoroutineSlack},
		{"agent fds", agent50.fds, agentEnd.fds, churnFDSlack},
		{"controller goroutines", ctrl50.goroutines, ctrlEnd.goroutines, churnGoroutineSlack},
		{"controller fds", ctrl50.fds, ctrlEnd.fds, churnFDSlack},
	} {
		if c.end-c.at50 > c.slack {
			t.Errorf("%s grew from %d at cycle 50 to %d at cycle %d: more than the slack of %d", c.what, c.at50, c.end, done, c.slack)
		}
	}

	// Every sandbox was deleted: nothing at all is left, leftover or not.
	state := readNodeState(t, socket, ns, logDir)
	if got := state.leftovers(); len(got) > 0 {
		t.Errorf("left behind: %v", got)
	}
	if len(state.Containers)+len(state.Tasks)+len(state.Snapshots)+len(state.Shims)+len(state.Mounts) > 0 {
		t.Errorf("after the churn the namespace holds %s", state.count())
	}

	// The agent removes a deleted sandbox's logs once the retention has
	// passed since they were last written, at its start and every
	// agent.DefaultLogSweepInterval (a minute; no flag sets it). Until the
	// first periodic sweep every revision's log is there; after it, only
	// those written in the last retention before it can be.
	switch since := time.Since(agentStart); {
	case since < agent.DefaultLogSweepInterval && len(state.LogFiles) != done:
		t.Errorf("%d log files after %d cycles, before the agent's first sweep: want one per revision", len(state.LogFiles), done)
	case since > agent.DefaultLogSweepInterval+20*time.Second && len(state.LogFiles) >= done:
		t.Errorf("%d log files after %d cycles in %v: the agent's periodic sweep removed none", len(state.LogFiles), done, since.Round(time.Second))
	}
	// The sweep at the start of a restarted agent removes the rest.
	time.Sleep(time.Until(lastDelete.Add(retention)))
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a.done:
		a.done <- err // for the cleanup
		if err != nil {
			t.Errorf("the agent exited with %v after SIGTERM", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the agent was still running 15s after SIGTERM")
	}
	restartAgent(t, a, ns, "churn-agent", dir, agentArgs...)
	if left := readNodeState(t, socket, ns, logDir).LogFiles; len(left) > 0 {
		t.Errorf("%d log files are left once the retention has passed, e.g. %v", len(left), left[:min(5, len(left))])
	}
}
