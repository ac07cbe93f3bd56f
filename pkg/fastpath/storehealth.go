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

// writeAttemptTimeout bounds one attempt of a FAST create's object write.
// An API server behind a broken network does not refuse a connection, it
// never answers: without a bound the first write would hang (client-go
// sets no timeout of its own) and the store would never be known
// unreachable while FAST creates went on being acknowledged.
const writeAttemptTimeout = 5 * time.Second

// DefaultForbiddenGrace is how long a FAST create's object write that the
// store answers with Forbidden (or with its namespace not found) is
// retried before the refusal counts as final. A kube-apiserver that has
// just started answers Forbidden to everyone its authorizer does not know
// yet, until its RBAC caches have filled (kubernetes/kubernetes#121635):
// that is the outage ending, not a refusal. A missing permission, an
// exceeded quota, a namespace being deleted or one that does not exist
// still refuses after the grace.
const DefaultForbiddenGrace = 10 * time.Second

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
	case errors.As(err, &taken), namespaceMissing(err),
		apierrors.IsInvalid(err), apierrors.IsForbidden(err), apierrors.IsBadRequest(err),
		apierrors.IsRequestEntityTooLargeError(err), apierrors.IsMethodNotSupported(err):
		return true
	}
	return false
}

// namespaceMissing reports whether err is the API server's answer to a
// create in a namespace that does not exist (NotFound naming namespaces).
// Retrying it while the namespace stays away would keep the store "known
// unreachable" for every FAST create, though it answers; a NotFound of the
// resource itself (an API server still installing the CRD's storage) stays
// transient.
func namespaceMissing(err error) bool {
	var status apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	return d != nil && d.Kind == "namespaces" && d.Group == ""
}

// nameTakenError says a FAST create's name belongs in the store to another
// sandbox ID: its own object can never be written.
type nameTakenError struct {
	name, holder, id string
}

func (e *nameTakenError) Error() string {
	return fmt.Sprintf("the name %s is taken by sandbox %q, not %s", e.name, e.holder, e.id)
}

// storeHealth knows whether the store is known unreachable, and when a
// refusal is final.
//
// The store is known unreachable from the moment a FAST create's object
// write fails transiently — an error that is not a refusal for good, or
// an attempt with no answer within writeAttemptTimeout — until the store
// answers a write again (takes an object or refuses one), or until no
// write that failed so waits any more (each was deleted, or the server
// stops). A FAST create's write starts the moment its agent has answered,
// so with an API server that is down (connections refused) the state
// begins within milliseconds of the first create acknowledged after the
// outage began, and with one that no longer answers at all within
// writeAttemptTimeout; with no FAST create under way nothing notices, and
// the first create after the outage began is acknowledged and written
// once the store is back. While the store is known unreachable, new FAST
// creates are refused with Unavailable (the fast path would acknowledge
// sandboxes whose objects cannot land); the writes under way go on until
// they land, however long that takes.
type storeHealth struct {
	logger *slog.Logger
	// forbiddenGrace is how long a Forbidden answer is retried before it
	// is final (DefaultForbiddenGrace).
	forbiddenGrace time.Duration

	mu sync.Mutex
	// failing holds the pending creates whose last write failed
	// transiently, since the store last answered; the store is known
	// unreachable while it has one. Only a pending create that is still
	// retrying holds the state: one that is deleted or given up leaves it,
	// so nothing can keep FAST creates refused once no write waits.
	failing map[*pendingCreate]bool
	cause   error // the latest transient failure
	// forbidden holds when each sandbox's object write was first answered
	// Forbidden, until the write lands or the refusal is final.
	forbidden map[string]time.Time
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

// final reports whether err, a refusal for good of sandbox id's object
// (refusedForGood), is final now. Every refusal is, but Forbidden and a
// namespace not found: those are final once the store has answered so to
// the sandbox's writes for forbiddenGrace. Until then the caller retries.
func (h *storeHealth) final(id string, err error) bool {
	var taken *nameTakenError
	if errors.As(err, &taken) || !(apierrors.IsForbidden(err) || namespaceMissing(err)) || h.forbiddenGrace <= 0 {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	for other, since := range h.forbidden {
		// A sandbox whose retries ended otherwise (deleted, its agent
		// gone) leaves an entry: bound how long it stays.
		if now.Sub(since) > 10*h.forbiddenGrace {
			delete(h.forbidden, other)
		}
	}
	since, seen := h.forbidden[id]
	if !seen {
		h.forbidden[id] = now
		return false
	}
	if now.Sub(since) < h.forbiddenGrace {
		return false
	}
	delete(h.forbidden, id)
	return true
}

// settled forgets a sandbox's refusals once its object is written or its
// create ends.
func (h *storeHealth) settled(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.forbidden, id)
}

// forget records that p no longer writes (it was deleted, or the server
// stops).
func (h *storeHealth) forget(p *pendingCreate) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.forbidden, p.id)
	if !h.failing[p] {
		return
	}
	delete(h.failing, p)
	if len(h.failing) == 0 {
		h.logger.Info("no FAST object write waits for the store any more: FAST creates resume")
	}
}
