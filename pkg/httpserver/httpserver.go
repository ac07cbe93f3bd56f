// Package httpserver runs the one HTTP server each fsb process has: HTTP/1.1
// and cleartext HTTP/2 (or TLS when certificates are given) on one port, so
// gRPC, gRPC-Web and Connect JSON all reach the same handler.
package httpserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ShutdownTimeout bounds how long Serve waits for open requests once its
// context ends; streams still open then are cut.
const ShutdownTimeout = 5 * time.Second

// Limits every server keeps, whoever calls: the headers must arrive within
// ReadHeaderTimeout and fit in MaxHeaderBytes, a request's body within
// ReadTimeout of its headers, each write must complete within WriteTimeout
// (see deadlines: a stream may stay silent longer), and a connection idle
// for IdleTimeout is closed.
const (
	ReadHeaderTimeout = 10 * time.Second
	MaxHeaderBytes    = 64 << 10
	ReadTimeout       = 30 * time.Second
	WriteTimeout      = 30 * time.Second
	IdleTimeout       = 2 * time.Minute
)

// DefaultMaxUnauthenticated bounds the connections on which no request has
// presented a valid token yet (the roles' --max-unauthenticated-connections),
// and DefaultUnauthenticatedTimeout is how long such a connection may stay
// open (--unauthenticated-timeout).
const (
	DefaultMaxUnauthenticated     = 64
	DefaultUnauthenticatedTimeout = ReadHeaderTimeout
)

// DefaultMaxRequestBytes bounds one request message of the APIs (the
// roles' --max-request-bytes).
const DefaultMaxRequestBytes = 4 << 20

// Config says where and how to serve.
type Config struct {
	Handler http.Handler
	// CertFile and KeyFile turn on TLS when both are set.
	CertFile, KeyFile string
	Logger            *slog.Logger
	// ReadTimeout and WriteTimeout override the package's defaults (zero:
	// the constants of the same names).
	ReadTimeout, WriteTimeout time.Duration
	// MaxUnauthenticated, when positive, bounds the connections on which no
	// request has been authenticated yet (the handler's token check calls
	// Authenticated): past it a new connection closes the oldest such one,
	// and one still unauthenticated after UnauthenticatedTimeout (zero:
	// DefaultUnauthenticatedTimeout) is closed. Zero turns the bound off,
	// for servers that check no token.
	MaxUnauthenticated     int
	UnauthenticatedTimeout time.Duration
}

// Serve serves cfg.Handler on ln until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, ln net.Listener, cfg Config) error {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	read, write := cmp.Or(cfg.ReadTimeout, ReadTimeout), cmp.Or(cfg.WriteTimeout, WriteTimeout)
	if cfg.MaxUnauthenticated > 0 {
		ln = &guard{Listener: ln, max: cfg.MaxUnauthenticated,
			timeout: cmp.Or(cfg.UnauthenticatedTimeout, DefaultUnauthenticatedTimeout)}
	}
	srv := &http.Server{
		Handler:           deadlines(cfg.Handler, read, write),
		ConnContext:       connContext,
		Protocols:         &protocols,
		ReadHeaderTimeout: ReadHeaderTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		IdleTimeout:       IdleTimeout,
	}
	if cfg.Logger != nil {
		srv.ErrorLog = slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)
	}
	errc := make(chan error, 1)
	go func() {
		if cfg.CertFile != "" && cfg.KeyFile != "" {
			errc <- srv.ServeTLS(ln, cfg.CertFile, cfg.KeyFile)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}
