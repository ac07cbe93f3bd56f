package e2b

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// response is an answer of the E2B API.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer %d %q is not the JSON expected: %v", r.status, r.body, err)
	}
}

// apiError checks that r is E2B's error body of status.
func (r response) apiError(t *testing.T, status int) string {
	t.Helper()
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if r.status != status {
		t.Fatalf("HTTP %d %s, want %d", r.status, r.body, status)
	}
	r.json(t, &e)
	if e.Code != status || e.Message == "" {
		t.Fatalf("error body %s, want code %d and a message", r.body, status)
	}
	return e.Message
}

// call makes one request to base with the given headers (name, value
// pairs) and JSON body (nil: none).
func call(t *testing.T, method, base, path string, body any, headers ...string) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (p *plane) rest(method, path, key string, body any) response {
	p.t.Helper()
	return call(p.t, method, p.e2b, path, body, "X-API-Key", key)
}

type created struct {
	SandboxID       string `json:"sandboxID"`
	TemplateID      string `json:"templateID"`
	ClientID        string `json:"clientID"`
	EnvdVersion     string `json:"envdVersion"`
	EnvdAccessToken string `json:"envdAccessToken"`
}

type detail struct {
	SandboxID       string            `json:"sandboxID"`
	TemplateID      string            `json:"templateID"`
	StartedAt       time.Time         `json:"startedAt"`
	EndAt           time.Time         `json:"endAt"`
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken string            `json:"envdAccessToken"`
	Metadata        map[string]string `json:"metadata"`
	State           string            `json:"state"`
	MemoryMB        int               `json:"memoryMB"`
}

func (p *plane) create(key string, body map[string]any) created {
	p.t.Helper()
	r := p.rest("POST", "/v2/sandboxes", key, body)
	if r.status != http.StatusCreated {
		p.t.Fatalf("create: HTTP %d %s", r.status, r.body)
	}
	var c created
	r.json(p.t, &c)
	if c.SandboxID == "" || c.EnvdAccessToken == "" || c.EnvdVersion != EnvdVersion || c.TemplateID != "base" {
		p.t.Fatalf("create answered %s", r.body)
	}
	return c
}

func (p *plane) get(key, id string) detail {
	p.t.Helper()
	r := p.rest("GET", "/sandboxes/"+id, key, nil)
	if r.status != http.StatusOK {
		p.t.Fatalf("get %s: HTTP %d %s", id, r.status, r.body)
	}
	var d detail
	r.json(p.t, &d)
	return d
}

func (p *plane) list(key, query string) ([]detail, response) {
	p.t.Helper()
	r := p.rest("GET", "/v2/sandboxes"+query, key, nil)
	if r.status != http.StatusOK {
		p.t.Fatalf("list %s: HTTP %d %s", query, r.status, r.body)
	}
	var ds []detail
	r.json(p.t, &ds)
	return ds, r
}

func ids(ds []detail) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.SandboxID)
	}
	return strings.Join(out, ",")
}

// metadataParam encodes metadata as the SDK does (e2b@2.51.0): each key and
// value with encodeURIComponent, the pairs as a form; the caller encodes
// the whole as the parameter.
func metadataParam(md map[string]string) string {
	var pairs []string
	for k, v := range md {
		pairs = append(pairs, url.QueryEscape(url.PathEscape(k))+"="+url.QueryEscape(url.PathEscape(v)))
	}
	return "?metadata=" + url.QueryEscape(strings.Join(pairs, "&"))
}

