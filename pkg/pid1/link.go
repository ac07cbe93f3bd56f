package pid1

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// Back-off between dials that fail (no socket yet, the agent restarting).
const (
	dialBackoffMin = 20 * time.Millisecond
	dialBackoffMax = time.Second
	// helloTimeout bounds the write of a connection's first frame.
	helloTimeout = time.Second
)

// Link is init's side of the channel to the agent (see package initlink):
// it keeps initlink.IdleConns connections dialed and idle, and serves the
// one request each connection carries with its Manager.
type Link struct {
	path  string
	token string
	m     *Manager

	mu      sync.Mutex
	idle    int
	total   int
	pause   bool // an idle connection ended without a request
	backoff time.Duration
	wake    chan struct{}
}

// NewLink returns a Link that dials the agent's socket at path, presents
// token, and serves requests with m.
func NewLink(path, token string, m *Manager) *Link {
	return &Link{path: path, token: token, m: m, backoff: dialBackoffMin, wake: make(chan struct{}, 1)}
}

// Serve keeps the idle connections dialed until ctx ends. Dial failures
// are retried with back-off, for as long as ctx lasts. Once ctx ends the
// idle connections are closed; requests being served run to their end
// (the Manager's Shutdown ends process streams).
func (l *Link) Serve(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	failed := false
	for ctx.Err() == nil {
		l.mu.Lock()
		need := l.idle < initlink.IdleConns && l.total < initlink.MaxConns
		wait := failed || l.pause
		delay := l.backoff
		if wait {
			l.backoff = min(2*l.backoff, dialBackoffMax)
			l.pause = false
		}
		l.mu.Unlock()
		if !need {
			select {
			case <-l.wake:
			case <-ctx.Done():
			}
			continue
		}
		if wait && !sleep(ctx, delay) {
			return
		}
		f, err := l.dial()
		if failed = err != nil; failed {
			continue
		}
		l.mu.Lock()
		l.idle++
		l.total++
		l.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.handle(ctx, f)
		}()
	}
}

// dial connects to the agent and says hello. A plain unix socket through
// x/sys keeps the net package (and its start-up cost) out of fsb init.
func (l *Link) dial() (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: l.path}); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("connect %s: %w", l.path, err)
	}
	// A non-blocking descriptor makes a pollable os.File: reads and
	// writes park the goroutine, and deadlines work.
	f := os.NewFile(uintptr(fd), "initlink")
	_ = f.SetWriteDeadline(time.Now().Add(helloTimeout))
	if err := initlink.WriteJSON(f, initlink.FrameHello, initlink.Hello{Token: l.token}); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	_ = f.SetWriteDeadline(time.Time{})
	return f, nil
}

// handle waits for the connection's request, asks for a replacement, and
// serves it.
func (l *Link) handle(ctx context.Context, f *os.File) {
	stop := context.AfterFunc(ctx, func() { _ = f.Close() })
	t, payload, err := initlink.ReadFrame(f, nil)
	stop()
	failed := err != nil || ctx.Err() != nil
	l.mu.Lock()
	l.idle--
	if failed {
		l.pause = true
	} else {
		l.backoff = dialBackoffMin
	}
	l.mu.Unlock()
	// A request arrived (or the idle connection is gone): dial another.
	l.poke()
	defer func() {
		_ = f.Close()
		l.mu.Lock()
		l.total--
		l.mu.Unlock()
		l.poke()
	}()
	if failed {
		return
	}
	if t != initlink.FrameRequest {
		_ = writeError(f, &initlink.Error{Code: initlink.CodeInvalidArgument, Message: fmt.Sprintf("want a request frame, got frame type %d", t)})
		return
	}
	var req initlink.Request
	if err := initlink.Decode(payload, &req); err != nil {
		_ = writeError(f, &initlink.Error{Code: initlink.CodeInvalidArgument, Message: err.Error()})
		return
	}
	l.m.Serve(f, &req)
}

func (l *Link) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// writeError ends a request with err, which is an *initlink.Error or is
// turned into one by its errno.
func writeError(f *os.File, err error) error {
	var le *initlink.Error
	if !errors.As(err, &le) {
		le = &initlink.Error{Code: codeOf(err), Message: err.Error()}
	}
	return initlink.WriteJSON(f, initlink.FrameError, le)
}

// codeOf maps an error from the system to an initlink error code.
func codeOf(err error) string {
	var le *initlink.Error
	switch {
	case errors.As(err, &le):
		return le.Code
	case errors.Is(err, unix.ENOENT):
		return initlink.CodeNotFound
	case errors.Is(err, unix.EEXIST):
		return initlink.CodeAlreadyExists
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return initlink.CodeResourceExhausted
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM), errors.Is(err, unix.EROFS):
		return initlink.CodePermissionDenied
	case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.EISDIR), errors.Is(err, unix.ENOTEMPTY),
		errors.Is(err, unix.EXDEV), errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENAMETOOLONG):
		return initlink.CodeFailedPrecondition
	case errors.Is(err, unix.EINVAL):
		return initlink.CodeInvalidArgument
	}
	return initlink.CodeInternal
}

// errorf makes an *initlink.Error.
func errorf(code, format string, args ...any) error {
	return &initlink.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
