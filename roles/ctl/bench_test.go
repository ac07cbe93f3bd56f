package ctl

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// TestBenchTrustsTheCAFile: bench and bench --exec reach an https://
// controller through --ca-file (FSB_CA_FILE) as every other command does;
// without it the certificate is not trusted. (The recorder has no agents,
// so a bench that got through stops at "no free slots".)
func TestBenchTrustsTheCAFile(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	r := &recorder{last: map[string]proto.Message{}}
	mux := http.NewServeMux()
	path, api := fsbv1connect.NewFastPathServiceHandler(r)
	mux.Handle(path, auth.Middleware(auth.Tokens{token}.As(auth.RoleUser), auth.FastPathPolicy, nil, api))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true // bench --exec streams
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	logDir := t.TempDir()
	for _, args := range [][]string{
		{"bench", "-n", "1", "--log-dir", logDir},
		{"bench", "--exec", "-n", "100", "--baseline=false"},
	} {
		base := append([]string{"--server", srv.URL, "--token", token}, args...)
		_, stderr, err := runCtl(base...)
		if err == nil || !strings.Contains(stderr+err.Error(), "certificate") {
			t.Errorf("%v without --ca-file: %v %s, want a certificate error", args, err, stderr)
		}
		_, stderr, err = runCtl(append([]string{"--ca-file", ca}, base...)...)
		if msg := stderr + errText(err); strings.Contains(msg, "certificate") {
			t.Errorf("%v with --ca-file: %s", args, msg)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestBenchRefusesFlagsThatCannotWork: flags the bench cannot honour are
// refused before it talks to anyone.
func TestBenchRefusesFlagsThatCannotWork(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	logDir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--attribute"}, "--attribute needs --baseline"},
		{[]string{"--grace", "1500ms"}, "whole seconds"},
		{[]string{"--grace", "-1s"}, "whole seconds"},
	} {
		args := append([]string{"--server", "http://127.0.0.1:1", "--token", token, "bench", "-n", "1", "--log-dir", logDir}, tc.args...)
		_, stderr, err := runCtl(args...)
		if msg := stderr + errText(err); !strings.Contains(msg, tc.want) {
			t.Errorf("bench %v: %q; want %q", tc.args, msg, tc.want)
		}
	}
}
