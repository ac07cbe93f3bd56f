package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

func withLogPolicy(p LogPolicy) harnessOption {
	return func(s *harnessSetup) { s.agent.Logs = &p }
}

// logFiles lists every file and directory under the harness's log dir,
// relative to it.
func (h *harness) logFiles() []string {
	h.t.Helper()
	var out []string
	err := filepath.WalkDir(h.logDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != h.logDir {
			rel, _ := filepath.Rel(h.logDir, p)
			if d.IsDir() {
				rel += "/"
			}
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

// placeLog writes a log file of size bytes for sandboxID, last written age
// ago, as an ended sandbox would have left it.
func (h *harness) placeLog(name, sandboxID string, size int, age time.Duration) string {
	h.t.Helper()
	p := filepath.Join(h.logDir, "default", name, sandboxID+"-1.log")
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(strings.Repeat("x", size)), 0o640); err != nil {
		h.t.Fatal(err)
	}
	at := time.Now().Add(-age)
	if err := os.Chtimes(p, at, at); err != nil {
		h.t.Fatal(err)
	}
	return p
}

func TestLogRetentionZeroRemovesLogsAtDelete(t *testing.T) {
	h := newHarness(t, withLogPolicy(LogPolicy{Retention: 0, SweepInterval: time.Hour}))
	sb := h.create(spec("echo hello; sleep 60"))
	h.waitLog(sb, "hello")

	// A sandbox with two revisions keeps its logs while one is left.
	id := h.newID()
	h.revision(id, 1, "echo one")
	r2 := h.revision(id, 2, "echo two; sleep 60")
	h.waitLog(r2, "two")
	if _, err := h.client.DeleteSandbox(t.Context(), connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{SandboxId: id, Revision: 1})); err != nil {
		t.Fatal(err)
	}
	if got := h.logFiles(); !slices.Contains(got, "default/revs/"+id+"-1.log") {
		t.Errorf("revision 1's log went while revision 2 runs: %v", got)
	}

	h.delete(sb.GetSandboxId(), 0)
	for _, f := range h.logFiles() {
		if strings.Contains(f, sb.GetSandboxId()) || f == "default/"+sb.GetName()+"/" {
			t.Errorf("%s is left after the delete", f)
		}
	}
	h.delete(id, 0)
	if got := h.logFiles(); len(got) != 0 {
		t.Errorf("log dir holds %v after every sandbox was deleted, want nothing", got)
	}
}

func TestLogRetentionRemovesDeletedSandboxesLogsAfterItAcrossRestarts(t *testing.T) {
	h := newHarness(t, withLogPolicy(LogPolicy{Retention: time.Hour, SweepInterval: time.Hour}))
	live := h.create(spec("echo live; sleep 60"))
	h.waitLog(live, "live")
	stale := h.placeLog("stale", "sb-stale", 100, 2*time.Hour)
	fresh := h.placeLog("fresh", "sb-fresh", 100, 10*time.Minute)
	// The live sandbox's log has not been written for long: it stays.
	old := time.Now().Add(-3 * time.Hour)
	if err := os.Chtimes(live.GetLogPath(), old, old); err != nil {
		t.Fatal(err)
	}
	// What a stopped agent left is swept as the next one starts.
	h.restart(nil)
	got := h.logFiles()
	if slices.Contains(got, "default/stale/") || slices.Contains(got, filepath.Base(stale)) {
		t.Errorf("a deleted sandbox's logs past the retention are left: %v", got)
	}
	for _, p := range []string{fresh, live.GetLogPath()} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
}

func TestLogMaxTotalBytesRemovesEndedSandboxesLogsOldestFirst(t *testing.T) {
	h := newHarness(t, withLogPolicy(LogPolicy{Retention: 24 * time.Hour, SweepInterval: time.Hour}))
	live := h.create(spec("echo live; sleep 60"))
	h.waitLog(live, "live")
	old := time.Now().Add(-5 * time.Hour)
	if err := os.Chtimes(live.GetLogPath(), old, old); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(live.GetLogPath())
	if err != nil {
		t.Fatal(err)
	}
	oldest := h.placeLog("e1", "sb-e1", 1000, 3*time.Hour)
	older := h.placeLog("e2", "sb-e2", 1000, 2*time.Hour)
	newest := h.placeLog("e3", "sb-e3", 1000, time.Minute)
	for _, tc := range []struct {
		limit         int64
		gone, present []string
	}{
		{limit: 2000 + fi.Size() + 10, gone: []string{oldest}, present: []string{older, newest, live.GetLogPath()}},
		// Past what ended sandboxes hold: every one of them goes, and
		// the live sandbox's log still stays.
		{limit: 10, gone: []string{older, newest}, present: []string{live.GetLogPath()}},
	} {
		h.agent.cfg.Logs.MaxTotalBytes = tc.limit
		if err := h.agent.sweepLogsOnce(time.Now()); err != nil {
			t.Fatal(err)
		}
		for _, p := range tc.gone {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("limit %d: %s is left (%v)", tc.limit, p, err)
			}
			if _, err := os.Stat(filepath.Dir(p)); !os.IsNotExist(err) {
				t.Errorf("limit %d: its empty directory is left (%v)", tc.limit, err)
			}
		}
		for _, p := range tc.present {
			if _, err := os.Stat(p); err != nil {
				t.Errorf("limit %d: %s was removed: %v", tc.limit, p, err)
			}
		}
	}
}
