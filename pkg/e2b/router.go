package e2b

import (
	"context"
	"errors"
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
	sb, err := s.findSandbox(r.Context(), id, token)
	switch {
	case connect.CodeOf(err) == connect.CodeNotFound:
		writeError(w, http.StatusBadGateway, "sandbox "+brief(id)+" not found: it was killed, it expired, or it never existed")
		return
	case connect.CodeOf(err) == connect.CodeUnauthenticated:
		writeError(w, http.StatusUnauthorized, "the access token is not this sandbox's")
		return
	case err != nil:
		s.writeAPIError(w, r, err)
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

// findSandbox returns the E2B sandbox of the given ID whose access token
// is token, in whichever of the keys' namespaces holds it: an envd request
// names no key, and so no namespace. The server's IDs are random and long
// enough to be unique across them, but a user of the Sandbox API may name
// a sandbox of another namespace as one of them: the token, which differs
// by namespace, decides which is meant, so such a sandbox cannot stand in
// the way of the real one.
// The error is NotFound when no namespace holds the ID, Unauthenticated
// when none of those that do has that token.
func (s *Server) findSandbox(ctx context.Context, id, token string) (*fsbv1.Sandbox, error) {
	found := false
	for _, ns := range s.cfg.Keys.Namespaces() {
		sb, err := s.lookup(ctx, ns, id)
		switch {
		case connect.CodeOf(err) == connect.CodeNotFound:
			continue
		case connect.CodeOf(err) == connect.CodeUnauthenticated:
			// The API refused the server itself: not the caller's fault.
			return nil, connect.NewError(connect.CodeInternal, err)
		case err != nil:
			return nil, err
		case s.tokens.matches(sb, token):
			return sb, nil
		}
		found = true
	}
	if found {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("the access token is not the sandbox's"))
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
