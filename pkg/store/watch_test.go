package store_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// expect reads the next event and checks its type and object name.
func expect(t testing.TB, w watch.Interface, typ watch.EventType, name string) *v1alpha1.Sandbox {
	t.Helper()
	select {
	case e, ok := <-w.ResultChan():
		if !ok {
			t.Fatalf("watch ended; want %s %s", typ, name)
		}
		sb, isSandbox := e.Object.(*v1alpha1.Sandbox)
		if !isSandbox {
			t.Fatalf("event object is %T, want *v1alpha1.Sandbox", e.Object)
		}
		if e.Type != typ || sb.Name != name {
			t.Fatalf("event %s %s, want %s %s", e.Type, sb.Name, typ, name)
		}
		return sb
	case <-time.After(5 * time.Second):
		t.Fatalf("no event; want %s %s", typ, name)
	}
	return nil
}

// expectEnd checks that the stream ends with no further event.
func expectEnd(t testing.TB, w watch.Interface) {
	t.Helper()
	select {
	case e, ok := <-w.ResultChan():
		if ok {
			t.Fatalf("event %s %v; want the watch to have ended", e.Type, e.Object)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not end")
	}
}

func expectQuiet(t testing.TB, w watch.Interface) {
	t.Helper()
	select {
	case e, ok := <-w.ResultChan():
		t.Fatalf("unexpected event %s %v (open %v)", e.Type, e.Object, ok)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestWatchReplaysInOrder(t *testing.T) {
	eachStore(t, func(t *testing.T, s store.Interface) {
		ctx := context.Background()
		type step struct {
			typ  watch.EventType
			name string
			rv   string
		}
		var steps []step
		mustCreate(t, s, sandbox("default", "first")) // revision 1, so every step has one before it
		record := func(typ watch.EventType, sb *v1alpha1.Sandbox) {
			steps = append(steps, step{typ, sb.Name, sb.ResourceVersion})
		}
		for i := range 5 {
			sb := sandbox("default", fmt.Sprintf("sb-%d", i))
			sb.Finalizers = []string{v1alpha1.Finalizer}
			record(watch.Added, mustCreate(t, s, sb))
		}
		sb, _ := s.Get(ctx, "default", "sb-2")
		sb.Status.Phase = v1alpha1.PhaseRunning
		sb, err := s.UpdateStatus(ctx, sb)
		if err != nil {
			t.Fatal(err)
		}
		record(watch.Modified, sb)
		if err := s.Delete(ctx, "default", "sb-2"); err != nil {
			t.Fatal(err)
		}
		sb, _ = s.Get(ctx, "default", "sb-2")
		record(watch.Modified, sb)
		sb.Finalizers = nil
		sb, err = s.Update(ctx, sb)
		if err != nil {
			t.Fatal(err)
		}
		record(watch.Deleted, sb)
		if isKube(s) {
			// The API server returned the object as last stored: only the
			// event knows the deletion's resourceVersion, after the last.
			steps[len(steps)-1].rv = ""
		}

		for i := range steps {
			if steps[i].rv == "" {
				continue
			}
			// Watching from the revision before a step replays it and every later one.
			from := strconv.FormatUint(mustParse(steps[i].rv)-1, 10)
			t.Run("from "+from, func(t *testing.T) {
				w, err := s.Watch(ctx, "", from)
				if err != nil {
					t.Fatal(err)
				}
				defer w.Stop()
				last := uint64(0)
				for _, st := range steps[i:] {
					got := expect(t, w, st.typ, st.name)
					if st.rv == "" && rv(t, got) <= last {
						t.Errorf("%s %s at resourceVersion %s, not after %d", st.typ, st.name, got.ResourceVersion, last)
					}
					last = rv(t, got)
					if st.rv != "" && got.ResourceVersion != st.rv {
						t.Errorf("%s %s at resourceVersion %s, want %s", st.typ, st.name, got.ResourceVersion, st.rv)
					}
				}
				expectQuiet(t, w)
			})
		}

		// "" and "0" start from now, and see what comes next.
		for _, from := range []string{"", "0"} {
			w, err := s.Watch(ctx, "", from)
			if err != nil {
				t.Fatal(err)
			}
			expectQuiet(t, w)
			mustCreate(t, s, sandbox("default", "next"+from))
			expect(t, w, watch.Added, "next"+from)
			w.Stop()
		}
	})
}

func TestWatchNamespace(t *testing.T) {
	eachStore(t, func(t *testing.T, s store.Interface) {
		ctx := context.Background()
		start, err := s.List(ctx, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		mustCreate(t, s, sandbox("team-a", "before"))
		mustCreate(t, s, sandbox("team-b", "before"))
		w, err := s.Watch(ctx, "team-b", start.ResourceVersion) // replays team-b's create only
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		expect(t, w, watch.Added, "before")
		mustCreate(t, s, sandbox("team-a", "after"))
		mustCreate(t, s, sandbox("team-b", "after"))
		expect(t, w, watch.Added, "after")
		expectQuiet(t, w)
		if _, err := s.Watch(ctx, "Team", ""); !apierrors.IsInvalid(err) {
			t.Errorf("Watch of an invalid namespace: %v, want Invalid", err)
		}
	})
}

func TestWatchExpired(t *testing.T) {
	ctx := context.Background()
	s := open(t, store.WithWatchHistory(3))
	var revs []uint64
	for i := range 5 {
		revs = append(revs, rv(t, mustCreate(t, s, sandbox("default", fmt.Sprintf("sb-%d", i)))))
	}
	// History keeps the last three events: a watch may resume from revs[1] on.
	for _, tc := range []struct {
		from string
		want errCheck
	}{
		{fmt.Sprint(revs[0]), apierrors.IsResourceExpired},
		{fmt.Sprint(revs[1]), isNil},
		{fmt.Sprint(revs[4]), isNil},
		{fmt.Sprint(revs[4] + 1), apierrors.IsResourceExpired}, // newer than the store: relist
		{"x", apierrors.IsBadRequest},
	} {
		w, err := s.Watch(ctx, "", tc.from)
		if !tc.want(err) {
			t.Errorf("Watch from %s: unexpected error %v", tc.from, err)
		}
		if err == nil {
			w.Stop()
		}
		if apierrors.IsResourceExpired(err) {
			if status := err.(apierrors.APIStatus).Status(); status.Code != 410 {
				t.Errorf("Watch from %s: code %d, want 410", tc.from, status.Code)
			}
		}
	}
	w, err := s.Watch(ctx, "", fmt.Sprint(revs[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for i := 2; i < 5; i++ {
		expect(t, w, watch.Added, fmt.Sprintf("sb-%d", i))
	}
}

// TestWatchFromAnEmptyList is an informer's start on a new store: list, then
// watch from the list's resourceVersion. Writes between the two are not lost.
func TestWatchFromAnEmptyList(t *testing.T) {
	eachStore(t, func(t *testing.T, s store.Interface) {
		ctx := context.Background()
		list, err := s.List(ctx, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if list.ResourceVersion == "" || list.ResourceVersion == "0" {
			t.Fatalf("an empty store lists at resourceVersion %q, which a watch reads as \"from now\"", list.ResourceVersion)
		}
		mustCreate(t, s, sandbox("default", "early"))
		w, err := s.Watch(ctx, "", list.ResourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		expect(t, w, watch.Added, "early")
	})
}

func TestSlowWatcherIsCutNotWaitedFor(t *testing.T) {
	ctx := context.Background()
	s := open(t, store.WithWatchBuffer(2))
	slow, err := s.Watch(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Stop()
	fast, err := s.Watch(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Stop()

	var last string
	for i := range 6 {
		// Writers go on although nobody reads the slow watcher.
		mustCreate(t, s, sandbox("default", fmt.Sprintf("sb-%d", i)))
		last = expect(t, fast, watch.Added, fmt.Sprintf("sb-%d", i)).ResourceVersion
	}
	// The slow watcher gets what fit in its buffer, then its stream ends...
	seen := expect(t, slow, watch.Added, "sb-0")
	seen = expect(t, slow, watch.Added, "sb-1")
	expectEnd(t, slow)
	// ...and resuming from the last event it saw misses nothing.
	resumed, err := s.Watch(ctx, "", seen.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Stop()
	for i := 2; i < 6; i++ {
		if got := expect(t, resumed, watch.Added, fmt.Sprintf("sb-%d", i)); i == 5 && got.ResourceVersion != last {
			t.Errorf("last replayed resourceVersion %s, want %s", got.ResourceVersion, last)
		}
	}
}

func TestWatchEnds(t *testing.T) {
	eachStore(t, func(t *testing.T, s store.Interface) {
		for _, tc := range []struct {
			name string
			end  func(w watch.Interface, cancel context.CancelFunc)
		}{
			{"Stop", func(w watch.Interface, _ context.CancelFunc) { w.Stop(); w.Stop() }},
			{"ctx", func(_ watch.Interface, cancel context.CancelFunc) { cancel() }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				w, err := s.Watch(ctx, "", "")
				if err != nil {
					t.Fatal(err)
				}
				tc.end(w, cancel)
				expectEnd(t, w)
				w.Stop()
			})
		}

		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := s.Watch(ctx, "", ""); !errors.Is(err, context.Canceled) {
			t.Errorf("Watch with an ended ctx: %v, want context.Canceled", err)
		}
	})
}

// TestCloseEndsWatches: closing the embedded store ends every watch, and
// later watches are refused.
func TestCloseEndsWatches(t *testing.T) {
	s2, err := store.OpenEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := s2.Watch(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	expectEnd(t, w)
	if _, err := s2.Watch(context.Background(), "", ""); !apierrors.IsServiceUnavailable(err) {
		t.Errorf("Watch on a closed store: %v, want ServiceUnavailable", err)
	}
	if err := s2.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestConcurrentWriters races creates, conflicting updates and deletes, and
// checks that every committed write shows up once on a watch, in revision
// order: with no gaps on the embedded store, whose revisions are its own;
// increasing on the API server, whose revisions count every write to etcd
// (other tests', leases, events).
func TestConcurrentWriters(t *testing.T) {
	eachKind(t, func(t *testing.T, openStore func(testing.TB, ...store.Option) store.Interface) {
		ctx := context.Background()
		s := openStore(t, store.WithWatchBuffer(10000))
		shared := mustCreate(t, s, sandbox("default", "shared"))
		first := rv(t, shared)
		w, err := s.Watch(ctx, "", shared.ResourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		// Read the events while they are written: the API server ends a
		// watch whose consumer falls far behind.
		var (
			mu     sync.Mutex
			seen   []uint64 // resourceVersions of the events, guarded by mu
			writes int      // committed writes, guarded by mu
		)
		reading := make(chan struct{})
		stopReading := make(chan struct{})
		go func() {
			defer close(reading)
			cur, from := w, shared.ResourceVersion
			defer func() {
				if cur != w {
					cur.Stop()
				}
			}()
			for {
				select {
				case e, ok := <-cur.ResultChan():
					if !ok {
						if !isKube(s) {
							return
						}
						// The API server also ends a watch whose consumer
						// fell behind on a loaded machine: go on from the
						// last event, as an informer does.
						if cur != w {
							cur.Stop()
						}
						next, err := s.Watch(ctx, "", from)
						if err != nil {
							t.Errorf("watch again from %s: %v", from, err)
							cur = w
							return
						}
						cur = next
						continue
					}
					sb, isSandbox := e.Object.(*v1alpha1.Sandbox)
					if !isSandbox {
						t.Errorf("watch event %s %v", e.Type, e.Object)
						return
					}
					from = sb.ResourceVersion
					mu.Lock()
					seen = append(seen, rv(t, sb))
					mu.Unlock()
				case <-stopReading:
					return
				}
			}
		}()

		const writers, each = 8, 20
		var wg sync.WaitGroup
		count := func() { mu.Lock(); writes++; mu.Unlock() }
		for g := range writers {
			wg.Go(func() {
				for i := range each {
					name := fmt.Sprintf("w%d-%d", g, i)
					if _, err := s.Create(ctx, sandbox("default", name)); err != nil {
						t.Error(err)
						return
					}
					count()
					// Read-modify-write with retry on conflict, as controllers do.
					for {
						cur, err := s.Get(ctx, "default", "shared")
						if err != nil {
							t.Error(err)
							return
						}
						cur.Status.Revision++
						if _, err = s.UpdateStatus(ctx, cur); err == nil {
							count()
							break
						}
						if !apierrors.IsConflict(err) {
							t.Error(err)
							return
						}
					}
					if i%2 == 0 {
						if err := s.Delete(ctx, "default", name); err != nil {
							t.Error(err)
							return
						}
						count()
					}
				}
			})
		}
		wg.Wait()

		shared, err = s.Get(ctx, "default", "shared")
		if err != nil {
			t.Fatal(err)
		}
		if shared.Status.Revision != writers*each {
			t.Errorf("shared counter = %d, want %d: an update was lost", shared.Status.Revision, writers*each)
		}
		list, err := s.List(ctx, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := 1 + writers*each/2; len(list.Items) != want {
			t.Errorf("%d objects, want %d", len(list.Items), want)
		}
		if !isKube(s) && rv(t, list) != first+uint64(writes) {
			t.Errorf("store revision %s after %d writes from %d, want %d", list.ResourceVersion, writes, first, first+uint64(writes))
		}
		eventually(t, fmt.Sprintf("%d watch events", writes), func() bool {
			select {
			case <-reading:
				return true // ended early: checked below
			default:
			}
			mu.Lock()
			defer mu.Unlock()
			return len(seen) >= writes
		})
		close(stopReading)
		<-reading
		if len(seen) != writes {
			t.Fatalf("the watch saw %d events, want one per write: %d", len(seen), writes)
		}
		last := first
		for i, n := range seen {
			if n <= last || (!isKube(s) && n != last+1) {
				t.Fatalf("event %d at revision %d after %d: out of order or with a gap", i, n, last)
			}
			last = n
		}
		if last > rv(t, list) {
			t.Errorf("last event at revision %d, after the list's %s", last, list.ResourceVersion)
		}
	})
}
