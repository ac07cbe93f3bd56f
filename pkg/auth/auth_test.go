package auth

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCheck(t *testing.T) {
	ts := Tokens{"alpha", "beta"}
	for header, want := range map[string]error{
		"Bearer alpha": nil,
		"Bearer beta":  nil,
		"Bearer gamma": errWrongToken,
		"Bearer alph":  errWrongToken,
		"Bearer ":      errNoToken,
		"alpha":        errNoToken,
		"Basic alpha":  errNoToken,
		"":             errNoToken,
	} {
		if got := ts.check(header); got != want {
			t.Errorf("check(%q) = %v, want %v", header, got, want)
		}
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("  s3cret\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	if tok, err := ReadTokenFile(good); err != nil || tok != "s3cret" {
		t.Errorf("ReadTokenFile(good) = %q, %v", tok, err)
	}
	// A file of several tokens, during a rotation: the sender uses the
	// first, as the receivers' files hold both.
	several := filepath.Join(dir, "several")
	os.WriteFile(several, []byte("\n  new-token \nold-token\n"), 0o600)
	if tok, err := ReadTokenFile(several); err != nil || tok != "new-token" {
		t.Errorf("ReadTokenFile(several) = %q, %v; want the first token", tok, err)
	}
	if _, err := ReadTokenFile(empty); err == nil {
		t.Error("an empty token file was accepted")
	}
	if _, err := ReadTokenFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing token file was accepted")
	}
}

func TestRequired(t *testing.T) {
	dir := t.TempDir()
	two := filepath.Join(dir, "two")
	os.WriteFile(two, []byte("old\n\nnew\n"), 0o600)
	if toks, err := Required(false, "token-file", two); err != nil || len(toks) != 2 || toks[1] != "new" {
		t.Errorf("Required(file of two) = %v, %v", toks, err)
	}
	if toks, err := Required(true, "token-file", ""); err != nil || toks != nil {
		t.Errorf("Required(insecure) = %v, %v", toks, err)
	}
	for _, tc := range []struct {
		insecure bool
		path     string
	}{{true, two}, {false, ""}, {false, filepath.Join(dir, "missing")}} {
		if _, err := Required(tc.insecure, "token-file", tc.path); err == nil {
			t.Errorf("Required(%v, %q) accepted it", tc.insecure, tc.path)
		}
	}
}
