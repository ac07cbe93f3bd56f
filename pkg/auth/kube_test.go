package auth

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"k8s.io/client-go/rest"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// TestKubeAccessCoversTheUserAPI fails when a procedure users may call has
// no Kubernetes access (Kubernetes users could not call it), or when one
// that only the janitor or the agent may call has one.
func TestKubeAccessCoversTheUserAPI(t *testing.T) {
	for proc, roles := range FastPathPolicy {
		_, ok := KubeAccess[proc]
		if user := slices.Contains(roles, RoleUser); user != ok {
			t.Errorf("%s: open to the user role %v, has a Kubernetes access %v", proc, user, ok)
		}
	}
	for proc := range KubeAccess {
		if _, ok := FastPathPolicy[proc]; !ok {
			t.Errorf("KubeAccess names %s, which FastPathPolicy does not", proc)
		}
	}
}

// closedAddress returns a loopback address nothing listens on.
func closedAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestKubeRefusesWhenTheAPIServerIsUnreachable: a token in no token file
// cannot be checked without the API server, and the call is refused with
// Unavailable — never let through — on the RPCs and the file route, while
// the token file's users go on.
func TestKubeRefusesWhenTheAPIServerIsUnreachable(t *testing.T) {
	k, err := NewKube(KubeConfig{Config: &rest.Config{Host: "https://" + closedAddress(t), TLSClientConfig: rest.TLSClientConfig{Insecure: true}}})
	if err != nil {
		t.Fatal(err)
	}
	keys := Tokens{"alpha"}.As(RoleUser)
	mux := http.NewServeMux()
	path, api := fsbv1connect.NewFastPathServiceHandler(fsbv1connect.UnimplementedFastPathServiceHandler{}, connect.WithInterceptors(k.Interceptor()))
	mux.Handle(path, k.Middleware(keys, FastPathPolicy, nil, api))
	mux.Handle("/files/", k.Route(keys, FastPathPolicy, nil, FilesRoute, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "reached")
	})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		token string
		want  connect.Code
	}{
		{"alpha", connect.CodeUnimplemented}, // the token file's: reaches the service
		{"a-kubernetes-token", connect.CodeUnavailable},
	} {
		client := fsbv1connect.NewFastPathServiceClient(srv.Client(), srv.URL, connect.WithInterceptors(Bearer(tc.token)))
		_, err := client.GetSandbox(context.Background(), connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "x", Namespace: "a"}))
		if connect.CodeOf(err) != tc.want {
			t.Errorf("token %s: %v, want %v", tc.token, err, tc.want)
		}
		if tc.want == connect.CodeUnavailable && !strings.Contains(err.Error(), "Kubernetes API server") {
			t.Errorf("token %s: %q does not name the API server", tc.token, err)
		}

		req, err := http.NewRequest(http.MethodGet, srv.URL+"/files/a/x?path=/etc/passwd", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tc.token)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if tc.want == connect.CodeUnimplemented {
			if string(b) != "reached" {
				t.Errorf("token %s, GET /files: %q, want the route reached", tc.token, b)
			}
			continue
		}
		var e struct{ Code string }
		if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(b, &e) != nil || e.Code != "unavailable" {
			t.Errorf("token %s, GET /files: HTTP %d %s, want 503 unavailable", tc.token, resp.StatusCode, b)
		}
	}
}
