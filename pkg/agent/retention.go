package agent

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// Defaults of LogPolicy, and the agent's flags.
const (
	DefaultLogRetention     = time.Hour
	DefaultLogMaxTotalBytes = 1 << 30
	DefaultLogSweepInterval = time.Minute
)

// LogPolicy says when the agent removes sandbox logs from its log
// directory. Logs outlive their sandbox's containers so that an ended
// sandbox's output can still be read; without a policy nobody would ever
// remove them and the node's disk would fill.
//
// The logs of a live sandbox (one with a container that has not exited)
// are never removed here: rotation bounds them, and --max-revision-logs
// bounds its past revisions'.
type LogPolicy struct {
	// Retention is how long the logs of a deleted sandbox (one of which no
	// container is left on this agent) are kept after they were last
	// written, judged by the files' modification times so that the
	// decision survives agent restarts. 0 removes them as the sandbox is
	// deleted.
	Retention time.Duration
	// MaxTotalBytes bounds the log directory: past it the logs of ended
	// sandboxes (deleted or exited) are removed, the least recently
	// written revision first, until the total is under it. 0: no bound.
	MaxTotalBytes int64
	// SweepInterval is how often the directory is looked at;
	// 0 means DefaultLogSweepInterval.
	SweepInterval time.Duration
}

// sweepLogs applies the policy every SweepInterval until ctx ends. New
// sweeps once before it starts this, so that what a stopped agent left is
// removed at once.
func (a *Agent) sweepLogs(ctx context.Context) {
	every := a.cfg.Logs.SweepInterval
	if every <= 0 {
		every = DefaultLogSweepInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.sweepLogsLogged()
	}
}

func (a *Agent) sweepLogsLogged() {
	if err := a.sweepLogsOnce(time.Now()); err != nil {
		a.cfg.Logger.Warn("sweep sandbox logs", slog.Any("err", err))
	}
}

// logRevision is the set of files one sandbox revision's log left.
type logRevision struct {
	sandboxID string
	dir       string
	files     []string
	size      int64
	modified  time.Time // the newest file's
}

// sweepLogsOnce removes the logs the policy says to at now, then the empty
// directories.
func (a *Agent) sweepLogsOnce(now time.Time) error {
	a.logsMu.Lock()
	defer a.logsMu.Unlock()
	// The files are listed before the sandboxes are looked at: a sandbox
	// created after the look has its log made after the listing, so a
	// file listed and then found without a live sandbox is not one that a
	// sandbox just started writing.
	revs, dirs, err := listLogs(a.cfg.Runtime.LogDir())
	if err != nil {
		return err
	}
	held, live := a.logOwners()
	var errs []error
	var total int64
	var ended []*logRevision
	for _, r := range revs {
		switch {
		case live[r.sandboxID]:
			total += r.size
			continue
		case !held[r.sandboxID] && now.Sub(r.modified) >= a.cfg.Logs.Retention:
			errs = append(errs, a.removeLogRevision(r, "retention"))
			continue
		}
		total += r.size
		ended = append(ended, r)
	}
	if limit := a.cfg.Logs.MaxTotalBytes; limit > 0 && total > limit {
		slices.SortFunc(ended, func(x, y *logRevision) int { return x.modified.Compare(y.modified) })
		for _, r := range ended {
			if total <= limit {
				break
			}
			errs = append(errs, a.removeLogRevision(r, "max-total-bytes"))
			total -= r.size
		}
	}
	removeEmptyDirs(dirs)
	return errors.Join(errs...)
}

