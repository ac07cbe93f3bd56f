package janitor

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serveTLS serves "ok" over TLS on loopback with a certificate that names
// only dnsName, signed by a CA of its own, and returns the server's URL and
// a file holding the CA certificate.
func serveTLS(t *testing.T, dnsName string) (url, caFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile
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
