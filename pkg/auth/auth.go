// Package auth checks and sends the bearer tokens that guard every API.
package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"connectrpc.com/connect"
)

// ReadTokenFile returns the token in path, without surrounding whitespace.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}

var (
	errNoToken    = errors.New("missing bearer token: send \"Authorization: Bearer <token>\"")
	errWrongToken = errors.New("invalid bearer token")
)

// Tokens is a set of accepted bearer tokens.
type Tokens []string

// check reports whether an Authorization header carries an accepted token.
func (ts Tokens) check(header string) error {
	tok, ok := strings.CutPrefix(header, "Bearer ")
	if !ok || tok == "" {
		return errNoToken
	}
	match := 0
	for _, want := range ts {
		// Constant time, and no early exit, so timing tells nothing.
		match |= subtle.ConstantTimeCompare([]byte(tok), []byte(want))
	}
	if match != 1 {
		return errWrongToken
	}
	return nil
}

// Middleware guards next: a request that does not carry one of tokens is
// refused with Unauthenticated, in the protocol it came in (Connect, gRPC or
// gRPC-Web; plain 401 otherwise), before a byte of its body is read — so
// an unauthenticated caller cannot make the server read, buffer or decode
// anything. Go's server discards at most a small part of an unread body
// before it closes the connection.
func Middleware(tokens Tokens, next http.Handler) http.Handler {
	errs := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := tokens.check(r.Header.Get("Authorization"))
		if err == nil {
			next.ServeHTTP(w, r)
			return
		}
		if errs.IsSupported(r) {
			_ = errs.Write(w, r, connect.NewError(connect.CodeUnauthenticated, err))
			return
		}
		http.Error(w, err.Error(), http.StatusUnauthorized)
	})
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
