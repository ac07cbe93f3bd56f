package e2b

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

func TestWatchDiff(t *testing.T) {
	t0 := timestamppb.New(time.Unix(100, 5))
	t1 := timestamppb.New(time.Unix(100, 6))
	file := func(size int64, mtime *timestamppb.Timestamp, mode uint32) *fsbv1.FileInfo {
		return &fsbv1.FileInfo{Type: fsbv1.FileType_FILE_TYPE_FILE, Size: size, ModifyTime: mtime, Mode: mode}
	}
	dir := func(mtime *timestamppb.Timestamp) *fsbv1.FileInfo {
		return &fsbv1.FileInfo{Type: fsbv1.FileType_FILE_TYPE_DIRECTORY, ModifyTime: mtime, Mode: 0o755}
	}
	old := map[string]*fsbv1.FileInfo{
		"same":      file(1, t0, 0o644),
		"grown":     file(1, t0, 0o644),
		"touched":   file(1, t0, 0o644),
		"chmodded":  file(1, t0, 0o644),
		"gone":      file(1, t0, 0o644),
		"d":         dir(t0),
		"became":    file(1, t0, 0o644),
		"d/written": file(1, t0, 0o644),
	}
	now := map[string]*fsbv1.FileInfo{
		"same":      file(1, t0, 0o644),
		"grown":     file(2, t0, 0o644),
		"touched":   file(1, t1, 0o644),
		"chmodded":  file(1, t0, 0o600),
		"d":         dir(t1), // a directory's own times are not a write
		"became":    dir(t0),
		"d/written": file(3, t1, 0o755),
		"new":       file(0, t1, 0o644),
	}
	var got []string
	for _, ev := range watchDiff(old, now) {
		got = append(got, ev.GetType().String()+" "+ev.GetName())
	}
	want := []string{
		"EVENT_TYPE_REMOVE became", "EVENT_TYPE_CREATE became",
		"EVENT_TYPE_CHMOD chmodded",
		"EVENT_TYPE_WRITE d/written", "EVENT_TYPE_CHMOD d/written",
		"EVENT_TYPE_REMOVE gone",
		"EVENT_TYPE_WRITE grown",
		"EVENT_TYPE_CREATE new",
		"EVENT_TYPE_WRITE touched",
	}
	if !slices.Equal(got, want) {
		t.Errorf("diff:\n got %q\nwant %q", got, want)
	}
}

func TestWatchKeepalive(t *testing.T) {
	for v, want := range map[string]time.Duration{"": defaultWatchKeepalive, "50": 50 * time.Second, "x": defaultWatchKeepalive, "-1": defaultWatchKeepalive, "999999": maxWatchKeepalive} {
		h := http.Header{}
		if v != "" {
			h.Set(watchKeepaliveHeader, v)
		}
		if got := watchKeepalive(h); got != want {
			t.Errorf("keepalive %q: %v, want %v", v, got, want)
		}
	}
}

func TestWatcherBound(t *testing.T) {
	w := newWatchers()
	for range maxWatchersPerSandbox {
		if err := w.acquire("ns/a"); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.acquire("ns/a"); err == nil {
		t.Fatal("a watcher past the bound was let in")
	}
	if err := w.acquire("ns/b"); err != nil {
		t.Errorf("another sandbox's watcher: %v", err)
	}
	w.release("ns/a")
	if err := w.acquire("ns/a"); err != nil {
		t.Errorf("after a release: %v", err)
	}
	// A polling watcher unused past watcherIdle is dropped, and its slot
	// freed.
	w.polling["idle"] = &pollingWatcher{key: "ns/b", created: time.Now(), used: time.Now().Add(-watcherIdle - time.Second)}
	w.mu.Lock()
	w.count["ns/b"]++
	w.expireLocked()
	_, kept := w.polling["idle"]
	n := w.count["ns/b"]
	w.mu.Unlock()
	if kept || n != 1 {
		t.Errorf("an idle watcher: kept %v, sandbox count %d; want dropped, 1", kept, n)
	}
}
