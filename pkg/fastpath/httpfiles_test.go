package fastpath

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// pattern is a reader of n deterministic bytes.
type pattern struct{ off, n int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	k := min(int64(len(b)), p.n-p.off)
	for i := range k {
		b[i] = byte((p.off + i) * 31)
	}
	p.off += k
	return int(k), nil
}

// heapPeak samples the heap in use until the returned func is called,
// which returns the most it saw.
func heapPeak() func() uint64 {
	stop, peak := make(chan struct{}), make(chan uint64, 1)
	go func() {
		var most uint64
		var ms runtime.MemStats
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				peak <- most
				return
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				most = max(most, ms.HeapInuse)
			}
		}
	}()
	return func() uint64 {
		close(stop)
		return <-peak
	}
}

// TestFilesOverPlainHTTP: GET streams a file with its length, PUT streams
// a body into the agent as it arrives (the whole body is never held), and
// errors are Connect's JSON with Connect's status.
func TestFilesOverPlainHTTP(t *testing.T) {
	p := newFakePlane(t)
	p.seed("web", v1alpha1.PhaseRunning, false)
	req := func(method, path string, body io.Reader) *http.Request {
		r, err := http.NewRequest(method, p.url+path, body)
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Authorization", "Bearer "+userToken)
		return r
	}

	t.Run("GET streams the file with its length", func(t *testing.T) {
		start := time.Now()
		done := heapPeak()
		defer func() {
			if most := done(); most > 32<<20 {
				t.Errorf("the heap reached %d MiB during a %d MiB download: the file is held somewhere", most>>20, fakeFileSize>>20)
			}
		}()
		resp, err := p.h1.Do(req(http.MethodGet, "/files/default/web?path=/big", nil))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/octet-stream" || resp.ContentLength != fakeFileSize {
			t.Fatalf("HTTP %d, %s, length %d; want 200, application/octet-stream, %d", resp.StatusCode, resp.Header.Get("Content-Type"), resp.ContentLength, fakeFileSize)
		}
		r := bufio.NewReaderSize(resp.Body, 64<<10)
		var off int64
		for ; ; off++ {
			b, err := r.ReadByte()
			if err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("at byte %d: %v", off, err)
			}
			if b != fakeByte(off) {
				t.Fatalf("byte %d is %d, want %d", off, b, fakeByte(off))
			}
		}
		if off != fakeFileSize {
			t.Errorf("%d bytes, want %d", off, fakeFileSize)
		}
		t.Logf("GET of %d MiB in %v", off>>20, time.Since(start))
	})

	t.Run("PUT streams the body as it comes", func(t *testing.T) {
		const size = 96<<20 + 7
		pr, pw := io.Pipe()
		src := sha256.New()
		sent := make(chan error, 1)
		go func() {
			defer pw.Close()
			body := io.TeeReader(&pattern{n: size}, src)
			// The first 4 MiB, then nothing more until the agent has
			// most of it: a relay that held the body would never pass it on.
			if _, err := io.CopyN(pw, body, 4<<20); err != nil {
				sent <- err
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for p.agent.written.Load() < 3<<20 {
				if time.Now().After(deadline) {
					sent <- fmt.Errorf("the agent got %d bytes of the 4 MiB sent so far", p.agent.written.Load())
					pw.CloseWithError(io.ErrUnexpectedEOF)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			_, err := io.Copy(pw, body)
			sent <- err
		}()
		start := time.Now()
		// The body must never be held: the heap stays far below its size.
		done := heapPeak()
		code, msg, b := httpCall(t, p.h1, req(http.MethodPut, "/files/default/web?path=/data/up.bin&mode=0600&parents=true", pr))
		if most := done(); most > 48<<20 {
			t.Errorf("the heap reached %d MiB during a %d MiB upload: the body is held somewhere", most>>20, size>>20)
		} else {
			t.Logf("heap in use at most %d MiB during the upload", most>>20)
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
		if code != "" {
			t.Fatalf("PUT: %s: %s", code, msg)
		}
		t.Logf("PUT of %d MiB in %v", size>>20, time.Since(start))
		var info struct {
			Path string
			Size string // int64 is a JSON string
			Mode int
		}
		if err := json.Unmarshal(b, &info); err != nil {
			t.Fatalf("answer %q: %v", b, err)
		}
		if info.Path != "/data/up.bin" || info.Size != strconv.Itoa(size) || info.Mode != 0o600 {
			t.Errorf("answer %s, want the file's info: /data/up.bin, %d bytes, mode 0600", b, size)
		}
		if end := <-p.agent.writeEnd; end != "eof" {
			t.Errorf("the agent's stream ended %q, want a complete write", end)
		}
		if got, want := fmt.Sprintf("%x", p.agent.sum.Sum(nil)), fmt.Sprintf("%x", src.Sum(nil)); got != want {
			t.Errorf("the agent got sha256 %s, the client sent %s", got, want)
		}
	})

	for _, tc := range []struct {
		name, method, path, token string
		code, want                string
	}{
		{"GET a missing file", http.MethodGet, "/files/default/web?path=/nothing", userToken, "not_found", "open /nothing: no such file or directory"},
		{"GET a relative path", http.MethodGet, "/files/default/web?path=etc/passwd", userToken, "invalid_argument", "want an absolute path"},
		{"GET without a path", http.MethodGet, "/files/default/web", userToken, "invalid_argument", "path is required"},
		{"GET of a missing sandbox", http.MethodGet, "/files/default/nope?path=/big", userToken, "not_found", "sandbox nope not found"},
		{"GET without a token", http.MethodGet, "/files/default/web?path=/big", "", "unauthenticated", "missing bearer token"},
		{"PUT with a bad mode", http.MethodPut, "/files/default/web?path=/x&mode=rw", userToken, "invalid_argument", `mode "rw": want octal`},
		{"PUT with a bad parents", http.MethodPut, "/files/default/web?path=/x&parents=maybe", userToken, "invalid_argument", `parents "maybe"`},
		{"PUT an unclean path", http.MethodPut, "/files/default/web?path=/a//b", userToken, "invalid_argument", "want a clean path"},
		{"PUT on a full disk", http.MethodPut, "/files/default/web?path=/full", userToken, "resource_exhausted", "no space left on device"},
		{"PUT with a wrong token", http.MethodPut, "/files/default/web?path=/x", "nope", "unauthenticated", "invalid bearer token"},
		{"DELETE", http.MethodDelete, "/files/default/web?path=/x", userToken, "unimplemented", "want GET or PUT"},
		{"GET without a name", http.MethodGet, "/files/default?path=/x", userToken, "not_found", "want /files/{namespace}/{name}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := req(tc.method, tc.path, strings.NewReader("data"))
			if tc.token != userToken {
				r.Header.Del("Authorization")
				if tc.token != "" {
					r.Header.Set("Authorization", "Bearer "+tc.token)
				}
			}
			code, msg, _ := httpCall(t, p.h1, r)
			if code != tc.code || !strings.Contains(msg, tc.want) {
				t.Errorf("%s: %s, want %s saying %q", code, msg, tc.code, tc.want)
			}
		})
	}
}

// TestPutCutShortWritesNothing: a PUT whose client goes away before the
// body is complete cuts the agent's stream rather than ending it, so the
// agent never puts a part of a file in place of the whole.
func TestPutCutShortWritesNothing(t *testing.T) {
	// The part sent ends on a relay chunk's edge, or inside one: the
	// read that meets the cut then holds bytes too.
	for _, sent := range []int64{1 << 20, 1<<20 + 1000} {
		t.Run(fmt.Sprintf("%d bytes", sent), func(t *testing.T) {
			p := newFakePlane(t)
			p.seed("web", v1alpha1.PhaseRunning, false)
			conn, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "PUT /files/default/web?path=/data/f HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n", userToken, 10<<20)
			if _, err := io.CopyN(conn, &pattern{n: sent}, sent); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for p.agent.written.Load() < 512<<10 {
				if time.Now().After(deadline) {
					t.Fatalf("the agent got %d bytes of the %d sent", p.agent.written.Load(), sent)
				}
				time.Sleep(10 * time.Millisecond)
			}
			conn.Close()
			select {
			case end := <-p.agent.writeEnd:
				if end == "eof" {
					t.Errorf("the agent's stream ended as a complete write after %d of %d bytes: the part would replace the file", p.agent.written.Load(), 10<<20)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the agent's stream never ended")
			}
		})
	}
}

// TestGetFileChangingSize: a GET of a file written on while it is read
// answers the file as it was opened, whole, and one whose size says
// nothing (a /proc file) answers all its bytes, not a broken download.
func TestGetFileChangingSize(t *testing.T) {
	p := newFakePlane(t)
	p.seed("web", v1alpha1.PhaseRunning, false)
	for _, c := range []struct{ path, want string }{
		{"/growing", growingHead},
		{"/proc-like", growingHead + growingTail},
	} {
		t.Run(c.path, func(t *testing.T) {
			r, err := http.NewRequest(http.MethodGet, p.url+"/files/default/web?path="+c.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("Authorization", "Bearer "+userToken)
			resp, err := p.h1.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK || string(body) != c.want {
				t.Errorf("HTTP %d, %q (%v), want 200, %q whole", resp.StatusCode, body, err, c.want)
			}
		})
	}
}
