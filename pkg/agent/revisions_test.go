package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// withLogRotation rotates each log file past maxSize bytes, keeping
// maxFiles (--log-max-size, --log-max-files).
func withLogRotation(maxSize int64, maxFiles int) harnessOption {
	return func(s *harnessSetup) { s.runtime.LogMaxSize, s.runtime.LogMaxFiles = maxSize, maxFiles }
}

// withMaxRevisionLogs keeps the logs of the last n revisions per sandbox
// (--max-revision-logs).
func withMaxRevisionLogs(n int) harnessOption {
	return func(s *harnessSetup) { s.runtime.MaxRevisionLogs = n }
}

// revision creates revision rev of a sandbox and fails the test on error.
func (h *harness) revision(id string, rev int64, script string) *fsbv1.AgentSandbox {
	h.t.Helper()
	return h.createReq(&fsbv1.AgentServiceCreateSandboxRequest{SandboxId: id, Revision: rev, Namespace: "default", Name: "revs", Spec: spec(script)})
}

// logs reads a StreamLogs answer to its end (at most 20s) and returns the
// lines' text.
func (h *harness) logs(req *fsbv1.AgentServiceStreamLogsRequest) ([]string, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := h.client.StreamLogs(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	var got []string
	for stream.Receive() {
		for _, l := range stream.Msg().GetLines() {
			got = append(got, l.GetText())
		}
	}
	if ctx.Err() != nil {
		h.t.Fatalf("StreamLogs %v did not end in 20s; read %v", req, got)
	}
	return got, stream.Err()
}

// TestLogsOfAnEarlierRevisionOutliveItsContainer: once a new revision has
// replaced an old one and the old container is gone, the old revision's
// log, rotated files included, is still read by sandbox ID, revision and
// the sandbox's namespace/name; following it drains it and ends.
func TestLogsOfAnEarlierRevisionOutliveItsContainer(t *testing.T) {
	// Records are ~45 bytes: a few per file, nothing rotated away.
	h := newHarness(t, withLogRotation(100, 10))
	const id = "sb-revs"
	first := h.revision(id, 1, "for i in 1 2 3 4 5 6; do echo one-$i; done")
	h.waitPhase(id, fsbv1.Phase_PHASE_SUCCEEDED)
	h.delete(id, 0)
	if _, err := os.Stat(first.GetLogPath() + ".1"); err != nil {
		t.Fatalf("revision 1's log did not rotate: %v", err)
	}
	h.revision(id, 2, "echo two; exec sleep 300")

	want := "one-1,one-2,one-3,one-4,one-5,one-6"
	for _, follow := range []bool{false, true} {
		got, err := h.logs(&fsbv1.AgentServiceStreamLogsRequest{SandboxId: id, Revision: 1, Namespace: "default", Name: "revs", Follow: follow})
		if err != nil || strings.Join(got, ",") != want {
			t.Errorf("revision 1's log (follow %v): %v, %v; want %s", follow, got, err, want)
		}
	}
	got, err := h.logs(&fsbv1.AgentServiceStreamLogsRequest{SandboxId: id, Revision: 1, Namespace: "default", Name: "revs", Tail: 2})
	if err != nil || strings.Join(got, ",") != "one-5,one-6" {
		t.Errorf("revision 1's log, tail 2: %v, %v", got, err)
	}

	for name, req := range map[string]*fsbv1.AgentServiceStreamLogsRequest{
		"without namespace and name": {SandboxId: id, Revision: 1},
		"a revision never made":      {SandboxId: id, Revision: 3, Namespace: "default", Name: "revs"},
		"another sandbox's name":     {SandboxId: id, Revision: 1, Namespace: "default", Name: "other"},
	} {
		if _, err := h.logs(req); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("%s: %v, want NotFound", name, err)
		}
	}
	for name, req := range map[string]*fsbv1.AgentServiceStreamLogsRequest{
		"namespace ..":      {SandboxId: id, Revision: 1, Namespace: "..", Name: "revs"},
		"name with a slash": {SandboxId: id, Revision: 1, Namespace: "default", Name: "../default/revs"},
		"namespace a/b":     {SandboxId: id, Revision: 1, Namespace: "a/b", Name: "revs"},
		"upper case":        {SandboxId: id, Revision: 1, Namespace: "Default", Name: "revs"},
		"name only":         {SandboxId: id, Revision: 1, Name: "revs"},
	} {
		if _, err := h.logs(req); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

// TestOnlyTheLastRevisionsLogsAreKept: creating revision N removes the
// sandbox's logs of revisions N-max and older, rotated files too, but not
// those of a revision whose container is still there, nor another
// sandbox's in the same directory. A delete keeps a revision's log.
func TestOnlyTheLastRevisionsLogsAreKept(t *testing.T) {
	h := newHarness(t, withMaxRevisionLogs(2))
	const id = "sb-prune"
	dir := filepath.Join(h.logDir, "default", "revs")
	path := func(id string, rev int64, suffix string) string {
		return filepath.Join(dir, runtime.ContainerID(id, rev)+".log"+suffix)
	}
	// Another sandbox that once had the same name, and a rotated file of
	// revision 1 beside its live one.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path("sb-prune-1", 1, ""), path(id, 1, ".1")} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kept := func(step string, want map[string]bool) {
		t.Helper()
		for p, exists := range want {
			_, err := os.Stat(p)
			if exists != (err == nil) {
				t.Errorf("after %s: %s exists=%v, want %v", step, filepath.Base(p), err == nil, exists)
			}
		}
	}
	for rev := int64(1); rev <= 3; rev++ {
		h.revision(id, rev, "echo rev")
		h.waitPhase(id, fsbv1.Phase_PHASE_SUCCEEDED)
		if rev != 2 {
			h.delete(id, 0)
		}
	}
	// Revision 2's container is still there: its log stays, though 3-2 >= 2.
	kept("revision 3", map[string]bool{
		path(id, 1, ""): false, path(id, 1, ".1"): false,
		path(id, 2, ""): true, path(id, 3, ""): true,
		path("sb-prune-1", 1, ""): true,
	})
	h.delete(id, 0)
	h.revision(id, 4, "echo rev")
	kept("revision 4", map[string]bool{
		path(id, 2, ""): false, path(id, 3, ""): true, path(id, 4, ""): true,
		path("sb-prune-1", 1, ""): true,
	})
}
