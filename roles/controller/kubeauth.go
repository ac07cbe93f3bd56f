package controller

import (
	"errors"
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
)

// kubeAuthFlags are the flags of Kubernetes identities (docs/security.md).
func kubeAuthFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "kube-auth", Usage: "also admit users by their Kubernetes bearer tokens (TokenReview) and authorize each call by a SubjectAccessReview on sandboxes.sandbox.fast.io in its namespace; on by default with the kube store, usable with the embedded one given --kubeconfig (or in a pod); off with --insecure-no-auth", DefaultText: "true with --store kube"},
		&cli.StringSliceFlag{Name: "kube-auth-audiences", Usage: "audiences a user's token must be meant for, comma separated (default: the API server's own)"},
		&cli.DurationFlag{Name: "kube-auth-cache-ttl", Value: auth.DefaultKubeTTL, Usage: "how long a TokenReview or SubjectAccessReview that admits is reused (one that refuses: a fifth of it, at most 2s)"},
	}
}

// userAuth returns the user tokens of --user-token-file and the Kubernetes
// authenticator of --kube-auth (nil when off), and whether the API checks
// tokens at all. A user token file is optional with --kube-auth, which asks
// the API server the store found (--kubeconfig, $KUBECONFIG or the pod's).
func userAuth(c *cli.Context, opened *openedStore, log *slog.Logger) (auth.Tokens, *auth.Kube, bool, error) {
	insecure := c.Bool("insecure-no-auth")
	on := opened.Kind == storeKube && !insecure
	if c.IsSet("kube-auth") {
		on = c.Bool("kube-auth")
	}
	if !on {
		tokens, err := auth.Required(insecure, "user-token-file", c.String("user-token-file"))
		return tokens, nil, !insecure, err
	}
	if insecure {
		return nil, nil, false, errors.New("--kube-auth and --insecure-no-auth exclude each other")
	}
	var tokens auth.Tokens
	if f := c.String("user-token-file"); f != "" {
		var err error
		if tokens, err = auth.ReadTokensFile(f); err != nil {
			return nil, nil, false, err
		}
	}
	if opened.Config == nil {
		return nil, nil, false, errors.New("--kube-auth: no Kubernetes API server: give --kubeconfig, set $KUBECONFIG, or run in a pod with a service account")
	}
	ttl := c.Duration("kube-auth-cache-ttl")
	k, err := auth.NewKube(auth.KubeConfig{
		Config:      opened.Config,
		Audiences:   c.StringSlice("kube-auth-audiences"),
		TTL:         ttl,
		NegativeTTL: min(ttl/5, auth.DefaultKubeNegativeTTL),
		Logger:      log,
	})
	if err != nil {
		return nil, nil, false, err
	}
	return tokens, k, true, nil
}
