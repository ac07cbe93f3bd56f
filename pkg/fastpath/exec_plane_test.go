package fastpath

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// execOutcome is what the JSON messages of an Exec stream said.
type execOutcome struct {
	pid            int
	stdout, stderr string
	exitCode       int
	exited         bool
}

// parseExecJSON reads Exec's Connect JSON messages.
func parseExecJSON(t *testing.T, msgs []string) execOutcome {
	t.Helper()
	var o execOutcome
	for _, m := range msgs {
		var ev struct {
			Event struct {
				Started *struct{ Pid int }
				Stdout  []byte
				Stderr  []byte
				Exit    *struct{ ExitCode int }
			}
		}
		if err := json.Unmarshal([]byte(m), &ev); err != nil {
			t.Fatalf("message %q: %v", m, err)
		}
		switch e := ev.Event; {
		case e.Started != nil:
			o.pid = e.Started.Pid
		case e.Exit != nil:
			o.exited, o.exitCode = true, e.Exit.ExitCode
		}
		o.stdout += string(ev.Event.Stdout)
		o.stderr += string(ev.Event.Stderr)
	}
	return o
}

// envelopes splits a Connect streaming body into its messages, the end
// message's error code last ("" when it ended well).
func envelopes(t *testing.T, b []byte) (msgs []string, code string) {
	t.Helper()
	for len(b) >= 5 {
		n := int(binary.BigEndian.Uint32(b[1:5]))
		if len(b) < 5+n {
			t.Fatalf("a cut message: %q", b)
		}
		msg := b[5 : 5+n]
		if b[0]&2 != 0 {
			var end struct{ Error struct{ Code string } }
			if err := json.Unmarshal(msg, &end); err != nil {
				t.Fatalf("end message %q: %v", msg, err)
			}
			return msgs, end.Error.Code
		}
		msgs = append(msgs, string(msg))
		b = b[5+n:]
	}
	t.Fatalf("the stream ended without its end message (%d bytes left)", len(b))
	return nil, ""
}

