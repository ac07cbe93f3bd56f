package pid1

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// mergeEnv returns env with each "KEY=value" of over replacing or adding.
func mergeEnv(env, over []string) []string {
	if len(over) == 0 {
		return env
	}
	out := make([]string, 0, len(env)+len(over))
	for _, kv := range env {
		if !hasKey(over, envKey(kv)) {
			out = append(out, kv)
		}
	}
	return append(out, over...)
}

func envKey(kv string) string {
	k, _, _ := strings.Cut(kv, "=")
	return k
}

func hasKey(env []string, key string) bool {
	for _, kv := range env {
		if envKey(kv) == key {
			return true
		}
	}
	return false
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, _ := strings.Cut(env[i], "="); k == key {
			return v
		}
	}
	return ""
}

// lookPath finds name as a shell would: a name with a slash as it is
// (relative to dir), otherwise in path.
func lookPath(name, path, dir string) (string, error) {
	if strings.Contains(name, "/") {
		full := name
		if !filepath.IsAbs(full) {
			full = filepath.Join(dir, name)
		}
		if err := executable(full); err != nil {
			return "", startError(name, err)
		}
		return full, nil
	}
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		full := filepath.Join(d, name)
		if !filepath.IsAbs(full) {
			full = filepath.Join(dir, full)
		}
		if executable(full) == nil {
			return full, nil
		}
	}
	return "", errorf(initlink.CodeNotFound, "exec: %s: not found in PATH %s", name, path)
}

func executable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return &os.PathError{Op: "exec", Path: path, Err: unix.EACCES}
	}
	return nil
}

// startError says why name could not be started.
func startError(name string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return errorf(initlink.CodeNotFound, "exec: %s: not found", name)
	case errors.Is(err, unix.EACCES):
		return errorf(initlink.CodePermissionDenied, "exec: %s: permission denied", name)
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.ENOMEM):
		// A fork refused: the sandbox's pids or memory limit is reached.
		return errorf(initlink.CodeResourceExhausted, "exec: %s: %v: the sandbox is at its pids or memory limit", name, err)
	}
	return errorf(codeOf(err), "exec: %s: %v", name, err)
}
