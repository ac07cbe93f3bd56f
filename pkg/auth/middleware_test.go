package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// countingBody counts the bytes a handler reads of a request's body.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// guarded serves FastPathService and JanitorService (every method
// unimplemented) behind Middleware, counting the body bytes read behind it.
func guarded(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	read := &atomic.Int64{}
	keys := append(Tokens{"alpha"}.As(RoleUser), Key{Token: "janitor-1", Role: RoleJanitor})
	mux := http.NewServeMux()
	for _, handle := range []func() (string, http.Handler){
		func() (string, http.Handler) {
			return fsbv1connect.NewFastPathServiceHandler(fsbv1connect.UnimplementedFastPathServiceHandler{})
		},
		func() (string, http.Handler) {
			return fsbv1connect.NewJanitorServiceHandler(fsbv1connect.UnimplementedJanitorServiceHandler{})
		},
	} {
		path, api := handle()
		mw := Middleware(keys, FastPathPolicy, nil, api)
		mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Body = countingBody{r.Body, read}
			mw.ServeHTTP(w, r)
		}))
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, read
}

func TestMiddlewareRefusesEveryProtocolBeforeReadingTheBody(t *testing.T) {
	srv, read := guarded(t)
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-web", []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, token := range []string{"", "wrong"} {
				opts := tc.opts
				if token != "" {
					opts = append(append([]connect.ClientOption{}, opts...), connect.WithInterceptors(Bearer(token)))
				}
				client := fsbv1connect.NewFastPathServiceClient(srv.Client(), srv.URL, opts...)
				before := read.Load()
				_, err := client.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.CreateSandboxRequest{
					Name: "x", Spec: &fsbv1.SandboxSpec{WorkingDir: strings.Repeat("a", 1<<20)},
				}))
				if connect.CodeOf(err) != connect.CodeUnauthenticated {
					t.Errorf("token %q: %v, want Unauthenticated", token, err)
				}
				if n := read.Load() - before; n != 0 {
					t.Errorf("token %q: %d body bytes read before the token was refused", token, n)
				}
			}
			// With the token the call reaches the service.
			client := fsbv1connect.NewFastPathServiceClient(srv.Client(), srv.URL, append(append([]connect.ClientOption{}, tc.opts...), connect.WithInterceptors(Bearer("alpha")))...)
			_, err := client.GetSandbox(context.Background(), connect.NewRequest(&fsbv1.GetSandboxRequest{Name: "x"}))
			if connect.CodeOf(err) != connect.CodeUnimplemented {
				t.Errorf("with the token: %v, want the service's Unimplemented", err)
			}
		})
	}
}

func TestMiddlewareAnswers401ToPlainHTTP(t *testing.T) {
	srv, read := guarded(t)
	resp, err := srv.Client().Post(srv.URL+"/fsb.v1.FastPathService/CreateSandbox", "application/json", bytes.NewReader(make([]byte, 8<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("HTTP %d, want 401", resp.StatusCode)
	}
	if n := read.Load(); n != 0 {
		t.Errorf("%d body bytes read before the token was refused", n)
	}
}

func TestMiddlewareAuthorizesByRole(t *testing.T) {
	srv, read := guarded(t)
	create := func(token string) error {
		c := fsbv1connect.NewFastPathServiceClient(srv.Client(), srv.URL, connect.WithInterceptors(Bearer(token)))
		_, err := c.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "x"}))
		return err
	}
	known := func(token string) error {
		c := fsbv1connect.NewJanitorServiceClient(srv.Client(), srv.URL, connect.WithInterceptors(Bearer(token)))
		_, err := c.Classify(context.Background(), connect.NewRequest(&fsbv1.ClassifyRequest{Sandboxes: []*fsbv1.SandboxRef{{SandboxId: "sb-1"}}}))
		return err
	}
	for _, tc := range []struct {
		token, what string
		fn          func(token string) error
		want        connect.Code
	}{
		{"janitor-1", "create", create, connect.CodePermissionDenied},
		{"janitor-1", "ask", known, connect.CodeUnimplemented}, // reaches the service
		{"alpha", "ask", known, connect.CodePermissionDenied},
		{"alpha", "create", create, connect.CodeUnimplemented},
	} {
		before := read.Load()
		err := tc.fn(tc.token)
		if connect.CodeOf(err) != tc.want {
			t.Errorf("%s token, %s: %v, want %v", tc.token, tc.what, err, tc.want)
		}
		if tc.want == connect.CodePermissionDenied {
			if !strings.Contains(err.Error(), "may not call") {
				t.Errorf("%s token, %s: %q does not say why", tc.token, tc.what, err)
			}
			if n := read.Load() - before; n != 0 {
				t.Errorf("%s token, %s: %d body bytes read before the call was denied", tc.token, tc.what, n)
			}
		}
	}
}