// TestExecAndFilesThroughARealAgent: the controller's API in front of a
// real agent on the rig: Exec over HTTP/1.1 (Go and curl, Connect JSON
// streaming), ExecInteractive over HTTP/2, and a PUT/GET round trip.
func TestExecAndFilesThroughARealAgent(t *testing.T) {
	p := newPlane(t)
	ctx := context.Background()
	if _, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "web", Spec: fastSpec("sleep", "300")})); err != nil {
		t.Fatal(err)
	}
	url := serveFastPath(t, ctx, p.fp, slog.New(slog.NewTextHandler(p.logs, nil)))

	t.Run("Exec over HTTP/1.1", func(t *testing.T) {
		msgs, code := connectStream(t, h1Client(), url, fsbv1connect.FastPathServiceExecProcedure,
			`{"name":"web","process":{"command":["sh","-c","echo out; echo err >&2; exit 3"]}}`)
		o := parseExecJSON(t, msgs)
		if code != "" || o.pid <= 0 || o.stdout != "out\n" || o.stderr != "err\n" || !o.exited || o.exitCode != 3 {
			t.Errorf("ended %q with %+v; want pid, out, err, exit 3", code, o)
		}
	})

	t.Run("curl", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Fatal("curl is not installed: apt-get install -y curl")
		}
		// The command docs/exec.md shows: a Connect envelope (a flags
		// byte, the length in 4 bytes big-endian, here < 256) around the
		// JSON request.
		script := `body='{"name":"web","process":{"command":["sh","-c","echo hello from curl"]}}'
printf '\0\0\0\0'"\\$(printf %03o ${#body})%s" "$body" |
  curl -sS -N --http1.1 -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/connect+json' \
    --data-binary @- "$URL/fsb.v1.FastPathService/Exec"`
		cmd := exec.Command("sh", "-c", script)
		cmd.Env = append(cmd.Environ(), "TOKEN="+userToken, "URL="+url)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("curl: %v: %s", err, stderr.String())
		}
		msgs, code := envelopes(t, out)
		if o := parseExecJSON(t, msgs); code != "" || o.stdout != "hello from curl\n" || !o.exited || o.exitCode != 0 {
			t.Errorf("curl got %q (end %q): %+v", out, code, o)
		}
		// A file up with -T (PUT) and down again, as docs/exec.md shows.
		dir := t.TempDir()
		script = `head -c 3000000 /dev/urandom > "$DIR/up" &&
curl -sS -f -T "$DIR/up" -H "Authorization: Bearer $TOKEN" "$URL/files/default/web?path=/tmp/curl/up&parents=true" &&
curl -sS -f -o "$DIR/down" -H "Authorization: Bearer $TOKEN" "$URL/files/default/web?path=/tmp/curl/up" &&
cmp "$DIR/up" "$DIR/down"`
		cmd = exec.Command("sh", "-c", script)
		cmd.Env = append(cmd.Environ(), "TOKEN="+userToken, "URL="+url, "DIR="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("curl PUT then GET: %v: %s", err, out)
		}
	})

	t.Run("ExecInteractive over HTTP/2", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		s := fsbv1connect.NewFastPathServiceClient(h2cClient(), url, connect.WithInterceptors(auth.Bearer(userToken))).ExecInteractive(ctx)
		for _, m := range []*fsbv1.ExecInteractiveRequest{
			{Request: &fsbv1.ExecInteractiveRequest_Start{Start: &fsbv1.ExecRequest{Name: "web", Process: &fsbv1.ProcessSpec{Command: []string{"cat"}, Stdin: true}}}},
			{Request: &fsbv1.ExecInteractiveRequest_Stdin{Stdin: []byte("typed in\n")}},
			{Request: &fsbv1.ExecInteractiveRequest_CloseStdin{CloseStdin: true}},
		} {
			if err := s.Send(m); err != nil {
				t.Fatalf("send: %v", err)
			}
		}
		var stdout string
		var exit *fsbv1.ProcessExit
		for {
			resp, err := s.Receive()
			if errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("receive: %v", err)
			}
			stdout += string(resp.GetEvent().GetStdout())
			if e := resp.GetEvent().GetExit(); e != nil {
				exit = e
			}
		}
		if stdout != "typed in\n" || exit == nil || exit.GetExitCode() != 0 {
			t.Errorf("cat gave %q and exit %v; want its input back and 0", stdout, exit)
		}
	})

	t.Run("PUT then GET", func(t *testing.T) {
		data := make([]byte, 8<<20+5)
		_, _ = rand.Read(data)
		put, err := http.NewRequest(http.MethodPut, url+"/files/default/web?path=/tmp/up/x.bin&parents=true&mode=0640", bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		put.Header.Set("Authorization", "Bearer "+userToken)
		code, msg, b := httpCall(t, h1Client(), put)
		if code != "" {
			t.Fatalf("PUT: %s: %s", code, msg)
		}
		var info struct {
			Path, Size string
			Mode       int
		}
		if err := json.Unmarshal(b, &info); err != nil || info.Path != "/tmp/up/x.bin" || info.Size != strconv.Itoa(len(data)) || info.Mode != 0o640 {
			t.Errorf("PUT answered %s (%v); want the new file's info", b, err)
		}
		get, _ := http.NewRequest(http.MethodGet, url+"/files/default/web?path=/tmp/up/x.bin", nil)
		get.Header.Set("Authorization", "Bearer "+userToken)
		resp, err := h1Client().Do(get)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(data)) || !bytes.Equal(got, data) {
			t.Errorf("GET: HTTP %d, length %d, %d bytes (%v), same bytes %v; want 200 and the %d bytes put",
				resp.StatusCode, resp.ContentLength, len(got), err, bytes.Equal(got, data), len(data))
		}
		missing, _ := http.NewRequest(http.MethodGet, url+"/files/default/web?path=/tmp/nothing", nil)
		missing.Header.Set("Authorization", "Bearer "+userToken)
		if code, msg, _ := httpCall(t, h1Client(), missing); code != "not_found" {
			t.Errorf("GET of a missing file: %s %s, want not_found", code, msg)
		}
	})

	t.Run("detach, list, signal, attach", func(t *testing.T) {
		c := fsbv1connect.NewFastPathServiceClient(h2cClient(), url, connect.WithInterceptors(auth.Bearer(userToken)))
		execCtx, detach := context.WithCancel(ctx)
		s, err := c.Exec(execCtx, connect.NewRequest(&fsbv1.ExecRequest{Name: "web", Process: &fsbv1.ProcessSpec{Command: []string{"sleep", "60"}}}))
		if err != nil {
			t.Fatal(err)
		}
		if !s.Receive() || s.Msg().GetEvent().GetStarted() == nil {
			t.Fatalf("no started event: %v", s.Err())
		}
		pid := s.Msg().GetEvent().GetStarted().GetPid()
		detach()
		s.Close()
		resp, err := c.ListProcesses(ctx, connect.NewRequest(&fsbv1.ListProcessesRequest{Name: "web"}))
		if err != nil {
			t.Fatal(err)
		}
		var listed []string
		running := false
		for _, pi := range resp.Msg.GetProcesses() {
			listed = append(listed, fmt.Sprint(pi.GetPid(), pi.GetCommand()))
			running = running || pi.GetPid() == pid && pi.GetRunning()
		}
		if !running {
			t.Errorf("processes %q, want sleep (pid %d) running after its client detached", listed, pid)
		}
		if _, err := c.SignalProcess(ctx, connect.NewRequest(&fsbv1.SignalProcessRequest{Name: "web", Pid: pid, Signal: "KILL"})); err != nil {
			t.Fatal(err)
		}
		a, err := c.AttachProcess(ctx, connect.NewRequest(&fsbv1.AttachProcessRequest{Name: "web", Pid: pid}))
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		var exit *fsbv1.ProcessExit
		for a.Receive() {
			if e := a.Msg().GetEvent().GetExit(); e != nil {
				exit = e
			}
		}
		if a.Err() != nil || exit.GetExitCode() != 137 || exit.GetSignal() != "KILL" {
			t.Errorf("attach after the kill: exit %v, %v; want 137 by KILL", exit, a.Err())
		}
		_, err = c.SignalProcess(ctx, connect.NewRequest(&fsbv1.SignalProcessRequest{Name: "web", Pid: 99999, Signal: "TERM"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("a signal to no process: %v, want the agent's NotFound", err)
		}
	})
}
