package fastpath

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
)

// Gate says whether this replica serves now: nil when it does, else why
// not (such as "not the leader; the leader is fsb-controller-7f9c_1a2b"),
// which callers get as Unavailable. It is asked at the start of every
// call, so that a replica that loses its leadership refuses from that
// instant.
type Gate func() error

// Interceptor refuses every RPC, unary or streaming, with Unavailable
// while g says this replica does not serve: a standby, or a leader still
// recovering, answers no FastPathService or JanitorService call.
func (g Gate) Interceptor() connect.Interceptor { return gateInterceptor(g) }

// HTTP wraps the plain HTTP file route as Interceptor wraps the RPCs: the
// refusal is Connect's JSON error with status 503.
func (g Gate) HTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g(); err != nil {
			writeHTTPError(w, r, connect.NewError(connect.CodeUnavailable, err))
			return
		}
		next.ServeHTTP(w, r)
	})
}

type gateInterceptor Gate

func (g gateInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if err := g(); err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, err)
		}
		return next(ctx, req)
	}
}

func (gateInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (g gateInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := g(); err != nil {
			return connect.NewError(connect.CodeUnavailable, err)
		}
		return next(ctx, conn)
	}
}
