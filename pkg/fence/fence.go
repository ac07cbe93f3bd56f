// Package fence is the fencing token between controllers and agents. Only
// the controller that holds the leader lease may place or remove
// sandboxes; a leader that was stopped (SIGSTOP, a long pause of its
// node) past its lease cannot know that it was deposed. So every call a
// controller makes to an agent carries the fence of its term (Header), a
// number that grows with every change of leader, and each agent keeps the
// highest fence it has seen (Guard) and refuses a call that carries a
// lower one: once the new leader has spoken to an agent, its predecessor
// can no longer act there, whatever it believes.
//
// A call with no header has fence 0: a controller that runs without an
// election (the embedded store) never sends one, and agents that never
// saw a fence take its calls as before. Once an agent has seen a fence, a
// call without one comes from a controller outside the election (a former
// embedded or unfenced controller) and is refused like any lower fence.
package fence

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
)

// Header carries the fence of the calling controller's term on every
// agent call: the Lease's transitions count plus one, so that the first
// leader's fence (1) is above an unfenced caller's 0.
const Header = "Fsb-Fence"

// ErrFenced marks a call refused because a newer controller leads.
var ErrFenced = errors.New("fenced: a newer controller leads")

// Parse returns the fence a request carries: 0 without the header.
func Parse(h http.Header) (int64, error) {
	v := h.Get(Header)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("header %s %q: want a number, 0 or more", Header, v)
	}
	return n, nil
}

// Set writes fence n into h; 0 writes nothing (no header is fence 0).
func Set(h http.Header, n int64) {
	if n > 0 {
		h.Set(Header, strconv.FormatInt(n, 10))
	}
}

// Guard is an agent's record of the highest fence it has seen. The zero
// value has seen none.
type Guard struct {
	mu      sync.Mutex
	highest int64
	// raised is called, with the mutex held, whenever the highest fence
	// grows (see NewGuard).
	raised func(int64)
}

// NewGuard returns a Guard that starts at highest (a fence kept from an
// earlier run, 0 for none) and calls raised with every new highest fence
// before any call that carries it is let in: a raised that keeps the
// value where a restarted agent finds it (NewGuard's highest) makes the
// fence outlive the agent's process. raised may be nil.
func NewGuard(highest int64, raised func(int64)) *Guard {
	return &Guard{highest: highest, raised: raised}
}

// Observe raises the highest fence to n when n is higher, and reports
// whether n is still current, that is not below it: an error wrapping
// ErrFenced when it is. A status read observes without being refused
// (see Admit).
func (g *Guard) Observe(n int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n > g.highest {
		g.highest = n
		if g.raised != nil {
			g.raised(n)
		}
	}
	return g.checkLocked(n)
}

// Check reports whether fence n is still current, without raising
// anything: a call that was let in checks again before it makes what
// would be hard to undo, in case a newer leader spoke meanwhile.
func (g *Guard) Check(n int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.checkLocked(n)
}

func (g *Guard) checkLocked(n int64) error {
	if n < g.highest {
		return fmt.Errorf("%w (fence %d < %d)", ErrFenced, n, g.highest)
	}
	return nil
}

// Highest returns the highest fence seen.
func (g *Guard) Highest() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.highest
}
