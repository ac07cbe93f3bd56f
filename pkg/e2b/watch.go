package e2b

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	fspb "github.com/fast-sandbox/fast-sandbox/pkg/gen/e2b/filesystem"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// Watching. envd watches with inotify inside the sandbox; the
// FastPathService has no such thing, only ListDir. So a watch here is a
// poll: the directory is listed (one level, or maxListDepth when
// recursive) every pollInterval and each listing is compared with the one
// before it, entry by entry:
//
//   - a path that appears is CREATE, one that goes is REMOVE;
//   - a file whose size or modification time changed is WRITE (a
//     directory's are not compared: inotify does not report a
//     subdirectory's own changes either);
//   - a path whose permission bits or owner changed is CHMOD;
//   - a path whose type changed is REMOVE then CREATE.
//
// What a poll cannot tell: a rename is REMOVE of the old name and CREATE
// of the new (no RENAME is ever sent: a listing carries no inode numbers
// to pair them); a file created and removed within one interval is not
// seen; several writes within one interval are one WRITE, and a write
// that leaves the size and the modification time (to the nanosecond, as
// the listing has it) as they were is not seen; events of one poll come
// ordered by path, not by time. A recursive watch of a tree larger than
// the FastPathService lists in one answer ends with ResourceExhausted.
//
// Watchers are bounded: at most maxWatchersPerSandbox per sandbox
// (streams and polling watchers together), a stream lives at most
// maxWatchLifetime and ends when its client goes, and a polling watcher
// nobody asked for events for watcherIdle is dropped.
const (
	pollInterval          = 250 * time.Millisecond
	maxWatchersPerSandbox = 16
	maxWatchLifetime      = time.Hour
	watcherIdle           = 10 * time.Minute
	// maxPollFailures is how many polls in a row may fail (the sandbox's
	// agent unreachable for a moment) before a watch ends with the error.
	maxPollFailures = 8
	// watchKeepaliveHeader is the header the SDK sets on WatchDir: the seconds
	// between keepalive messages it wants while nothing happens.
	watchKeepaliveHeader  = "Keepalive-Ping-Interval"
	defaultWatchKeepalive = 60 * time.Second
	maxWatchKeepalive     = time.Hour
	watcherIDBytes        = 16
	maxEventsPerCheck     = 4096
)

// watchers is the registry of a handler's watches, for the per-sandbox
// bound, and of its polling watchers by ID.
type watchers struct {
	mu      sync.Mutex
	count   map[string]int // by sandbox key
	polling map[string]*pollingWatcher
}

func newWatchers() *watchers {
	return &watchers{count: map[string]int{}, polling: map[string]*pollingWatcher{}}
}

// acquire counts a watch of the sandbox key, or refuses one past the
// bound; release undoes it.
func (w *watchers) acquire(key string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expireLocked()
	if w.count[key] >= maxWatchersPerSandbox {
		return connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("the sandbox has %d watchers, the most it may have: stop one first", maxWatchersPerSandbox))
	}
	w.count[key]++
	return nil
}

func (w *watchers) release(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.releaseLocked(key)
}

func (w *watchers) releaseLocked(key string) {
	if w.count[key]--; w.count[key] <= 0 {
		delete(w.count, key)
	}
}

// expireLocked drops the polling watchers idle or too old.
func (w *watchers) expireLocked() {
	now := time.Now()
	for id, pw := range w.polling {
		if now.Sub(pw.used) > watcherIdle || now.Sub(pw.created) > maxWatchLifetime {
			delete(w.polling, id)
			w.releaseLocked(pw.key)
		}
	}
}

// pollingWatcher is a CreateWatcher's watch: it lists when asked for
// events, so it holds no goroutine, only the last listing.
type pollingWatcher struct {
	key     string // the sandbox's
	created time.Time
	// used is when it was last asked for, guarded by watchers.mu.
	used time.Time
	// mu serializes the polls of one watcher.
	mu sync.Mutex
	w  *watch
}

// watch is one watched directory and what it held at the last poll.
type watch struct {
	s            *filesystemService
	c            *fsCall
	root         string
	recursive    bool
	includeEntry bool
	last         map[string]*fsbv1.FileInfo // by path relative to root
}

// watchKey names a sandbox in the watchers' bounds.
func watchKey(sb *Sandbox) string { return sb.Namespace + "/" + sb.ID }

