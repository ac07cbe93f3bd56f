package ctl

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// serveTLS serves f over TLS (HTTP/1.1 and HTTP/2) on loopback with a
// certificate of its own, as a controller installed with
// scripts/deploy-secrets.sh does, and returns its URL and a file holding
// the certificate that signed it.
func serveTLS(t *testing.T, f *fakeFastPath) (url, caFile string) {
	t.Helper()
	mux := http.NewServeMux()
	path, api := fsbv1connect.NewFastPathServiceHandler(f)
	mux.Handle(path, auth.Middleware(auth.Tokens{testToken}.As(auth.RoleUser), auth.FastPathPolicy, nil, api))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile
}

// TestCAFileTrustsTheController: with the controller's CA, list works over
// both clients (the HTTP/2 one carries exec and cp); without it, the user
// reads that the certificate could not be verified and which flag helps;
// a CA file that cannot be used is a usage mistake named before any call.
func TestCAFileTrustsTheController(t *testing.T) {
	f := newFake()
	f.add("default", "web", "busybox", 0)
	url, caFile := serveTLS(t, f)
	notPEM := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what, caFile string
		wantNew      string // an error of New, a usage mistake
		wantCall     string // an error of the call; empty: it lists web
	}{
		{what: "the controller's CA", caFile: caFile},
		{what: "the system's CAs", wantCall: "cannot verify the controller"},
		{what: "a missing file", caFile: filepath.Join(t.TempDir(), "none.crt"), wantNew: "--ca-file"},
		{what: "not PEM", caFile: notPEM, wantNew: "holds no PEM certificate"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			var out bytes.Buffer
			c, err := New(Config{Server: url, Token: testToken, CAFile: tc.caFile, Out: &out})
			if tc.wantNew != "" {
				if err == nil || !IsUsage(err) || !strings.Contains(err.Error(), tc.wantNew) {
					t.Fatalf("New with CA file %s: %v, want a usage error naming %q", tc.caFile, err, tc.wantNew)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			err = c.List(context.Background(), ListOptions{})
			if tc.wantCall != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantCall) || !strings.Contains(err.Error(), "--ca-file") {
					t.Fatalf("list without the CA: %v, want %q and the flag to set", err, tc.wantCall)
				}
				return
			}
			if err != nil {
				t.Fatalf("list with the CA: %v", err)
			}
			if !strings.Contains(out.String(), "web") {
				t.Errorf("list printed %q, want the sandbox web", out.String())
			}
			if _, err := c.StreamAPI().ListSandboxes(context.Background(), connect.NewRequest(&fsbv1.ListSandboxesRequest{Namespace: "default"})); err != nil {
				t.Errorf("the HTTP/2 client with the CA: %v", err)
			}
		})
	}
}

// TestContextCAFile: fsb ctl config set keeps a context's CA file by its
// absolute path after checking it, and the CA vouches only for the
// context's own server: a server given by flag does not inherit it.
func TestContextCAFile(t *testing.T) {
	path := configPath(t)
	_, caFile := serveTLS(t, newFake())
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(dir, caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := SetContext(&bytes.Buffer{}, path, ContextOptions{Name: "c", Server: "https://ctx:9090", CAFile: rel}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what  string
		given Connection
		want  string
	}{
		{"the context's server: its CA", Connection{}, caFile},
		{"a server given: no CA of the context", Connection{Server: "https://flag:1"}, ""},
		{"a CA given wins", Connection{CAFile: "/given/ca.crt"}, "/given/ca.crt"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			got, err := ResolveConnection(path, tc.given)
			if err != nil {
				t.Fatal(err)
			}
			if got.CAFile != tc.want {
				t.Errorf("CA file %q, want %q", got.CAFile, tc.want)
			}
		})
	}
	notPEM := filepath.Join(t.TempDir(), "x.crt")
	if err := os.WriteFile(notPEM, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SetContext(&bytes.Buffer{}, path, ContextOptions{Name: "c", CAFile: notPEM}); err == nil || !IsUsage(err) {
		t.Errorf("config set with a CA file that is no certificate: %v, want a usage error", err)
	}
}
