package e2b

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fspb "github.com/fast-sandbox/fast-sandbox/pkg/gen/e2b/filesystem"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/e2b/filesystem/filesystemconnect"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// fsBasicAuth is the header the SDK sends to name a user.
func fsBasicAuth(user string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"))
}

// fsAsUser adds the SDK's user header to every request.
type fsAsUser struct {
	user string
	next http.RoundTripper
}

func (a fsAsUser) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", fsBasicAuth(a.user))
	return a.next.RoundTrip(r)
}

// fsEnv is one sandbox behind the filesystem and /files handlers.
type fsEnv struct {
	url string
	// fs speaks Connect JSON as root, as the SDK does (HTTP/1.1).
	fs     filesystemconnect.FilesystemClient
	client *http.Client
}

func (e *fsEnv) clientAs(user string) filesystemconnect.FilesystemClient {
	return filesystemconnect.NewFilesystemClient(&http.Client{Transport: fsAsUser{user, http.DefaultTransport}}, e.url, connect.WithProtoJSON())
}

// upload POSTs body to /files?query with its content type and headers,
// and decodes the JSON list of written files.
func (e *fsEnv) upload(t *testing.T, query, ctype string, body io.Reader, hdr map[string]string) ([]writtenFile, int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+"/files?"+query, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode, string(b)
	}
	var files []writtenFile
	if err := json.Unmarshal(b, &files); err != nil {
		t.Fatalf("the answer %q: %v", b, err)
	}
	return files, resp.StatusCode, string(b)
}

