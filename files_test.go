//go:build !fsbhelper

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// memorySlack bounds how much the peak resident memory (VmHWM) of the
// agent and of the controller may grow while 256 MiB of file and 128 MiB
// of process output pass through them. Everything on the way is streamed
// in chunks of at most a few hundred KiB with flow control (HTTP/2 windows
// of a few MiB, init's 1 MiB buffer, socket buffers), so the growth
// measured is a few MiB; one copy of the data held anywhere would exceed
// the bound by far.
const memorySlack = 64 << 20

// data returns n deterministic pseudo-random bytes, made as they are read
// (never held in memory), the same for the same seed.
func data(seed byte, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{seed}), n)
}

// writeFile streams r into path of sandbox name through WriteFile, in
// messages of 256 KiB.
func (p *execPlane) writeFile(ctx context.Context, name, path string, mode uint32, r io.Reader) (*fsbv1.FileInfo, error) {
	s := p.api.WriteFile(ctx)
	req := &fsbv1.WriteFileRequest{Name: name, Path: path, Mode: mode}
	buf := make([]byte, 256<<10)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 || req.Path != "" {
			req.Data = buf[:n]
			if serr := s.Send(req); serr != nil {
				// The server ended the call: its error comes from
				// CloseAndReceive.
				resp, err := s.CloseAndReceive()
				if err == nil {
					return nil, fmt.Errorf("send: %w (the server answered %v)", serr, resp.Msg)
				}
				return nil, err
			}
			req = &fsbv1.WriteFileRequest{}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	resp, err := s.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetInfo(), nil
}

// readFile streams path of sandbox name through ReadFile into w.
func (p *execPlane) readFile(ctx context.Context, name, path string, w io.Writer) (*fsbv1.FileInfo, error) {
	s, err := p.api.ReadFile(ctx, connect.NewRequest(&fsbv1.ReadFileRequest{Name: name, Path: path}))
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var info *fsbv1.FileInfo
	for s.Receive() {
		if i := s.Msg().GetInfo(); i != nil {
			if info != nil {
				return nil, fmt.Errorf("a second FileInfo in the stream: %v", i)
			}
			info = i
		}
		if _, err := w.Write(s.Msg().GetData()); err != nil {
			return nil, err
		}
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	if info == nil {
		return nil, errors.New("no FileInfo in the stream")
	}
	return info, nil
}

// TestExecMemory moves 256 MiB of file each way and a flood of 128 MiB of
// output to a slow reader through the controller and the agent, and
// checks that neither process's peak resident memory grows by more than
// memorySlack. It has a plane of its own so that no other test's work
// counts in the peaks.
func TestExecMemory(t *testing.T) {
	t.Parallel()
	p := startExecPlane(t, 2)
	const name = "memory"
	p.sandbox(t, name, "runc")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// A small file each way first, so that what any transfer allocates
	// once is in the baseline.
	if _, err := p.writeFile(ctx, name, "/tmp/warm-up", 0, data(9, 1<<20)); err != nil {
		t.Fatalf("write a warm-up file: %v", err)
	}
	if _, err := p.readFile(ctx, name, "/tmp/warm-up", io.Discard); err != nil {
		t.Fatalf("read a warm-up file: %v", err)
	}
	agentPID, ctrlPID := p.agent.cmd.Process.Pid, p.controllerPID()
	agentBefore, ctrlBefore := procStatusKB(t, agentPID, "VmHWM")<<10, procStatusKB(t, ctrlPID, "VmHWM")<<10
	checkMemory := func(after string) {
		t.Helper()
		agentPeak, ctrlPeak := procStatusKB(t, agentPID, "VmHWM")<<10, procStatusKB(t, ctrlPID, "VmHWM")<<10
		t.Logf("after %s: agent VmHWM %d MiB (%d before), controller VmHWM %d MiB (%d before)",
			after, agentPeak>>20, agentBefore>>20, ctrlPeak>>20, ctrlBefore>>20)
		if agentPeak > agentBefore+memorySlack {
			t.Errorf("after %s the agent's peak resident memory grew by %d MiB, want at most %d MiB", after, (agentPeak-agentBefore)>>20, memorySlack>>20)
		}
		if ctrlPeak > ctrlBefore+memorySlack {
			t.Errorf("after %s the controller's peak resident memory grew by %d MiB, want at most %d MiB", after, (ctrlPeak-ctrlBefore)>>20, memorySlack>>20)
		}
	}

	t.Run("256MiB-file", func(t *testing.T) {
		const size = 256 << 20
		sent := sha256.New()
		start := time.Now()
		info, err := p.writeFile(ctx, name, "/tmp/big.bin", 0o600, io.TeeReader(data(1, size), sent))
		if err != nil {
			t.Fatalf("WriteFile of 256 MiB: %v", err)
		}
		up := time.Since(start)
		if info.GetSize() != size || info.GetMode()&0o777 != 0o600 || info.GetType() != fsbv1.FileType_FILE_TYPE_FILE {
			t.Errorf("WriteFile answered %v, want a 0600 file of %d bytes", info, size)
		}
		got := sha256.New()
		start = time.Now()
		info, err = p.readFile(ctx, name, "/tmp/big.bin", got)
		if err != nil {
			t.Fatalf("ReadFile of 256 MiB: %v", err)
		}
		t.Logf("256 MiB up in %v, down in %v", up.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		if info.GetSize() != size {
			t.Errorf("ReadFile's FileInfo says %d bytes, want %d", info.GetSize(), size)
		}
		if !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
			t.Errorf("the file read back has sha256 %x, the one written %x", got.Sum(nil), sent.Sum(nil))
		}
		checkMemory("256 MiB up and down")
		if _, err := p.api.Remove(ctx, connect.NewRequest(&fsbv1.RemoveRequest{Name: name, Path: "/tmp/big.bin"})); err != nil {
			t.Errorf("remove the file: %v", err)
		}
	})

	t.Run("flood-to-a-slow-reader", func(t *testing.T) {
		const size = 128 << 20
		s, pid := p.startExec(t, ctx, name, &fsbv1.ProcessSpec{Command: []string{"head", "-c", fmt.Sprint(size), "/dev/zero"}})
		defer s.Close()
		var got int64
		// Slow: a message every 20 ms for a second and a half. Without
		// back-pressure the whole flood would be produced (and held
		// somewhere) in a fraction of that.
		for range 75 {
			if !s.Receive() {
				t.Fatalf("the flood's stream ended: %v", s.Err())
			}
			got += int64(len(s.Msg().GetEvent().GetStdout()))
			time.Sleep(20 * time.Millisecond)
		}
		checkMemory(fmt.Sprintf("a slow read of %d KiB of a flood", got>>10))
		waitProcess(t, p, name, pid, func(pi *fsbv1.ProcessInfo) bool {
			if !pi.GetRunning() {
				t.Errorf("the flood's producer finished while its reader had taken %d KiB: nothing held it back", got>>10)
			}
			return true
		})
		var exit *fsbv1.ProcessExit
		for s.Receive() {
			got += int64(len(s.Msg().GetEvent().GetStdout()))
			if e := s.Msg().GetEvent().GetExit(); e != nil {
				exit = e
			}
		}
		if s.Err() != nil || got != size || exit.GetExitCode() != 0 {
			t.Errorf("the flood gave %d bytes, exit %v (%v); want %d bytes and exit 0", got, exit, s.Err(), size)
		}
		checkMemory("the whole flood")
	})

	// What passed shows in the controller's metrics.
	for kind, least := range map[string]float64{"file_write": 256 << 20, "file_read": 256 << 20, "exec_output": 128 << 20} {
		if got := metricValue(t, p.ctrl.metrics, `fsb_fastpath_bytes_total{kind="`+kind+`"}`); got < least {
			t.Errorf("fsb_fastpath_bytes_total{kind=%q} = %v, want at least %v", kind, got, least)
		}
	}
	if got := metricValue(t, p.ctrl.metrics, `fsb_fastpath_execs_total{result="started"}`); got != 1 {
		t.Errorf(`fsb_fastpath_execs_total{result="started"} = %v, want 1`, got)
	}
}

// metricValue reads one sample from a /metrics page; 0 when it is absent.
func metricValue(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metrics: %q: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// testShmFull: filling the sandbox's /dev/shm through WriteFile fails with
// ResourceExhausted saying the device is full, and leaves no partial file
// taking the space.
func testShmFull(t *testing.T, p *execPlane) {
	const name = "shm-full"
	p.sandbox(t, name, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Far more than the sandbox's /dev/shm holds (64 MiB unless set), yet
	// bounded should it hold everything.
	_, err := p.writeFile(ctx, name, "/dev/shm/fill", 0, data(2, 160<<20))
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(fmt.Sprint(err), "no space left on device") {
		t.Fatalf("WriteFile beyond /dev/shm's size: %v; want ResourceExhausted saying no space left on device", err)
	}
	if _, err := p.writeFile(ctx, name, "/dev/shm/after", 0, data(3, 8<<20)); err != nil {
		t.Errorf("8 MiB into /dev/shm after the failed write: %v (the failed write's partial file was left behind?)", err)
	}
	list, err := p.api.ListDir(ctx, connect.NewRequest(&fsbv1.ListDirRequest{Name: name, Path: "/dev/shm"}))
	if err != nil {
		t.Fatalf("ListDir /dev/shm: %v", err)
	}
	var names []string
	for _, e := range list.Msg.GetEntries() {
		names = append(names, e.GetName())
	}
	if strings.Join(names, ",") != "after" {
		t.Errorf("/dev/shm holds %v, want only the file written after the failure", names)
	}
}

// testFilesOverHTTP: plain HTTP/1.1 PUT and GET of /files/NS/NAME, as curl
// does them.
func testFilesOverHTTP(t *testing.T, p *execPlane) {
	const name = "files-http"
	p.sandbox(t, name, "")
	var h1 http.Protocols
	h1.SetHTTP1(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &h1}}
	t.Cleanup(client.CloseIdleConnections)
	do := func(method, sandbox, query string, token string, body io.Reader) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, p.server+"/files/default/"+sandbox+"?"+query, body)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, req.URL, err)
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 1 {
			t.Errorf("%s %s answered over %s, want HTTP/1.1", method, req.URL, resp.Proto)
		}
		var b []byte
		if method == http.MethodGet && resp.StatusCode == http.StatusOK {
			// Hash instead of holding the body.
			h := sha256.New()
			if _, err := io.Copy(h, resp.Body); err != nil {
				t.Fatalf("%s %s: read the body: %v", method, req.URL, err)
			}
			b = h.Sum(nil)
		} else {
			b, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		}
		return resp, b
	}

	const size = 24<<20 + 123
	sent := sha256.New()
	path := url.Values{"path": {"/data/sub/blob.bin"}, "mode": {"0600"}, "parents": {"true"}}.Encode()
	// A body of unknown length: chunked, streamed as it is made.
	resp, body := do(http.MethodPut, name, path, "user-token-1", io.NopCloser(io.TeeReader(data(4, size), sent)))
	if resp.StatusCode/100 != 2 {
		t.Fatalf("PUT: HTTP %d %s", resp.StatusCode, body)
	}
	stat, err := p.api.Stat(context.Background(), connect.NewRequest(&fsbv1.StatRequest{Name: name, Path: "/data/sub/blob.bin"}))
	if err != nil {
		t.Fatalf("Stat after PUT: %v", err)
	}
	if i := stat.Msg.GetInfo(); i.GetSize() != size || i.GetMode()&0o777 != 0o600 {
		t.Errorf("after PUT ?mode=0600: %v, want %d bytes, mode 0600", i, size)
	}
	resp, sum := do(http.MethodGet, name, url.Values{"path": {"/data/sub/blob.bin"}}.Encode(), "user-token-1", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("GET: HTTP %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !bytes.Equal(sum, sent.Sum(nil)) {
		t.Errorf("GET gave sha256 %x, PUT sent %x", sum, sent.Sum(nil))
	}

	for _, tc := range []struct {
		what, method, sandbox, path, token string
		status                             int
		code                               string
	}{
		{"GET without a token", http.MethodGet, name, "/data/sub/blob.bin", "", http.StatusUnauthorized, "unauthenticated"},
		{"GET with a wrong token", http.MethodGet, name, "/data/sub/blob.bin", "wrong", http.StatusUnauthorized, "unauthenticated"},
		{"GET of a relative path", http.MethodGet, name, "data/sub/blob.bin", "user-token-1", http.StatusBadRequest, "invalid_argument"},
		{"GET of a missing file", http.MethodGet, name, "/data/none", "user-token-1", http.StatusNotFound, "not_found"},
		{"GET in a missing sandbox", http.MethodGet, "no-such-sandbox", "/etc/passwd", "user-token-1", http.StatusNotFound, "not_found"},
		{"PUT of a relative path", http.MethodPut, name, "x", "user-token-1", http.StatusBadRequest, "invalid_argument"},
	} {
		var body io.Reader
		if tc.method == http.MethodPut {
			body = strings.NewReader("never written")
		}
		resp, b := do(tc.method, tc.sandbox, url.Values{"path": {tc.path}}.Encode(), tc.token, body)
		var e struct{ Code, Message string }
		if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != tc.status || e.Code != tc.code {
			t.Errorf("%s: HTTP %d %s; want %d with JSON code %q", tc.what, resp.StatusCode, b, tc.status, tc.code)
		}
	}
}
