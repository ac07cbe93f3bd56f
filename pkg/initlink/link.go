package initlink

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Time limits of the agent's side. Only a process's silent output is
// waited for without one.
const (
	// HelloTimeout bounds the wait for a new connection's FrameHello.
	HelloTimeout = 2 * time.Second
	// IdleWait bounds the wait for an idle connection: past it init counts
	// as not answering.
	IdleWait = 5 * time.Second
	// AnswerTimeout bounds the wait for each answer of init: a unary
	// answer, a stream's first frame, each file frame.
	AnswerTimeout = 30 * time.Second
	// maxHello bounds a FrameHello's payload: a token and some JSON.
	maxHello = 512
	// maxGreeting bounds the connections waiting for their hello apart
	// from MaxConns: past it the oldest is closed. Init says hello as it
	// connects, and never has more than MaxConns connections, so its own
	// are read long before; only connections that say nothing wait, such
	// as a process inside the sandbox may open (it runs as init's user),
	// and those could otherwise hold every slot and keep init out.
	maxGreeting = MaxConns
)

// ErrUnavailable marks a request init did not take or answer in time: no
// idle connection came within IdleWait, or no answer within AnswerTimeout.
var ErrUnavailable = errors.New("fsb init does not answer")

// ErrProtocol marks what init sent against the protocol: a frame of a type
// the state does not allow, or a payload that does not decode. The
// connection is closed.
var ErrProtocol = errors.New("fsb init broke the link protocol")

// Config is what Listen needs.
type Config struct {
	// Path of the listening socket; a file there (a stale socket) is
	// removed first.
	Path string
	// Token init must present in its FrameHello.
	Token string
	// UID and GID own the socket (mode 0600): init's user.
	UID, GID int
	// Sandbox names the sandbox in log lines.
	Sandbox string
	Logger  *slog.Logger
}

// Link is the agent's end of one sandbox's channel to its fsb init: the
// listening socket, and the authenticated connections init keeps idle.
// Close stops it.
type Link struct {
	cfg   Config
	token []byte
	ln    *net.UnixListener
	// idle holds authenticated connections no request uses yet.
	idle chan *net.UnixConn
	// conns counts the accepted connections that are open (greeting,
	// idle or carrying a request): at most MaxConns past their hello,
	// and maxGreeting before it.
	conns atomic.Int32
	// mu guards greeting, the connections waiting for their hello (oldest
	// first), and authed, those that said it and are open.
	mu       sync.Mutex
	greeting []*net.UnixConn
	authed   map[*net.UnixConn]bool
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

// Listen opens the socket at cfg.Path and accepts init's connections until
// Close.
func Listen(cfg Config) (*Link, error) {
	if cfg.Token == "" {
		return nil, errors.New("initlink: no token")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.Remove(cfg.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("initlink: remove stale socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("initlink: %w", err)
	}
	// The directory (0700, init's user) keeps others out already; the
	// socket's own mode is the second fence.
	if err := os.Chmod(cfg.Path, 0o600); err == nil {
		err = os.Lchown(cfg.Path, cfg.UID, cfg.GID)
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("initlink: socket owner and mode: %w", err)
	}
	l := &Link{cfg: cfg, token: []byte(cfg.Token), ln: ln, idle: make(chan *net.UnixConn, MaxConns), done: make(chan struct{}),
		authed: make(map[*net.UnixConn]bool)}
	l.wg.Add(1)
	go l.serve()
	return l, nil
}

// Close stops accepting, closes every idle connection and waits for the
// accept loop; streams under way end as their connections fail.
func (l *Link) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.ln.Close()
		l.wg.Wait()
		for {
			select {
			case c := <-l.idle:
				l.drop(c)
			default:
				return
			}
		}
	})
	return err
}

