package controller

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/e2b"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
)

func e2bFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "e2b-bind-address", Usage: "serve E2B's API on this `ADDRESS`, so that E2B's SDK drives Fast Sandbox with E2B_API_URL and E2B_SANDBOX_URL set to http://ADDRESS: the REST API (create, list, connect, kill, timeouts) and each sandbox's envd (processes, files) on the same port. Off when empty. Needs --e2b-api-keys-file"},
		&cli.StringFlag{Name: "e2b-api-keys-file", Usage: "`FILE` of the API keys E2B's SDK may present (E2B_API_KEY), one per line: \"e2b_<hex> <namespace>\"; each key creates, sees and kills the sandboxes of its namespace only. '#' starts a comment"},
		&cli.StringFlag{Name: "e2b-token-secret-file", Usage: "`FILE` holding the secret (at least 16 bytes, such as 32 random bytes in base64) the sandboxes' envd access tokens are derived from; every replica of the controller needs the same one. Without it a random secret is made at start, and the tokens E2B's SDK holds stop working when the controller restarts (Sandbox.connect gets new ones)"},
		&cli.StringFlag{Name: "e2b-templates-file", Usage: "YAML `FILE` mapping E2B template names to what a create of them makes: \"templates: {NAME: {image: REF, runtime: runc, resources: {cpu: '1', memory: 512Mi}, pool: POOL, command: [...]}}\" (docs/e2b.md). The SDK's default template is base. Without it, base is " + e2b.DefaultImage + " on runc with no limits"},
	}
}

// e2bAPI is the E2B server's setup, made before the controller's API so
// that the key of the server's in-process client is among the API's keys.
type e2bAPI struct {
	addr      string
	keys      *e2b.Keys
	templates e2b.Templates
	// token is what the server's client presents to the controller's own
	// API: made at start, held in memory only.
	token string
	// secret derives the sandboxes' access tokens; nil: a random one.
	secret []byte
}

// newE2BAPI reads the E2B flags; nil when the E2B API is off.
func newE2BAPI(c *cli.Context) (*e2bAPI, error) {
	addr := c.String("e2b-bind-address")
	if addr == "" {
		if c.IsSet("e2b-api-keys-file") || c.IsSet("e2b-templates-file") || c.IsSet("e2b-token-secret-file") {
			return nil, errors.New("--e2b-api-keys-file, --e2b-templates-file and --e2b-token-secret-file need --e2b-bind-address")
		}
		return nil, nil
	}
	f := c.String("e2b-api-keys-file")
	if f == "" {
		return nil, errors.New("--e2b-bind-address needs --e2b-api-keys-file: the E2B API's keys, each mapped to a namespace")
	}
	keys, err := e2b.ReadKeys(f)
	if err != nil {
		return nil, err
	}
	templates := e2b.DefaultTemplates()
	if f := c.String("e2b-templates-file"); f != "" {
		if templates, err = e2b.ReadTemplates(f); err != nil {
			return nil, err
		}
	}
	var secret []byte
	if f := c.String("e2b-token-secret-file"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--e2b-token-secret-file: %w", err)
		}
		// Trimmed, so that an editor's newline does not make another
		// secret than a replica's.
		if secret = bytes.TrimSpace(b); len(secret) < 16 {
			return nil, fmt.Errorf("--e2b-token-secret-file %s: %d bytes, want at least 16", f, len(secret))
		}
	}
	return &e2bAPI{addr: addr, keys: keys, templates: templates, token: rand.Text(), secret: secret}, nil
}

// userKeys returns the key of the server's client: a user's, scoped by
// the namespace the E2B server names in each call.
func (e *e2bAPI) userKeys() auth.Keys {
	return auth.Tokens{e.token}.As(auth.RoleUser)
}

// run serves the E2B API on its address until ctx ends. The server drives
// the controller's API through an in-memory connection to api, the
// handler every caller reaches (authentication, limits, the leader's
// gate): it gets nothing a user of its key's namespace would not.
func (e *e2bAPI) run(ctx context.Context, api http.Handler, cfg httpserver.Config, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pipe := e2b.NewPipe()
	// Nobody but this process dials the pipe, in memory: no TLS, no bound
	// on strangers' connections.
	internal := httpserver.Config{Handler: api, Logger: cfg.Logger}
	errc := make(chan error, 1)
	go func() { errc <- httpserver.Serve(ctx, pipe, internal) }()
	client := fsbv1connect.NewFastPathServiceClient(pipe.Client(), "http://in-process",
		connect.WithInterceptors(auth.Bearer(e.token)))
	if e.secret == nil {
		log.Warn("E2B access tokens come from a secret made at start: they stop working when the controller restarts; give --e2b-token-secret-file to keep them")
	}
	srv := e2b.NewServer(e2b.Config{API: client, Keys: e.keys, Templates: e.templates, TokenSecret: e.secret, Logger: log})
	// envd's handlers, behind the server's router, drive the same client.
	srv.Mount(e2b.NewProcessHandler(client))
	srv.Mount(e2b.NewFilesystemHandler(client))
	srv.Mount("/files", e2b.NewFilesHandler(client))
	log.Info("serving E2B's API", slog.String("address", e.addr), slog.Any("namespaces", e.keys.Namespaces()),
		slog.Any("templates", e.templates.Names()))
	err := serve(ctx, e.addr, srv, cfg)
	cancel()
	return errors.Join(err, <-errc)
}
