// Package auth checks and sends the bearer tokens that guard every API.
package auth

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
)

// ReadTokenFile returns the token a sender presents from the token file at
// path: its first, for a file may hold several, one per line (see
// ReadTokensFile). During a rotation the receivers accept the old and the
// new token while the senders' files put the new one first.
func ReadTokenFile(path string) (string, error) {
	toks, err := ReadTokensFile(path)
	if err != nil {
		return "", err
	}
	return toks[0], nil
}

var (
	errNoToken    = errors.New("missing bearer token: send \"Authorization: Bearer <token>\"")
	errWrongToken = errors.New("invalid bearer token")
)

// Tokens is a set of accepted bearer tokens.
type Tokens []string

// check reports whether an Authorization header carries an accepted token.
func (ts Tokens) check(header string) error {
	_, err := ts.As("").role(header)
	return err
}

// As gives every token the role r.
func (ts Tokens) As(r Role) Keys {
	keys := make(Keys, len(ts))
	for i, t := range ts {
		keys[i] = Key{Token: t, Role: r}
	}
	return keys
}

// Role is what a token's holder may do: see Policy.
type Role string

// The roles of the tokens the servers accept.
const (
	// RoleUser: users and the CLI, on the controller's user API.
	RoleUser Role = "user"
	// RoleJanitor: the janitor, for its one question to the controller.
	RoleJanitor Role = "janitor"
	// RoleAgent: holders of an agent's token (the controller), on the
	// agent's API.
	RoleAgent Role = "agent"
)

// Key is one accepted token and its holder's role.
type Key struct {
	Token string
	Role  Role
}

// Keys are the tokens a server accepts.
type Keys []Key

// role returns the role of the token an Authorization header carries.
func (ks Keys) role(header string) (Role, error) {
	tok, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || tok == "" {
		return "", errNoToken
	}
	var role Role
	match := 0
	for _, k := range ks {
		// Constant time, and no early exit, so timing tells nothing.
		m := subtle.ConstantTimeCompare([]byte(tok), []byte(k.Token))
		if m == 1 {
			role = k.Role
		}
		match |= m
	}
	if match != 1 {
		return "", errWrongToken
	}
	return role, nil
}

// Middleware guards next. A request that does not carry one of keys is
// refused with Unauthenticated, and one whose token's role policy does not
// allow for its procedure (default deny) with PermissionDenied naming the
// role, logged to log (nil: not logged). Both answers come in the protocol
// the request came in (Connect, gRPC or gRPC-Web; plain 401 or 403
// otherwise), before a byte of its body is read — so an unauthenticated
// caller cannot make the server read, buffer or decode anything. Go's
// server discards at most a small part of an unread body before it closes
// the connection. The request's context carries the caller's role (RoleOf).
func Middleware(keys Keys, policy Policy, log *slog.Logger, next http.Handler) http.Handler {
	return guard(keys, nil, policy, log, func(r *http.Request) string { return r.URL.Path }, nil, false, next)
}

// Route guards next, a plain HTTP route, as Middleware guards an RPC: the
// policy's line for procedure (such as FilesRoute) says who may call every
// path of it. Refusals are Connect's JSON errors ({"code","message"} with
// Connect's HTTP status), as a plain HTTP client can read them.
func Route(keys Keys, policy Policy, log *slog.Logger, procedure string, next http.Handler) http.Handler {
	return guard(keys, nil, policy, log, func(*http.Request) string { return procedure }, nil, true, next)
}

