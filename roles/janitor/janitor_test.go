package janitor

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// serveTLS serves "ok" over TLS on loopback with a certificate that names
// only dnsName, signed by a CA of its own, and returns the server's URL and
// a file holding the CA certificate.
func serveTLS(t *testing.T, dnsName string) (url, caFile string) {
	t.Helper()
	ca := rig.NewCA(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.IssueTLS(t, []string{dnsName})}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, ca.File(t)
}

// TestControllerClientVerifiesServerName: a janitor pod dials the
// controller's Service by its ClusterIP (here 127.0.0.1), which the
// controller's certificate does not name; --server-name is the name it
// verifies instead, and a wrong one or no CA is still refused.
func TestControllerClientVerifiesServerName(t *testing.T) {
	const name = "fsb-controller.fsb-system.svc"
	url, caFile := serveTLS(t, name)
	for _, tc := range []struct {
		what, caFile, serverName string
		wantErr                  string // empty: the call succeeds
	}{
		{what: "the Service's name", caFile: caFile, serverName: name},
		{what: "no server name: the IP dialed", caFile: caFile, wantErr: "127.0.0.1"},
		{what: "another name", caFile: caFile, serverName: "fsb-controller.other.svc", wantErr: "fsb-controller.other.svc"},
		{what: "the system's CAs", serverName: name, wantErr: "unknown authority"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			client, err := controllerClient(tc.caFile, tc.serverName)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Get(url)
			if err == nil {
				resp.Body.Close()
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("GET %s with server name %q: %v", url, tc.serverName, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("GET %s with server name %q: %v, want an error naming %q", url, tc.serverName, err, tc.wantErr)
			}
		})
	}
}
