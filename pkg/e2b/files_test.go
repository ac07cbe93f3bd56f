package e2b

import (
	"bytes"
	"errors"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"testing"

	"connectrpc.com/connect"
)

func TestPartFileName(t *testing.T) {
	// The SDK puts the whole path in the filename; multipart.Part's
	// FileName would keep only its last element.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="file"; filename="dir/sub/a b.txt"`)
	w, _ := mw.CreatePart(h)
	w.Write([]byte("x"))
	mw.Close()
	part, err := multipart.NewReader(&buf, mw.Boundary()).NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if got := partFileName(part); got != "dir/sub/a b.txt" {
		t.Errorf("partFileName = %q, want the whole path", got)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		accept, rng string
		want        bool
	}{
		{"gzip", "", true},
		{"br, GZIP;q=0.5", "", true},
		{"gzip;q=0", "", false},
		{"identity", "", false},
		{"", "", false},
		{"gzip", "bytes=0-1", false},
	} {
		r, _ := http.NewRequest(http.MethodGet, "/files", nil)
		if tc.accept != "" {
			r.Header.Set("Accept-Encoding", tc.accept)
		}
		if tc.rng != "" {
			r.Header.Set("Range", tc.rng)
		}
		if got := acceptsGzip(r); got != tc.want {
			t.Errorf("Accept-Encoding %q, Range %q: %v, want %v", tc.accept, tc.rng, got, tc.want)
		}
	}
}

func TestEnvdHTTPStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{connect.NewError(connect.CodeNotFound, errors.New("x")), http.StatusNotFound},
		{connect.NewError(connect.CodeInvalidArgument, errors.New("x")), http.StatusBadRequest},
		{connect.NewError(connect.CodeUnauthenticated, errors.New("x")), http.StatusUnauthorized},
		{connect.NewError(connect.CodeResourceExhausted, errors.New("write /x: no space left on device")), http.StatusInsufficientStorage},
		{connect.NewError(connect.CodeResourceExhausted, errors.New("too many")), http.StatusTooManyRequests},
		{connect.NewError(connect.CodeUnavailable, errors.New("x")), http.StatusBadGateway},
		{errors.New("plain"), http.StatusInternalServerError},
	} {
		if got := envdHTTPStatus(tc.err); got != tc.want {
			t.Errorf("envdHTTPStatus(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
