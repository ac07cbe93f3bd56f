package controller

import (
	"sync"
	"time"
)

// backoff spaces out retries per key: the first waits initial, each next
// one twice as long, up to max. It is what keeps a create that keeps
// failing (containerd down, a registry away) from looping hot: a failed
// attempt sets a time before which nothing retries it, whatever wakes the
// key up (agent status changes wake it often).
type backoff struct {
	initial, max time.Duration

	mu    sync.Mutex
	state map[string]backoffState
}

type backoffState struct {
	failures  int
	notBefore time.Time
}

func newBackoff(initial, max time.Duration) *backoff {
	return &backoff{initial: initial, max: max, state: make(map[string]backoffState)}
}

// failed records a failure of key and returns how long to wait before the
// next attempt.
func (b *backoff) failed(key string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.state[key]
	d := b.delay(st.failures)
	st.failures++
	st.notBefore = time.Now().Add(d)
	b.state[key] = st
	return d
}

// wait returns how long key must still wait, or 0.
func (b *backoff) wait(key string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(time.Until(b.state[key].notBefore), 0)
}

// next returns the wait the next failure of key will get, without
// recording anything.
func (b *backoff) next(key string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.delay(b.state[key].failures)
}

func (b *backoff) delay(failures int) time.Duration {
	d := b.initial
	for range failures {
		if d >= b.max/2 {
			return b.max
		}
		d *= 2
	}
	return min(d, b.max)
}

// reset forgets key's failures.
func (b *backoff) reset(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.state, key)
}
