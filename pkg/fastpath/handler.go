package fastpath

import (
	"net/http"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/strictjson"
)

// Handler returns the path and handler of FastPathService, with opts. JSON
// requests are decoded strictly (pkg/strictjson): an unknown field is
// InvalidArgument naming it, never silently dropped.
func (s *Server) Handler(opts ...connect.HandlerOption) (string, http.Handler) {
	return fsbv1connect.NewFastPathServiceHandler(s, append(strictjson.HandlerOptions(), opts...)...)
}
