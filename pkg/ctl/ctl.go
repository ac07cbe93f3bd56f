// Package ctl is what `fsb ctl` does: it turns a user's command into calls
// on the controller's fsb.v1.FastPathService and the answers into tables for
// people or JSON for scripts, and it words every failure so that the person
// reading it knows what to do next.
package ctl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode"

	"connectrpc.com/connect"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// DefaultServer is the controller's fast-path address on this machine, where
// `make up` starts it.
const DefaultServer = "http://127.0.0.1:9090"

// Config says where the controller is and where output goes.
type Config struct {
	// Server is the controller's fast-path base URL; a bare "host:port"
	// means http://host:port.
	Server string
	// Token is sent as "Authorization: Bearer <token>" when set.
	Token string
	// CAFile holds the CA certificates (PEM) an https:// controller's
	// certificate must chain to; empty means the system's. It applies to
	// the default HTTP clients only, not to HTTPClient.
	CAFile string
	// Namespace is the sandboxes' namespace; empty means "default".
	Namespace string
	// Out receives results, Err diagnostics and sandboxes' stderr lines.
	Out, Err io.Writer
	// In is what exec passes to the process and cp reads no input from;
	// nil means os.Stdin.
	In io.Reader
	// HTTPClient carries the calls; nil means one speaking HTTP/1.1 to
	// http:// URLs and HTTP/2 over TLS to https:// URLs, and one speaking
	// HTTP/2 to both (cleartext HTTP/2 to http:// URLs, which the
	// controller serves) for the streams of exec and cp.
	HTTPClient connect.HTTPClient
	// Editor is the command `run` without --image opens the spec in, run
	// by sh with the file's path as its argument; empty means vi.
	Editor string
}

// Client runs the ctl commands against one controller.
type Client struct {
	api fsbv1connect.FastPathServiceClient
	// stream is api over HTTP/2: ExecInteractive sends and receives on
	// one stream, which HTTP/1.1 cannot carry.
	stream    fsbv1connect.FastPathServiceClient
	server    string
	token     string
	namespace string
	// editor runs the spec editor; empty means vi, which needs a
	// terminal.
	editor string
	// stdin is the editor's, os.Stdin.
	stdin    *os.File
	in       io.Reader
	out, err io.Writer
}

// API returns the controller's FastPathService client, for tools (such as
// the bench) that make their own calls.
func (c *Client) API() fsbv1connect.FastPathServiceClient { return c.api }

// StreamAPI returns the controller's FastPathService client over HTTP/2,
// which client streams (WriteFile) and ExecInteractive need.
func (c *Client) StreamAPI() fsbv1connect.FastPathServiceClient { return c.stream }

// New returns a Client for cfg. It fails only when cfg.Server is not a
// usable URL.
func New(cfg Config) (*Client, error) {
	server, err := serverURL(cfg.Server)
	if err != nil {
		return nil, err
	}
	if err := checkToken(cfg.Token); err != nil {
		return nil, err
	}
	if cfg.Namespace != "" {
		// Said here, before any call, with the rule: the server would
		// refuse it as well, but in words about a request.
		if errs := validation.IsDNS1123Label(cfg.Namespace); len(errs) > 0 {
			return nil, usagef("namespace %q is not valid: %s (set -n, --namespace or FSB_NAMESPACE)", cfg.Namespace, strings.Join(errs, "; "))
		}
	}
	httpClient, streamClient := cfg.HTTPClient, cfg.HTTPClient
	if httpClient == nil {
		tlsConfig, err := clientTLS(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		httpClient, streamClient = newHTTPClient(tlsConfig), newHTTP2Client(tlsConfig)
	}
	// No gzip: exec output and file bytes are most of what comes back, and
	// deflate is slower than the link it would spare.
	opts := []connect.ClientOption{connect.WithAcceptCompression("gzip", nil, nil)}
	if cfg.Token != "" {
		opts = append(opts, connect.WithInterceptors(auth.Bearer(cfg.Token)))
	}
	ns := cfg.Namespace
	if ns == "" {
		ns = "default"
	}
	out, errw := cfg.Out, cfg.Err
	if out == nil {
		out = io.Discard
	}
	if errw == nil {
		errw = io.Discard
	}
	in := cfg.In
	if in == nil {
		in = os.Stdin
	}
	return &Client{
		api:       fsbv1connect.NewFastPathServiceClient(httpClient, server, opts...),
		stream:    fsbv1connect.NewFastPathServiceClient(streamClient, server, opts...),
		in:        in,
		server:    server,
		token:     cfg.Token,
		namespace: ns,
		editor:    cfg.Editor,
		stdin:     os.Stdin,
		out:       out,
		err:       errw,
	}, nil
}

// serverURL validates s and returns it without a trailing slash.
func serverURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", usagef("no controller address: set --server or FSB_SERVER (such as %s)", DefaultServer)
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", usagef("--server %q is not a controller address: want a URL such as %s", s, DefaultServer)
	}
	return strings.TrimRight(s, "/"), nil
}

// checkToken says what is wrong with a token that cannot be a bearer token:
// a newline, a space or another control character (a stray newline from a
// copy, most often). HTTP would refuse the header, and the user would read
// of an invalid header rather than of a bad token. The token itself is not
// shown: it is a secret.
func checkToken(tok string) error {
	for i, r := range tok {
		var what string
		switch {
		case r == '\n' || r == '\r':
			what = "a newline"
		case r == ' ':
			what = "a space"
		case r == '\t':
			what = "a tab"
		case unicode.IsControl(r):
			what = "a control character"
		default:
			continue
		}
		where := fmt.Sprintf("character %d of %d", i+1, len(tok))
		if i == len(tok)-1 {
			where = "at its end"
		}
		return usagef("the token holds %s (%s): a token is one word on one line; check FSB_TOKEN or --token "+
			"(a token file's line is read without its newline)", what, where)
	}
	return nil
}

// clientTLS returns the TLS settings of https:// calls: the system's CAs,
// or only those in caFile when it is set (the CA of a controller installed
// with scripts/deploy-secrets.sh, say).
func clientTLS(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, usagef("--ca-file: %v (set --ca-file or FSB_CA_FILE to the controller's CA certificate)", err)
	}
	cfg.RootCAs = x509.NewCertPool()
	if !cfg.RootCAs.AppendCertsFromPEM(pem) {
		return nil, usagef("--ca-file %s holds no PEM certificate: give the controller's CA certificate (ca.crt)", caFile)
	}
	return cfg, nil
}

// newHTTPClient speaks HTTP/1.1 to http:// URLs, which any Connect server
// (and any proxy in between) understands, and HTTP/2 to https:// URLs. The
// dial is bounded so that an unreachable controller is reported at once;
// the calls themselves are not, since `logs -f` streams for as long as the
// sandbox runs.
func newHTTPClient(tlsConfig *tls.Config) *http.Client {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		Protocols:           &protocols,
		TLSClientConfig:     tlsConfig.Clone(),
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// newHTTP2Client speaks HTTP/2 only: over TLS to https:// URLs, in
// cleartext (prior knowledge) to http:// URLs. The controller serves both.
func newHTTP2Client(tlsConfig *tls.Config) *http.Client {
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		Protocols:           &protocols,
		TLSClientConfig:     tlsConfig.Clone(),
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// UsageError is a mistake in how a command was called, found before any
// request was sent. The CLI exits with status 2 for it, 1 for other errors.
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &UsageError{msg: fmt.Sprintf(format, args...)}
}

// IsUsage reports whether err is a UsageError.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}
