package ctl

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
)

// ConfigFile is fsb ctl's config file: named contexts, each saying where a
// controller is, which file holds its token, which CA certificate its
// https:// address is verified by and which namespace to use, and the one
// in use. It holds no secrets, only the paths of files.
type ConfigFile struct {
	CurrentContext string         `json:"currentContext,omitempty"`
	Contexts       []NamedContext `json:"contexts"`
}

// NamedContext is one controller to talk to and how.
type NamedContext struct {
	Name      string `json:"name"`
	Server    string `json:"server,omitempty"`
	TokenFile string `json:"tokenFile,omitempty"`
	CAFile    string `json:"caFile,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

// Connection is where the controller is, the token it wants and the
// namespace to use: what the flags, the environment, the config file and
// the defaults decide between them.
type Connection struct {
	Server, Token, Namespace string
	// CAFile is the CA certificates' file of an https:// Server; empty
	// means the system's CAs.
	CAFile string
}

// ConfigPath is where the config file lives: $XDG_CONFIG_HOME/fsb/config.yaml,
// or ~/.config/fsb/config.yaml without XDG_CONFIG_HOME.
func ConfigPath() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cannot find the config file: %v (set XDG_CONFIG_HOME)", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "fsb", "config.yaml"), nil
}

// LoadConfigFile reads the config file at path; a missing file is an
// empty one.
func LoadConfigFile(path string) (*ConfigFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &ConfigFile{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the config file: %v", err)
	}
	var f ConfigFile
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("config file %s: %v: fix it, or remove it and run fsb ctl config set", path, yamlError(err))
	}
	return &f, nil
}

// Save writes f to path, readable by its owner only. It writes a file next
// to path and renames it over path, so that a reader sees the old file or
// the new one, never half of one.
func (f *ConfigFile) Save(path string) (err error) {
	b, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cannot write the config file: %v", err)
	}
	tmp, err := os.CreateTemp(dir, ".config-*.yaml")
	if err != nil {
		return fmt.Errorf("cannot write the config file: %v", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("cannot write the config file: %v", err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("cannot write the config file: %v", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("cannot write the config file: %v", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cannot write the config file: %v", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cannot write the config file: %v", err)
	}
	return nil
}

// context returns the context called name, or nil.
func (f *ConfigFile) context(name string) *NamedContext {
	i := slices.IndexFunc(f.Contexts, func(c NamedContext) bool { return c.Name == name })
	if i < 0 {
		return nil
	}
	return &f.Contexts[i]
}

// names lists the contexts' names, for messages.
func (f *ConfigFile) names() string {
	var names []string
	for _, c := range f.Contexts {
		names = append(names, c.Name)
	}
	if len(names) == 0 {
		return "none yet"
	}
	return strings.Join(names, ", ")
}

// ResolveConnection fills what given leaves empty (given holds the flags'
// values, or the environment's) from the current context of the config
// file at path, then from the defaults. The context's token is read from
// its token file, and only when given has no token. The context's CA file
// is used only with the context's server: it vouches for that one.
func ResolveConnection(path string, given Connection) (Connection, error) {
	conn := given
	if path != "" && (conn.Server == "" || conn.Token == "" || conn.Namespace == "") {
		f, err := LoadConfigFile(path)
		if err != nil {
			return Connection{}, err
		}
		if f.CurrentContext != "" {
			cur := f.context(f.CurrentContext)
			if cur == nil {
				return Connection{}, fmt.Errorf("config file %s: the current context %q does not exist: pick one of %s (fsb ctl config use-context NAME)",
					path, f.CurrentContext, f.names())
			}
			if conn.Server == "" {
				conn.CAFile = cmp.Or(conn.CAFile, cur.CAFile)
			}
			conn.Server = cmp.Or(conn.Server, cur.Server)
			conn.Namespace = cmp.Or(conn.Namespace, cur.Namespace)
			if conn.Token == "" && cur.TokenFile != "" {
				// The first token of the file: a file may hold several.
				tok, err := auth.ReadTokenFile(cur.TokenFile)
				if err != nil {
					return Connection{}, fmt.Errorf("context %s: cannot read its token file: %v (fsb ctl config set %s --token-file FILE)", cur.Name, err, cur.Name)
				}
				conn.Token = tok
			}
		}
	}
	conn.Server = cmp.Or(conn.Server, DefaultServer)
	conn.Namespace = cmp.Or(conn.Namespace, "default")
	return conn, nil
}

// ContextOptions are the arguments of `fsb ctl config set`: the context to
// create or change, and the values to give it; empty ones stay as they
// are.
type ContextOptions struct {
	Name      string
	Server    string
	TokenFile string
	CAFile    string
	Namespace string
}

// SetContext creates or changes a context in the config file at path. The
// first context becomes the current one.
func SetContext(w io.Writer, path string, o ContextOptions) error {
	if o.Name == "" || strings.ContainsAny(o.Name, " \t\n") {
		return usagef("config set needs a context name without spaces: fsb ctl config set NAME [--server URL] [--token-file FILE] [--ca-file FILE] [-n NAMESPACE]")
	}
	if o.Server != "" {
		if _, err := serverURL(o.Server); err != nil {
			return err
		}
	}
	if o.Namespace != "" {
		if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
			return usagef("--namespace %q: %s", o.Namespace, strings.Join(errs, "; "))
		}
	}
	if o.TokenFile != "" {
		abs, err := filepath.Abs(o.TokenFile)
		if err != nil {
			return usagef("--token-file %q: %v", o.TokenFile, err)
		}
		// The path is what is kept, so that a token that changes is
		// picked up; a typo is caught now rather than at the next call.
		if _, err := os.ReadFile(abs); err != nil {
			return usagef("--token-file: %v", err)
		}
		o.TokenFile = abs
	}
	if o.CAFile != "" {
		abs, err := filepath.Abs(o.CAFile)
		if err != nil {
			return usagef("--ca-file %q: %v", o.CAFile, err)
		}
		// Checked now, as the token file is; kept by path, so that a
		// renewed CA is picked up.
		if _, err := clientTLS(abs); err != nil {
			return err
		}
		o.CAFile = abs
	}
	f, err := LoadConfigFile(path)
	if err != nil {
		return err
	}
	verb := "changed"
	cur := f.context(o.Name)
	if cur == nil {
		verb = "created"
		f.Contexts = append(f.Contexts, NamedContext{Name: o.Name})
		cur = &f.Contexts[len(f.Contexts)-1]
	}
	cur.Server = cmp.Or(o.Server, cur.Server)
	cur.TokenFile = cmp.Or(o.TokenFile, cur.TokenFile)
	cur.CAFile = cmp.Or(o.CAFile, cur.CAFile)
	cur.Namespace = cmp.Or(o.Namespace, cur.Namespace)
	if f.CurrentContext == "" {
		f.CurrentContext = o.Name
	}
	if err := f.Save(path); err != nil {
		return err
	}
	fmt.Fprintf(w, "context %s %s in %s", o.Name, verb, path)
	if f.CurrentContext == o.Name {
		fmt.Fprint(w, " (current)")
	}
	fmt.Fprintln(w)
	return nil
}

// UseContext makes name the current context of the config file at path.
func UseContext(w io.Writer, path, name string) error {
	if name == "" {
		return usagef("use-context needs a context name: fsb ctl config use-context NAME")
	}
	f, err := LoadConfigFile(path)
	if err != nil {
		return err
	}
	if f.context(name) == nil {
		return fmt.Errorf("no context %s in %s: the contexts are %s (fsb ctl config set %s --server URL creates it)", name, path, f.names(), name)
	}
	f.CurrentContext = name
	if err := f.Save(path); err != nil {
		return err
	}
	fmt.Fprintf(w, "now using context %s\n", name)
	return nil
}

// ViewConfig prints the config file at path. It holds token files' paths,
// never tokens, so nothing secret is printed.
func ViewConfig(w, errw io.Writer, path string) error {
	f, err := LoadConfigFile(path)
	if err != nil {
		return err
	}
	if len(f.Contexts) == 0 {
		fmt.Fprintf(errw, "No contexts in %s yet: fsb ctl config set NAME --server URL creates one.\n", path)
	}
	b, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
