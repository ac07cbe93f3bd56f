package auth

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// TestKubeAnswersAreCachedBriefly, on an API server of its own: an answer
// is reused for the TTL — a removed RoleBinding still allows until then,
// and a stopped API server does not stop a user it has just vouched for —
// and nothing is allowed once the answer is gone and the API server cannot
// give a new one.
func TestKubeAnswersAreCachedBriefly(t *testing.T) {
	s := rig.StartKube(t)
	ns := s.Namespace(t)
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := s.Kubectl(t, args...)
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	kubectl("-n", ns, "create", "serviceaccount", "dev")
	kubectl("-n", ns, "create", "role", "dev", "--verb=create", "--resource=sandboxes.sandbox.fast.io")
	kubectl("-n", ns, "create", "rolebinding", "dev", "--role=dev", "--serviceaccount="+ns+":dev")
	token := strings.TrimSpace(kubectl("-n", ns, "create", "token", "dev"))

	const ttl = 4 * time.Second
	k, err := NewKube(KubeConfig{Config: s.Config, TTL: ttl, NegativeTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	u, err := k.Authenticate(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	if want := "system:serviceaccount:" + ns + ":dev"; u.Name != want {
		t.Errorf("user %q, want %q", u.Name, want)
	}
	if _, err := k.Authenticate(ctx, "not-a-token"); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("an unknown token: %v, want Unauthenticated", err)
	}
	// The decision is cached no earlier than allowedAt: it expires no
	// earlier than allowedAt+ttl.
	allowedAt := time.Now()
	if err := k.Authorize(ctx, u, accessCreate, ns); err != nil {
		t.Fatalf("create in %s: %v", ns, err)
	}
	err = k.Authorize(ctx, u, accessCreate, "elsewhere")
	want := `user "` + u.Name + `" may not create sandboxes.sandbox.fast.io in namespace "elsewhere"`
	if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), want) {
		t.Errorf("create elsewhere: %v, want PermissionDenied saying %q", err, want)
	}

	// The RoleBinding goes: the cached decision holds for the TTL, then
	// the user is denied.
	kubectl("-n", ns, "delete", "rolebinding", "dev")
	if err := k.Authorize(ctx, u, accessCreate, ns); err != nil && time.Since(allowedAt) < ttl {
		t.Errorf("%v after the decision, the RoleBinding gone: %v, want the cached allow", time.Since(allowedAt), err)
	}
	for k.Authorize(ctx, u, accessCreate, ns) == nil {
		if time.Since(allowedAt) > ttl+5*time.Second {
			t.Fatalf("still allowed %v after the decision, the RoleBinding gone (TTL %v)", time.Since(allowedAt), ttl)
		}
		time.Sleep(50 * time.Millisecond)
	}
	deniedAfter := time.Since(allowedAt)
	t.Logf("denied %v after the decision was cached (TTL %v)", deniedAfter.Round(10*time.Millisecond), ttl)
	if deniedAfter < ttl {
		t.Errorf("denied %v after the decision: it was not cached for its TTL %v", deniedAfter, ttl)
	}

	// The API server stops: the token just checked is still known; a new
	// one, and a decision not cached, are Unavailable — never allowed.
	kubectl("-n", ns, "create", "rolebinding", "dev", "--role=dev", "--serviceaccount="+ns+":dev")
	fresh, err := NewKube(KubeConfig{Config: s.Config, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Authenticate(ctx, token); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	stopped := time.Now()
	if _, err := fresh.Authenticate(ctx, token); err != nil && time.Since(stopped) < ttl {
		t.Errorf("a token checked just before the API server stopped: %v, want it still known", err)
	}
	other := strings.TrimSpace(token[:len(token)-1] + "x") // never checked
	if _, err := fresh.Authenticate(ctx, other); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("a new token with the API server down: %v, want Unavailable", err)
	}
	if err := fresh.Authorize(ctx, u, accessCreate, ns); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("an uncached decision with the API server down: %v, want Unavailable", err)
	}
	s.Start()
}
