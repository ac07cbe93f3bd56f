package httpserver

import (
	"container/list"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// guard bounds the connections nobody has authenticated on yet. A
// connection counts as unauthenticated from its accept until a request on
// it presents a valid token (Authenticated). At most max are kept: a new
// one past the bound closes the oldest, so a flood of idle or slow
// connections cannot hold every slot — a client that authenticates at once
// still gets in while the flood goes on. One that has not authenticated
// within timeout is closed.
type guard struct {
	net.Listener
	max     int
	timeout time.Duration

	mu      sync.Mutex
	pending list.List // of *guardedConn, oldest first
}

func (g *guard) Accept() (net.Conn, error) {
	c, err := g.Listener.Accept()
	if err != nil {
		return nil, err
	}
	gc := &guardedConn{Conn: c, g: g}
	var evicted *guardedConn
	g.mu.Lock()
	if g.pending.Len() >= g.max {
		evicted = g.pending.Front().Value.(*guardedConn)
		evicted.forgetLocked()
	}
	gc.elem = g.pending.PushBack(gc)
	gc.timer = time.AfterFunc(g.timeout, gc.expire)
	g.mu.Unlock()
	if evicted != nil {
		_ = evicted.Conn.Close()
	}
	return gc, nil
}

// guardedConn is an accepted connection the guard keeps track of.
type guardedConn struct {
	net.Conn
	g *guard
	// elem and timer are set while the connection is unauthenticated;
	// both are guarded by g.mu.
	elem  *list.Element
	timer *time.Timer
	// known is set once authenticated, so that later requests skip the
	// lock.
	known atomic.Bool
}

// forgetLocked stops tracking c; g.mu is held.
func (c *guardedConn) forgetLocked() {
	if c.elem == nil {
		return
	}
	c.g.pending.Remove(c.elem)
	c.elem = nil
	c.timer.Stop()
}

// authenticated takes c out of the unauthenticated set for good.
func (c *guardedConn) authenticated() {
	if c.known.Swap(true) {
		return
	}
	c.g.mu.Lock()
	c.forgetLocked()
	c.g.mu.Unlock()
}

// expire closes c if it is still unauthenticated when its time is up.
func (c *guardedConn) expire() {
	c.g.mu.Lock()
	pending := c.elem != nil
	c.forgetLocked()
	c.g.mu.Unlock()
	if pending {
		_ = c.Conn.Close()
	}
}

func (c *guardedConn) Close() error {
	c.g.mu.Lock()
	c.forgetLocked()
	c.g.mu.Unlock()
	return c.Conn.Close()
}

type connKey struct{}

// connContext puts the guarded connection under c (a TLS connection wraps
// it) into its requests' contexts, for Authenticated.
func connContext(ctx context.Context, c net.Conn) context.Context {
	for {
		switch v := c.(type) {
		case *guardedConn:
			return context.WithValue(ctx, connKey{}, v)
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return ctx
		}
	}
}

// Authenticated marks the connection of the request whose context is ctx
// as authenticated: the server's bound and timeout on unauthenticated
// connections no longer apply to it. The token check calls it once a
// request presented a valid token; without a guarded connection it does
// nothing.
func Authenticated(ctx context.Context) {
	if c, ok := ctx.Value(connKey{}).(*guardedConn); ok {
		c.authenticated()
	}
}
