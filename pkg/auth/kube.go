package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
)

// The defaults of KubeConfig.
const (
	// DefaultKubeTTL is how long an answer of the API server is reused:
	// a revoked token or a removed RoleBinding takes effect within it.
	DefaultKubeTTL = 10 * time.Second
	// DefaultKubeNegativeTTL is how long a refusal is reused: shorter,
	// so that a user just granted a Role is not kept waiting, yet long
	// enough that a client retrying a bad token in a loop does not turn
	// each retry into a call on the API server.
	DefaultKubeNegativeTTL = 2 * time.Second
	// DefaultKubeCacheSize bounds each cache (tokens, decisions).
	DefaultKubeCacheSize = 4096
	// kubeCallTimeout bounds one TokenReview or SubjectAccessReview.
	kubeCallTimeout = 10 * time.Second
)

// User is a Kubernetes user the API server vouched for (TokenReview).
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

// KubeConfig configures NewKube.
type KubeConfig struct {
	// Config reaches the API server as an identity allowed to create
	// tokenreviews and subjectaccessreviews (deploy/rbac/controller-auth.yaml).
	Config *rest.Config
	// Audiences the tokens must be meant for; empty: the API server's
	// own (--api-audiences).
	Audiences []string
	// TTL, NegativeTTL and CacheSize: zero means the Default* constants.
	TTL, NegativeTTL time.Duration
	CacheSize        int
	// Logger receives denied calls (nil: not logged).
	Logger *slog.Logger
	// Now is the caches' clock (nil: time.Now), for tests.
	Now func() time.Time
}

// Kube admits users by their Kubernetes bearer tokens: a token no token
// file holds is sent to the API server's TokenReview, and a user it knows
// calls with the user role, each call then authorized by a
// SubjectAccessReview on sandboxes.sandbox.fast.io in the request's
// namespace (KubeAccess). Both answers are cached briefly. An API server
// that cannot answer refuses the call (Unavailable): Kube never allows on
// an error.
//
// A nil *Kube admits token files only: its Middleware and Route are the
// package's, its Interceptor lets every call through.
type Kube struct {
	reviews   authenticationclient.TokenReviewInterface
	access    authorizationclient.SubjectAccessReviewInterface
	audiences []string
	ttl, neg  time.Duration
	users     *cache[tokenAnswer]
	decisions *cache[decision]
	log       *slog.Logger
}

// tokenAnswer is a TokenReview's answer: a user, or none (not
// authenticated, with the API server's reason).
type tokenAnswer struct {
	user   *User
	reason string
}

// decision is a SubjectAccessReview's answer.
type decision struct {
	allowed bool
	reason  string
}

// NewKube returns a Kube calling the API server cfg.Config reaches.
func NewKube(cfg KubeConfig) (*Kube, error) {
	if cfg.Config == nil {
		return nil, errors.New("kube auth: no API server configuration")
	}
	rc := rest.CopyConfig(cfg.Config)
	// Every call of a Kubernetes user may need a review: client-go's
	// default of 5 per second would queue them behind each other.
	rc.QPS, rc.Burst = 200, 400
	authn, err := authenticationclient.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kube auth: %w", err)
	}
	authz, err := authorizationclient.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kube auth: %w", err)
	}
	k := &Kube{
		reviews:   authn.TokenReviews(),
		access:    authz.SubjectAccessReviews(),
		audiences: slices.Clone(cfg.Audiences),
		ttl:       cfg.TTL,
		neg:       cfg.NegativeTTL,
		log:       cfg.Logger,
	}
	if k.ttl <= 0 {
		k.ttl = DefaultKubeTTL
	}
	if k.neg <= 0 {
		k.neg = min(DefaultKubeNegativeTTL, k.ttl)
	}
	size := cfg.CacheSize
	if size <= 0 {
		size = DefaultKubeCacheSize
	}
	k.users = newCache[tokenAnswer](size, cfg.Now)
	k.decisions = newCache[decision](size, cfg.Now)
	return k, nil
}

// Authenticate returns the user token belongs to. A token the API server
// does not accept is Unauthenticated; an API server that cannot answer,
// Unavailable (or Internal when it refuses the controller itself).
func (k *Kube) Authenticate(ctx context.Context, token string) (User, error) {
	sum := sha256.Sum256([]byte(token))
	key := hex.EncodeToString(sum[:]) // the cache never holds a token
	ans, ok := k.users.get(key)
	if !ok {
		var err error
		if ans, err = k.review(ctx, token); err != nil {
			return User{}, err
		}
		ttl := k.ttl
		if ans.user == nil {
			ttl = k.neg
		}
		k.users.put(key, ans, ttl)
	}
	if ans.user == nil {
		msg := "invalid bearer token: in no token file, and the Kubernetes API server does not accept it"
		if ans.reason != "" {
			msg += " (" + ans.reason + ")"
		}
		return User{}, connect.NewError(connect.CodeUnauthenticated, errors.New(msg))
	}
	return *ans.user, nil
}

