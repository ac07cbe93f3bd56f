package agent

import (
	"context"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/strictjson"
)

// Handler returns the agent's HTTP API: AgentService, with opts and JSON
// decoded strictly, for holders of one of tokens (every caller when tokens
// is nil), and the unauthenticated probes /healthz and /readyz (containerd
// answers). Metrics are served apart (MetricsHandler), on loopback by
// default.
func (a *Agent) Handler(tokens auth.Tokens, opts ...connect.HandlerOption) http.Handler {
	mux := http.NewServeMux()
	// JSON is decoded strictly: an unknown field is InvalidArgument naming
	// it, never silently dropped.
	// The fence is checked after the token: an unauthenticated caller
	// raises nothing.
	opts = append(append(strictjson.HandlerOptions(), opts...), connect.WithInterceptors(fenceInterceptor{a}))
	path, api := fsbv1connect.NewAgentServiceHandler(a, opts...)
	if tokens != nil {
		api = auth.Middleware(tokens.As(auth.RoleAgent), auth.AgentPolicy, a.cfg.Logger, api)
	}
	mux.Handle(path, api)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := a.cfg.Runtime.Ping(ctx); err != nil {
			http.Error(w, "containerd: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// MetricsHandler returns the agent's /metrics (Prometheus).
func (a *Agent) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.registry, promhttp.HandlerOpts{}))
	return mux
}
