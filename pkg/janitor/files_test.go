package janitor

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
)

// TestFindLogFiles checks which logs of a gone agent's log dir are found,
// and that Remove takes a revision's file with its rotated pieces, and the
// dirs it leaves empty.
func TestFindLogFiles(t *testing.T) {
	const retention = time.Hour
	now := time.Now()
	old := now.Add(-2 * time.Hour)
	fresh := now.Add(-time.Minute)

	type file struct {
		path    string
		written time.Time
	}
	for _, tc := range []struct {
		name  string
		files []file
		// lock: "held" by a running agent, "left" by a dead one, "" none.
		lock string
		// want: the leftovers' names, relative to the dir.
		want []string
		// gone and kept: paths that Remove of every leftover removes and
		// keeps.
		gone, kept []string
	}{{
		name: "old log with rotated pieces",
		files: []file{
			{"default/web/sb1-2.log", old},
			{"default/web/sb1-2.log.1", old.Add(-time.Hour)},
			{"default/web/sb1-2.log.2", old.Add(-2 * time.Hour)},
		},
		want: []string{"default/web/sb1-2.log"},
		gone: []string{"default/web/sb1-2.log", "default/web/sb1-2.log.1", "default/web/sb1-2.log.2", "default/web", "default"},
	}, {
		name:  "fresh log",
		files: []file{{"default/web/sb1-1.log", fresh}},
		kept:  []string{"default/web/sb1-1.log"},
	}, {
		name:  "old rotated pieces of a fresh live file",
		files: []file{{"default/web/sb1-1.log", fresh}, {"default/web/sb1-1.log.1", old}},
		kept:  []string{"default/web/sb1-1.log", "default/web/sb1-1.log.1"},
	}, {
		name: "an old revision beside a fresh one",
		files: []file{
			{"team/job/sb2-1.log", old}, {"team/job/sb2-1.log.1", old},
			{"team/job/sb2-2.log", fresh},
		},
		want: []string{"team/job/sb2-1.log"},
		gone: []string{"team/job/sb2-1.log", "team/job/sb2-1.log.1"},
		kept: []string{"team/job/sb2-2.log", "team/job"},
	}, {
		name:  "a rotated piece whose live file is gone",
		files: []file{{"default/web/sb3-1.log.1", old}},
		want:  []string{"default/web/sb3-1.log"},
		gone:  []string{"default/web/sb3-1.log.1", "default"},
	}, {
		name:  "files that are not logs",
		files: []file{{"default/web/notes.txt", old}, {"default/web/sb4-x.log", old}, {"stray.log", old}},
		kept:  []string{"default/web/notes.txt", "default/web/sb4-x.log", "stray.log"},
	}, {
		name:  "the dir of a running agent",
		files: []file{{"default/web/sb5-1.log", old}},
		lock:  "held",
		kept:  []string{"default/web/sb5-1.log"},
	}, {
		name:  "the dir of an agent that is gone",
		files: []file{{"default/web/sb6-1.log", old}},
		lock:  "left",
		want:  []string{"default/web/sb6-1.log"},
		gone:  []string{"default/web/sb6-1.log", "default"},
		kept:  []string{logfile.LockFile},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tc.files {
				p := filepath.Join(dir, f.path)
				if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("line\n"), 0o640); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(p, f.written, f.written); err != nil {
					t.Fatal(err)
				}
			}
			if tc.lock != "" {
				release, err := logfile.LockDir(dir)
				if err != nil {
					t.Fatal(err)
				}
				if tc.lock == "held" {
					t.Cleanup(release)
				} else {
					release()
				}
			}

			found, err := findLogFiles(dir, retention, now)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, l := range found {
				rel, _ := filepath.Rel(dir, l.Name)
				names = append(names, rel)
				if l.Kind != KindLog || l.Namespace != "" || l.AgentID != "" || l.SandboxID == "" || l.Revision == 0 {
					t.Errorf("leftover %+v: want kind log with sandbox and revision, no namespace or agent", l)
				}
				if !l.Created.Equal(old) {
					t.Errorf("%s: Created %v, want the last write %v", rel, l.Created, old)
				}
			}
			slices.Sort(names)
			if !slices.Equal(names, tc.want) {
				t.Fatalf("found %q, want %q", names, tc.want)
			}
			for _, l := range found {
				if err := l.Remove(t.Context()); err != nil {
					t.Fatal(err)
				}
				if err := l.Remove(t.Context()); err != nil {
					t.Errorf("Remove of a log already gone: %v", err)
				}
			}
			for _, p := range tc.gone {
				if _, err := os.Stat(filepath.Join(dir, p)); !os.IsNotExist(err) {
					t.Errorf("%s: %v, want it removed", p, err)
				}
			}
			for _, p := range tc.kept {
				if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
					t.Errorf("%s: %v, want it kept", p, err)
				}
			}
		})
	}
}