func (k *Kube) review(ctx context.Context, token string) (tokenAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, kubeCallTimeout)
	defer cancel()
	tr, err := k.reviews.Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: k.audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return tokenAnswer{}, kubeError("tokenreviews.authentication.k8s.io", "check the token", err)
	}
	st := tr.Status
	if !st.Authenticated {
		return tokenAnswer{reason: st.Error}, nil
	}
	// With audiences asked for, the API server answers which of them the
	// token is meant for: none means it is not meant for us.
	if len(k.audiences) > 0 && !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(k.audiences, a) }) {
		return tokenAnswer{reason: fmt.Sprintf("the token is not meant for the audiences %s", strings.Join(k.audiences, ", "))}, nil
	}
	u := &User{Name: st.User.Username, UID: st.User.UID, Groups: st.User.Groups}
	if len(st.User.Extra) > 0 {
		u.Extra = make(map[string][]string, len(st.User.Extra))
		for k, v := range st.User.Extra {
			u.Extra[k] = []string(v)
		}
	}
	return tokenAnswer{user: u}, nil
}

// Authorize checks that u may have access a in namespace (ignored when a
// is cluster-scoped). A refusal is PermissionDenied naming the user, the
// verb, the resource and the namespace.
func (k *Kube) Authorize(ctx context.Context, u User, a Access, namespace string) error {
	if a.Cluster {
		namespace = ""
	}
	key := decisionKey(u, a, namespace)
	d, ok := k.decisions.get(key)
	if !ok {
		var err error
		if d, err = k.subjectAccess(ctx, u, a, namespace); err != nil {
			return err
		}
		ttl := k.ttl
		if !d.allowed {
			ttl = k.neg
		}
		k.decisions.put(key, d, ttl)
	}
	if d.allowed {
		return nil
	}
	where := fmt.Sprintf("in namespace %q", namespace)
	switch {
	case a.Cluster:
		where = "(cluster-scoped)"
	case namespace == "":
		where = "in all namespaces"
	}
	msg := fmt.Sprintf("user %q may not %s %s.%s %s", u.Name, a.Verb, a.resource(), Group, where)
	if d.reason != "" {
		msg += ": " + d.reason
	}
	return connect.NewError(connect.CodePermissionDenied, errors.New(msg))
}

func (k *Kube) subjectAccess(ctx context.Context, u User, a Access, namespace string) (decision, error) {
	ctx, cancel := context.WithTimeout(ctx, kubeCallTimeout)
	defer cancel()
	var extra map[string]authorizationv1.ExtraValue
	if len(u.Extra) > 0 {
		extra = make(map[string]authorizationv1.ExtraValue, len(u.Extra))
		for k, v := range u.Extra {
			extra[k] = v
		}
	}
	sar, err := k.access.Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace:   namespace,
				Verb:        a.Verb,
				Group:       Group,
				Resource:    a.Resource,
				Subresource: a.Subresource,
			},
			User: u.Name, UID: u.UID, Groups: u.Groups, Extra: extra,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return decision{}, kubeError("subjectaccessreviews.authorization.k8s.io", "authorize the call", err)
	}
	reason := sar.Status.Reason
	if sar.Status.EvaluationError != "" && reason == "" {
		reason = sar.Status.EvaluationError
	}
	// Denied wins over Allowed, as the API server's own authorizers say.
	return decision{allowed: sar.Status.Allowed && !sar.Status.Denied, reason: reason}, nil
}

// decisionKey identifies a SubjectAccessReview: every field it sends.
func decisionKey(u User, a Access, namespace string) string {
	var b strings.Builder
	for _, s := range []string{u.Name, u.UID, a.Verb, a.Resource, a.Subresource, namespace} {
		b.WriteString(s)
		b.WriteByte(0)
	}
	for _, g := range u.Groups {
		b.WriteString(g)
		b.WriteByte(1)
	}
	keys := make([]string, 0, len(u.Extra))
	for k := range u.Extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(2)
		for _, v := range u.Extra[k] {
			b.WriteString(v)
			b.WriteByte(3)
		}
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:])
}

// kubeError turns a failed review into the caller's error: the API server
// refusing the controller itself (its RBAC) is Internal, naming what the
// controller needs; anything else (unreachable, timeouts, overload) is
// Unavailable. Neither lets the call through.
func kubeError(resource, what string, err error) error {
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		return connect.NewError(connect.CodeInternal, fmt.Errorf(
			"cannot %s: the controller may not create %s (grant it deploy/rbac/controller-auth.yaml): %w",
			what, resource, err))
	}
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("cannot %s: the Kubernetes API server: %w", what, err))
}