// TestEveryProcedureHasARole fails when a procedure of a generated service
// has no line in its server's policy: default deny would refuse it to
// everyone.
func TestEveryProcedureHasARole(t *testing.T) {
	policies := map[string]Policy{"fsb.v1.FastPathService": FastPathPolicy, "fsb.v1.JanitorService": FastPathPolicy, "fsb.v1.AgentService": AgentPolicy}
	files := []protoreflect.FileDescriptor{fsbv1.File_fsb_v1_fastpath_proto, fsbv1.File_fsb_v1_janitor_proto, fsbv1.File_fsb_v1_agent_proto, fsbv1.File_fsb_v1_sandbox_proto}
	seen := 0
	for _, f := range files {
		for i := range f.Services().Len() {
			svc := f.Services().Get(i)
			policy, ok := policies[string(svc.FullName())]
			if !ok {
				t.Errorf("service %s has no policy", svc.FullName())
				continue
			}
			for j := range svc.Methods().Len() {
				proc := "/" + string(svc.FullName()) + "/" + string(svc.Methods().Get(j).Name())
				if len(policy[proc]) == 0 {
					t.Errorf("%s has no role: add it to the policy", proc)
				}
				seen++
			}
		}
	}
	if seen < 14 {
		t.Errorf("only %d procedures found", seen)
	}
}

// TestRouteGuardsAPlainRouteByItsPolicyLine: a plain HTTP route is
// authorized by the policy's line for its name, refusals are Connect's JSON
// errors a plain client can read, and the handler learns the caller's role.
func TestRouteGuardsAPlainRouteByItsPolicyLine(t *testing.T) {
	keys := append(Tokens{"alpha"}.As(RoleUser), Key{Token: "janitor-1", Role: RoleJanitor})
	srv := httptest.NewServer(Route(keys, FastPathPolicy, nil, FilesRoute, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		role, ok := RoleOf(r.Context())
		if !ok {
			role = "none"
		}
		_, _ = io.WriteString(w, "role "+string(role))
	})))
	t.Cleanup(srv.Close)
	for _, tc := range []struct {
		method, token string
		status        int
		want          string // the body, or the error's code
	}{
		{http.MethodGet, "", http.StatusUnauthorized, "unauthenticated"},
		{http.MethodPut, "wrong", http.StatusUnauthorized, "unauthenticated"},
		{http.MethodPut, "janitor-1", http.StatusForbidden, "permission_denied"},
		{http.MethodGet, "alpha", http.StatusOK, "role user"},
		{http.MethodPut, "alpha", http.StatusOK, "role user"},
	} {
		req, err := http.NewRequest(tc.method, srv.URL+"/files/default/x?path=/etc/passwd", strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s with token %q: HTTP %d, want %d (%s)", tc.method, tc.token, resp.StatusCode, tc.status, b)
			continue
		}
		if tc.status == http.StatusOK {
			if string(b) != tc.want {
				t.Errorf("%s with token %q: %q, want %q", tc.method, tc.token, b, tc.want)
			}
			continue
		}
		var e struct{ Code, Message string }
		if err := json.Unmarshal(b, &e); err != nil || e.Code != tc.want {
			t.Errorf("%s with token %q: %q is not a JSON error with code %s (%v)", tc.method, tc.token, b, tc.want, err)
		}
	}
}
