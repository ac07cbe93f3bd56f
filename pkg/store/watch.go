package store

import (
	"k8s.io/apimachinery/pkg/watch"
)

// event is one committed change. Its object is shared by the history and
// every watcher's copy source, so it is never modified.
type event struct {
	rev  uint64
	kind *kind
	typ  watch.EventType
	obj  object
}

// history is a ring of the most recent events, so a watch from a recent
// resourceVersion replays what it missed. It holds every event after
// compacted, one per revision.
type history struct {
	ring      []event
	next      int // where the next event goes
	full      bool
	compacted uint64 // the newest revision whose event is gone
}

func newHistory(size int, rev uint64) *history {
	return &history{ring: make([]event, size), compacted: rev}
}

func (h *history) add(e event) {
	if h.full {
		h.compacted = h.ring[h.next].rev
	}
	h.ring[h.next] = e
	h.next++
	if h.next == len(h.ring) {
		h.next, h.full = 0, true
	}
}

// since returns the events after rev, oldest first; false when some of them
// are gone.
func (h *history) since(rev uint64) ([]event, bool) {
	if rev < h.compacted {
		return nil, false
	}
	var out []event
	h.each(func(e event) {
		if e.rev > rev {
			out = append(out, e)
		}
	})
	return out, true
}

func (h *history) each(f func(event)) {
	if h.full {
		for _, e := range h.ring[h.next:] {
			f(e)
		}
	}
	for _, e := range h.ring[:h.next] {
		f(e)
	}
}

// watcher is one Watch stream. Events reach it through a buffered channel
// that the committer never blocks on: when the buffer is full the stream ends,
// and the consumer watches again from the last resourceVersion it saw (or,
// when that is compacted, relists), as informers do.
type watcher struct {
	s         *Embedded
	kind      *kind
	namespace string // "" = all
	ch        chan watch.Event

	// Guarded by s.mu.
	stopped bool
	release func() bool // unhooks the stop on ctx end
}

// Stop ends the stream and closes ResultChan. It is safe to call more than
// once and from any goroutine.
func (w *watcher) Stop() {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.s.stopWatcherLocked(w)
}

// ResultChan delivers the events; it is closed when the stream ends.
func (w *watcher) ResultChan() <-chan watch.Event { return w.ch }

func (w *watcher) wants(e event) bool {
	return e.kind == w.kind && (w.namespace == "" || w.namespace == metaOf(e.obj).Namespace)
}

// send hands a copy of e to the consumer; false when the buffer is full.
// Only holders of s.mu send, so a buffer with room keeps it until the send.
func (w *watcher) send(e event) bool {
	if len(w.ch) == cap(w.ch) {
		return false
	}
	w.ch <- watch.Event{Type: e.typ, Object: deepCopy(e.obj)}
	return true
}