// logOwners returns the sandbox IDs this agent holds a container of, and
// those of them with a container that has not exited (or is being made).
func (a *Agent) logOwners() (held, live map[string]bool) {
	held, live = make(map[string]bool), make(map[string]bool)
	a.mu.Lock()
	creating := make([]string, 0, len(a.creating))
	for cid := range a.creating {
		creating = append(creating, cid)
	}
	a.mu.Unlock()
	infos, _ := a.cfg.Runtime.Sandboxes()
	for _, info := range infos {
		held[info.ID] = true
		if info.Phase != runtime.PhaseExited {
			live[info.ID] = true
		}
	}
	for _, cid := range creating {
		// A container ID is <sandboxID>-<revision>, as a log file's base.
		if id, _, ok := runtime.ParseLogName(cid + ".log"); ok {
			held[id], live[id] = true, true
		}
	}
	return held, live
}

// removeDeletedSandboxLogs removes the logs of sandboxID at its delete when
// the policy keeps none (Retention 0) and no container of it is left.
func (a *Agent) removeDeletedSandboxLogs(sandboxID string, ended []runtime.Info) {
	if a.cfg.Logs == nil || a.cfg.Logs.Retention > 0 || len(ended) == 0 {
		return
	}
	a.logsMu.Lock()
	defer a.logsMu.Unlock()
	if held, _ := a.logOwners(); held[sandboxID] {
		return // other revisions remain: their logs, and these, stay
	}
	dir := filepath.Join(a.cfg.Runtime.LogDir(), ended[0].Namespace, ended[0].Name)
	revs, dirs, err := listDir(dir)
	if err == nil {
		for _, r := range revs {
			if r.sandboxID == sandboxID {
				err = errors.Join(err, a.removeLogRevision(r, "deleted"))
			}
		}
		removeEmptyDirs(append(dirs, filepath.Dir(dir)))
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.cfg.Logger.Warn("remove a deleted sandbox's logs", slog.String("sandbox", sandboxID), slog.Any("err", err))
	}
}

func (a *Agent) removeLogRevision(r *logRevision, why string) error {
	var errs []error
	for _, f := range r.files {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	a.cfg.Logger.Debug("removed sandbox logs", slog.String("sandbox", r.sandboxID), slog.String("dir", r.dir),
		slog.Int64("bytes", r.size), slog.String("why", why))
	return errors.Join(errs...)
}

// listLogs lists the log revisions under root (<namespace>/<name>/<file>)
// and the directories they sit in, deepest first. Files that are not a
// sandbox's log are left alone.
func listLogs(root string) ([]*logRevision, []string, error) {
	namespaces, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var revs []*logRevision
	var dirs []string
	for _, ns := range namespaces {
		if !ns.IsDir() {
			continue
		}
		nsDir := filepath.Join(root, ns.Name())
		names, err := os.ReadDir(nsDir)
		if err != nil {
			continue // removed meanwhile
		}
		for _, n := range names {
			if !n.IsDir() {
				continue
			}
			r, d, _ := listDir(filepath.Join(nsDir, n.Name()))
			revs, dirs = append(revs, r...), append(dirs, d...)
		}
		dirs = append(dirs, nsDir)
	}
	return revs, dirs, nil
}

// listDir lists the log revisions in one sandbox name's directory.
func listDir(dir string) ([]*logRevision, []string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	byContainer := make(map[string]*logRevision)
	var revs []*logRevision
	for _, e := range entries {
		id, rev, ok := runtime.ParseLogName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		// Grouped by the revision's log name, which a claimed sandbox's
		// log has too, whatever its container's ID.
		cid := runtime.ContainerID(id, rev)
		r := byContainer[cid]
		if r == nil {
			r = &logRevision{sandboxID: id, dir: dir}
			byContainer[cid] = r
			revs = append(revs, r)
		}
		r.files = append(r.files, filepath.Join(dir, e.Name()))
		r.size += fi.Size()
		if fi.ModTime().After(r.modified) {
			r.modified = fi.ModTime()
		}
	}
	return revs, []string{dir}, nil
}

// removeEmptyDirs removes those of dirs that are empty, in order (deepest
// first). A log driver starting meanwhile makes its directory again.
func removeEmptyDirs(dirs []string) {
	for _, d := range dirs {
		_ = os.Remove(d) // fails, as it should, when d is not empty
	}
}
