package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A sandbox's log files live in <log-dir>/<namespace>/<name>/, one set per
// revision: <sandboxID>-<revision>.log and its rotated <...>.log.1, .2, ...
// They outlive the revision's container, so that an ended revision's output
// can still be read; Ensure keeps the last Config.MaxRevisionLogs
// revisions' of each sandbox (the janitor reaps the rest after a delete).

// RevisionLog returns the log file a sandbox revision left on this node,
// found from the sandbox's namespace and name (valid DNS-1123 names: the
// caller checks), whether or not its container still exists. Revision 0
// means the newest revision with a log. ok is false when there is none.
func (r *Runtime) RevisionLog(namespace, name, sandboxID string, revision int64) (path string, rev int64, ok bool) {
	revs, err := r.revisionLogs(namespace, name, sandboxID)
	if err != nil {
		return "", 0, false
	}
	if revision == 0 {
		for n := range revs {
			revision = max(revision, n)
		}
	}
	if _, ok := revs[revision]; !ok {
		return "", 0, false
	}
	return r.LogPath(Sandbox{ID: sandboxID, Revision: revision, Namespace: namespace, Name: name}), revision, true
}

// revisionLogs lists a sandbox's log files in its directory by revision.
func (r *Runtime) revisionLogs(namespace, name, sandboxID string) (map[int64][]string, error) {
	dir := filepath.Join(r.cfg.LogDir, namespace, name)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	revs := make(map[int64][]string)
	for _, e := range entries {
		if rev, ok := logRevision(e.Name(), sandboxID); ok && e.Type().IsRegular() {
			revs[rev] = append(revs[rev], filepath.Join(dir, e.Name()))
		}
	}
	return revs, nil
}

// logRevision parses the revision out of a log file name of sandboxID:
// <sandboxID>-<revision>.log, or a rotated <...>.log.<n>. Sandbox IDs may
// hold '-', but a revision is digits only, so "sb-a-1-3.log" (sandbox
// sb-a-1) is never taken for one of sandbox sb-a.
func logRevision(file, sandboxID string) (int64, bool) {
	rest, ok := strings.CutPrefix(file, sandboxID+"-")
	if !ok {
		return 0, false
	}
	digits, suffix, ok := strings.Cut(rest, ".log")
	if !ok || !allDigits(digits) {
		return 0, false
	}
	if suffix != "" {
		if n, ok := strings.CutPrefix(suffix, "."); !ok || !allDigits(n) {
			return 0, false
		}
	}
	rev, err := strconv.ParseInt(digits, 10, 64)
	return rev, err == nil && rev > 0
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// pruneLogs removes the log files of sb's revisions older than the last
// Config.MaxRevisionLogs (revisions <= sb.Revision-MaxRevisionLogs), except
// those of a revision whose container this agent still holds: its log is
// in use.
func (r *Runtime) pruneLogs(sb Sandbox) error {
	keep := int64(r.cfg.MaxRevisionLogs)
	if keep <= 0 || sb.Revision <= keep {
		return nil
	}
	revs, err := r.revisionLogs(sb.Namespace, sb.Name, sb.ID)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("list logs of sandbox %s: %w", sb.ID, err)
	}
	var errs []error
	for rev, files := range revs {
		if rev > sb.Revision-keep {
			continue
		}
		if _, held := r.SandboxContainer(sb.ID, rev); held {
			continue
		}
		for _, f := range files {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		r.cfg.Logger.Debug("removed an old revision's logs", slog.String("sandbox", sb.ID), slog.Int64("revision", rev))
	}
	return errors.Join(errs...)
}

// LogDir is the directory that holds every sandbox's logs:
// <LogDir>/<namespace>/<name>/<sandboxID>-<revision>.log[.N].
func (r *Runtime) LogDir() string { return r.cfg.LogDir }

// ParseLogName parses a log file's name, <sandboxID>-<revision>.log or a
// rotated <...>.log.<n>, into the sandbox ID and revision it belongs to.
func ParseLogName(file string) (sandboxID string, revision int64, ok bool) {
	base, suffix, ok := strings.Cut(file, ".log")
	if !ok || strings.Contains(suffix, ".log") {
		return "", 0, false
	}
	i := strings.LastIndexByte(base, '-')
	if i <= 0 {
		return "", 0, false
	}
	revision, ok = logRevision(file, base[:i])
	return base[:i], revision, ok
}