func (l *Link) serve() {
	defer l.wg.Done()
	for {
		c, err := l.ln.AcceptUnix()
		if err != nil {
			select {
			case <-l.done:
				return
			case <-time.After(50 * time.Millisecond):
				// A transient accept error (out of file descriptors).
				continue
			}
		}
		l.conns.Add(1)
		l.mu.Lock()
		if len(l.greeting) == maxGreeting {
			// Silent the longest: its greet fails and drops it.
			l.greeting[0].Close()
			l.greeting = l.greeting[1:]
		}
		l.greeting = append(l.greeting, c)
		l.mu.Unlock()
		l.wg.Add(1)
		go l.greet(c)
	}
}

// greet reads the connection's hello and keeps it idle when its token is
// the sandbox's; anything else is closed with a warning.
func (l *Link) greet(c *net.UnixConn) {
	defer l.wg.Done()
	ok, why := l.authenticate(c)
	l.mu.Lock()
	for i, g := range l.greeting {
		if g == c {
			l.greeting = append(l.greeting[:i], l.greeting[i+1:]...)
			break
		}
	}
	over := ok && len(l.authed) >= MaxConns
	if ok && !over {
		l.authed[c] = true
	}
	l.mu.Unlock()
	if over {
		l.drop(c)
		l.cfg.Logger.Warn("link connection refused: the sandbox's init holds the most connections already",
			slog.String("sandbox", l.cfg.Sandbox), slog.Int("max", MaxConns))
		return
	}
	if !ok {
		l.drop(c)
		l.cfg.Logger.Warn("link connection refused", slog.String("sandbox", l.cfg.Sandbox), slog.String("why", why))
		return
	}
	select {
	case l.idle <- c:
	case <-l.done:
		l.drop(c)
	}
}

func (l *Link) authenticate(c *net.UnixConn) (bool, string) {
	if err := c.SetDeadline(time.Now().Add(HelloTimeout)); err != nil {
		return false, err.Error()
	}
	var head [5]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return false, "no hello: " + err.Error()
	}
	n := binary.BigEndian.Uint32(head[:4])
	if FrameType(head[4]) != FrameHello || n < 1 || n > maxHello+1 {
		return false, fmt.Sprintf("a first frame of type %d and %d bytes, not a hello", head[4], n)
	}
	payload := make([]byte, n-1)
	if _, err := io.ReadFull(c, payload); err != nil {
		return false, "hello cut short: " + err.Error()
	}
	var h Hello
	if err := Decode(payload, &h); err != nil {
		return false, err.Error()
	}
	if subtle.ConstantTimeCompare([]byte(h.Token), l.token) != 1 {
		return false, "wrong token"
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return false, err.Error()
	}
	return true, ""
}

func (l *Link) drop(c *net.UnixConn) {
	// Counted out before it closes: whoever sees it closed sees the count
	// without it (a CI run read 65 of 64 just after the close).
	l.conns.Add(-1)
	c.Close()
	l.mu.Lock()
	delete(l.authed, c)
	l.mu.Unlock()
}

