package httpserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// start serves h with cfg on a loopback port until the test ends and
// returns the address.
func start(t *testing.T, h http.Handler, cfg Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg.Handler = h
	go func() { done <- Serve(ctx, ln, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// clients reach a server over HTTP/1.1 and over cleartext HTTP/2.
func clients() map[string]*http.Client {
	var h1, h2c http.Protocols
	h1.SetHTTP1(true)
	h2c.SetUnencryptedHTTP2(true)
	return map[string]*http.Client{
		"http1": {Transport: &http.Transport{Protocols: &h1}},
		"h2c":   {Transport: &http.Transport{Protocols: &h2c}},
	}
}

// A stream that stays silent for longer than both timeouts, after its
// request body was read, is not cut: the timeouts bound I/O, not a
// request's life.
func TestSilentStreamOutlivesTimeouts(t *testing.T) {
	const timeout = 100 * time.Millisecond
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			t.Errorf("read body: %v", err)
			return
		}
		fmt.Fprintln(w, "first")
		w.(http.Flusher).Flush()
		select {
		case <-time.After(5 * timeout):
		case <-r.Context().Done():
			t.Errorf("the request was cancelled while the stream was silent: %v", context.Cause(r.Context()))
			return
		}
		fmt.Fprintln(w, "second")
	})
	addr := start(t, h, Config{ReadTimeout: timeout, WriteTimeout: timeout})
	for name, c := range clients() {
		t.Run(name, func(t *testing.T) {
			resp, err := c.Post("http://"+addr+"/", "text/plain", strings.NewReader("request"))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || string(b) != "first\nsecond\n" {
				t.Errorf("got %q, %v; want both lines", b, err)
			}
		})
	}
}

// A body that arrives too slowly is cut at the read timeout.
func TestDrippedBodyIsCut(t *testing.T) {
	const timeout = 200 * time.Millisecond
	readErr := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
	})
	addr := start(t, h, Config{ReadTimeout: timeout})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The headers promise a body that never fully comes.
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("the handler read the whole body")
		}
	case <-time.After(20 * timeout):
		t.Fatal("a dripped body was still being read long after the read timeout")
	}
}

// A keep-alive connection that stays idle longer than the write timeout
// still serves its next request: the deadline set for the previous
// request's last flush does not carry over (net/http clears it once the
// response is finished; the next request's first write, here the 100
// Continue sent before the body, would fail on it).
func TestNextRequestOnAConnectionGetsFreshDeadlines(t *testing.T) {
	const timeout = 100 * time.Millisecond
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %s", b)
	})
	addr := start(t, h, Config{ReadTimeout: time.Second, WriteTimeout: timeout})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	ask := func(body string) {
		t.Helper()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(body))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no answer to the headers of %q: %v", body, err)
		}
		if resp.StatusCode == http.StatusContinue {
			fmt.Fprint(conn, body)
			if resp, err = http.ReadResponse(br, nil); err != nil {
				t.Fatalf("no answer to %q: %v", body, err)
			}
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != "got "+body {
			t.Fatalf("answer to %q: %q, %v", body, b, err)
		}
	}
	ask("one")
	time.Sleep(3 * timeout)
	ask("two")
}

// A client that stops reading a response is cut at the write timeout.
func TestStalledReaderIsCut(t *testing.T) {
	const timeout = 200 * time.Millisecond
	writeErr := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for range 4096 { // 256 MiB at most: far beyond any socket buffer
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	})
	addr := start(t, h, Config{WriteTimeout: timeout})
	for name, c := range clients() {
		t.Run(name, func(t *testing.T) {
			resp, err := c.Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close() // never read
			select {
			case err := <-writeErr:
				if err == nil {
					t.Fatal("the handler wrote everything to a client that reads nothing")
				}
			case <-time.After(50 * timeout):
				t.Fatal("writes to a client that stopped reading never failed")
			}
		})
	}
}

// guarded serves a handler that authenticates requests carrying the
// header "Authorization: ok", with at most max unauthenticated
// connections that may stay for timeout.
func guarded(t *testing.T, max int, timeout time.Duration) string {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "ok" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		Authenticated(r.Context())
		fmt.Fprint(w, "served")
	})
	return start(t, h, Config{MaxUnauthenticated: max, UnauthenticatedTimeout: timeout})
}

