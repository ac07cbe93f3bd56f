package controller

import (
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// termQueue is a rate-limited work queue that each term of the workers
// replaces (Work): a replica that loses its leadership shuts its term's
// queue down, which is what stops its workers, and a queue once shut down
// cannot be used again. Adds go to the current queue; between terms they
// wait there, deduplicated by key, and the next term enqueues every object
// anyway.
type termQueue[T comparable] struct {
	mu    sync.RWMutex
	q     workqueue.TypedRateLimitingInterface[T]
	fresh func() workqueue.TypedRateLimitingInterface[T]
}

func newTermQueue[T comparable](fresh func() workqueue.TypedRateLimitingInterface[T]) *termQueue[T] {
	return &termQueue[T]{q: fresh(), fresh: fresh}
}

func (t *termQueue[T]) current() workqueue.TypedRateLimitingInterface[T] {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.q
}

// renew starts a term: the queue until now is shut down and a fresh one
// returned, which the term's workers use and shut down at its end.
func (t *termQueue[T]) renew() workqueue.TypedRateLimitingInterface[T] {
	t.mu.Lock()
	old := t.q
	t.q = t.fresh()
	q := t.q
	t.mu.Unlock()
	old.ShutDown()
	return q
}

func (t *termQueue[T]) Add(item T)                           { t.current().Add(item) }
func (t *termQueue[T]) AddAfter(item T, after time.Duration) { t.current().AddAfter(item, after) }

// ShutDown shuts the current queue down for good: the controller stops.
func (t *termQueue[T]) ShutDown() { t.current().ShutDown() }
