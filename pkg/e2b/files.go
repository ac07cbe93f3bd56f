package e2b

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
)

// uploadChunk is how much of an upload goes to the FastPathService in
// one WriteFile message: well under any request limit, and large enough
// that a big file is few messages.
const uploadChunk = 256 << 10

// maxUploadFiles bounds the files of one multipart upload: each costs a
// few calls into the sandbox, and the answer lists them all.
const maxUploadFiles = 10000

// filesHandler serves envd's /files over the FastPathService.
type filesHandler struct {
	fs *filesystemService
}

// NewFilesHandler returns envd's HTTP /files, for the router to mount at
// /files (it reads the sandbox from the request's context):
//
//	GET  /files?path=P[&username=U] streams the file P (relative: in U's
//	     home; U defaults to the Authorization header's user, then
//	     DefaultUser), gzip-compressed when the request accepts gzip;
//	     404 when it does not exist, 400 when it is a directory.
//	POST /files?[path=P][&username=U] writes files: a multipart/form-data
//	     body's "file" parts (each to P, or to the path its filename
//	     gives when P is not set), or an application/octet-stream body
//	     to P; Content-Encoding gzip is decompressed as it streams.
//	     Missing parents are made; every file is replaced whole once all
//	     of it has arrived, and given to U. The answer is the JSON list
//	     [{"name","type":"file","path"}] of the files written.
//
// Nothing is held in memory whole: each file goes to the sandbox in
// chunks, and the body only has to keep arriving (each read within
// httpserver.ReadTimeout), as the FastPathService's own /files does.
// Errors are envd's: a JSON {"code": status, "message"}.
func NewFilesHandler(api API) http.Handler {
	h := &filesHandler{fs: &filesystemService{api: api, accounts: newAccountCache(api)}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /files", h.get)
	mux.HandleFunc("POST /files", h.post)
	mux.HandleFunc("/files", func(w http.ResponseWriter, r *http.Request) {
		writeFilesError(w, http.StatusMethodNotAllowed, fmt.Errorf("%s /files: want GET or POST", r.Method))
	})
	return mux
}

// begin returns the call of a /files request: its sandbox and user.
func (h *filesHandler) begin(r *http.Request) (*fsCall, error) {
	sb := SandboxFrom(r.Context())
	if sb == nil {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("no sandbox: the request did not come through the sandbox router"))
	}
	name := r.URL.Query().Get("username")
	if name == "" {
		name = UserFrom(r.Header)
	}
	return h.fs.beginAs(r.Context(), sb, name)
}

// errLengthSent ends a download once Content-Length bytes are sent.
var errLengthSent = errors.New("content length sent")