// closed reports whether the server has closed conn, waiting at most wait.
func closed(t *testing.T, conn net.Conn, wait time.Duration) bool {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	defer conn.SetReadDeadline(time.Time{})
	_, err := conn.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

// get makes an authenticated request on conn and reads the answer.
func get(t *testing.T, conn net.Conn, br *bufio.Reader) {
	t.Helper()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: ok\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("authenticated request: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "served" {
		t.Fatalf("authenticated request: %s %q", resp.Status, b)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Past the bound, each new connection closes the oldest unauthenticated
// one, and an authenticated client is served all along.
func TestUnauthenticatedConnectionsAreBounded(t *testing.T) {
	const max = 4
	addr := guarded(t, max, time.Minute)
	var flood []net.Conn
	for range max {
		flood = append(flood, dial(t, addr))
	}
	// Accepting happens in the server's own time: wait until the last one
	// is counted by showing the first is still open, then push past it.
	for i := range max {
		extra := dial(t, addr)
		if !closed(t, flood[i], 5*time.Second) {
			t.Fatalf("connection %d of %d stayed open past the bound", i+1, max)
		}
		flood = append(flood, extra)
	}
	// A client that authenticates at once is served despite the flood,
	// and stays: its connection no longer counts.
	conn := dial(t, addr)
	br := bufio.NewReader(conn)
	get(t, conn, br)
	for range 2 * max {
		dial(t, addr)
	}
	get(t, conn, br)
}

// A connection that has not authenticated within the timeout is closed:
// whether it sent nothing, half a header, or only requests without a
// token. An authenticated one stays open beyond it.
func TestUnauthenticatedConnectionsTimeOut(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr := guarded(t, 100, timeout)
	cases := map[string]string{
		"silent":      "",
		"half header": "GET / HTTP/1.1\r\nHost: x\r\n",
		"no token":    "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	}
	conns := map[string]net.Conn{}
	for name, send := range cases {
		conns[name] = dial(t, addr)
		fmt.Fprint(conns[name], send)
	}
	auth := dial(t, addr)
	br := bufio.NewReader(auth)
	get(t, auth, br)
	start := time.Now()
	for name, conn := range conns {
		if name == "no token" {
			// Skip its 401 answer; the close follows.
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("%s: %v %v", name, resp, err)
			}
			resp.Body.Close()
		}
		if !closed(t, conn, 10*timeout) {
			t.Errorf("%s: still open after %v", name, time.Since(start))
		}
	}
	if closed(t, auth, timeout) {
		t.Fatal("the authenticated connection was closed")
	}
	get(t, auth, br)
}

// The guard sees through TLS: a connection authenticated over TLS is
// taken out of the unauthenticated set.
func TestGuardUnderTLS(t *testing.T) {
	c := connContext(context.Background(), tls.Server(&guardedConn{}, &tls.Config{}))
	if _, ok := c.Value(connKey{}).(*guardedConn); !ok {
		t.Fatal("a TLS connection's requests do not reach the guarded connection under it")
	}
}

func TestLoopbackUnlessHost(t *testing.T) {
	for in, want := range map[string]string{
		"6060":         "127.0.0.1:6060",
		":6060":        ":6060",
		"0.0.0.0:6060": "0.0.0.0:6060",
		"[::1]:6060":   "[::1]:6060",
		"":             "",
	} {
		if got := LoopbackUnlessHost(in); got != want {
			t.Errorf("LoopbackUnlessHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// A streamed body (ReadIdle) may take far longer than the read timeout as
// long as each part comes within its idle bound, or without any bound at
// all; one that stalls past its idle bound is cut.
func TestReadIdleStreamsABodyPastTheReadTimeout(t *testing.T) {
	const timeout = 150 * time.Millisecond
	for _, tc := range []struct {
		name   string
		idle   time.Duration
		gap    time.Duration // between the parts of the body
		pause  time.Duration // the handler's, between its reads
		wantOK bool
	}{
		{"idle bound, steady parts", 4 * timeout, timeout / 2, 0, true},
		{"no bound, slow parts", 0, 2 * timeout, 0, true},
		{"idle bound, a stall", timeout, 4 * timeout, 0, false},
		{"idle bound, a slow handler", timeout, timeout / 2, 2 * timeout, true},
	} {
		for name, c := range clients() {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				got := make(chan error, 1)
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					ReadIdle(r.Context(), tc.idle)
					var b []byte
					var err error
					for buf := make([]byte, 1); err == nil; {
						var n int
						n, err = r.Body.Read(buf)
						b = append(b, buf[:n]...)
						time.Sleep(tc.pause)
					}
					if err == io.EOF {
						err = nil
					}
					if err == nil && string(b) != "01234" {
						err = fmt.Errorf("body %q", b)
					}
					got <- err
				})
				addr := start(t, h, Config{ReadTimeout: timeout})
				pr, pw := io.Pipe()
				go func() {
					for i := range 5 {
						time.Sleep(tc.gap)
						if _, err := fmt.Fprint(pw, i); err != nil {
							return
						}
					}
					pw.Close()
				}()
				t.Cleanup(func() { pr.Close() })
				resp, err := c.Post("http://"+addr+"/", "text/plain", pr)
				if err == nil {
					resp.Body.Close()
				}
				select {
				case err := <-got:
					if (err == nil) != tc.wantOK {
						t.Errorf("the handler's read: %v, want success %v", err, tc.wantOK)
					}
				case <-time.After(20 * time.Second):
					t.Fatal("the handler never finished reading")
				}
			})
		}
	}
}
