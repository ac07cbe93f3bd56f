package fastpath

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// The back-off between attempts of a FAST create's object write: short at
// first, so that a blip costs little, and capped so that a store that is
// back is noticed within a couple of seconds.
const (
	writeBackoff    = 20 * time.Millisecond
	writeBackoffMax = 2 * time.Second
)

// refusedForGood reports whether a store write error is final: the same
// write cannot succeed however often it is tried (an invalid or too large
// object, a forbidden write or quota, a verb the store does not serve, or
// the name held by another sandbox). Everything else — the store
// unavailable, a timeout, too many requests, a broken connection, an
// error it does not know — is transient: the write may land later.
func refusedForGood(err error) bool {
	var taken *nameTakenError
	switch {
	case err == nil:
		return false
	case errors.As(err, &taken),
		apierrors.IsInvalid(err), apierrors.IsForbidden(err), apierrors.IsBadRequest(err),
		apierrors.IsRequestEntityTooLargeError(err), apierrors.IsMethodNotSupported(err):
		return true
	}
	return false
}

// nameTakenError says a FAST create's name belongs in the store to another
// sandbox ID: its own object can never be written.
type nameTakenError struct {
	name, holder, id string
}

func (e *nameTakenError) Error() string {
	return fmt.Sprintf("the name %s is taken by sandbox %q, not %s", e.name, e.holder, e.id)
}

// storeHealth knows whether the store is known unreachable: a pending FAST
// create's object write has failed transiently and the store has not
// answered since. While it is, new FAST creates are refused (the fast path
// would acknowledge sandboxes whose objects cannot land); the writes under
// way go on until they land.
type storeHealth struct {
	logger *slog.Logger

	mu sync.Mutex
	// failing holds the pending creates whose last write failed
	// transiently, since the store last answered; the store is known
	// unreachable while it has one. Only a pending create that is still
	// retrying holds the state: one that is deleted or given up leaves it,
	// so nothing can keep FAST creates refused once no write waits.
	failing map[*pendingCreate]bool
	cause   error // the latest transient failure
}

// unreachable returns why the store is known unreachable, or nil.
func (h *storeHealth) unreachable() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.failing) == 0 {
		return nil
	}
	return h.cause
}

// failed records that p's write failed transiently with err.
func (h *storeHealth) failed(p *pendingCreate, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.failing) == 0 {
		h.logger.Warn("the store is unreachable: FAST objects are written once it is back, and new FAST creates are refused until then",
			slog.String("id", p.id), slog.Any("err", err))
	}
	h.failing[p] = true
	h.cause = err
}

// answered records that the store answered a write: it took the object or
// refused it for good. Either way it is reachable.
func (h *storeHealth) answered() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.failing) > 0 {
		h.logger.Info("the store is reachable again: FAST creates resume")
		clear(h.failing)
	}
}

// forget records that p no longer writes (it was deleted, or the server
// stops).
func (h *storeHealth) forget(p *pendingCreate) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.failing[p] {
		return
	}
	delete(h.failing, p)
	if len(h.failing) == 0 {
		h.logger.Info("no FAST object write waits for the store any more: FAST creates resume")
	}
}