func (h *filesHandler) get(w http.ResponseWriter, r *http.Request) {
	c, err := h.begin(r)
	if err != nil {
		writeFilesAPIError(w, err)
		return
	}
	p, err := c.resolve("path", r.URL.Query().Get("path"))
	if err != nil {
		writeFilesAPIError(w, err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	s, err := h.fs.api.ReadFile(ctx, connect.NewRequest(&fsbv1.ReadFileRequest{Name: c.sb.ID, Namespace: c.sb.Namespace, Path: p}))
	if err != nil {
		writeFilesAPIError(w, filesError(p, err))
		return
	}
	defer s.Close()
	// The first message holds the FileInfo; an error before it is the
	// answer.
	if !s.Receive() {
		err := s.Err()
		if err == nil {
			err = connect.NewError(connect.CodeInternal, errors.New("the file's stream ended before its info"))
		}
		writeFilesAPIError(w, filesError(p, err))
		return
	}
	info := s.Msg().GetInfo()
	hdr := w.Header()
	ctype := mime.TypeByExtension(path.Ext(p))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	hdr.Set("Content-Type", ctype)
	hdr.Set("Vary", "Accept-Encoding")
	if t := info.GetModifyTime(); t != nil {
		hdr.Set("Last-Modified", t.AsTime().UTC().Format(http.TimeFormat))
	}
	var out io.Writer = w
	var gz *gzip.Writer
	// left is what Content-Length still allows, or -1 without one: bytes
	// beyond the size the file had when opened are dropped, as the
	// FastPathService's /files does. A size of 0 sends no Content-Length
	// (a /proc file says 0 and has bytes; the SDK reads a Content-Length
	// of 0 as an empty file without reading the body).
	left := int64(-1)
	if acceptsGzip(r) {
		hdr.Set("Content-Encoding", "gzip")
		// The fastest level: Node's fetch asks for gzip on every request,
		// so every download is compressed, and the controller's CPU,
		// not the link, would otherwise bound it.
		gz, _ = gzip.NewWriterLevel(w, gzip.BestSpeed)
		out = gz
	} else if info.GetSize() > 0 {
		hdr.Set("Content-Length", strconv.FormatInt(info.GetSize(), 10))
		left = info.GetSize()
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	send := func(data []byte) error {
		if left >= 0 && int64(len(data)) > left {
			data = data[:left]
		}
		if len(data) == 0 {
			return nil
		}
		if _, err := out.Write(data); err != nil {
			return err
		}
		if left >= 0 {
			if left -= int64(len(data)); left == 0 {
				return errLengthSent
			}
		}
		return nil
	}
	err = send(s.Msg().GetData())
	for err == nil && s.Receive() {
		err = send(s.Msg().GetData())
	}
	if err == nil {
		err = s.Err()
	}
	if errors.Is(err, errLengthSent) {
		err = nil
	}
	if err == nil && gz != nil {
		err = gz.Close()
	}
	if err != nil {
		// The status is sent: only a cut connection, not a short body
		// that looks whole, tells the client the file did not come.
		panic(http.ErrAbortHandler)
	}
}

// acceptsGzip reports whether r accepts a gzip-encoded answer (and asks
// for no range, which is answered whole and plain).
func acceptsGzip(r *http.Request) bool {
	if r.Header.Get("Range") != "" {
		return false
	}
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(coding), "gzip") && strings.ReplaceAll(strings.TrimSpace(params), " ", "") != "q=0" {
				return true
			}
		}
	}
	return false
}

// writtenFile is one entry of an upload's answer, as envd sends it.
type writtenFile struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Path string `json:"path"`
}

func (h *filesHandler) post(w http.ResponseWriter, r *http.Request) {
	c, err := h.begin(r)
	if err != nil {
		writeFilesAPIError(w, err)
		return
	}
	// A file of any size: each part of the body must come in time, not
	// the whole (the caller is authenticated: the router let it in).
	httpserver.ReadIdle(r.Context(), httpserver.ReadTimeout)
	body := io.Reader(r.Body)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			writeFilesError(w, http.StatusBadRequest, fmt.Errorf("the body is not gzip: %w", err))
			return
		}
		defer gz.Close()
		body = gz
	default:
		writeFilesError(w, http.StatusBadRequest, fmt.Errorf("Content-Encoding %q: want gzip or none", enc))
		return
	}
	query := r.URL.Query().Get("path")
	written := []writtenFile{}
	seen := map[string]bool{}
	// What was written, to give to the user in one chown at the end.
	var owned []string
	write := func(target string, data io.Reader) error {
		p, err := c.resolve("path", target)
		if err != nil {
			return err
		}
		if seen[p] {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("you cannot upload multiple files to the same path '%s' in one upload request", p))
		}
		if len(written) == maxUploadFiles {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("more than %d files in one upload: send them in several", maxUploadFiles))
		}
		seen[p] = true
		made, err := h.fs.makeDirs(r.Context(), c, path.Dir(p))
		if err != nil {
			return err
		}
		owned = append(owned, made...)
		if err := h.writeFile(r.Context(), c, p, data); err != nil {
			return err
		}
		owned = append(owned, p)
		written = append(written, writtenFile{Name: path.Base(p), Type: "file", Path: p})
		return nil
	}
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case mediaType == "application/octet-stream":
		if query == "" {
			err = connect.NewError(connect.CodeInvalidArgument, errors.New("path query parameter is required for raw body upload"))
			break
		}
		err = write(query, body)
	case strings.HasPrefix(mediaType, "multipart/"):
		err = h.eachPart(r, body, func(part *multipart.Part) error {
			target := query
			if target == "" {
				target = partFileName(part)
			}
			if target == "" {
				return connect.NewError(connect.CodeInvalidArgument, errors.New("a file part names no file, and no path query parameter is set"))
			}
			return write(target, part)
		})
	default:
		err = connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("unsupported content type %q, expected multipart/form-data or application/octet-stream", r.Header.Get("Content-Type")))
	}
	// What was written is the user's, whether or not all of it was.
	if cerr := h.fs.chown(r.Context(), c, owned...); err == nil {
		err = cerr
	}
	if err != nil {
		writeFilesAPIError(w, err)
		return
	}
	b, err := json.Marshal(written)
	if err != nil {
		writeFilesError(w, http.StatusInternalServerError, fmt.Errorf("encode the answer: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// eachPart calls fn with each "file" part of the multipart body of r
// (decoded as body), one at a time as they arrive.
func (h *filesHandler) eachPart(r *http.Request, body io.Reader, fn func(*multipart.Part) error) error {
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("Content-Type %q: a multipart body needs a boundary", r.Header.Get("Content-Type")))
	}
	mr := multipart.NewReader(body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("read the multipart body: %w", err))
		}
		if part.FormName() == "file" {
			err = fn(part)
		}
		part.Close()
		if err != nil {
			return err
		}
	}
}