// TestRESTLifecycle drives E2B's REST API of a real controller over a real
// agent as E2B's SDK does: create, get, list with a metadata filter and
// pages, set timeout, connect, metrics, kill, and the answers for what is
// missing or not allowed.
func TestRESTLifecycle(t *testing.T) {
	p := startPlane(t)

	t.Run("keys", func(t *testing.T) {
		p.rest("GET", "/v2/sandboxes", "", nil).apiError(t, http.StatusUnauthorized)
		p.rest("GET", "/v2/sandboxes", "e2b_deadbeef", nil).apiError(t, http.StatusUnauthorized)
		p.rest("POST", "/v2/sandboxes", "not-a-key", map[string]any{"templateID": "base"}).apiError(t, http.StatusUnauthorized)
	})

	before := time.Now()
	a := p.create(keyA, map[string]any{
		"templateID": "base", "timeout": 60,
		"metadata": map[string]string{"user": "alice", "note": "hello world@example"},
		"envVars":  map[string]string{"FOO": "bar"},
	})
	b := p.create(keyA, map[string]any{"templateID": "base", "metadata": map[string]string{"user": "bob"}})
	other := p.create(keyB, map[string]any{})

	t.Run("get", func(t *testing.T) {
		d := p.get(keyA, a.SandboxID)
		if d.SandboxID != a.SandboxID || d.TemplateID != "base" || d.State != "running" || d.EnvdVersion != EnvdVersion ||
			d.EnvdAccessToken != a.EnvdAccessToken || d.MemoryMB != 64 {
			t.Errorf("get: %+v", d)
		}
		if d.Metadata["user"] != "alice" || d.Metadata["note"] != "hello world@example" || len(d.Metadata) != 2 {
			t.Errorf("metadata %v", d.Metadata)
		}
		// timeout 60 is the expiry; the default is 300 seconds.
		if got := d.EndAt.Sub(d.StartedAt); got < 55*time.Second || got > 65*time.Second {
			t.Errorf("endAt - startedAt = %s, want about 60s", got)
		}
		if got := p.get(keyA, b.SandboxID); got.EndAt.Sub(got.StartedAt) < 295*time.Second {
			t.Errorf("the default timeout gave endAt - startedAt = %s, want about 300s", got.EndAt.Sub(got.StartedAt))
		}
		if d.StartedAt.Before(before.Add(-time.Second)) {
			t.Errorf("startedAt %s before the create (%s)", d.StartedAt, before)
		}
	})

	t.Run("namespaces", func(t *testing.T) {
		p.rest("GET", "/sandboxes/"+a.SandboxID, keyB, nil).apiError(t, http.StatusNotFound)
		p.rest("DELETE", "/sandboxes/"+a.SandboxID, keyB, nil).apiError(t, http.StatusNotFound)
		if ds, _ := p.list(keyB, ""); ids(ds) != other.SandboxID {
			t.Errorf("key B lists %s, want only %s", ids(ds), other.SandboxID)
		}
	})

	t.Run("list", func(t *testing.T) {
		if ds, _ := p.list(keyA, metadataParam(map[string]string{"user": "alice"})); ids(ds) != a.SandboxID {
			t.Errorf("metadata user=alice lists %q, want %s", ids(ds), a.SandboxID)
		}
		if ds, _ := p.list(keyA, metadataParam(map[string]string{"note": "hello world@example", "user": "alice"})); ids(ds) != a.SandboxID {
			t.Errorf("metadata note and user list %q, want %s", ids(ds), a.SandboxID)
		}
		if ds, _ := p.list(keyA, metadataParam(map[string]string{"user": "carol"})); len(ds) != 0 {
			t.Errorf("metadata user=carol lists %q, want none", ids(ds))
		}
		if ds, _ := p.list(keyA, "?state=paused"); len(ds) != 0 {
			t.Errorf("state=paused lists %q, want none", ids(ds))
		}
		// A page at a time. The order is by start, newest first, then by
		// ID: a and b started in the same second (the API's objects keep
		// seconds) are in either order.
		all, _ := p.list(keyA, "?state=running,paused")
		if got := ids(all); got != b.SandboxID+","+a.SandboxID && got != a.SandboxID+","+b.SandboxID {
			t.Fatalf("list: %q, want %s and %s", got, a.SandboxID, b.SandboxID)
		}
		page1, r := p.list(keyA, "?limit=1")
		next := r.header.Get("X-Next-Token")
		if ids(page1) != all[0].SandboxID || next == "" || r.header.Get("X-Total-Running") != "2" {
			t.Fatalf("first page %q, next token %q, headers %v; want %s first", ids(page1), next, r.header, all[0].SandboxID)
		}
		page2, r := p.list(keyA, "?limit=1&nextToken="+url.QueryEscape(next))
		if ids(page2) != all[1].SandboxID || r.header.Get("X-Next-Token") != "" {
			t.Fatalf("second page %q, next token %q; want %s", ids(page2), r.header.Get("X-Next-Token"), all[1].SandboxID)
		}
		if asc, _ := p.list(keyA, "?order=asc"); ids(asc) != all[1].SandboxID+","+all[0].SandboxID {
			t.Errorf("order=asc lists %q, want the other way round of %q", ids(asc), ids(all))
		}
		p.rest("GET", "/v2/sandboxes?limit=0", keyA, nil).apiError(t, http.StatusBadRequest)
	})

	t.Run("timeout", func(t *testing.T) {
		was := p.get(keyA, a.SandboxID).EndAt
		if r := p.rest("POST", "/sandboxes/"+a.SandboxID+"/timeout", keyA, map[string]any{"timeout": 600}); r.status != http.StatusNoContent {
			t.Fatalf("set timeout: HTTP %d %s", r.status, r.body)
		}
		end := p.get(keyA, a.SandboxID).EndAt
		if end.Sub(time.Now()) < 590*time.Second || !end.After(was) {
			t.Errorf("endAt %s after a timeout of 600s (was %s)", end, was)
		}
		// Connect extends, never shortens.
		r := p.rest("POST", "/v2/sandboxes/"+a.SandboxID+"/connect", keyA, map[string]any{"timeout": 10})
		var c created
		if r.status != http.StatusOK {
			t.Fatalf("connect: HTTP %d %s", r.status, r.body)
		}
		r.json(t, &c)
		if c.SandboxID != a.SandboxID || c.EnvdAccessToken != a.EnvdAccessToken {
			t.Errorf("connect answered %s", r.body)
		}
		if got := p.get(keyA, a.SandboxID).EndAt; !got.Equal(end) {
			t.Errorf("connect with a shorter timeout moved endAt from %s to %s", end, got)
		}
		if r := p.rest("POST", "/v2/sandboxes/"+a.SandboxID+"/connect", keyA, map[string]any{"timeout": 3600}); r.status != http.StatusOK {
			t.Fatalf("connect: HTTP %d %s", r.status, r.body)
		}
		if got := p.get(keyA, a.SandboxID).EndAt; got.Sub(time.Now()) < 3590*time.Second {
			t.Errorf("connect with timeout 3600 left endAt at %s", got)
		}
		p.rest("POST", "/sandboxes/"+a.SandboxID+"/timeout", keyA, map[string]any{"timeout": 0}).apiError(t, http.StatusBadRequest)
		p.rest("POST", "/v2/sandboxes/nosuchsandbox/connect", keyA, nil).apiError(t, http.StatusNotFound)
	})

	t.Run("metrics", func(t *testing.T) {
		metrics := func(query string) []sandboxMetric {
			t.Helper()
			r := p.rest("GET", "/sandboxes/"+a.SandboxID+"/metrics"+query, keyA, nil)
			if r.status != http.StatusOK {
				t.Fatalf("metrics%s: HTTP %d %s", query, r.status, r.body)
			}
			var ms []sandboxMetric
			r.json(t, &ms)
			return ms
		}
		now := time.Now()
		for _, query := range []string{"", fmt.Sprintf("?start=%d&end=%d", now.Add(-time.Minute).Unix(), now.Add(time.Minute).Unix())} {
			ms := metrics(query)
			if len(ms) != 1 {
				t.Fatalf("metrics%s: %d samples, want the current one", query, len(ms))
			}
			m := ms[0]
			t.Logf("metrics%s: %+v", query, m)
			at, err := time.Parse(time.RFC3339Nano, m.Timestamp)
			if err != nil || at.Unix() != m.TimestampUnix || time.Since(at).Abs() > time.Minute {
				t.Errorf("timestamp %q (%v), timestampUnix %d: want now, the same second", m.Timestamp, err, m.TimestampUnix)
			}
			// The template's limit (64Mi) is memTotal; the sandbox runs
			// sleep under fsb init, which hold some memory and no CPU.
			if m.MemUsed == 0 || m.MemUsed > m.MemTotal || m.MemTotal != 64<<20 || m.CPUCount < 1 ||
				m.CPUUsedPct < 0 || m.CPUUsedPct > 100 || m.DiskTotal != 0 {
				t.Errorf("sample %+v: want memUsed > 0 within memTotal = 64Mi, cpuCount >= 1, cpuUsedPct in 0-100, diskTotal 0", m)
			}
		}
		// A window that does not hold now has no samples.
		if ms := metrics(fmt.Sprintf("?start=%d&end=%d", now.Add(-time.Hour).Unix(), now.Add(-50*time.Minute).Unix())); len(ms) != 0 {
			t.Errorf("metrics of an hour ago: %+v, want none", ms)
		}
		p.rest("GET", "/sandboxes/"+a.SandboxID+"/metrics?start=yesterday", keyA, nil).apiError(t, http.StatusBadRequest)
		p.rest("GET", "/sandboxes/"+a.SandboxID+"/metrics", keyB, nil).apiError(t, http.StatusNotFound)
		p.rest("GET", "/sandboxes/nosuchsandbox/metrics", keyA, nil).apiError(t, http.StatusNotFound)
	})

	t.Run("not supported", func(t *testing.T) {
		for _, c := range []struct{ method, path string }{
			{"POST", "/sandboxes/" + a.SandboxID + "/pause"},
			{"POST", "/sandboxes/" + a.SandboxID + "/snapshots"},
			{"POST", "/sandboxes/" + a.SandboxID + "/fork"},
			{"PUT", "/sandboxes/" + a.SandboxID + "/network"},
			{"GET", "/no/such/path"},
			{"PATCH", "/sandboxes/" + a.SandboxID},
		} {
			if msg := p.rest(c.method, c.path, keyA, map[string]any{}).apiError(t, http.StatusNotImplemented); !strings.Contains(msg, "not supported") {
				t.Errorf("%s %s: message %q", c.method, c.path, msg)
			}
		}
		// A create asking for what is missing is refused, not half done.
		p.rest("POST", "/v2/sandboxes", keyA, map[string]any{"templateID": "base", "allow_internet_access": false}).apiError(t, http.StatusNotImplemented)
		p.rest("POST", "/v2/sandboxes", keyA, map[string]any{"templateID": "nosuchtemplate"}).apiError(t, http.StatusNotFound)
		if !strings.Contains(p.ctrlLog.String(), "E2B request not supported") {
			t.Error("the controller logged no line for the 501s")
		}
	})

	t.Run("envd health", func(t *testing.T) {
		if r := call(t, "GET", p.e2b, "/health", nil, HeaderSandboxID, a.SandboxID, HeaderSandboxPort, EnvdPort, HeaderAccessToken, a.EnvdAccessToken); r.status != http.StatusNoContent {
			t.Errorf("health: HTTP %d %s, want 204", r.status, r.body)
		}
		call(t, "GET", p.e2b, "/health", nil, HeaderSandboxID, a.SandboxID).apiError(t, http.StatusUnauthorized)
		call(t, "GET", p.e2b, "/health", nil, HeaderSandboxID, a.SandboxID, HeaderAccessToken, b.EnvdAccessToken).apiError(t, http.StatusUnauthorized)
		// The envd services are mounted; a path none serves is 501.
		if r := call(t, "POST", p.e2b, "/process.Process/List", map[string]any{}, HeaderSandboxID, a.SandboxID, HeaderAccessToken, a.EnvdAccessToken); r.status != http.StatusOK {
			t.Errorf("process.Process/List: HTTP %d %s, want 200", r.status, r.body)
		}
		call(t, "POST", p.e2b, "/nosuch.Service/Call", map[string]any{}, HeaderSandboxID, a.SandboxID, HeaderAccessToken, a.EnvdAccessToken).apiError(t, http.StatusNotImplemented)
	})

	t.Run("expiry", func(t *testing.T) {
		// The controller deletes a sandbox at its expiry; E2B's API then
		// knows it no more.
		c := p.create(keyA, map[string]any{"timeout": 1})
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := p.rest("GET", "/sandboxes/"+c.SandboxID, keyA, nil)
			if r.status == http.StatusNotFound {
				break
			}
			if r.status != http.StatusOK {
				t.Fatalf("get: HTTP %d %s", r.status, r.body)
			}
			if time.Now().After(deadline) {
				t.Fatalf("sandbox %s with a timeout of 1s still there after 30s: %s", c.SandboxID, r.body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("kill", func(t *testing.T) {
		if r := p.rest("DELETE", "/sandboxes/"+a.SandboxID, keyA, nil); r.status != http.StatusNoContent {
			t.Fatalf("kill: HTTP %d %s", r.status, r.body)
		}
		p.rest("GET", "/sandboxes/"+a.SandboxID, keyA, nil).apiError(t, http.StatusNotFound)
		p.rest("DELETE", "/sandboxes/"+a.SandboxID, keyA, nil).apiError(t, http.StatusNotFound)
		p.rest("POST", "/sandboxes/"+a.SandboxID+"/timeout", keyA, map[string]any{"timeout": 60}).apiError(t, http.StatusNotFound)
		// envd of a killed sandbox: 502, what the SDK reads as "not running".
		call(t, "GET", p.e2b, "/health", nil, HeaderSandboxID, a.SandboxID, HeaderAccessToken, a.EnvdAccessToken).apiError(t, http.StatusBadGateway)
		if ds, _ := p.list(keyA, ""); ids(ds) != b.SandboxID {
			t.Errorf("list after the kill: %q, want %s", ids(ds), b.SandboxID)
		}
	})
}

// TestRouterChecksAccessTokens mounts a handler behind the envd router of a
// server driving a real controller: only a request with the sandbox's own
// access token reaches it, with the sandbox in its context.
func TestRouterChecksAccessTokens(t *testing.T) {
	p := startPlane(t)
	a := p.create(keyA, map[string]any{"envVars": map[string]string{"FOO": "bar"}})
	b := p.create(keyB, map[string]any{})

	keys, err := ReadKeys(p.keys)
	if err != nil {
		t.Fatal(err)
	}
	// A user of the Sandbox API names a sandbox of namespace A (which the
	// router tries first) as B's, with E2B's label: B's token must still
	// reach B, and the token key A gets of it, A's.
	_, err = p.api.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.CreateSandboxRequest{
		Namespace: nsA, Name: b.SandboxID,
		Labels: map[string]string{LabelTemplate: "base"},
		Spec:   &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "3600"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	impostorToken := p.get(keyA, b.SandboxID).EnvdAccessToken
	if impostorToken == "" || impostorToken == b.EnvdAccessToken {
		t.Fatalf("the token of %s/%s: %q (B's: %q)", nsA, b.SandboxID, impostorToken, b.EnvdAccessToken)
	}
	srv := NewServer(Config{API: p.api, Keys: keys, TokenSecret: []byte(tokenSecret)})
	got := make(chan *Sandbox, 1)
	srv.Mount("/echo.Echo/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- SandboxFrom(r.Context())
		w.WriteHeader(http.StatusOK)
	}))
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)

	for name, c := range map[string]struct {
		id, token string
		status    int
	}{
		"no token":             {a.SandboxID, "", http.StatusUnauthorized},
		"another's token":      {a.SandboxID, b.EnvdAccessToken, http.StatusUnauthorized},
		"a made-up token":      {a.SandboxID, strings.Repeat("a", len(a.EnvdAccessToken)), http.StatusUnauthorized},
		"no such sandbox":      {"nosuchsandbox", a.EnvdAccessToken, http.StatusBadGateway},
		"the other key's, own": {b.SandboxID, b.EnvdAccessToken, http.StatusOK},
		"the impostor's own":   {b.SandboxID, impostorToken, http.StatusOK},
		"own token":            {a.SandboxID, a.EnvdAccessToken, http.StatusOK},
	} {
		t.Run(name, func(t *testing.T) {
			headers := []string{HeaderSandboxID, c.id, HeaderSandboxPort, EnvdPort}
			if c.token != "" {
				headers = append(headers, HeaderAccessToken, c.token)
			}
			r := call(t, "POST", hs.URL, "/echo.Echo/Say", map[string]any{}, headers...)
			if c.status != http.StatusOK {
				r.apiError(t, c.status)
				select {
				case sb := <-got:
					t.Fatalf("the handler ran for %+v", sb)
				default:
				}
				return
			}
			if r.status != http.StatusOK {
				t.Fatalf("HTTP %d %s", r.status, r.body)
			}
			sb := <-got
			if sb == nil || sb.ID != c.id {
				t.Fatalf("the handler got sandbox %+v, want %s", sb, c.id)
			}
			if c.id == a.SandboxID && (sb.Namespace != nsA || sb.EnvVars["FOO"] != "bar") {
				t.Errorf("sandbox %+v, want namespace %s and FOO=bar", sb, nsA)
			}
			if want := map[string]string{b.EnvdAccessToken: nsB, impostorToken: nsA}[c.token]; c.id == b.SandboxID && sb.Namespace != want {
				t.Errorf("sandbox %+v, want namespace %s", sb, want)
			}
		})
	}
	// Another port of the sandbox than envd's is not served.
	call(t, "GET", hs.URL, "/", nil, HeaderSandboxID, a.SandboxID, HeaderSandboxPort, "8080", HeaderAccessToken, a.EnvdAccessToken).apiError(t, http.StatusNotImplemented)
}

// TestPipeServesFullDuplexHTTP2 checks what the controller's in-process
// client needs of the pipe: HTTP/2, and a request's body and its answer
// flowing both ways at once (the API's bidirectional streams).
func TestPipeServesFullDuplexHTTP2(t *testing.T) {
	pipe := NewPipe()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- httpserver.Serve(ctx, pipe, httpserver.Config{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor != 2 {
				http.Error(w, "not HTTP/2: "+r.Proto, http.StatusHTTPVersionNotSupported)
				return
			}
			rc := http.NewResponseController(w)
			w.WriteHeader(http.StatusOK)
			_ = rc.Flush()
			sc := bufio.NewScanner(r.Body)
			for sc.Scan() {
				fmt.Fprintln(w, strings.ToUpper(sc.Text()))
				_ = rc.Flush()
			}
		})})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	in, out := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://in-process/echo", in)
	if err != nil {
		t.Fatal(err)
	}
	client := pipe.Client()
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("HTTP %d %s", resp.StatusCode, b)
	}
	answers := bufio.NewReader(resp.Body)
	for _, line := range []string{"one", "two"} {
		// Each answer comes before the next line is sent.
		fmt.Fprintln(out, line)
		got, err := answers.ReadString('\n')
		if err != nil || got != strings.ToUpper(line)+"\n" {
			t.Fatalf("answer %q, %v; want %q", got, err, strings.ToUpper(line))
		}
	}
	out.Close()
	if rest, _ := io.ReadAll(answers); len(rest) != 0 {
		t.Errorf("more after the end: %q", rest)
	}
}