// download GETs /files?query and returns the status and the body.
func (e *fsEnv) download(t *testing.T, query string, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.url+"/files?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// fsMultipartBody is a multipart/form-data body with one "file" part per
// name, as the SDK's FormData sends several files.
func fsMultipartBody(t *testing.T, files map[string][]byte, order []string) (string, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, name := range order {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="file"; filename="`+name+`"`)
		h.Set("Content-Type", "application/octet-stream")
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(files[name])
	}
	mw.Close()
	return mw.FormDataContentType(), &buf
}

// TestFilesystemThroughTheFastPath drives the filesystem service and
// /files, as the SDK calls them, against a real sandbox through a real
// controller and agent.
func TestFilesystemThroughTheFastPath(t *testing.T) {
	p := startPlane(t)
	sb := p.sandbox(t, "e2bfs", nil)
	mux := http.NewServeMux()
	path, h := NewFilesystemHandler(p.api)
	mux.Handle(path, h)
	mux.Handle("/files", NewFilesHandler(p.api))
	// handled tells when a request marked X-Test-Done has been handled.
	handled := make(chan struct{}, 1)
	srv := httptest.NewServer(withSandbox(sb, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r)
		if r.Header.Get("X-Test-Done") != "" {
			handled <- struct{}{}
		}
	})))
	t.Cleanup(srv.Close)
	// Plain answers unless a test asks for gzip itself.
	plain := http.DefaultTransport.(*http.Transport).Clone()
	plain.DisableCompression = true
	t.Cleanup(plain.CloseIdleConnections)
	root := &http.Client{Transport: fsAsUser{"root", plain}}
	e := &fsEnv{url: srv.URL, client: root}
	e.fs = e.clientAs("root")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	big := make([]byte, 3<<20+17)
	rand.Read(big)
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}

	t.Run("write several files (multipart)", func(t *testing.T) {
		ctype, body := fsMultipartBody(t, map[string][]byte{"/tmp/e2b/a.txt": []byte("hello"), "rel/b.bin": binary}, []string{"/tmp/e2b/a.txt", "rel/b.bin"})
		files, status, raw := e.upload(t, "username=root", ctype, body, nil)
		want := []writtenFile{{Name: "a.txt", Type: "file", Path: "/tmp/e2b/a.txt"}, {Name: "b.bin", Type: "file", Path: "/root/rel/b.bin"}}
		if status != http.StatusOK || !slices.Equal(files, want) {
			t.Fatalf("upload: %d %s; want 200 %v", status, raw, want)
		}
	})

	t.Run("write octet-stream, plain and gzip", func(t *testing.T) {
		files, status, raw := e.upload(t, "path=/tmp/e2b/big.bin", "application/octet-stream", bytes.NewReader(big), nil)
		if status != http.StatusOK || len(files) != 1 || files[0].Path != "/tmp/e2b/big.bin" {
			t.Fatalf("upload: %d %s", status, raw)
		}
		var zipped bytes.Buffer
		zw := gzip.NewWriter(&zipped)
		zw.Write([]byte("zipped text"))
		zw.Close()
		files, status, raw = e.upload(t, "path=/tmp/e2b/z.txt", "application/octet-stream", &zipped, map[string]string{"Content-Encoding": "gzip"})
		if status != http.StatusOK || len(files) != 1 || files[0].Name != "z.txt" {
			t.Fatalf("gzip upload: %d %s", status, raw)
		}
		if _, status, raw := e.upload(t, "", "application/octet-stream", strings.NewReader("x"), nil); status != http.StatusBadRequest {
			t.Errorf("octet-stream without a path: %d %s, want 400", status, raw)
		}
	})

	t.Run("a cut upload replaces nothing", func(t *testing.T) {
		if _, status, raw := e.upload(t, "path=/tmp/e2b/keep.txt", "application/octet-stream", strings.NewReader("old"), nil); status != http.StatusOK {
			t.Fatalf("upload: %d %s", status, raw)
		}
		// A body that breaks off after 1 MiB: the client gives up
		// mid-request, as a client that dies does.
		body := io.MultiReader(bytes.NewReader(big[:1<<20]), fsFailingReader{})
		req, err := http.NewRequest(http.MethodPost, e.url+"/files?path=/tmp/e2b/keep.txt", body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("X-Test-Done", "1")
		if resp, err := e.client.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("a broken upload: %d, want the request to fail", resp.StatusCode)
		}
		// Once the handler is done with what it received, the old
		// content is still there.
		<-handled
		if status, _, got := e.download(t, "path=/tmp/e2b/keep.txt", nil); status != http.StatusOK || string(got) != "old" {
			t.Errorf("after a cut upload: %d %d bytes (%.20q), want the old content", status, len(got), got)
		}
		// A gzip body that breaks off: the connection lives on, only the
		// data is bad.
		var zipped bytes.Buffer
		zw := gzip.NewWriter(&zipped)
		zw.Write(bytes.Repeat([]byte("compressible text "), 1<<16))
		zw.Close()
		cut := zipped.Bytes()[:zipped.Len()/2]
		if _, status, raw := e.upload(t, "path=/tmp/e2b/keep.txt", "application/octet-stream", bytes.NewReader(cut), map[string]string{"Content-Encoding": "gzip"}); status != http.StatusBadRequest {
			t.Errorf("a cut gzip body: %d %s, want 400", status, raw)
		}
		if status, _, got := e.download(t, "path=/tmp/e2b/keep.txt", nil); status != http.StatusOK || string(got) != "old" {
			t.Errorf("after a cut gzip upload: %d %d bytes, want the old content", status, len(got))
		}
		if _, err := e.fs.Remove(ctx, connect.NewRequest(&fspb.RemoveRequest{Path: "/tmp/e2b/keep.txt"})); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("read text and bytes", func(t *testing.T) {
		for q, want := range map[string][]byte{
			"path=/tmp/e2b/a.txt":   []byte("hello"),
			"path=rel/b.bin":        binary,
			"path=/tmp/e2b/big.bin": big,
			"path=/tmp/e2b/z.txt":   []byte("zipped text"),
		} {
			status, _, got := e.download(t, q, nil)
			if status != http.StatusOK || !bytes.Equal(got, want) {
				t.Errorf("GET %s: %d, %d bytes; want 200 and the %d bytes written", q, status, len(got), len(want))
			}
		}
		status, hdr, got := e.download(t, "path=/tmp/e2b/a.txt", map[string]string{"Accept-Encoding": "gzip"})
		if status != http.StatusOK || hdr.Get("Content-Encoding") != "gzip" {
			t.Fatalf("GET with gzip: %d %v", status, hdr)
		}
		zr, err := gzip.NewReader(bytes.NewReader(got))
		if err != nil {
			t.Fatal(err)
		}
		if plain, err := io.ReadAll(zr); err != nil || string(plain) != "hello" {
			t.Errorf("gzip body: %q, %v", plain, err)
		}
		status, _, got = e.download(t, "path=/tmp/e2b/missing", nil)
		var envdErr struct {
			Code    int
			Message string
		}
		if err := json.Unmarshal(got, &envdErr); status != http.StatusNotFound || err != nil || envdErr.Code != 404 || !strings.Contains(envdErr.Message, "does not exist") {
			t.Errorf("GET of a missing file: %d %s, want 404 and envd's JSON error", status, got)
		}
		if status, _, got := e.download(t, "path=/tmp/e2b", nil); status != http.StatusBadRequest {
			t.Errorf("GET of a directory: %d %s, want 400", status, got)
		}
	})

	t.Run("stat and exists", func(t *testing.T) {
		r, err := e.fs.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "/tmp/e2b/a.txt"}))
		if err != nil {
			t.Fatal(err)
		}
		got := r.Msg.GetEntry()
		if got.GetName() != "a.txt" || got.GetType() != fspb.FileType_FILE_TYPE_FILE || got.GetPath() != "/tmp/e2b/a.txt" || got.GetSize() != 5 ||
			got.GetMode() != 0o644 || got.GetPermissions() != "-rw-r--r--" || got.GetOwner() != "root" || got.GetGroup() != "root" ||
			got.GetModifiedTime() == nil || got.SymlinkTarget != nil {
			t.Errorf("stat: %v", got)
		}
		_, err = e.fs.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "/tmp/e2b/missing"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("stat of a missing file: %v, want NotFound (exists() is false)", err)
		}
		r, err = e.fs.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "~"}))
		if err != nil || r.Msg.GetEntry().GetPath() != "/root" || r.Msg.GetEntry().GetType() != fspb.FileType_FILE_TYPE_DIRECTORY {
			t.Errorf("stat ~ as root: %v, %v; want /root, a directory", r.Msg.GetEntry(), err)
		}
		// A symlink is its target's type, with the target's path.
		r, err = e.fs.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "/bin/sh"}))
		if err != nil || r.Msg.GetEntry().GetType() != fspb.FileType_FILE_TYPE_FILE || r.Msg.GetEntry().GetSymlinkTarget() != "/bin/busybox" {
			t.Errorf("stat /bin/sh: %v, %v; want a file, target /bin/busybox", r.Msg.GetEntry(), err)
		}
	})

	t.Run("make a directory twice", func(t *testing.T) {
		r, err := e.fs.MakeDir(ctx, connect.NewRequest(&fspb.MakeDirRequest{Path: "/tmp/e2b/d1/d2"}))
		if err != nil || r.Msg.GetEntry().GetPath() != "/tmp/e2b/d1/d2" || r.Msg.GetEntry().GetType() != fspb.FileType_FILE_TYPE_DIRECTORY {
			t.Fatalf("make dir: %v, %v", r, err)
		}
		_, err = e.fs.MakeDir(ctx, connect.NewRequest(&fspb.MakeDirRequest{Path: "/tmp/e2b/d1/d2"}))
		if connect.CodeOf(err) != connect.CodeAlreadyExists {
			t.Errorf("make an existing dir: %v, want AlreadyExists (makeDir() is false)", err)
		}
		_, err = e.fs.MakeDir(ctx, connect.NewRequest(&fspb.MakeDirRequest{Path: "/tmp/e2b/a.txt"}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("make a dir where a file is: %v, want InvalidArgument", err)
		}
	})

	t.Run("list with depth", func(t *testing.T) {
		names := func(depth uint32) []string {
			r, err := e.fs.ListDir(ctx, connect.NewRequest(&fspb.ListDirRequest{Path: "/tmp/e2b", Depth: depth}))
			if err != nil {
				t.Fatal(err)
			}
			var n []string
			for _, en := range r.Msg.GetEntries() {
				n = append(n, en.GetPath())
			}
			return n
		}
		if got, want := names(1), []string{"/tmp/e2b/a.txt", "/tmp/e2b/big.bin", "/tmp/e2b/d1", "/tmp/e2b/z.txt"}; !slices.Equal(got, want) {
			t.Errorf("depth 1: %v, want %v", got, want)
		}
		if got, want := names(3), []string{"/tmp/e2b/a.txt", "/tmp/e2b/big.bin", "/tmp/e2b/d1", "/tmp/e2b/d1/d2", "/tmp/e2b/z.txt"}; !slices.Equal(got, want) {
			t.Errorf("depth 3: %v, want %v", got, want)
		}
		_, err := e.fs.ListDir(ctx, connect.NewRequest(&fspb.ListDirRequest{Path: "/tmp/e2b/nope"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("list a missing dir: %v, want NotFound", err)
		}
		_, err = e.fs.ListDir(ctx, connect.NewRequest(&fspb.ListDirRequest{Path: "/tmp/e2b/a.txt"}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("list a file: %v, want InvalidArgument", err)
		}
	})

	t.Run("symlinks", func(t *testing.T) {
		fsRun(t, p, sb, "ln", "-s", "d1", "/tmp/e2b/link")
		fsRun(t, p, sb, "ln", "-s", "/nowhere", "/tmp/e2b/broken")
		r, err := e.fs.ListDir(ctx, connect.NewRequest(&fspb.ListDirRequest{Path: "/tmp/e2b/link"}))
		if err != nil || len(r.Msg.GetEntries()) != 1 || r.Msg.GetEntries()[0].GetPath() != "/tmp/e2b/link/d2" {
			t.Errorf("list a symlink to a directory: %v, %v; want d2 under the link's path", r, err)
		}
		st, err := e.fs.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "/tmp/e2b/link"}))
		if got := st.Msg.GetEntry(); err != nil || got.GetType() != fspb.FileType_FILE_TYPE_DIRECTORY || got.GetSymlinkTarget() != "/tmp/e2b/d1" || got.GetPermissions() != "Lrwxrwxrwx" {
			t.Errorf("stat a symlink to a directory: %v, %v", got, err)
		}
		st, err = e.fs.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "/tmp/e2b/broken"}))
		if got := st.Msg.GetEntry(); err != nil || got.GetType() != fspb.FileType_FILE_TYPE_UNSPECIFIED || got.GetSymlinkTarget() != "/tmp/e2b/broken" {
			t.Errorf("stat a broken symlink: %v, %v; want no type, the link's own path as envd gives", got, err)
		}
		if _, err := e.fs.Remove(ctx, connect.NewRequest(&fspb.RemoveRequest{Path: "/tmp/e2b/broken"})); err != nil {
			t.Error(err)
		}
		if _, err := e.fs.Remove(ctx, connect.NewRequest(&fspb.RemoveRequest{Path: "/tmp/e2b/link"})); err != nil {
			t.Error(err)
		}
		if _, err := e.fs.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "/tmp/e2b/d1/d2"})); err != nil {
			t.Errorf("removing a link removed what it points to: %v", err)
		}
	})

	t.Run("rename", func(t *testing.T) {
		r, err := e.fs.Move(ctx, connect.NewRequest(&fspb.MoveRequest{Source: "/tmp/e2b/z.txt", Destination: "/tmp/e2b/new/dir/z2.txt"}))
		if err != nil || r.Msg.GetEntry().GetPath() != "/tmp/e2b/new/dir/z2.txt" || r.Msg.GetEntry().GetSize() != int64(len("zipped text")) {
			t.Fatalf("move: %v, %v", r, err)
		}
		if _, err := e.fs.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "/tmp/e2b/z.txt"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("the source after the move: %v, want NotFound", err)
		}
		if _, err := e.fs.Move(ctx, connect.NewRequest(&fspb.MoveRequest{Source: "/tmp/e2b/z.txt", Destination: "/tmp/e2b/z3.txt"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("move of a missing file: %v, want NotFound", err)
		}
	})

	t.Run("remove", func(t *testing.T) {
		if _, err := e.fs.Remove(ctx, connect.NewRequest(&fspb.RemoveRequest{Path: "/tmp/e2b/new"})); err != nil {
			t.Fatal(err)
		}
		if _, err := e.fs.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "/tmp/e2b/new"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("a removed directory: %v, want NotFound", err)
		}
		if _, err := e.fs.Remove(ctx, connect.NewRequest(&fspb.RemoveRequest{Path: "/tmp/e2b/new"})); err != nil {
			t.Errorf("remove of what is gone: %v, want success", err)
		}
	})

	t.Run("what another user makes is theirs", func(t *testing.T) {
		nobody := e.clientAs("nobody")
		if _, err := nobody.MakeDir(ctx, connect.NewRequest(&fspb.MakeDirRequest{Path: "/tmp/e2b/nb/sub"})); err != nil {
			t.Fatal(err)
		}
		ctype, body := fsMultipartBody(t, map[string][]byte{"/tmp/e2b/nb2/f.txt": []byte("mine")}, []string{"/tmp/e2b/nb2/f.txt"})
		if _, status, raw := e.upload(t, "username=nobody", ctype, body, nil); status != http.StatusOK {
			t.Fatalf("upload as nobody: %d %s", status, raw)
		}
		for _, p := range []string{"/tmp/e2b/nb", "/tmp/e2b/nb/sub", "/tmp/e2b/nb2", "/tmp/e2b/nb2/f.txt"} {
			r, err := e.fs.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: p}))
			if err != nil || r.Msg.GetEntry().GetOwner() != "nobody" || r.Msg.GetEntry().GetGroup() != "nogroup" {
				t.Errorf("%s: %v, %v; want nobody:nogroup's", p, r.Msg.GetEntry(), err)
			}
		}
		if _, err := e.clientAs("nosuchuser").Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: "/"})); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Errorf("a user the sandbox does not have: %v, want Unauthenticated", err)
		}
	})

	t.Run("watchDir sees a create and a remove", func(t *testing.T) {
		if _, err := e.fs.MakeDir(ctx, connect.NewRequest(&fspb.MakeDirRequest{Path: "/tmp/e2b/w"})); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		defer wcancel()
		stream, err := e.fs.WatchDir(wctx, connect.NewRequest(&fspb.WatchDirRequest{Path: "/tmp/e2b/w"}))
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		if !stream.Receive() || stream.Msg().GetStart() == nil {
			t.Fatalf("first message %v (%v), want the start event", stream.Msg(), stream.Err())
		}
		// next returns the next filesystem event, skipping keepalives.
		next := func() *fspb.FilesystemEvent {
			t.Helper()
			for stream.Receive() {
				if ev := stream.Msg().GetFilesystem(); ev != nil {
					return ev
				}
			}
			t.Fatalf("the watch ended: %v", stream.Err())
			return nil
		}
		if _, status, raw := e.upload(t, "path=/tmp/e2b/w/new.txt", "application/octet-stream", strings.NewReader("new"), nil); status != http.StatusOK {
			t.Fatalf("upload: %d %s", status, raw)
		}
		if ev := next(); ev.GetName() != "new.txt" || ev.GetType() != fspb.EventType_EVENT_TYPE_CREATE {
			t.Errorf("event %v, want create of new.txt", ev)
		}
		if _, err := e.fs.Remove(ctx, connect.NewRequest(&fspb.RemoveRequest{Path: "/tmp/e2b/w/new.txt"})); err != nil {
			t.Fatal(err)
		}
		if ev := next(); ev.GetName() != "new.txt" || ev.GetType() != fspb.EventType_EVENT_TYPE_REMOVE {
			t.Errorf("event %v, want remove of new.txt", ev)
		}
	})

	t.Run("polling watcher", func(t *testing.T) {
		r, err := e.fs.CreateWatcher(ctx, connect.NewRequest(&fspb.CreateWatcherRequest{Path: "/tmp/e2b/w", Recursive: true}))
		if err != nil {
			t.Fatal(err)
		}
		id := r.Msg.GetWatcherId()
		if _, err := e.fs.MakeDir(ctx, connect.NewRequest(&fspb.MakeDirRequest{Path: "/tmp/e2b/w/sub"})); err != nil {
			t.Fatal(err)
		}
		if _, status, raw := e.upload(t, "path=/tmp/e2b/w/sub/f", "application/octet-stream", strings.NewReader("f"), nil); status != http.StatusOK {
			t.Fatalf("upload: %d %s", status, raw)
		}
		ev, err := e.fs.GetWatcherEvents(ctx, connect.NewRequest(&fspb.GetWatcherEventsRequest{WatcherId: id}))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, x := range ev.Msg.GetEvents() {
			got = append(got, x.GetType().String()+" "+x.GetName())
		}
		if want := []string{"EVENT_TYPE_CREATE sub", "EVENT_TYPE_CREATE sub/f"}; !slices.Equal(got, want) {
			t.Errorf("events %v, want %v", got, want)
		}
		if _, err := e.fs.RemoveWatcher(ctx, connect.NewRequest(&fspb.RemoveWatcherRequest{WatcherId: id})); err != nil {
			t.Fatal(err)
		}
		if _, err := e.fs.GetWatcherEvents(ctx, connect.NewRequest(&fspb.GetWatcherEventsRequest{WatcherId: id})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("events of a removed watcher: %v, want NotFound", err)
		}
	})
}

// fsFailingReader fails every read.
type fsFailingReader struct{}

func (fsFailingReader) Read([]byte) (int, error) { return 0, errors.New("the client broke off") }

// fsRun runs argv in sb as root and fails the test unless it exits 0.
func fsRun(t *testing.T, p *plane, sb *Sandbox, argv ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := p.api.Exec(ctx, connect.NewRequest(&fsbv1.ExecRequest{Name: sb.ID, Namespace: sb.Namespace, Process: &fsbv1.ProcessSpec{Command: argv, User: "0"}}))
	if err != nil {
		t.Fatalf("%q: %v", argv, err)
	}
	defer st.Close()
	for st.Receive() {
		if x := st.Msg().GetEvent().GetExit(); x != nil {
			if x.GetExitCode() != 0 {
				t.Fatalf("%q exited %d", argv, x.GetExitCode())
			}
			return
		}
	}
	t.Fatalf("%q: the stream ended without an exit: %v", argv, st.Err())
}

// TestFilesystemWithoutASandbox: a handler mounted without the router
// answers unauthenticated, and never reaches the API.
func TestFilesystemWithoutASandbox(t *testing.T) {
	mux := http.NewServeMux()
	path, h := NewFilesystemHandler(nil)
	mux.Handle(path, h)
	mux.Handle("/files", NewFilesHandler(nil))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	fs := filesystemconnect.NewFilesystemClient(http.DefaultClient, srv.URL, connect.WithProtoJSON())
	_, err := fs.Stat(context.Background(), connect.NewRequest(&fspb.StatRequest{Path: "/"}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("stat: %v, want Unauthenticated", err)
	}
	resp, err := http.Get(srv.URL + "/files?path=/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /files: %d, want 401", resp.StatusCode)
	}
}