// partFileName is the filename of a part as the client sent it, with its
// directories: multipart.Part.FileName keeps only the last element, and
// the SDK sends the whole path there.
func partFileName(part *multipart.Part) string {
	_, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return params["filename"]
}

// writeFile streams data into the file p of the call's sandbox: the
// FastPathService replaces the file once every byte is there. When data
// fails (the client went away, a bad gzip stream) the WriteFile stream is
// cut, not closed, so that nothing is written: a file is never replaced
// by a part of itself.
func (h *filesHandler) writeFile(ctx context.Context, c *fsCall, p string, data io.Reader) error {
	streamCtx, cut := context.WithCancel(ctx)
	defer cut()
	out := h.fs.api.WriteFile(streamCtx)
	// abort resets the stream: closed, it would end well, and the part
	// sent would replace the file.
	abort := func() {
		cut()
		if conn, cerr := out.Conn(); cerr == nil {
			_ = conn.CloseResponse()
		}
	}
	buf := make([]byte, uploadChunk)
	msg := &fsbv1.WriteFileRequest{Name: c.sb.ID, Namespace: c.sb.Namespace, Path: p, MakeParents: true}
	for {
		// Not io.ReadFull: it would report a body cut short like one that
		// ended, and the part would replace the file.
		n := 0
		var err error
		for n < len(buf) && err == nil {
			var k int
			k, err = data.Read(buf[n:])
			n += k
		}
		if err != nil && !errors.Is(err, io.EOF) {
			abort()
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("read the upload of %s: %w", p, err))
		}
		if n > 0 || msg.Path != "" {
			msg.Data = buf[:n]
			if serr := out.Send(msg); serr != nil {
				if !errors.Is(serr, io.EOF) {
					// The request's context ended (the client went
					// away): Send fails before the transport resets
					// the stream, and a close now could end it well.
					abort()
					return filesError(p, serr)
				}
				// The server ended the call: its answer says why.
				break
			}
			msg = &fsbv1.WriteFileRequest{}
		}
		if err != nil {
			break
		}
	}
	if _, err := out.CloseAndReceive(); err != nil {
		return filesError(p, err)
	}
	return nil
}

// filesError is the FastPathService's error err about the file p, as envd
// words the common ones.
func filesError(p string, err error) error {
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("path '%s' does not exist", p))
	case connect.CodeFailedPrecondition:
		var ce *connect.Error
		if errors.As(err, &ce) && strings.Contains(ce.Message(), "not a regular file") {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path '%s' is a directory or not a regular file", p))
		}
	}
	return fsUpstream(err)
}

// writeFilesAPIError answers err, a Connect error, with envd's JSON error and
// the HTTP status the SDK maps to the same error.
func writeFilesAPIError(w http.ResponseWriter, err error) {
	writeFilesError(w, envdHTTPStatus(err), err)
}

// envdHTTPStatus is the HTTP status envd would answer for err.
func envdHTTPStatus(err error) int {
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeResourceExhausted:
		var ce *connect.Error
		if errors.As(err, &ce) && strings.Contains(ce.Message(), "no space left") {
			return http.StatusInsufficientStorage
		}
		return http.StatusTooManyRequests
	case connect.CodeUnavailable:
		// The SDK reads 502 as "the sandbox is gone or timed out".
		return http.StatusBadGateway
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeCanceled:
		return 499
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

// writeFilesError answers envd's JSON error.
func writeFilesError(w http.ResponseWriter, status int, err error) {
	msg := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	b, _ := json.Marshal(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{status, msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