// kubeUserKey carries the Kubernetes user of a request in its context.
type kubeUserKey struct{}

// UserOf returns the Kubernetes user whose token the request whose
// context is ctx presented, and false for a token file's holder (or no
// token checked).
func UserOf(ctx context.Context) (User, bool) {
	u, ok := ctx.Value(kubeUserKey{}).(User)
	return u, ok
}

// Middleware is the package's Middleware, admitting besides keys the
// Kubernetes users the API server vouches for, with the user role.
func (k *Kube) Middleware(keys Keys, policy Policy, log *slog.Logger, next http.Handler) http.Handler {
	return guard(keys, k, policy, log, func(r *http.Request) string { return r.URL.Path }, nil, false, next)
}

// Route is the package's Route, admitting besides keys the Kubernetes
// users the API server vouches for, each request authorized by
// KubeAccess[procedure] in the namespace its path names: the route's paths
// are procedure/{namespace}/... (as /files/{namespace}/{name}).
func (k *Kube) Route(keys Keys, policy Policy, log *slog.Logger, procedure string, next http.Handler) http.Handler {
	ns := func(r *http.Request) string {
		rest, _ := strings.CutPrefix(r.URL.Path, procedure+"/")
		ns, _, _ := strings.Cut(rest, "/")
		return ns
	}
	return guard(keys, k, policy, log, func(*http.Request) string { return procedure }, ns, true, next)
}

// Interceptor returns the Connect interceptor that authorizes each call of
// a Kubernetes user (see KubeAccess) once its request message, which names
// the namespace, is read; a token file's holder passes. It must sit behind
// Middleware, which puts the user in the context.
func (k *Kube) Interceptor() connect.Interceptor {
	return kubeInterceptor{k}
}

type kubeInterceptor struct{ k *Kube }

// authorize checks a Kubernetes user's call of procedure with msg, its
// first request message.
func (i kubeInterceptor) authorize(ctx context.Context, u User, procedure string, msg any) error {
	a, ok := KubeAccess[procedure]
	if !ok {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("user %q: %s is not open to Kubernetes users", u.Name, procedure))
	}
	err := i.k.Authorize(ctx, u, a, a.namespace(msg))
	if err != nil && connect.CodeOf(err) == connect.CodePermissionDenied && i.k.log != nil {
		i.k.log.Warn("call denied", slog.String("procedure", procedure), slog.String("user", u.Name), slog.String("err", err.Error()))
	}
	return err
}

func (i kubeInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if u, ok := UserOf(ctx); ok && i.k != nil && !req.Spec().IsClient {
			if err := i.authorize(ctx, u, req.Spec().Procedure, req.Any()); err != nil {
				return nil, err
			}
		}
		return next(ctx, req)
	}
}

func (i kubeInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler authorizes a stream on its first message, read
// here before the handler runs: every stream of the API names its sandbox
// in its first message. The handler then receives that message first, as
// if nothing came between.
func (i kubeInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		u, ok := UserOf(ctx)
		if !ok || i.k == nil {
			return next(ctx, conn)
		}
		md, ok := conn.Spec().Schema.(protoreflect.MethodDescriptor)
		if !ok {
			return connect.NewError(connect.CodeInternal, fmt.Errorf("%s has no schema to authorize its stream by", conn.Spec().Procedure))
		}
		mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
		if err != nil {
			return connect.NewError(connect.CodeInternal, fmt.Errorf("%s: %w", conn.Spec().Procedure, err))
		}
		first := mt.New().Interface()
		// A stream without a first message names no sandbox: the
		// handler gets what Receive said (such as io.EOF) and acts on
		// nothing.
		rerr := conn.Receive(first)
		if rerr == nil {
			if err := i.authorize(ctx, u, conn.Spec().Procedure, first); err != nil {
				return err
			}
		}
		return next(ctx, &replayConn{StreamingHandlerConn: conn, first: first, err: rerr, pending: true})
	}
}

// replayConn gives the handler the first message (or error) the
// interceptor read before it, then the rest of the stream.
type replayConn struct {
	connect.StreamingHandlerConn
	first   proto.Message
	err     error
	pending bool
}

func (c *replayConn) Receive(msg any) error {
	if !c.pending {
		return c.StreamingHandlerConn.Receive(msg)
	}
	c.pending = false
	if c.err != nil {
		return c.err
	}
	m, ok := msg.(proto.Message)
	if !ok {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("%T is not a protobuf message", msg))
	}
	proto.Reset(m)
	proto.Merge(m, c.first)
	c.first = nil
	return nil
}
