package auth

import (
	"container/list"
	"sync"
	"time"
)

// cache remembers answers of the Kubernetes API server (who a token is,
// whether a user may do something) for a short while, at most max of them.
//
// Invariant: order holds every entry of entries, oldest put first. When the
// cache is full, put drops the oldest entry: every entry lives at most the
// longest TTL, so the oldest put is the one nearest to expiring (or the
// longest expired) give or take the difference between the TTLs, which is
// the price of an O(1) bound.
type cache[V any] struct {
	mu      sync.Mutex
	max     int
	now     func() time.Time
	entries map[string]*list.Element
	order   *list.List // of *cacheEntry[V]
}

type cacheEntry[V any] struct {
	key     string
	value   V
	expires time.Time
}

// newCache returns a cache of at most size entries (at least one); now is
// its clock (nil: time.Now).
func newCache[V any](size int, now func() time.Time) *cache[V] {
	if now == nil {
		now = time.Now
	}
	return &cache[V]{max: max(size, 1), now: now, entries: map[string]*list.Element{}, order: list.New()}
}

// get returns the value under key, unless it expired (an expired entry is
// dropped).
func (c *cache[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero V
	el, ok := c.entries[key]
	if !ok {
		return zero, false
	}
	e := el.Value.(*cacheEntry[V])
	if !c.now().Before(e.expires) {
		c.remove(el)
		return zero, false
	}
	return e.value, true
}

// put remembers value under key for ttl, dropping the oldest entry when
// the cache is full.
func (c *cache[V]) put(key string, value V, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.remove(el)
	}
	for c.order.Len() >= c.max {
		c.remove(c.order.Front())
	}
	c.entries[key] = c.order.PushBack(&cacheEntry[V]{key: key, value: value, expires: c.now().Add(ttl)})
}

// len returns how many entries the cache holds, expired ones included.
func (c *cache[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

func (c *cache[V]) remove(el *list.Element) {
	delete(c.entries, el.Value.(*cacheEntry[V]).key)
	c.order.Remove(el)
}