// guard is Middleware and Route: kube (nil: none) admits the tokens keys
// do not hold; procedure names what a request calls; namespace (nil: the
// handler's interceptor authorizes instead) names the namespace a
// Kubernetes user's request is authorized in; jsonErrors answers every
// refusal as Connect's JSON error.
func guard(keys Keys, kube *Kube, policy Policy, log *slog.Logger, procedure func(*http.Request) string,
	namespace func(*http.Request) string, jsonErrors bool, next http.Handler) http.Handler {
	errs := connect.NewErrorWriter()
	refuse := func(w http.ResponseWriter, r *http.Request, err *connect.Error) {
		if jsonErrors || errs.IsSupported(r) {
			_ = errs.Write(w, r, err)
			return
		}
		http.Error(w, err.Message(), httpStatus(err.Code()))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		role, err := keys.role(r.Header.Get("Authorization"))
		var user *User
		if errors.Is(err, errWrongToken) && kube != nil {
			tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			u, kerr := kube.Authenticate(ctx, tok)
			if kerr != nil {
				var cerr *connect.Error
				if !errors.As(kerr, &cerr) {
					cerr = connect.NewError(connect.CodeUnavailable, kerr)
				}
				refuse(w, r, cerr)
				return
			}
			role, user, err = RoleUser, &u, nil
		}
		if err != nil {
			refuse(w, r, connect.NewError(connect.CodeUnauthenticated, err))
			return
		}
		// A known token, whatever its role: the connection is no longer
		// a stranger's, and leaves the server's bound on those.
		httpserver.Authenticated(ctx)
		proc := procedure(r)
		if !slices.Contains(policy[proc], role) {
			if log != nil {
				log.Warn("call denied", slog.String("procedure", proc), slog.String("role", string(role)),
					slog.String("remote", r.RemoteAddr))
			}
			refuse(w, r, connect.NewError(connect.CodePermissionDenied,
				fmt.Errorf("the %s token may not call %s", role, proc)))
			return
		}
		ctx = context.WithValue(ctx, roleKey{}, role)
		if user != nil {
			ctx = context.WithValue(ctx, kubeUserKey{}, *user)
			if namespace != nil {
				a, ok := KubeAccess[proc]
				err := error(connect.NewError(connect.CodePermissionDenied, fmt.Errorf("user %q: %s is not open to Kubernetes users", user.Name, proc)))
				if ok {
					err = kube.Authorize(ctx, *user, a, cmp.Or(namespace(r), DefaultNamespace))
				}
				if err != nil {
					if log != nil && connect.CodeOf(err) == connect.CodePermissionDenied {
						log.Warn("call denied", slog.String("procedure", proc), slog.String("user", user.Name), slog.String("err", err.Error()))
					}
					cerr := new(connect.Error)
					if !errors.As(err, &cerr) {
						cerr = connect.NewError(connect.CodeUnavailable, err)
					}
					refuse(w, r, cerr)
					return
				}
			}
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// httpStatus is the HTTP status of a refusal to a client that speaks no
// Connect protocol.
func httpStatus(code connect.Code) int {
	switch code {
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

type roleKey struct{}

// RoleOf returns the role of the token the request whose context is ctx
// presented, and false when no token was checked (a server started with
// --insecure-no-auth).
func RoleOf(ctx context.Context) (Role, bool) {
	r, ok := ctx.Value(roleKey{}).(Role)
	return r, ok
}

// Bearer returns an interceptor that sends token with every call.
func Bearer(token string) connect.Interceptor {
	return bearerInterceptor(token)
}

type bearerInterceptor string

func (b bearerInterceptor) set(h http.Header) { h.Set("Authorization", "Bearer "+string(b)) }

func (b bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			b.set(req.Header())
		}
		return next(ctx, req)
	}
}

func (b bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		b.set(conn.RequestHeader())
		return conn
	}
}

func (b bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// ReadTokensFile returns the tokens in path, one per line; blank lines are
// skipped. Several tokens let a token be rotated without downtime.
func ReadTokensFile(path string) (Tokens, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read token file: %w", err)
	}
	var toks Tokens
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			toks = append(toks, line)
		}
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("token file %s holds no token", path)
	}
	return toks, nil
}

// Required returns the tokens a server requires, from the token file named
// by its flag; nil (no check) only when insecure is set, which excludes a
// token file. flag names the token file's flag in messages.
func Required(insecure bool, flag, path string) (Tokens, error) {
	switch {
	case insecure && path != "":
		return nil, fmt.Errorf("--insecure-no-auth and --%s exclude each other", flag)
	case insecure:
		return nil, nil
	case path == "":
		return nil, fmt.Errorf("--%s is required (or --insecure-no-auth, for local experiments only)", flag)
	}
	return ReadTokensFile(path)
}
