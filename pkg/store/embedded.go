package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// Defaults of the embedded store's watch machinery.
const (
	DefaultWatchHistory = 1000
	DefaultWatchBuffer  = 256
)

// maxBatch bounds how many queued writes share one bbolt transaction.
const maxBatch = 256

var (
	sandboxesBucket = []byte("sandboxes")
	metaBucket      = []byte("meta")
	revisionKey     = []byte("revision")
)

// Embedded is the single-machine Interface: Sandboxes as JSON in a bbolt file,
// one persisted revision counter, and an in-memory watch fan-out.
//
// Writes queue for one committer goroutine, which applies whatever is queued
// in a single bbolt transaction (one fsync for the lot), gives each change the
// next revision, and only then makes the changes visible to reads and
// watchers, in revision order. Reads are served from memory.
type Embedded struct {
	db     *bolt.DB
	ops    chan *op
	done   chan struct{} // closed by Close: no more writes
	closer sync.Once
	run    sync.WaitGroup // the committer

	watchBuffer int

	mu       sync.RWMutex
	objects  map[string]*v1alpha1.Sandbox // by namespace/name; values are never modified
	rev      uint64                       // the last committed revision; written by the committer only
	history  *history
	watchers map[*watcher]struct{}
	closed   bool
}

var _ Interface = (*Embedded)(nil)

// Option tunes OpenEmbedded.
type Option func(*Embedded)

// WithWatchHistory keeps the last n events for watches that resume from a
// resourceVersion (default DefaultWatchHistory); older ones get
// ResourceExpired.
func WithWatchHistory(n int) Option {
	return func(s *Embedded) { s.history = newHistory(max(n, 1), 0) }
}

// WithWatchBuffer sets how many events a watcher may fall behind before its
// stream is ended (default DefaultWatchBuffer).
func WithWatchBuffer(n int) Option {
	return func(s *Embedded) { s.watchBuffer = max(n, 1) }
}

// OpenEmbedded opens (or creates) the store in dir/store.db. One process at a
// time may hold it.
func OpenEmbedded(dir string, opts ...Option) (*Embedded, error) {
	s := &Embedded{
		ops:         make(chan *op),
		done:        make(chan struct{}),
		watchBuffer: DefaultWatchBuffer,
		objects:     make(map[string]*v1alpha1.Sandbox),
		history:     newHistory(DefaultWatchHistory, 0),
		watchers:    make(map[*watcher]struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	path := filepath.Join(dir, "store.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: time.Second, // another process holds the file: say so rather than hang
		// As etcd runs bbolt: the freelist is rebuilt at open instead of
		// written with every commit.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store: %s is locked by another process", path)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s.db = db
	if err := s.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: load %s: %w", path, err)
	}
	// Nothing before the revision we start at can be replayed.
	s.history.compacted = s.rev
	s.run.Add(1)
	go s.commitLoop()
	return s, nil
}

// load reads the revision counter and every object into memory.
func (s *Embedded) load() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		// A new store starts at revision 1, as etcd does: no list then ever
		// carries resourceVersion "0", which a watch reads as "from now".
		s.rev = 1
		if v := meta.Get(revisionKey); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("revision counter is %d bytes, want 8", len(v))
			}
			s.rev = binary.BigEndian.Uint64(v)
		}
		objects, err := tx.CreateBucketIfNotExists(sandboxesBucket)
		if err != nil {
			return err
		}
		return objects.ForEach(func(k, v []byte) error {
			obj, err := decode(v)
			if err != nil {
				return fmt.Errorf("object %s: %w", k, err)
			}
			s.objects[string(k)] = obj
			return nil
		})
	})
}

// Close stops accepting writes, finishes the ones already taken, ends every
// watch and closes the file.
func (s *Embedded) Close() error {
	var err error
	s.closer.Do(func() {
		close(s.done)
		s.run.Wait()
		s.mu.Lock()
		s.closed = true
		for w := range s.watchers {
			s.stopWatcherLocked(w)
		}
		s.mu.Unlock()
		err = s.db.Close()
	})
	return err
}

func errClosed() error { return apierrors.NewServiceUnavailable("the store is closed") }

// Create implements Interface.
func (s *Embedded) Create(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	in, err := normalize(sb)
	if err != nil {
		return nil, err
	}
	return s.write(ctx, in.Namespace, in.Name, func(cur *v1alpha1.Sandbox, now metav1.Time) (change, error) {
		return prepareCreate(cur, in, now)
	})
}