// startWatch checks that p is a directory and takes its first listing.
func (s *filesystemService) startWatch(ctx context.Context, c *fsCall, p string, recursive, includeEntry bool) (*watch, error) {
	dir, err := s.dir(ctx, c, p)
	if err != nil {
		return nil, err
	}
	w := &watch{s: s, c: c, root: dir, recursive: recursive, includeEntry: includeEntry}
	if w.last, err = w.list(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

// list lists the watched directory.
func (w *watch) list(ctx context.Context) (map[string]*fsbv1.FileInfo, error) {
	depth := int32(1)
	if w.recursive {
		depth = maxListDepth
	}
	r, err := w.s.api.ListDir(ctx, connect.NewRequest(&fsbv1.ListDirRequest{Name: w.c.sb.ID, Namespace: w.c.sb.Namespace, Path: w.root, Depth: depth}))
	if err != nil {
		return nil, fsUpstream(err)
	}
	m := make(map[string]*fsbv1.FileInfo, len(r.Msg.GetEntries()))
	for _, e := range r.Msg.GetEntries() {
		rel := strings.TrimPrefix(strings.TrimPrefix(e.GetPath(), w.root), "/")
		if rel != "" {
			m[rel] = e
		}
	}
	return m, nil
}

// poll lists again and returns the events since the last listing.
func (w *watch) poll(ctx context.Context) ([]*fspb.FilesystemEvent, error) {
	now, err := w.list(ctx)
	if err != nil {
		return nil, err
	}
	events := watchDiff(w.last, now)
	w.last = now
	if w.includeEntry {
		for _, ev := range events {
			if info, ok := now[ev.GetName()]; ok && ev.GetType() != fspb.EventType_EVENT_TYPE_REMOVE {
				ev.Entry = fsEntry(w.c.acc, info)
			}
		}
	}
	return events, nil
}

// watchDiff returns the events that turn listing old into listing now, by path.
func watchDiff(old, now map[string]*fsbv1.FileInfo) []*fspb.FilesystemEvent {
	names := make([]string, 0, len(old)+len(now))
	for n := range old {
		names = append(names, n)
	}
	for n := range now {
		if _, ok := old[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	var events []*fspb.FilesystemEvent
	add := func(name string, t fspb.EventType) {
		events = append(events, &fspb.FilesystemEvent{Name: name, Type: t})
	}
	for _, n := range names {
		a, b := old[n], now[n]
		switch {
		case a == nil:
			add(n, fspb.EventType_EVENT_TYPE_CREATE)
		case b == nil:
			add(n, fspb.EventType_EVENT_TYPE_REMOVE)
		case a.GetType() != b.GetType():
			add(n, fspb.EventType_EVENT_TYPE_REMOVE)
			add(n, fspb.EventType_EVENT_TYPE_CREATE)
		default:
			if a.GetType() != fsbv1.FileType_FILE_TYPE_DIRECTORY &&
				(a.GetSize() != b.GetSize() || !a.GetModifyTime().AsTime().Equal(b.GetModifyTime().AsTime()) || a.GetSymlinkTarget() != b.GetSymlinkTarget()) {
				add(n, fspb.EventType_EVENT_TYPE_WRITE)
			}
			if a.GetMode() != b.GetMode() || a.GetUid() != b.GetUid() || a.GetGid() != b.GetGid() {
				add(n, fspb.EventType_EVENT_TYPE_CHMOD)
			}
		}
	}
	return events
}

// watchKeepalive returns the interval between keepalives a WatchDir asks for.
func watchKeepalive(h http.Header) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(h.Get(watchKeepaliveHeader)))
	if err != nil || n <= 0 {
		return defaultWatchKeepalive
	}
	return min(time.Duration(n)*time.Second, maxWatchKeepalive)
}

// WatchDir implements filesystem.Filesystem.WatchDir: a start event once
// the directory is listed, then its events as polls find them, and a
// keepalive whenever nothing was sent for the interval the client's
// Keepalive-Ping-Interval header asks (60 s without it). It ends when the
// client goes, after maxWatchLifetime (DeadlineExceeded), or when polls
// fail (the directory removed: NotFound).
func (s *filesystemService) WatchDir(ctx context.Context, req *connect.Request[fspb.WatchDirRequest], stream *connect.ServerStream[fspb.WatchDirResponse]) error {
	c, err := s.begin(ctx, req.Header())
	if err != nil {
		return err
	}
	p, err := c.resolve("path", req.Msg.GetPath())
	if err != nil {
		return err
	}
	key := watchKey(c.sb)
	if err := s.watchers.acquire(key); err != nil {
		return err
	}
	defer s.watchers.release(key)
	w, err := s.startWatch(ctx, c, p, req.Msg.GetRecursive(), req.Msg.GetIncludeEntry())
	if err != nil {
		return err
	}
	if err := stream.Send(&fspb.WatchDirResponse{Event: &fspb.WatchDirResponse_Start{Start: &fspb.WatchDirResponse_StartEvent{}}}); err != nil {
		return err
	}
	lifetime := time.NewTimer(maxWatchLifetime)
	defer lifetime.Stop()
	poll := time.NewTicker(pollInterval)
	defer poll.Stop()
	every := watchKeepalive(req.Header())
	ping := time.NewTimer(every)
	defer ping.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-lifetime.C:
			return connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("the watch of %s ended after %v, the longest one may last: watch again", w.root, maxWatchLifetime))
		case <-ping.C:
			if err := stream.Send(&fspb.WatchDirResponse{Event: &fspb.WatchDirResponse_Keepalive{Keepalive: &fspb.WatchDirResponse_KeepAlive{}}}); err != nil {
				return err
			}
			ping.Reset(every)
		case <-poll.C:
			events, err := w.poll(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if failures++; !pollTransient(err) || failures >= maxPollFailures {
					return fmt.Errorf("watch %s: %w", w.root, err)
				}
				continue
			}
			failures = 0
			for _, ev := range events {
				if err := stream.Send(&fspb.WatchDirResponse{Event: &fspb.WatchDirResponse_Filesystem{Filesystem: ev}}); err != nil {
					return err
				}
			}
			if len(events) > 0 {
				ping.Reset(every)
			}
		}
	}
}

