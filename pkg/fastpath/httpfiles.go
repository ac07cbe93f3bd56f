package fastpath

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
)

// putChunk is how much of a PUT's body goes to the agent in one message:
// well under any request limit, and large enough that a big upload is
// few messages.
const putChunk = 256 << 10

// FilesHandler returns the path and handler of the plain HTTP file route,
// for clients that speak neither Connect streams nor gRPC (curl):
//
//	GET /files/{namespace}/{name}?path=/abs streams the file
//	    (application/octet-stream, with its Content-Length when it is a
//	    regular file);
//	PUT /files/{namespace}/{name}?path=/abs[&mode=0644][&parents=true]
//	    streams the body into the file, which replaces any old one once
//	    every byte is there, and answers its FileInfo as JSON.
//
// Neither holds a file in memory: each goes through the agent a chunk at a
// time. Errors are Connect's JSON errors ({"code","message"}, with the
// HTTP status Connect gives the code). The route needs the user role's
// token like the RPCs (auth.Route with auth.FilesRoute).
func (s *Server) FilesHandler() (string, http.Handler) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /files/{namespace}/{name}", s.getFile)
	mux.HandleFunc("PUT /files/{namespace}/{name}", s.putFile)
	mux.HandleFunc("/files/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPut {
			writeHTTPError(w, r, connect.NewError(connect.CodeUnimplemented, fmt.Errorf("%s %s: want GET or PUT", r.Method, r.URL.Path)))
			return
		}
		writeHTTPError(w, r, connect.NewError(connect.CodeNotFound, fmt.Errorf("%s: want /files/{namespace}/{name}?path=/absolute/path", r.URL.Path)))
	})
	return "/files/", mux
}

// errHeadDone ends a HEAD request's read once the headers are known.
var errHeadDone = errors.New("headers sent")

// errLengthDone ends a GET's read once Content-Length bytes are sent.
var errLengthDone = errors.New("content length sent")

func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	started := false
	// left is what Content-Length still allows, or -1 without one. A
	// file written on while it is read is answered as it was opened, its
	// bytes beyond the size dropped: more than Content-Length fails the
	// whole download.
	left := int64(-1)
	err := s.readFile(r.Context(), r.PathValue("namespace"), r.PathValue("name"), r.URL.Query().Get("path"), func(m *fsbv1.AgentServiceReadFileResponse) error {
		if !started {
			started = true
			h := w.Header()
			h.Set("Content-Type", "application/octet-stream")
			// A size of 0 says nothing of a /proc file's bytes.
			if info := m.GetInfo(); info.GetType() == fsbv1.FileType_FILE_TYPE_FILE && info.GetSize() > 0 {
				h.Set("Content-Length", strconv.FormatInt(info.GetSize(), 10))
				left = info.GetSize()
			}
			if t := m.GetInfo().GetModifyTime(); t != nil {
				h.Set("Last-Modified", t.AsTime().UTC().Format(http.TimeFormat))
			}
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodHead {
				return errHeadDone
			}
		}
		data := m.GetData()
		if left >= 0 && int64(len(data)) > left {
			data = data[:left]
		}
		if len(data) == 0 {
			return nil
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
		if left >= 0 {
			if left -= int64(len(data)); left == 0 {
				return errLengthDone
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errHeadDone), errors.Is(err, errLengthDone):
	case err != nil && !started:
		writeHTTPError(w, r, err)
	case err != nil:
		// The status is sent: only a cut connection, not a short body
		// that looks whole, tells the client the file did not come.
		panic(http.ErrAbortHandler)
	case !started:
		writeHTTPError(w, r, connect.NewError(connect.CodeInternal, errors.New("the agent sent no FileInfo for the file")))
	}
}

func (s *Server) putFile(w http.ResponseWriter, r *http.Request) {
	// A file of any size: each part of the body must come in time, not
	// the whole.
	httpserver.ReadIdle(r.Context(), httpserver.ReadTimeout)
	q := r.URL.Query()
	target := writeTarget{namespace: r.PathValue("namespace"), name: r.PathValue("name"), path: q.Get("path")}
	if m := q.Get("mode"); m != "" {
		mode, err := strconv.ParseUint(m, 8, 32)
		if err != nil {
			writeHTTPError(w, r, invalid(fmt.Errorf("mode %s: want octal permission bits such as 0644", brief(m))))
			return
		}
		target.mode = uint32(mode)
	}
	if p := q.Get("parents"); p != "" {
		parents, err := strconv.ParseBool(p)
		if err != nil {
			writeHTTPError(w, r, invalid(fmt.Errorf("parents %s: want true or false", brief(p))))
			return
		}
		target.parents = parents
	}
	buf := make([]byte, putChunk)
	info, err := s.writeFile(r.Context(), target, nil, func() ([]byte, error) {
		// Each chunk is sent (copied into a message) before the next read.
		// Not io.ReadFull: it reports a body cut short (net/http's
		// io.ErrUnexpectedEOF, after which the body reads io.EOF) like a
		// body that ended, and the part would replace the file.
		n := 0
		var err error
		for n < len(buf) && err == nil {
			var k int
			k, err = r.Body.Read(buf[n:])
			n += k
		}
		switch {
		case err != nil && !errors.Is(err, io.EOF):
			return nil, fmt.Errorf("read the request body: %w", err)
		case n > 0:
			return buf[:n], nil
		}
		return nil, io.EOF
	})
	if err != nil {
		writeHTTPError(w, r, err)
		return
	}
	b, err := protojson.Marshal(info)
	if err != nil {
		writeHTTPError(w, r, connect.NewError(connect.CodeInternal, fmt.Errorf("encode the file's info: %w", err)))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// writeHTTPError answers a plain HTTP request with a Connect JSON error.
func writeHTTPError(w http.ResponseWriter, r *http.Request, err error) {
	_ = connect.NewErrorWriter().Write(w, r, err)
}