// Update implements Interface.
func (s *Embedded) Update(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	in, err := normalize(sb)
	if err != nil {
		return nil, err
	}
	return s.write(ctx, in.Namespace, in.Name, func(cur *v1alpha1.Sandbox, now metav1.Time) (change, error) {
		return prepareUpdate(cur, in, now)
	})
}

// UpdateStatus implements Interface.
func (s *Embedded) UpdateStatus(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	in, err := normalize(sb)
	if err != nil {
		return nil, err
	}
	return s.write(ctx, in.Namespace, in.Name, func(cur *v1alpha1.Sandbox, now metav1.Time) (change, error) {
		return prepareUpdateStatus(cur, in, now)
	})
}

// Delete implements Interface.
func (s *Embedded) Delete(ctx context.Context, namespace, name string) error {
	_, err := s.write(ctx, namespace, name, func(cur *v1alpha1.Sandbox, now metav1.Time) (change, error) {
		return prepareDelete(cur, name, now)
	})
	return err
}

// Get implements Interface.
func (s *Embedded) Get(ctx context.Context, namespace, name string) (*v1alpha1.Sandbox, error) {
	if err := validateKey(namespace, name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	obj, closed := s.objects[key(namespace, name)], s.closed
	s.mu.RUnlock()
	switch {
	case closed:
		return nil, errClosed()
	case obj == nil:
		return nil, notFound(name)
	}
	return obj.DeepCopy(), nil
}

// List implements Interface. Items are sorted by namespace and name.
func (s *Embedded) List(ctx context.Context, namespace string, selector labels.Selector) (*v1alpha1.SandboxList, error) {
	if err := validateNamespace(namespace); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if selector == nil {
		selector = labels.Everything()
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, errClosed()
	}
	var matched []*v1alpha1.Sandbox
	for _, obj := range s.objects {
		if (namespace == "" || obj.Namespace == namespace) && selector.Matches(labels.Set(obj.Labels)) {
			matched = append(matched, obj)
		}
	}
	rev := s.rev
	s.mu.RUnlock()

	slices.SortFunc(matched, func(a, b *v1alpha1.Sandbox) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	list := &v1alpha1.SandboxList{
		ListMeta: metav1.ListMeta{ResourceVersion: strconv.FormatUint(rev, 10)},
		Items:    make([]v1alpha1.Sandbox, len(matched)),
	}
	for i, obj := range matched {
		obj.DeepCopyInto(&list.Items[i])
	}
	return list, nil
}

// Watch implements Interface. A resourceVersion newer than the store's also
// gives ResourceExpired: it comes from another store, and only a relist helps.
func (s *Embedded) Watch(ctx context.Context, namespace, resourceVersion string) (watch.Interface, error) {
	if err := validateNamespace(namespace); err != nil {
		return nil, err
	}
	from, err := parseResourceVersion(resourceVersion)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed()
	}
	if from == 0 {
		from = s.rev
	}
	if from > s.rev {
		return nil, apierrors.NewResourceExpired(fmt.Sprintf(
			"resource version %d is newer than the store's %d", from, s.rev))
	}
	missed, ok := s.history.since(from)
	if !ok {
		return nil, apierrors.NewResourceExpired(fmt.Sprintf(
			"too old resource version: %d (%d)", from, s.history.compacted+1))
	}
	w := &watcher{s: s, namespace: namespace, ch: make(chan watch.Event, s.watchBuffer+len(missed))}
	for _, e := range missed {
		if w.wants(e) {
			w.send(e)
		}
	}
	s.watchers[w] = struct{}{}
	w.release = context.AfterFunc(ctx, w.Stop)
	return w, nil
}

func (s *Embedded) stopWatcherLocked(w *watcher) {
	if w.stopped {
		return
	}
	w.stopped = true
	delete(s.watchers, w)
	close(w.ch)
	if w.release != nil {
		w.release()
	}
}

// op is one write waiting for the committer.
type op struct {
	key   string
	apply func(cur *v1alpha1.Sandbox, now metav1.Time) (change, error)
	done  chan result // buffered: the committer never waits for the caller
}

type result struct {
	obj *v1alpha1.Sandbox
	err error
}

// write hands apply to the committer and waits for its outcome. When ctx ends
// first the write may still land, as with a timed-out API request.
func (s *Embedded) write(ctx context.Context, namespace, name string, apply func(*v1alpha1.Sandbox, metav1.Time) (change, error)) (*v1alpha1.Sandbox, error) {
	if err := validateKey(namespace, name); err != nil {
		return nil, err
	}
	o := &op{key: key(namespace, name), apply: apply, done: make(chan result, 1)}
	select {
	case s.ops <- o:
	case <-s.done:
		return nil, errClosed()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-o.done:
		if r.err != nil {
			return nil, r.err
		}
		return r.obj.DeepCopy(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// commitLoop is the committer: it takes the writes queued at that moment,
// commits them together, and repeats until Close.
func (s *Embedded) commitLoop() {
	defer s.run.Done()
	for {
		var batch []*op
		select {
		case <-s.done:
			return
		case o := <-s.ops:
			batch = append(batch, o)
		}
	more:
		for len(batch) < maxBatch {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break more
			}
		}
		s.commit(batch)
	}
}

// commit applies a batch of writes in order, each seeing the ones before it,
// persists them in one transaction and then publishes them. When the
// transaction fails, every write of the batch fails and nothing is published.
func (s *Embedded) commit(batch []*op) {
	now := metav1.Now().Rfc3339Copy()
	staged := make(map[string]*v1alpha1.Sandbox) // nil: deleted in this batch
	results := make([]result, len(batch))
	var events []event
	rev := s.rev
	for i, o := range batch {
		cur, ok := staged[o.key]
		if !ok {
			cur = s.objects[o.key]
		}
		c, err := o.apply(cur, now)
		if err != nil {
			results[i].err = err
			continue
		}
		results[i].obj = c.obj
		if c.typ == "" {
			continue
		}
		rev++
		c.obj.ResourceVersion = strconv.FormatUint(rev, 10)
		if c.typ == watch.Deleted {
			staged[o.key] = nil
		} else {
			staged[o.key] = c.obj
		}
		events = append(events, event{rev: rev, typ: c.typ, obj: c.obj})
	}
	if len(events) > 0 {
		if err := s.persist(events, rev); err != nil {
			for i := range results {
				results[i] = result{err: apierrors.NewInternalError(fmt.Errorf("store: commit: %w", err))}
			}
		} else {
			s.publish(staged, events, rev)
		}
	}
	for i, o := range batch {
		o.done <- results[i]
	}
}

// persist writes the batch's events and the revision counter in one
// transaction.
func (s *Embedded) persist(events []event, rev uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		objects := tx.Bucket(sandboxesBucket)
		for _, e := range events {
			k := []byte(key(e.obj.Namespace, e.obj.Name))
			if e.typ == watch.Deleted {
				if err := objects.Delete(k); err != nil {
					return err
				}
				continue
			}
			data, err := encode(e.obj)
			if err != nil {
				return err
			}
			if err := objects.Put(k, data); err != nil {
				return err
			}
		}
		return tx.Bucket(metaBucket).Put(revisionKey, binary.BigEndian.AppendUint64(nil, rev))
	})
}

// publish makes committed changes visible to reads and hands the events to
// the history and every interested watcher, in revision order. A watcher
// whose buffer is full is ended rather than waited for.
func (s *Embedded) publish(staged map[string]*v1alpha1.Sandbox, events []event, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, obj := range staged {
		if obj == nil {
			delete(s.objects, k)
		} else {
			s.objects[k] = obj
		}
	}
	s.rev = rev
	for _, e := range events {
		s.history.add(e)
		for w := range s.watchers {
			if w.wants(e) && !w.send(e) {
				s.stopWatcherLocked(w)
			}
		}
	}
}

func key(namespace, name string) string { return namespace + "/" + name }

// parseResourceVersion reads a watch's resourceVersion; 0 means "from now".
func parseResourceVersion(rv string) (uint64, error) {
	if rv == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(rv, 10, 64)
	if err != nil {
		return 0, apierrors.NewBadRequest(fmt.Sprintf("invalid resource version %q", rv))
	}
	return n, nil
}

// normalize gives the store its own copy of a caller's object, passed through
// JSON as an API server would: what is kept in memory is exactly what a
// restart reads back from disk (timestamps in whole seconds, empty lists
// absent).
func normalize(sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	if sb == nil {
		return nil, apierrors.NewBadRequest("no object given")
	}
	data, err := json.Marshal(sb)
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("cannot encode the object: %v", err))
	}
	return decode(data)
}

// encode is the stored form: JSON with apiVersion and kind.
func encode(obj *v1alpha1.Sandbox) ([]byte, error) {
	v := *obj
	v.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Sandbox"}
	return json.Marshal(&v)
}

// decode reads the stored form. Objects in memory carry no TypeMeta, like
// those a typed client returns.
func decode(data []byte) (*v1alpha1.Sandbox, error) {
	obj := new(v1alpha1.Sandbox)
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, err
	}
	obj.TypeMeta = metav1.TypeMeta{}
	return obj, nil
}