// pollTransient reports whether a poll's error may pass (the agent or the
// controller briefly unreachable).
func pollTransient(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeAborted:
		return true
	}
	return false
}

// CreateWatcher implements filesystem.Filesystem.CreateWatcher: the
// directory is listed now, and each GetWatcherEvents lists it again and
// answers what changed since the call before (see the limits of polling
// above: between two calls, everything of the interval is coalesced).
func (s *filesystemService) CreateWatcher(ctx context.Context, req *connect.Request[fspb.CreateWatcherRequest]) (*connect.Response[fspb.CreateWatcherResponse], error) {
	c, err := s.begin(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	p, err := c.resolve("path", req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	key := watchKey(c.sb)
	if err := s.watchers.acquire(key); err != nil {
		return nil, err
	}
	w, err := s.startWatch(ctx, c, p, req.Msg.GetRecursive(), req.Msg.GetIncludeEntry())
	if err != nil {
		s.watchers.release(key)
		return nil, err
	}
	b := make([]byte, watcherIDBytes)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	now := time.Now()
	s.watchers.mu.Lock()
	s.watchers.polling[id] = &pollingWatcher{key: key, created: now, used: now, w: w}
	s.watchers.mu.Unlock()
	return connect.NewResponse(&fspb.CreateWatcherResponse{WatcherId: id}), nil
}

// pollingWatcher returns the watcher id of the request's sandbox, or
// NotFound (another sandbox's watcher is not found either).
func (s *filesystemService) pollingWatcher(ctx context.Context, id string) (*pollingWatcher, error) {
	sb := SandboxFrom(ctx)
	if sb == nil {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("no sandbox: the request did not come through the sandbox router"))
	}
	s.watchers.mu.Lock()
	defer s.watchers.mu.Unlock()
	s.watchers.expireLocked()
	pw, ok := s.watchers.polling[id]
	if !ok || pw.key != watchKey(sb) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("watcher %q not found: it was removed, or unused for %v", id, watcherIdle))
	}
	pw.used = time.Now()
	return pw, nil
}

// GetWatcherEvents implements filesystem.Filesystem.GetWatcherEvents: the
// events since the watcher's creation or the previous call, at most
// maxEventsPerCheck (the rest are dropped: a poll that finds that many
// changes is better read with ListDir).
func (s *filesystemService) GetWatcherEvents(ctx context.Context, req *connect.Request[fspb.GetWatcherEventsRequest]) (*connect.Response[fspb.GetWatcherEventsResponse], error) {
	pw, err := s.pollingWatcher(ctx, req.Msg.GetWatcherId())
	if err != nil {
		return nil, err
	}
	pw.mu.Lock()
	defer pw.mu.Unlock()
	events, err := pw.w.poll(ctx)
	if err != nil {
		return nil, err
	}
	if len(events) > maxEventsPerCheck {
		events = events[:maxEventsPerCheck]
	}
	return connect.NewResponse(&fspb.GetWatcherEventsResponse{Events: events}), nil
}

// RemoveWatcher implements filesystem.Filesystem.RemoveWatcher.
func (s *filesystemService) RemoveWatcher(ctx context.Context, req *connect.Request[fspb.RemoveWatcherRequest]) (*connect.Response[fspb.RemoveWatcherResponse], error) {
	pw, err := s.pollingWatcher(ctx, req.Msg.GetWatcherId())
	if err != nil {
		return nil, err
	}
	s.watchers.mu.Lock()
	if s.watchers.polling[req.Msg.GetWatcherId()] == pw {
		delete(s.watchers.polling, req.Msg.GetWatcherId())
		s.watchers.releaseLocked(pw.key)
	}
	s.watchers.mu.Unlock()
	return connect.NewResponse(&fspb.RemoveWatcherResponse{}), nil
}