// take returns an idle connection that is still open, waiting up to
// IdleWait for one.
func (l *Link) take(ctx context.Context) (*net.UnixConn, error) {
	timer := time.NewTimer(IdleWait)
	defer timer.Stop()
	for {
		select {
		case c := <-l.idle:
			if alive(c) {
				return c, nil
			}
			l.drop(c)
		case <-timer.C:
			return nil, fmt.Errorf("%w: no idle connection within %v", ErrUnavailable, IdleWait)
		case <-l.done:
			return nil, fmt.Errorf("%w: the link is closed", ErrUnavailable)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// alive reports whether an idle connection is open and has nothing to read:
// init sends nothing on an idle connection, so anything there (or its end)
// makes it unusable.
func alive(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && (rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK)
		return true
	})
	return err == nil && ok
}

// Open sends req on an idle connection and returns the stream of its
// answer. The stream is closed when ctx ends (a client detaching).
func (l *Link) Open(ctx context.Context, req Request) (*Stream, error) {
	c, err := l.take(ctx)
	if err != nil {
		return nil, err
	}
	s := &Stream{c: c, link: l}
	s.stop = context.AfterFunc(ctx, func() { s.Close() })
	if err := s.SendJSON(FrameRequest, req); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Call sends a unary request and returns init's answer: a Response, or
// init's *Error.
func (l *Link) Call(ctx context.Context, req Request) (Response, error) {
	s, err := l.Open(ctx, req)
	if err != nil {
		return Response{}, err
	}
	defer s.Close()
	var resp Response
	if err := s.RecvJSON(FrameResponse, &resp); err != nil {
		return Response{}, err
	}
	return resp, nil
}

// Stream is one request's connection: frames of init's answer, and the
// agent's input or file data.
type Stream struct {
	c    *net.UnixConn
	link *Link
	buf  []byte
	stop func() bool
	once sync.Once
}

// Recv reads init's next frame, waiting up to timeout (0: without limit).
// A FrameError comes back as its *Error. The payload is valid until the
// next Recv.
func (s *Stream) Recv(timeout time.Duration) (FrameType, []byte, error) {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	if err := s.c.SetReadDeadline(deadline); err != nil {
		return 0, nil, fmt.Errorf("link: %w", err)
	}
	if s.buf == nil {
		s.buf = make([]byte, FileChunkSize)
	}
	t, p, err := ReadFrame(s.c, s.buf)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.Close()
		return 0, nil, fmt.Errorf("%w: no answer within %v", ErrUnavailable, timeout)
	case errors.Is(err, ErrFrameTooLarge):
		s.Close()
		return 0, nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		s.Close()
		return 0, nil, fmt.Errorf("%w: the connection ended mid-answer", ErrUnavailable)
	case err != nil:
		s.Close()
		return 0, nil, fmt.Errorf("link: %w", bare(err))
	}
	if t == FrameError {
		var e Error
		if err := Decode(p, &e); err != nil {
			s.Close()
			return 0, nil, fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		s.Close()
		return t, nil, &e
	}
	return t, p, nil
}

// RecvJSON reads init's next frame, which must be of type want, into v,
// waiting up to AnswerTimeout.
func (s *Stream) RecvJSON(want FrameType, v any) error {
	t, p, err := s.Recv(AnswerTimeout)
	if err != nil {
		return err
	}
	if t != want {
		s.Close()
		return fmt.Errorf("%w: a frame of type %d where %d was due", ErrProtocol, t, want)
	}
	if err := Decode(p, v); err != nil {
		s.Close()
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return nil
}

// Send writes one frame to init, waiting up to AnswerTimeout for room.
func (s *Stream) Send(t FrameType, payload []byte) error {
	if err := s.c.SetWriteDeadline(time.Now().Add(AnswerTimeout)); err != nil {
		return fmt.Errorf("link: %w", err)
	}
	if err := WriteFrame(s.c, t, payload); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("%w: init took no data within %v", ErrUnavailable, AnswerTimeout)
		}
		return fmt.Errorf("link: %w", bare(err))
	}
	return nil
}

// SendJSON writes one frame whose payload is v as JSON.
func (s *Stream) SendJSON(t FrameType, v any) error {
	if err := s.c.SetWriteDeadline(time.Now().Add(AnswerTimeout)); err != nil {
		return fmt.Errorf("link: %w", err)
	}
	if err := WriteJSON(s.c, t, v); err != nil {
		return fmt.Errorf("link: %w", bare(err))
	}
	return nil
}

// bare drops a network error's addresses (host paths of the agent, which
// a user's error message has no business showing) and keeps its cause.
func bare(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// Close closes the stream's connection: to init, a detach.
func (s *Stream) Close() error {
	s.once.Do(func() {
		if s.stop != nil {
			s.stop()
		}
		s.link.drop(s.c)
	})
	return nil
}
