package controller

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestE2BFlags checks that the E2B API is off unless its address is given,
// and that a start with it refuses what would serve nobody.
func TestE2BFlags(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := os.WriteFile(keys, []byte("e2b_00ff default\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	templates := filepath.Join(dir, "templates.yaml")
	if err := os.WriteFile(templates, []byte("templates: {code: {image: localhost/code:1}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		on   bool
		err  string
	}{
		{name: "off", args: nil},
		{name: "keys without address", args: []string{"--e2b-api-keys-file", keys}, err: "need --e2b-bind-address"},
		{name: "address without keys", args: []string{"--e2b-bind-address", "127.0.0.1:0"}, err: "needs --e2b-api-keys-file"},
		{name: "missing keys file", args: []string{"--e2b-bind-address", "127.0.0.1:0", "--e2b-api-keys-file", filepath.Join(dir, "none")}, err: "no such file"},
		{name: "secret without address", args: []string{"--e2b-token-secret-file", secret}, err: "need --e2b-bind-address"},
		{name: "short secret", args: []string{"--e2b-bind-address", "127.0.0.1:0", "--e2b-api-keys-file", keys, "--e2b-token-secret-file", short}, err: "want at least 16"},
		{name: "on", args: []string{"--e2b-bind-address", "127.0.0.1:0", "--e2b-api-keys-file", keys}, on: true},
		{name: "secret", args: []string{"--e2b-bind-address", "127.0.0.1:0", "--e2b-api-keys-file", keys, "--e2b-token-secret-file", secret}, on: true},
		{name: "templates", args: []string{"--e2b-bind-address", "127.0.0.1:0", "--e2b-api-keys-file", keys, "--e2b-templates-file", templates}, on: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got *e2bAPI
			var err error
			app := &cli.App{Flags: e2bFlags(), Action: func(c *cli.Context) error {
				got, err = newE2BAPI(c)
				return nil
			}}
			if rerr := app.Run(append([]string{"fsb"}, tc.args...)); rerr != nil {
				t.Fatal(rerr)
			}
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("newE2BAPI: %v, want an error with %q", err, tc.err)
				}
			case err != nil:
				t.Fatal(err)
			case (got != nil) != tc.on:
				t.Fatalf("newE2BAPI: %+v, want on=%v", got, tc.on)
			case got != nil:
				if got.token == "" {
					t.Error("no in-process token")
				}
				if want := map[string]string{"secret": "0123456789abcdef0123"}[tc.name]; string(got.secret) != want {
					t.Errorf("secret %q, want %q", got.secret, want)
				}
				if ns, ok := got.keys.Namespace("e2b_00ff"); !ok || ns != "default" {
					t.Errorf("the key's namespace: %q, %v", ns, ok)
				}
				want := "base"
				if tc.name == "templates" {
					want = "code"
				}
				if names := strings.Join(got.templates.Names(), ","); names != want {
					t.Errorf("templates %s, want %s", names, want)
				}
			}
		})
	}
}
