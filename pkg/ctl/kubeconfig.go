package ctl

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// KubeCredentials is what fsb ctl takes from a kubeconfig's context: the
// bearer token the controller checks with the API server (TokenReview), and
// the context's namespace. The controller's address is not in it: a
// kubeconfig names the API server, not the controller, which --server (or
// FSB_SERVER, or the config file) still names.
type KubeCredentials struct {
	Context   string
	Token     string
	Namespace string
}

// errTokenCaptured ends the request KubeToken sends nowhere.
var errTokenCaptured = errors.New("token captured")

// LoadKubeCredentials reads the context contextName ("": the current one) of
// the kubeconfig at path (several files separated by the OS's list
// separator, as KUBECONFIG). The token is the one client-go would send: the
// user's token, its token file, or what its exec plugin prints (the plugin
// runs). A context whose user has only a client certificate is refused:
// the controller sees no certificate, only a bearer token.
func LoadKubeCredentials(path, contextName string) (KubeCredentials, error) {
	if path == "" {
		return KubeCredentials{}, usagef("--kubeconfig needs a file")
	}
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: path}
	if files := filepath.SplitList(path); len(files) > 1 {
		// Precedence merges the files as KUBECONFIG's are merged, but
		// skips a missing one silently: a typo must not go unnoticed.
		for _, f := range files {
			if _, err := os.Stat(f); err != nil {
				return KubeCredentials{}, fmt.Errorf("kubeconfig %s: %v", path, err)
			}
		}
		rules = &clientcmd.ClientConfigLoadingRules{Precedence: files}
	}
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: contextName})
	raw, err := loader.RawConfig()
	if err != nil {
		return KubeCredentials{}, fmt.Errorf("kubeconfig %s: %v", path, err)
	}
	name := contextName
	if name == "" {
		name = raw.CurrentContext
	}
	if name == "" {
		return KubeCredentials{}, usagef("kubeconfig %s has no current context: name one with --context", path)
	}
	if _, ok := raw.Contexts[name]; !ok {
		return KubeCredentials{}, usagef("kubeconfig %s has no context %q", path, name)
	}
	cfg, err := loader.ClientConfig()
	if err != nil {
		return KubeCredentials{}, fmt.Errorf("kubeconfig %s, context %s: %v", path, name, err)
	}
	tok, err := bearerToken(cfg)
	if err != nil {
		return KubeCredentials{}, fmt.Errorf("kubeconfig %s, context %s: %v", path, name, err)
	}
	if tok == "" {
		if cfg.CertData != nil || cfg.CertFile != "" || cfg.KeyData != nil || cfg.KeyFile != "" {
			return KubeCredentials{}, usagef("the context %s authenticates with a client certificate; fsb ctl needs a bearer token: use a ServiceAccount token (kubectl create token SERVICEACCOUNT -n NAMESPACE) in a context of its own", name)
		}
		if cfg.ExecProvider != nil {
			return KubeCredentials{}, usagef("the context %s's exec plugin (%s) gave no bearer token (a client certificate?); fsb ctl needs a bearer token: use a ServiceAccount token (kubectl create token SERVICEACCOUNT -n NAMESPACE) in a context of its own", name, cfg.ExecProvider.Command)
		}
		return KubeCredentials{}, usagef("the context %s has no bearer token (token, tokenFile or an exec plugin): fsb ctl needs one, such as a ServiceAccount token (kubectl create token SERVICEACCOUNT -n NAMESPACE)", name)
	}
	return KubeCredentials{Context: name, Token: tok, Namespace: raw.Contexts[name].Namespace}, nil
}

// bearerToken returns the token client-go would send with cfg: it runs
// one request through cfg's wrappers (token, token file, exec or auth
// provider plugins) into a transport that keeps the Authorization header
// and sends nothing.
func bearerToken(cfg *rest.Config) (string, error) {
	var header string
	capture := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		header = r.Header.Get("Authorization")
		return nil, errTokenCaptured
	})
	rt, err := rest.HTTPWrappersForConfig(cfg, capture)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequest(http.MethodGet, "https://kubeconfig.invalid/", nil)
	if err != nil {
		return "", err
	}
	if _, err := rt.RoundTrip(req); err != nil && !errors.Is(err, errTokenCaptured) {
		return "", err
	}
	tok, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		// Basic auth, or nothing: no bearer token either way.
		return "", nil
	}
	return strings.TrimSpace(tok), nil
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
