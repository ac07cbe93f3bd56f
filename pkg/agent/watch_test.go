package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// watcher collects WatchStatus messages in the background.
type watcher struct {
	t      testing.TB
	cancel context.CancelFunc
	msgs   chan *fsbv1.AgentStatus
	errc   chan error
}

func (h *harness) watch() *watcher {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := h.client.WatchStatus(ctx, connect.NewRequest(&fsbv1.WatchStatusRequest{}))
	if err != nil {
		cancel()
		h.t.Fatalf("WatchStatus: %v", err)
	}
	w := &watcher{t: h.t, cancel: cancel, msgs: make(chan *fsbv1.AgentStatus, 1024), errc: make(chan error, 1)}
	go func() {
		for stream.Receive() {
			w.msgs <- stream.Msg().GetStatus()
		}
		w.errc <- stream.Err()
		close(w.msgs)
	}()
	h.t.Cleanup(cancel)
	return w
}

// until reads messages until one satisfies ok, failing after timeout. It
// returns that message and every sandbox state seen on the way, in order,
// as "id:PHASE" entries without repeats ("id:GONE" when one disappears).
func (w *watcher) until(timeout time.Duration, ok func(*fsbv1.AgentStatus) bool) (*fsbv1.AgentStatus, []string) {
	w.t.Helper()
	var seen []string
	last := map[string]string{}
	deadline := time.After(timeout)
	for {
		select {
		case st, open := <-w.msgs:
			if !open {
				w.t.Fatalf("WatchStatus ended: %v; seen %v", <-w.errc, seen)
			}
			present := map[string]bool{}
			for _, sb := range st.GetSandboxes() {
				present[sb.GetSandboxId()] = true
				state := sb.GetPhase().String()
				if last[sb.GetSandboxId()] != state {
					last[sb.GetSandboxId()] = state
					seen = append(seen, sb.GetSandboxId()+":"+state)
				}
			}
			for id, state := range last {
				if !present[id] && state != "GONE" {
					last[id] = "GONE"
					seen = append(seen, id+":GONE")
				}
			}
			if ok(st) {
				return st, seen
			}
		case <-deadline:
			w.t.Fatalf("WatchStatus: condition not met in %v; seen %v", timeout, seen)
		}
	}
}

func sandboxIn(st *fsbv1.AgentStatus, id string) *fsbv1.AgentSandbox {
	for _, sb := range st.GetSandboxes() {
		if sb.GetSandboxId() == id {
			return sb
		}
	}
	return nil
}

func phaseIs(id string, phase fsbv1.Phase) func(*fsbv1.AgentStatus) bool {
	return func(st *fsbv1.AgentStatus) bool {
		sb := sandboxIn(st, id)
		return sb != nil && sb.GetPhase() == phase
	}
}

func gone(id string) func(*fsbv1.AgentStatus) bool {
	return func(st *fsbv1.AgentStatus) bool { return sandboxIn(st, id) == nil }
}

func TestWatchStatusPushesEveryChange(t *testing.T) {
	h := newHarness(t)
	w := h.watch()
	first, _ := w.until(5*time.Second, func(*fsbv1.AgentStatus) bool { return true })
	if first.GetAgentId() != h.agentID || len(first.GetSandboxes()) != 0 {
		t.Fatalf("first message = %v, want the full, empty status", first)
	}

	sb := h.create(spec("sleep 1; exit 3"))
	id := sb.GetSandboxId()
	st, seen := w.until(20*time.Second, phaseIs(id, fsbv1.Phase_PHASE_FAILED))
	got := sandboxIn(st, id)
	if got.GetExitCode() != 3 || got.GetReason() != "Error" || got.GetExitTime() == nil {
		t.Errorf("exit reported as code %d reason %q time %v", got.GetExitCode(), got.GetReason(), got.GetExitTime())
	}
	if !strings.Contains(strings.Join(seen, ","), id+":PHASE_RUNNING,"+id+":PHASE_FAILED") {
		t.Errorf("states seen %v, want RUNNING then FAILED", seen)
	}

	h.delete(id, 0)
	w.until(10*time.Second, gone(id))
}

func TestWatchStatusReportsOOMKill(t *testing.T) {
	h := newHarness(t)
	w := h.watch()
	s := spec("echo filling; exec dd if=/dev/zero of=/dev/null bs=64M count=1")
	s.Resources = &fsbv1.Resources{Memory: "16Mi"}
	sb := h.create(s)
	// containerd's OOM event may come just after the task's exit: the
	// exit is first reported as an Error, then as OOMKilled.
	st, seen := w.until(20*time.Second, func(st *fsbv1.AgentStatus) bool {
		got := sandboxIn(st, sb.GetSandboxId())
		return got.GetPhase() == fsbv1.Phase_PHASE_FAILED && got.GetReason() == "OOMKilled"
	})
	if got := sandboxIn(st, sb.GetSandboxId()); got.GetExitCode() != 137 {
		t.Errorf("reason %q (exit %d), want OOMKilled with 137; seen %v", got.GetReason(), got.GetExitCode(), seen)
	}
}

func TestLogsStreamAcrossRotation(t *testing.T) {
	h := newHarness(t, func(s *harnessSetup) {
		s.runtime.LogMaxSize = 1000
		s.runtime.LogMaxFiles = 10
	})
	// Output starts after the follower is attached and outgrows one file
	// many times over.
	sb := h.create(spec(`sleep 0.5; i=0; while [ $i -lt 100 ]; do echo "line-$(printf %03d $i)"; i=$((i+1)); [ $((i % 10)) -eq 0 ] && sleep 0.1; done`))
	follow, err := h.client.StreamLogs(context.Background(), connect.NewRequest(&fsbv1.AgentServiceStreamLogsRequest{SandboxId: sb.GetSandboxId(), Follow: true}))
	if err != nil {
		t.Fatal(err)
	}
	var followed []string
	for follow.Receive() {
		for _, l := range follow.Msg().GetLines() {
			followed = append(followed, l.GetText())
		}
	}
	if err := follow.Err(); err != nil {
		t.Fatal(err)
	}
	want := make([]string, 100)
	for i := range want {
		want[i] = fmt.Sprintf("line-%03d", i)
	}
	if strings.Join(followed, ",") != strings.Join(want, ",") {
		t.Errorf("follow gave %d lines %v..., want line-000..line-099 in order", len(followed), followed[:min(5, len(followed))])
	}
	rotated, _ := filepath.Glob(sb.GetLogPath() + ".*")
	if len(rotated) < 3 {
		t.Errorf("only %d rotated files: the test did not exercise rotation", len(rotated))
	}

	// Afterwards, tail reads across the rotated files too.
	tail, err := h.client.StreamLogs(context.Background(), connect.NewRequest(&fsbv1.AgentServiceStreamLogsRequest{SandboxId: sb.GetSandboxId(), Tail: 30}))
	if err != nil {
		t.Fatal(err)
	}
	var tailed []string
	for tail.Receive() {
		for _, l := range tail.Msg().GetLines() {
			tailed = append(tailed, l.GetText())
		}
	}
	if strings.Join(tailed, ",") != strings.Join(want[70:], ",") {
		t.Errorf("tail 30 = %v", tailed)
	}
}
