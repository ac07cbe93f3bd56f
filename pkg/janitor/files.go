package janitor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// logDirs expands configured (Config.LogDirs): a plain entry is one log
// dir; a pattern stands for the directories it matches now, which are also
// returned in matched (the dirs of agents that come and go).
func logDirs(configured []string) (dirs, matched []string, err error) {
	var errs []error
	for _, entry := range configured {
		if !strings.ContainsAny(entry, `*?[\`) {
			dirs = append(dirs, entry)
			continue
		}
		found, err := filepath.Glob(entry)
		if err != nil {
			errs = append(errs, fmt.Errorf("log dir pattern %q: %w", entry, err))
			continue
		}
		for _, dir := range found {
			if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
				dirs = append(dirs, dir)
				matched = append(matched, dir)
			}
		}
	}
	return dirs, matched, errors.Join(errs...)
}

// removeEmptyLogDir removes dir, an agent's log dir, when no agent holds
// it and nothing but the lock file and empty directories is left in it:
// what a pool's agent leaves once it is gone and its logs are removed. The
// dir's lock is held while it is looked at and removed, so an agent
// starting there meanwhile fails its start (and is restarted) rather than
// lose its dir.
func removeEmptyLogDir(dir string) (bool, error) {
	f, err := os.Open(filepath.Join(dir, logfile.LockFile))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // not an agent's log dir, or not yet
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return false, nil // its agent runs
	case err != nil:
		return false, fmt.Errorf("lock %s: %w", dir, err)
	}
	empty := true
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && path != filepath.Join(dir, logfile.LockFile) {
			empty = false
			return filepath.SkipAll
		}
		return nil
	})
	if err != nil || !empty {
		return false, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return false, err
	}
	return true, nil
}

// findLogFiles returns the sandbox logs in an agent's log dir,
// <dir>/<namespace>/<name>/<sandboxID>-<revision>.log and its rotated
// pieces (.log.1, .log.2, ...), last written longer than retention before
// now: one Leftover per sandbox revision, named by its live file's path.
// Created is the last write of any of its pieces.
//
// A dir whose agent runs (it holds logfile.LockFile locked) is skipped as
// a whole: that agent sweeps its own logs. An agent that is gone leaves the
// logs of sandboxes cut short (a create it was making, a delete it was
// doing) and of every sandbox it ran. Whether a sandbox is gone is not a
// file's to tell: the caller asks the controller about each SandboxID
// before it removes (a quiet sandbox still running writes nothing for
// hours).
func findLogFiles(dir string, retention time.Duration, now time.Time) ([]Leftover, error) {
	held, err := lockHeld(filepath.Join(dir, logfile.LockFile))
	if err != nil || held {
		return nil, err
	}
	namespaces, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list log dir: %w", err)
	}
	var out []Leftover
	for _, ns := range namespaces {
		if !ns.IsDir() {
			continue
		}
		names, err := os.ReadDir(filepath.Join(dir, ns.Name()))
		if err != nil {
			return nil, fmt.Errorf("list log dir: %w", err)
		}
		for _, name := range names {
			if !name.IsDir() {
				continue
			}
			found, err := oldLogs(filepath.Join(dir, ns.Name(), name.Name()), retention, now)
			if err != nil {
				return nil, err
			}
			out = append(out, found...)
		}
	}
	return out, nil
}

// oldLogs returns the revisions whose logs in one sandbox's dir were last
// written longer than retention before now.
func oldLogs(nameDir string, retention time.Duration, now time.Time) ([]Leftover, error) {
	entries, err := os.ReadDir(nameDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("list logs: %w", err)
	}
	type revision struct {
		sandboxID string
		revision  int64
		lastWrite time.Time
	}
	revs := map[string]*revision{} // by live file path
	var order []string
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		id, rev, ok := runtime.ParseLogName(e.Name())
		if !ok {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		live := filepath.Join(nameDir, runtime.ContainerID(id, rev)+".log")
		r := revs[live]
		if r == nil {
			r = &revision{sandboxID: id, revision: rev}
			revs[live] = r
			order = append(order, live)
		}
		if fi.ModTime().After(r.lastWrite) {
			r.lastWrite = fi.ModTime()
		}
	}
	var out []Leftover
	for _, live := range order {
		r := revs[live]
		age := now.Sub(r.lastWrite)
		if age <= retention {
			continue
		}
		out = append(out, Leftover{
			Kind:      KindLog,
			Name:      live,
			SandboxID: r.sandboxID,
			Revision:  r.revision,
			Created:   r.lastWrite,
			Reason:    fmt.Sprintf("log of sandbox %s revision %d, last written %v ago", r.sandboxID, r.revision, age.Round(time.Second)),
			Remove:    removeLog(live, r.lastWrite),
		})
	}
	return out, nil
}

// removeLog removes a revision's log file and its rotated pieces, unless one
// was written after lastWrite (the sandbox is not gone after all), then its
// name and namespace dirs if they are left empty.
func removeLog(live string, lastWrite time.Time) func(context.Context) error {
	return func(context.Context) error {
		pieces, err := logPieces(live)
		if err != nil {
			return err
		}
		for _, p := range pieces {
			if fi, err := os.Stat(p); err == nil && fi.ModTime().After(lastWrite) {
				return fmt.Errorf("log %s: written again: %w", p, errInUse)
			}
		}
		for _, p := range pieces {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove log: %w", err)
			}
		}
		nameDir := filepath.Dir(live)
		for _, d := range []string{nameDir, filepath.Dir(nameDir)} {
			// Fails, as it should, while the dir holds anything else.
			if err := os.Remove(d); err != nil {
				break
			}
		}
		return nil
	}
}

// logPieces lists a revision's live log file and its rotated pieces, those
// that exist.
func logPieces(live string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Dir(live))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list logs: %w", err)
	}
	base := filepath.Base(live)
	var out []string
	for _, e := range entries {
		n := e.Name()
		if n != base && !strings.HasPrefix(n, base+".") {
			continue
		}
		// Only what ParseLogName reads as this revision's: base.log.<n>.
		id, rev, ok := runtime.ParseLogName(n)
		if ok && runtime.ContainerID(id, rev)+".log" == base {
			out = append(out, filepath.Join(filepath.Dir(live), n))
		}
	}
	return out, nil
}

// lockHeld reports whether a process holds the agent's lock file locked
// right now. It takes the lock without waiting and lets it go at once; a
// lock file that does not exist is not held.
func lockHeld(path string) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("log dir lock: %w", err)
	}
	defer f.Close()
	switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); {
	case errors.Is(err, syscall.EWOULDBLOCK):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("log dir lock %s: %w", path, err)
	}
	// Closing the file releases the lock; unlock first all the same, so
	// that the window in which an agent starting now finds it taken stays
	// as short as it can.
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false, nil
}
