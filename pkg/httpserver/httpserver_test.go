package httpserver

import (
	"context"
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
