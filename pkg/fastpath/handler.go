package fastpath

import (
	"context"
	"io"
	"net/http"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
	"github.com/fast-sandbox/fast-sandbox/pkg/strictjson"
)

// Handler returns the path and handler of FastPathService, with opts. JSON
// requests are decoded strictly (pkg/strictjson): an unknown field is
// InvalidArgument naming it, never silently dropped. Answers are never
// compressed: exec output and file bytes are most of what this service
// sends, and gzip cut a download's throughput to a fifth here (deflate on
// a 2-core node is slower than any network it would save time on).
func (s *Server) Handler(opts ...connect.HandlerOption) (string, http.Handler) {
	opts = append(append(strictjson.HandlerOptions(), connect.WithCompression("gzip", nil, nil)), opts...)
	path, h := fsbv1connect.NewFastPathServiceHandler(s, opts...)
	return path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == fsbv1connect.FastPathServiceExecInteractiveProcedure {
			r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, r.Body))
		}
		h.ServeHTTP(w, r)
	})
}

type bodyKey struct{}

// closeRequestBody closes the body of the request whose context is ctx,
// which breaks a read of it waiting in another goroutine (HTTP/2, the
// only protocol of a bidi stream, allows that); false when Handler did not
// make the body reachable.
func closeRequestBody(ctx context.Context) bool {
	body, ok := ctx.Value(bodyKey{}).(io.Closer)
	if ok {
		_ = body.Close()
	}
	return ok
}

// streamingBody lifts the bound on the time the body of the request whose
// context is ctx takes: a stream of input that lasts as long as its
// session.
func streamingBody(ctx context.Context) { httpserver.ReadIdle(ctx, 0) }
