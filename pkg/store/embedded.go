package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
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
	"k8s.io/apimachinery/pkg/runtime/schema"
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
	metaBucket  = []byte("meta")
	revisionKey = []byte("revision")
)

// Embedded is the single-machine Interface: Sandboxes (and, through Pools,
// SandboxPools) as JSON in a bbolt file, a bucket per resource, one persisted
// revision counter shared by both as etcd shares its, and an in-memory watch
// fan-out.
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
	objects  map[*kind]map[string]object // by kind, then namespace/name; values are never modified
	rev      uint64                      // the last committed revision; written by the committer only
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
		objects:     make(map[*kind]map[string]object, len(kinds)),
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
		for _, kd := range kinds {
			objects, err := tx.CreateBucketIfNotExists([]byte(kd.resource))
			if err != nil {
				return err
			}
			s.objects[kd] = make(map[string]object)
			err = objects.ForEach(func(k, v []byte) error {
				obj, err := decode(kd, v)
				if err != nil {
					return fmt.Errorf("%s %s: %w", kd.resource, k, err)
				}
				s.objects[kd][string(k)] = obj
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
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
	return typed[*v1alpha1.Sandbox](s.create(ctx, sandboxKind, sb))
}

// Update implements Interface.
func (s *Embedded) Update(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	return typed[*v1alpha1.Sandbox](s.update(ctx, sandboxKind, sb))
}

// UpdateStatus implements Interface.
func (s *Embedded) UpdateStatus(ctx context.Context, sb *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	return typed[*v1alpha1.Sandbox](s.updateStatus(ctx, sandboxKind, sb))
}

// Delete implements Interface.
func (s *Embedded) Delete(ctx context.Context, namespace, name string) error {
	return s.delete(ctx, sandboxKind, namespace, name)
}

// Get implements Interface.
func (s *Embedded) Get(ctx context.Context, namespace, name string) (*v1alpha1.Sandbox, error) {
	return typed[*v1alpha1.Sandbox](s.get(ctx, sandboxKind, namespace, name))
}

// List implements Interface. Items are sorted by namespace and name.
func (s *Embedded) List(ctx context.Context, namespace string, selector labels.Selector) (*v1alpha1.SandboxList, error) {
	objs, rv, err := s.list(ctx, sandboxKind, namespace, selector)
	if err != nil {
		return nil, err
	}
	list := &v1alpha1.SandboxList{ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: make([]v1alpha1.Sandbox, len(objs))}
	for i, obj := range objs {
		obj.(*v1alpha1.Sandbox).DeepCopyInto(&list.Items[i])
	}
	return list, nil
}

// Watch implements Interface. A resourceVersion newer than the store's also
// gives ResourceExpired: it comes from another store, and only a relist helps.
func (s *Embedded) Watch(ctx context.Context, namespace, resourceVersion string) (watch.Interface, error) {
	return s.watch(ctx, sandboxKind, namespace, resourceVersion)
}

// typed is the result of a write or read as the caller's type.
func typed[T object](obj object, err error) (T, error) {
	if err != nil {
		var zero T
		return zero, err
	}
	return obj.(T), nil
}

func (s *Embedded) create(ctx context.Context, k *kind, o object) (object, error) {
	in, err := normalize(k, o)
	if err != nil {
		return nil, err
	}
	m := metaOf(in)
	return s.write(ctx, k, m.Namespace, m.Name, func(cur object, now metav1.Time) (change, error) {
		return prepareCreate(k, cur, in, now)
	})
}

func (s *Embedded) update(ctx context.Context, k *kind, o object) (object, error) {
	in, err := normalize(k, o)
	if err != nil {
		return nil, err
	}
	m := metaOf(in)
	return s.write(ctx, k, m.Namespace, m.Name, func(cur object, now metav1.Time) (change, error) {
		return prepareUpdate(k, cur, in, now)
	})
}

func (s *Embedded) updateStatus(ctx context.Context, k *kind, o object) (object, error) {
	in, err := normalize(k, o)
	if err != nil {
		return nil, err
	}
	m := metaOf(in)
	return s.write(ctx, k, m.Namespace, m.Name, func(cur object, now metav1.Time) (change, error) {
		return prepareUpdateStatus(k, cur, in, now)
	})
}

func (s *Embedded) delete(ctx context.Context, k *kind, namespace, name string) error {
	_, err := s.write(ctx, k, namespace, name, func(cur object, now metav1.Time) (change, error) {
		return prepareDelete(k, cur, name, now)
	})
	return err
}

func (s *Embedded) get(ctx context.Context, k *kind, namespace, name string) (object, error) {
	if err := validateKey(namespace, name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	obj, closed := s.objects[k][key(namespace, name)], s.closed
	s.mu.RUnlock()
	switch {
	case closed:
		return nil, errClosed()
	case obj == nil:
		return nil, k.notFound(name)
	}
	return deepCopy(obj), nil
}

// list returns the stored objects of kind k matching namespace and selector,
// sorted by namespace and name, and the store's revision. They are shared:
// the caller copies them.
func (s *Embedded) list(ctx context.Context, k *kind, namespace string, selector labels.Selector) ([]object, string, error) {
	if err := validateNamespace(namespace); err != nil {
		return nil, "", err
	}
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	if selector == nil {
		selector = labels.Everything()
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, "", errClosed()
	}
	var matched []object
	for _, obj := range s.objects[k] {
		m := metaOf(obj)
		if (namespace == "" || m.Namespace == namespace) && selector.Matches(labels.Set(m.Labels)) {
			matched = append(matched, obj)
		}
	}
	rev := s.rev
	s.mu.RUnlock()

	slices.SortFunc(matched, func(a, b object) int {
		ma, mb := metaOf(a), metaOf(b)
		if c := strings.Compare(ma.Namespace, mb.Namespace); c != 0 {
			return c
		}
		return strings.Compare(ma.Name, mb.Name)
	})
	return matched, strconv.FormatUint(rev, 10), nil
}

func (s *Embedded) watch(ctx context.Context, k *kind, namespace, resourceVersion string) (watch.Interface, error) {
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
	w := &watcher{s: s, kind: k, namespace: namespace, ch: make(chan watch.Event, s.watchBuffer+len(missed))}
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
	kind  *kind
	key   string
	apply func(cur object, now metav1.Time) (change, error)
	done  chan result // buffered: the committer never waits for the caller
}

type result struct {
	obj object
	err error
}

// stagedKey names an object of a batch.
type stagedKey struct {
	kind *kind
	key  string
}

// write hands apply to the committer and waits for its outcome. When ctx ends
// first the write may still land, as with a timed-out API request.
func (s *Embedded) write(ctx context.Context, k *kind, namespace, name string, apply func(object, metav1.Time) (change, error)) (object, error) {
	if err := validateKey(namespace, name); err != nil {
		return nil, err
	}
	o := &op{kind: k, key: key(namespace, name), apply: apply, done: make(chan result, 1)}
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
		return deepCopy(r.obj), nil
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
	staged := make(map[stagedKey]object) // nil: deleted in this batch
	results := make([]result, len(batch))
	var events []event
	rev := s.rev
	for i, o := range batch {
		sk := stagedKey{o.kind, o.key}
		cur, ok := staged[sk]
		if !ok {
			// A map's missing entry is a nil interface, never a typed nil.
			cur = s.objects[o.kind][o.key]
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
		metaOf(c.obj).ResourceVersion = strconv.FormatUint(rev, 10)
		if c.typ == watch.Deleted {
			staged[sk] = nil
		} else {
			staged[sk] = c.obj
		}
		events = append(events, event{rev: rev, kind: o.kind, typ: c.typ, obj: c.obj})
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
		for _, e := range events {
			objects := tx.Bucket([]byte(e.kind.resource))
			m := metaOf(e.obj)
			k := []byte(key(m.Namespace, m.Name))
			if e.typ == watch.Deleted {
				if err := objects.Delete(k); err != nil {
					return err
				}
				continue
			}
			data, err := encode(e.kind, e.obj)
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
func (s *Embedded) publish(staged map[stagedKey]object, events []event, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, obj := range staged {
		if obj == nil {
			delete(s.objects[k.kind], k.key)
		} else {
			s.objects[k.kind][k.key] = obj
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
func normalize(k *kind, o object) (object, error) {
	if o == nil || reflect.ValueOf(o).IsNil() {
		return nil, apierrors.NewBadRequest("no object given")
	}
	data, err := json.Marshal(o)
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("cannot encode the object: %v", err))
	}
	return decode(k, data)
}

// encode is the stored form: JSON with apiVersion and kind.
func encode(k *kind, obj object) ([]byte, error) {
	v := deepCopy(obj)
	v.GetObjectKind().SetGroupVersionKind(v1alpha1.GroupVersion.WithKind(k.kind))
	return json.Marshal(v)
}

// decode reads the stored form. Objects in memory carry no TypeMeta, like
// those a typed client returns.
func decode(k *kind, data []byte) (object, error) {
	obj := k.newObj()
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, err
	}
	obj.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind{})
	return obj, nil
}
