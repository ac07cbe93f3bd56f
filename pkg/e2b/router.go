package e2b

import (
	"context"
	"log/slog"
	"net/http"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
)

// serveEnvd routes a request for a sandbox's envd (E2b-Sandbox-Id set):
// it finds the sandbox in the keys' namespaces, checks the request's
// access token against the sandbox's, and hands the request, with the
// sandbox in its context, to the handler mounted for its path.
//
// The sandbox ID alone grants nothing: without the sandbox's own token
// the answer is 401, whoever asks. A sandbox that does not exist (or no
// longer does, for E2B: visible) is answered 502, as E2B's proxy answers
// for a sandbox it cannot reach; the SDK reads that as "not running".
func (s *Server) serveEnvd(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(HeaderSandboxID)
	if port := r.Header.Get(HeaderSandboxPort); port != "" && port != EnvdPort {
		s.log.Warn("E2B request not supported", slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.String("sandbox", id), slog.String("port", port))
		writeError(w, http.StatusNotImplemented, "port "+port+" of a sandbox is not reachable through this server: only envd's ("+EnvdPort+") is served; a sandbox's own ports are reached at its endpoints (fsb ctl get)")
		return
	}
	token := r.Header.Get(HeaderAccessToken)
	if token == "" {
		writeError(w, http.StatusUnauthorized, "no access token: send the sandbox's envdAccessToken in X-Access-Token")
		return
	}
	sb, err := s.findSandbox(r.Context(), id)
	if err != nil {
		if connect.CodeOf(err) == connect.CodeNotFound {
			writeError(w, http.StatusBadGateway, "sandbox "+brief(id)+" not found: it was killed, it expired, or it never existed")
			return
		}
		s.writeAPIError(w, r, err)
		return
	}
	if !tokenMatches(sb.GetLabels(), token) {
		writeError(w, http.StatusUnauthorized, "the access token is not this sandbox's")
		return
	}
	httpserver.Authenticated(r.Context())
	ctx := WithSandbox(r.Context(), sandboxOf(sb))
	if r.URL.Path == "/health" {
		// envd's health check: the sandbox is there and running.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if _, pattern := s.envd.Handler(r); pattern == "" {
		s.notImplemented(w, r)
		return
	}
	s.envd.ServeHTTP(w, r.WithContext(ctx))
}

// findSandbox returns the E2B sandbox of the given ID in whichever of the
// keys' namespaces holds it: an envd request names no key, and so no
// namespace. Sandbox IDs are random and long enough to be unique across
// them.
func (s *Server) findSandbox(ctx context.Context, id string) (*fsbv1.Sandbox, error) {
	for _, ns := range s.cfg.Keys.Namespaces() {
		sb, err := s.lookup(ctx, ns, id)
		if connect.CodeOf(err) == connect.CodeNotFound {
			continue
		}
		return sb, err
	}
	return nil, notFound(id)
}

// sandboxOf returns what the envd handlers need of a sandbox.
func sandboxOf(sb *fsbv1.Sandbox) *Sandbox {
	env := make(map[string]string, len(sb.GetSpec().GetEnvs()))
	for _, e := range sb.GetSpec().GetEnvs() {
		env[e.GetName()] = e.GetValue()
	}
	return &Sandbox{ID: sb.GetName(), Namespace: sb.GetNamespace(), EnvVars: env}
}
