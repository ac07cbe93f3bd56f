package initlink

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

const testToken = "0123456789abcdef0123456789abcdef"

// listen opens a Link in a short temporary directory.
func listen(t *testing.T) (*Link, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "fsbl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, SocketName)
	l, err := Listen(Config{Path: path, Token: testToken, UID: os.Getuid(), GID: os.Getgid(), Sandbox: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

// dial connects as init does and says hello with token.
func dial(t *testing.T, path, token string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if token != "" {
		// A write the agent refused (it closed the connection first)
		// shows in what follows.
		_ = WriteJSON(c, FrameHello, Hello{Token: token})
	}
	return c
}

// serveOne answers the request on c with answer.
func serveOne(t *testing.T, c net.Conn, answer func(Request) error) <-chan error {
	done := make(chan error, 1)
	go func() {
		typ, p, err := ReadFrame(c, nil)
		if err != nil {
			done <- err
			return
		}
		var req Request
		if typ != FrameRequest {
			done <- errors.New("not a request")
			return
		}
		if err := Decode(p, &req); err != nil {
			done <- err
			return
		}
		done <- answer(req)
	}()
	return done
}

// closedByAgent reports whether the agent closed c within a few seconds:
// an end, or a reset when the agent left what c sent unread.
func closedByAgent(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

func TestCallRoundTrip(t *testing.T) {
	t.Parallel()
	l, path := listen(t)
	c := dial(t, path, testToken)
	done := serveOne(t, c, func(req Request) error {
		if req.Op != OpStat || req.Path != "/etc" {
			return errors.New("unexpected request")
		}
		return WriteJSON(c, FrameResponse, Response{File: &FileInfo{Path: "/etc", Type: TypeDir}})
	})
	resp, err := l.Call(context.Background(), Request{Op: OpStat, Path: "/etc"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.File == nil || resp.File.Type != TypeDir {
		t.Fatalf("answer %+v", resp)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// One request per connection: the agent closes it after the answer.
	if !closedByAgent(c) {
		t.Fatal("the connection stayed open after its request")
	}
}

func TestRefusedConnections(t *testing.T) {
	t.Parallel()
	long := make([]byte, 4+1+maxHello+10)
	binary.BigEndian.PutUint32(long, uint32(1+maxHello+10))
	long[4] = byte(FrameHello)
	cases := []struct {
		name  string
		hello func(c net.Conn)
	}{
		{"wrong token", func(c net.Conn) { WriteJSON(c, FrameHello, Hello{Token: "f" + testToken[1:]}) }},
		{"no hello", func(net.Conn) {}},
		{"a request first", func(c net.Conn) { WriteJSON(c, FrameRequest, Request{Op: OpList}) }},
		{"oversized hello", func(c net.Conn) { c.Write(long) }},
		{"not JSON", func(c net.Conn) { WriteFrame(c, FrameHello, []byte("{token")) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, path := listen(t)
			bad := dial(t, path, "")
			tc.hello(bad)
			if !closedByAgent(bad) {
				t.Fatal("the agent kept a connection that failed authentication")
			}
			// Nothing refused is ever handed a request: with no good
			// connection, a call finds none.
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if _, err := l.Call(ctx, Request{Op: OpList}); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("call without an authenticated connection: %v", err)
			}
			good := dial(t, path, testToken)
			done := serveOne(t, good, func(Request) error { return WriteJSON(good, FrameResponse, Response{}) })
			if _, err := l.Call(context.Background(), Request{Op: OpList}); err != nil {
				t.Fatalf("call after a refused connection: %v", err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDeadIdleConnectionSkipped(t *testing.T) {
	t.Parallel()
	l, path := listen(t)
	dead := dial(t, path, testToken)
	// Wait until the agent holds it idle, then end it.
	waitConns(t, l, 1)
	dead.Close()
	good := dial(t, path, testToken)
	waitConns(t, l, 2)
	done := serveOne(t, good, func(Request) error { return WriteJSON(good, FrameResponse, Response{Created: true}) })
	resp, err := l.Call(context.Background(), Request{Op: OpMkdir, Path: "/x"})
	if err != nil || !resp.Created {
		t.Fatalf("call: %+v, %v", resp, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestMaxConns(t *testing.T) {
	t.Parallel()
	l, path := listen(t)
	for range MaxConns {
		dial(t, path, testToken)
	}
	waitConns(t, l, MaxConns)
	extra := dial(t, path, testToken)
	if !closedByAgent(extra) {
		t.Fatalf("connection %d was kept", MaxConns+1)
	}
	if n := l.conns.Load(); n != MaxConns {
		t.Fatalf("%d connections held, want %d", n, MaxConns)
	}
}

func TestUntrustedAnswers(t *testing.T) {
	t.Parallel()
	big := make([]byte, 4)
	binary.BigEndian.PutUint32(big, MaxPayload+2)
	cases := []struct {
		name   string
		answer func(c net.Conn) error
		check  func(err error) bool
	}{
		{"wrong frame type", func(c net.Conn) error { return WriteJSON(c, FrameStarted, Started{PID: 1}) },
			func(err error) bool { return errors.Is(err, ErrProtocol) }},
		{"bad JSON", func(c net.Conn) error { return WriteFrame(c, FrameResponse, []byte("{")) },
			func(err error) bool { return errors.Is(err, ErrProtocol) }},
		{"frame too large", func(c net.Conn) error { _, err := c.Write(big); return err },
			func(err error) bool { return errors.Is(err, ErrProtocol) }},
		{"connection ends", func(c net.Conn) error { return c.Close() },
			func(err error) bool { return errors.Is(err, ErrUnavailable) }},
		{"init's error", func(c net.Conn) error {
			return WriteJSON(c, FrameError, Error{Code: CodeNotFound, Message: "no such file: /x"})
		}, func(err error) bool {
			var e *Error
			return errors.As(err, &e) && e.Code == CodeNotFound && e.Message == "no such file: /x"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, path := listen(t)
			c := dial(t, path, testToken)
			done := serveOne(t, c, func(Request) error { return tc.answer(c) })
			_, err := l.Call(context.Background(), Request{Op: OpStat, Path: "/x"})
			if !tc.check(err) {
				t.Fatalf("call: %v", err)
			}
			<-done
		})
	}
}

func TestStreamClosedWhenContextEnds(t *testing.T) {
	t.Parallel()
	l, path := listen(t)
	c := dial(t, path, testToken)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := l.Open(ctx, Request{Op: OpAttach, PID: 7})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadFrame(c, nil); err != nil {
		t.Fatal(err)
	}
	cancel()
	// To init, the stream's end is a detach.
	if !closedByAgent(c) {
		t.Fatal("the stream's connection stayed open after its context ended")
	}
	if _, _, err := s.Recv(time.Second); err == nil {
		t.Fatal("a closed stream received a frame")
	}
}

func waitConns(t *testing.T, l *Link, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(l.idle) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle connections, want %d", len(l.idle), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSilentConnectionsDoNotKeepInitOut shows that connections which never
// say hello (a process inside the sandbox running as init's user may open
// the socket) cannot take the slots init needs: however many there are,
// init's next connection is taken.
func TestSilentConnectionsDoNotKeepInitOut(t *testing.T) {
	t.Parallel()
	l, path := listen(t)
	for range MaxConns + maxGreeting {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	dial(t, path, testToken)
	ctx, cancel := context.WithTimeout(context.Background(), HelloTimeout/2)
	defer cancel()
	c, err := l.take(ctx)
	if err != nil {
		t.Fatalf("init's connection after %d silent ones: %v", MaxConns+maxGreeting, err)
	}
	l.drop(c)
	// Those pushed out are dropped as their greeting ends.
	for deadline := time.Now().Add(time.Second); l.conns.Load() > maxGreeting; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want at most the %d greeting", l.conns.Load(), maxGreeting)
		}
	}
}
