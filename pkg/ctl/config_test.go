package ctl

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// configPath points XDG_CONFIG_HOME at a fresh directory and returns the
// config file's path there.
func configPath(t *testing.T) string {
	t.Helper()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	path, err := ConfigPath()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func writeToken(t *testing.T, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigPath(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	if got, _ := ConfigPath(); got != filepath.Join(dir, "fsb", "config.yaml") {
		t.Errorf("ConfigPath = %s", got)
	}
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("HOME", dir)
	if got, _ := ConfigPath(); got != filepath.Join(dir, ".config", "fsb", "config.yaml") {
		t.Errorf("ConfigPath without XDG_CONFIG_HOME = %s", got)
	}
}

func TestSetContextUseContextView(t *testing.T) {
	path := configPath(t)
	token := writeToken(t, "very-secret")
	var out bytes.Buffer
	if err := SetContext(&out, path, ContextOptions{Name: "local", Server: "127.0.0.1:9090", TokenFile: token}); err != nil {
		t.Fatal(err)
	}
	if err := SetContext(&out, path, ContextOptions{Name: "prod", Server: "https://fsb.example.com", Namespace: "team"}); err != nil {
		t.Fatal(err)
	}
	// Changing one value of a context keeps the others.
	if err := SetContext(&out, path, ContextOptions{Name: "local", Namespace: "dev"}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("config file mode %v, want 0600", st.Mode().Perm())
	}
	f, err := LoadConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.CurrentContext != "local" {
		t.Errorf("current context %q, want local (the first one set)", f.CurrentContext)
	}
	if got := *f.context("local"); got != (NamedContext{Name: "local", Server: "127.0.0.1:9090", TokenFile: token, Namespace: "dev"}) {
		t.Errorf("local = %+v", got)
	}

	if err := UseContext(&out, path, "prod"); err != nil {
		t.Fatal(err)
	}
	if err := UseContext(&out, path, "nope"); err == nil || !strings.Contains(err.Error(), "no context nope") || !strings.Contains(err.Error(), "local, prod") {
		t.Errorf("use-context of a missing context: %v", err)
	}
	var view, errw bytes.Buffer
	if err := ViewConfig(&view, &errw, path); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"currentContext: prod", "name: local", "tokenFile: " + token, "namespace: team"} {
		if !strings.Contains(view.String(), want) {
			t.Errorf("view lacks %q:\n%s", want, view.String())
		}
	}
	if strings.Contains(view.String(), "very-secret") {
		t.Errorf("view prints the token:\n%s", view.String())
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("config directory holds %d files, want only config.yaml (no temporary left)", len(entries))
	}
}

func TestSetContextErrors(t *testing.T) {
	path := configPath(t)
	for _, tt := range []struct {
		o    ContextOptions
		want string
	}{
		{ContextOptions{}, "config set needs a context name"},
		{ContextOptions{Name: "a b"}, "without spaces"},
		{ContextOptions{Name: "x", Server: "ftp://x"}, "is not a controller address"},
		{ContextOptions{Name: "x", Namespace: "Team_A"}, `--namespace "Team_A"`},
		{ContextOptions{Name: "x", TokenFile: filepath.Join(t.TempDir(), "missing")}, "--token-file"},
	} {
		if err := SetContext(&bytes.Buffer{}, path, tt.o); !IsUsage(err) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err = %v, want a usage error with %q", tt.o, err, tt.want)
		}
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a refused set wrote the file: %v", err)
	}
}

func TestResolveConnection(t *testing.T) {
	path := configPath(t)
	token := writeToken(t, "from-file")
	if err := SetContext(&bytes.Buffer{}, path, ContextOptions{Name: "c", Server: "http://ctx:9090", TokenFile: token, Namespace: "ctx-ns"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		path  string
		given Connection
		want  Connection
	}{
		{"the context fills everything", path, Connection{},
			Connection{Server: "http://ctx:9090", Token: "from-file", Namespace: "ctx-ns"}},
		{"flags or environment win, field by field", path, Connection{Server: "http://flag:1", Namespace: "flag-ns"},
			Connection{Server: "http://flag:1", Token: "from-file", Namespace: "flag-ns"}},
		{"a given token: the token file is not needed", path, Connection{Token: "given"},
			Connection{Server: "http://ctx:9090", Token: "given", Namespace: "ctx-ns"}},
		{"no config file: the defaults", filepath.Join(t.TempDir(), "none.yaml"), Connection{},
			Connection{Server: DefaultServer, Namespace: "default"}},
		{"no config path: the defaults", "", Connection{Token: "t"},
			Connection{Server: DefaultServer, Token: "t", Namespace: "default"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveConnection(tt.path, tt.given)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}

	// A token file of several lines (a rotation): the first token, without
	// its newline.
	if err := os.WriteFile(token, []byte("first\r\nsecond\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := ResolveConnection(path, Connection{}); err != nil || got.Token != "first" {
		t.Errorf("token from a two-line file = %q, %v; want first", got.Token, err)
	}

	// A token file gone missing is reported with the context's name.
	if err := os.Remove(token); err != nil {
		t.Fatal(err)
	}
	if _, err := ResolveConnection(path, Connection{}); err == nil || !strings.Contains(err.Error(), "context c: cannot read its token file") {
		t.Errorf("err = %v", err)
	}
}

func TestLoadConfigFileErrors(t *testing.T) {
	path := configPath(t)
	for _, text := range []string{"contexts: [\n", "currentContext: a\ncontexts: []\ncolour: blue\n"} {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ResolveConnection(path, Connection{}); err == nil || !strings.Contains(err.Error(), "config file "+path) {
			t.Errorf("%q: err = %v, want it to name the file", text, err)
		}
	}
	if err := os.WriteFile(path, []byte("currentContext: gone\ncontexts: [{name: a}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ResolveConnection(path, Connection{}); err == nil || !strings.Contains(err.Error(), `the current context "gone" does not exist`) {
		t.Errorf("err = %v", err)
	}
}
