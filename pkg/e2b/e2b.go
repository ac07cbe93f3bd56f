// Package e2b serves E2B's API on the controller, so that E2B's own SDK
// drives Fast Sandbox unchanged: the REST API for sandboxes (create, list,
// connect, kill, timeout, metrics) and envd, the API E2B runs inside each
// sandbox (processes, the filesystem, /files, /health). Every envd request
// arrives at the same server with E2B's headers naming the sandbox
// (E2b-Sandbox-Id) and carrying its access token (X-Access-Token); the
// router checks the token and hands the handlers the sandbox, which they
// drive through the controller's own FastPathService.
//
// The definitions are wire-compatible with E2B's (proto/e2b); no file or
// code of E2B's is copied here.
package e2b

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// EnvdVersion is the envd version every sandbox advertises. The SDK picks
// paths by it: 0.5.7 and later close stdin (0.5.2) and upload files as
// application/octet-stream when the data streams (0.5.7), and send no
// user when the caller names none (0.4.0). Features the SDK gates behind
// later versions (file metadata 0.6.2, watch events with entries 0.6.3,
// network mounts 0.6.4) it refuses itself, with a clear error.
const EnvdVersion = "0.5.7"

// DefaultUser is the user envd runs processes as, and resolves relative
// paths for, when a request names none: E2B's templates' "user", whose
// home is DefaultHome.
const (
	DefaultUser = "user"
	DefaultHome = "/home/user"
)

// rootHome is root's home.
const rootHome = "/root"

// knownHome is user's home when it is known without asking the sandbox:
// DefaultUser's and root's; "" for any other user. The process handler
// starts processes there (init reads no /etc/passwd for the working
// directory); the file handlers prefer the sandbox's /etc/passwd and fall
// back to it.
func knownHome(user string) string {
	switch user {
	case DefaultUser:
		return DefaultHome
	case "root":
		return rootHome
	}
	return ""
}

// API is what the E2B layer drives: the controller's FastPathService.
type API = fsbv1connect.FastPathServiceClient

// Sandbox is the Fast Sandbox sandbox an envd request addresses, once the
// router has checked the request's access token against it.
type Sandbox struct {
	// ID is E2B's sandbox ID, which is the Fast Sandbox sandbox's name.
	ID string
	// Namespace is the Fast Sandbox namespace of the API key that created
	// it.
	Namespace string
	// EnvVars are the create's envVars: every process gets them, under
	// the ones its own request sets.
	EnvVars map[string]string
}

type sandboxKey struct{}

// WithSandbox returns ctx carrying sb: the router's, for the handlers.
func WithSandbox(ctx context.Context, sb *Sandbox) context.Context {
	return context.WithValue(ctx, sandboxKey{}, sb)
}

// SandboxFrom returns the sandbox the router put in ctx, or nil when
// there is none (a handler mounted without the router: a bug, answered as
// unauthenticated).
func SandboxFrom(ctx context.Context) *Sandbox {
	sb, _ := ctx.Value(sandboxKey{}).(*Sandbox)
	return sb
}

// UserFrom returns the user an envd request names: the SDK sends
// "Authorization: Basic base64(user:)" when its caller names one, and
// nothing when not (envd 0.4.0 and later), which means DefaultUser.
func UserFrom(h http.Header) string {
	v, ok := strings.CutPrefix(h.Get("Authorization"), "Basic ")
	if !ok {
		return DefaultUser
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
	if err != nil {
		return DefaultUser
	}
	user, _, _ := strings.Cut(string(b), ":")
	if user == "" {
		return DefaultUser
	}
	return user
}
