package e2b

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// Headers E2B's SDK sends with every envd request when E2B_SANDBOX_URL
// names one server for all sandboxes (as it does here): which sandbox,
// which of its ports, and the sandbox's access token.
const (
	HeaderSandboxID   = "E2b-Sandbox-Id"
	HeaderSandboxPort = "E2b-Sandbox-Port"
	HeaderAccessToken = "X-Access-Token"
	// HeaderAPIKey carries the API key of REST calls.
	HeaderAPIKey = "X-Api-Key"
)

// EnvdPort is the port of envd in every E2B sandbox: the only one the
// server serves (traffic to a sandbox's own ports is not proxied).
const EnvdPort = "49983"

// DefaultTimeout is a sandbox's life when a create or connect names none,
// as E2B's API has it.
const DefaultTimeout = 300 * time.Second

// Config is what a Server needs.
type Config struct {
	// API is the controller's FastPathService. The server names the
	// namespace of the request's key in every call it makes, so API
	// itself may serve every namespace.
	API API
	// Keys are the API keys and their namespaces.
	Keys *Keys
	// Templates are the templates creates may name; nil means
	// DefaultTemplates.
	Templates Templates
	// TokenSecret derives the sandboxes' access tokens: every server
	// that serves the same sandboxes (a controller's replicas, a
	// restarted controller) must have the same one, or the SDK's tokens
	// stop working. Empty means a random one, good until the server
	// ends.
	TokenSecret []byte
	// Logger gets a line for every request answered 501 and every
	// failure of the server's own; nil means slog.Default.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server serves E2B's REST API and, on the same handler, the envd requests
// of the sandboxes it made: a request with an E2b-Sandbox-Id header is
// envd's (router.go), any other is the REST API's (rest.go).
type Server struct {
	cfg    Config
	log    *slog.Logger
	tokens tokenKey
	rest   *http.ServeMux
	envd   *http.ServeMux
}

// NewServer returns a server for cfg. Mount the envd handlers on it before
// it serves.
func NewServer(cfg Config) *Server {
	if cfg.Templates == nil {
		cfg.Templates = DefaultTemplates()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.TokenSecret) == 0 {
		cfg.TokenSecret = make([]byte, 32)
		_, _ = rand.Read(cfg.TokenSecret)
	}
	s := &Server{
		cfg:    cfg,
		log:    cmp.Or(cfg.Logger, slog.Default()).With(slog.String("api", "e2b")),
		rest:   http.NewServeMux(),
		envd:   http.NewServeMux(),
		tokens: tokenKey(cfg.TokenSecret),
	}
	s.routes()
	return s
}

// Mount serves h for the envd requests whose path matches pattern (an
// http.ServeMux pattern, such as "/process.Process/"). The router checks
// the request's access token first and puts the sandbox in its context
// (SandboxFrom).
func (s *Server) Mount(pattern string, h http.Handler) {
	s.envd.Handle(pattern, h)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(HeaderSandboxID) != "" {
		s.serveEnvd(w, r)
		return
	}
	s.serveREST(w, r)
}

// apiError is the body of every error the server answers, as E2B's API
// has it: the SDK reads message, and code for some of its checks.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// writeError answers status with E2B's error body.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Code: status, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// httpStatus is the HTTP status of an error of the API, as E2B's SDK
// understands them: 404 is its NotFoundError, 400 InvalidArgumentError,
// 503 its "busy, retry" error; 401 is kept for a bad API key (an
// Unauthenticated from the API is a fault of this server, not the
// caller's).
func httpStatus(err error) int {
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeInvalidArgument, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeAlreadyExists, connect.CodeFailedPrecondition, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeResourceExhausted, connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	default:
		return http.StatusInternalServerError
	}
}

// writeAPIError answers an error of the API, logging what is this
// server's fault.
func (s *Server) writeAPIError(w http.ResponseWriter, r *http.Request, err error) {
	status := httpStatus(err)
	if status >= 500 && status != http.StatusServiceUnavailable {
		s.log.Error("E2B request failed", slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Any("err", err))
	}
	msg := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	writeError(w, status, msg)
}

// Pipe is a net.Listener whose connections are made in memory, by its
// DialContext: the controller serves its own API on one, and the E2B
// server reaches it through Client, with the same authentication,
// limits and leader gate as any caller's, and no port of its own.
type Pipe struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// NewPipe returns an open pipe.
func NewPipe() *Pipe {
	return &Pipe{conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept implements net.Listener.
func (p *Pipe) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener: dials fail from now on.
func (p *Pipe) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

// Addr implements net.Listener.
func (p *Pipe) Addr() net.Addr { return pipeAddr{} }

// DialContext returns the client's end of a new connection, whose other
// end Accept returns.
func (p *Pipe) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case p.conns <- server:
		return client, nil
	case <-p.done:
	case <-ctx.Done():
	}
	_ = server.Close()
	_ = client.Close()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, net.ErrClosed
}

// Client returns an HTTP client whose connections are the pipe's. It
// speaks HTTP/2 without TLS, so that every kind of stream the API has
// (bidirectional ones too) works over it; the URL's host is ignored.
func (p *Pipe) Client() *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{DialContext: p.DialContext, Protocols: &protocols}}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "in-process" }
