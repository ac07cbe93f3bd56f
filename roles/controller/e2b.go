package controller

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"

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
}

// newE2BAPI reads the E2B flags; nil when the E2B API is off.
func newE2BAPI(c *cli.Context) (*e2bAPI, error) {
	addr := c.String("e2b-bind-address")
	if addr == "" {
		if c.IsSet("e2b-api-keys-file") || c.IsSet("e2b-templates-file") {
			return nil, errors.New("--e2b-api-keys-file and --e2b-templates-file need --e2b-bind-address")
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
	return &e2bAPI{addr: addr, keys: keys, templates: templates, token: rand.Text()}, nil
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
	srv := e2b.NewServer(e2b.Config{API: client, Keys: e.keys, Templates: e.templates, Logger: log})
	// envd's handlers go behind the server's router here, each driving
	// the same client: srv.Mount(e2b.NewProcessHandler(client)), and the
	// filesystem's and /files the same way.
	log.Info("serving E2B's API", slog.String("address", e.addr), slog.Any("namespaces", e.keys.Namespaces()),
		slog.Any("templates", e.templates.Names()))
	err := serve(ctx, e.addr, srv, cfg)
	cancel()
	return errors.Join(err, <-errc)
}
