package auth

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

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

// guarded serves FastPathService (every method unimplemented) behind
// Middleware, counting the body bytes read behind it.
func guarded(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	read := &atomic.Int64{}
	path, api := fsbv1connect.NewFastPathServiceHandler(fsbv1connect.UnimplementedFastPathServiceHandler{})
	mw := Middleware(Tokens{"alpha"}, api)
	mux := http.NewServeMux()
	mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = countingBody{r.Body, read}
		mw.ServeHTTP(w, r)
	}))
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