// TestFindLogFilesNoDir checks that a log dir that does not exist holds
// nothing to remove, and that a log written again after it was found is
// kept.
func TestFindLogFilesNoDir(t *testing.T) {
	found, err := findLogFiles(filepath.Join(t.TempDir(), "none"), time.Hour, time.Now())
	if err != nil || len(found) != 0 {
		t.Fatalf("found %v, %v; want nothing", found, err)
	}

	dir := t.TempDir()
	p := filepath.Join(dir, "default", "web", "sb-1.log")
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.WriteFile(p, []byte("line\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	found, err = findLogFiles(dir, time.Hour, time.Now())
	if err != nil || len(found) != 1 {
		t.Fatalf("found %v, %v; want sb-1.log", found, err)
	}
	if err := os.WriteFile(p, []byte("line\nanother\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := found[0].Remove(t.Context()); err == nil {
		t.Error("Remove of a log written again after it was found succeeded, want it kept")
	}
	if _, err := os.Stat(p); err != nil {
		t.Errorf("the log written again: %v, want it kept", err)
	}
}

// TestLogDirPatterns: a pattern among the log dirs stands for the dirs it
// matches (a pool's agents', one per pod); a matched dir holding nothing
// but its lock, no agent holding it, is removed, and one with logs or a
// live agent is kept.
func TestLogDirPatterns(t *testing.T) {
	root := t.TempDir()
	pools := filepath.Join(root, "log-pools")
	mkLogDir := func(name string) string {
		dir := filepath.Join(pools, name)
		release, err := logfile.LockDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		release()
		return dir
	}
	live, gone, withLogs := mkLogDir("live"), mkLogDir("gone"), mkLogDir("with-logs")
	if err := os.MkdirAll(filepath.Join(gone, "default", "web"), 0o750); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(withLogs, "default", "web", "sb-1-1.log")
	if err := os.MkdirAll(filepath.Dir(log), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(log, []byte("line\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pools, "not-a-dir"), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	release, err := logfile.LockDir(live) // its agent runs
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	plain := filepath.Join(root, "log")
	dirs, matched, err := logDirs([]string{plain, filepath.Join(pools, "*")})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{plain, gone, live, withLogs}; !slices.Equal(dirs, want) {
		t.Errorf("dirs %q, want %q", dirs, want)
	}
	if want := []string{gone, live, withLogs}; !slices.Equal(matched, want) {
		t.Errorf("matched %q, want %q", matched, want)
	}
	if _, _, err := logDirs([]string{"[bad"}); err == nil {
		t.Error("a malformed pattern: no error")
	}

	for _, tc := range []struct {
		dir     string
		removed bool
	}{{live, false}, {gone, true}, {withLogs, false}, {plain, false}} {
		removed, err := removeEmptyLogDir(tc.dir)
		if err != nil || removed != tc.removed {
			t.Errorf("removeEmptyLogDir(%s) = %v, %v; want %v", filepath.Base(tc.dir), removed, err, tc.removed)
		}
		if _, err := os.Stat(tc.dir); tc.removed != errors.Is(err, os.ErrNotExist) && tc.dir != plain {
			t.Errorf("%s: stat %v after removed=%v", filepath.Base(tc.dir), err, tc.removed)
		}
	}
}
