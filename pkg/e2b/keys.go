package e2b

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// keyPattern is the form of an E2B API key. The SDK sends whatever it is
// given, but E2B's keys are `e2b_` and hex, and programs written for E2B
// check that form themselves; a key file that held anything else would
// hand out keys those programs refuse.
var keyPattern = regexp.MustCompile(`^e2b_[0-9a-fA-F]+$`)

// Keys maps E2B API keys to the Fast Sandbox namespace each may use: every
// call made with a key acts in that namespace only. Its zero value holds
// no key (every request is refused).
type Keys struct {
	// byDigest is keyed by the key's SHA-256, so that looking a key up
	// takes a time that says nothing about the keys held.
	byDigest   map[[sha256.Size]byte]string
	namespaces []string
}

// ReadKeys reads an API keys file: one key per line, `e2b_<hex>
// <namespace>`; `#` starts a comment, blank lines are ignored.
func ReadKeys(path string) (*Keys, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("E2B API keys: %w", err)
	}
	defer f.Close()
	k, err := ParseKeys(f)
	if err != nil {
		return nil, fmt.Errorf("E2B API keys file %s: %w", path, err)
	}
	return k, nil
}

// ParseKeys reads keys in ReadKeys's format from r. It refuses a file
// without any key: a server nobody can call is a mistake, not a choice.
func ParseKeys(r io.Reader) (*Keys, error) {
	k := &Keys{byDigest: map[[sha256.Size]byte]string{}}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want `e2b_<hex> <namespace>`, got %d fields", line, len(fields))
		}
		key, ns := fields[0], fields[1]
		if !keyPattern.MatchString(key) {
			// The key itself stays out of the message: it may be a real one
			// mistyped.
			return nil, fmt.Errorf("line %d: the key is not of the form e2b_<hex>", line)
		}
		if err := v1alpha1.ValidateNamespace(ns); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		d := sha256.Sum256([]byte(key))
		if _, dup := k.byDigest[d]; dup {
			return nil, fmt.Errorf("line %d: the key is listed twice", line)
		}
		k.byDigest[d] = ns
		if !slices.Contains(k.namespaces, ns) {
			k.namespaces = append(k.namespaces, ns)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(k.byDigest) == 0 {
		return nil, fmt.Errorf("no key in it")
	}
	slices.Sort(k.namespaces)
	return k, nil
}

// Namespace returns the namespace of key, and false for a key not held.
func (k *Keys) Namespace(key string) (string, bool) {
	if k == nil || !keyPattern.MatchString(key) {
		return "", false
	}
	ns, ok := k.byDigest[sha256.Sum256([]byte(key))]
	return ns, ok
}

// Namespaces returns the namespaces of the keys, sorted: the only ones E2B
// sandboxes live in.
func (k *Keys) Namespaces() []string {
	if k == nil {
		return nil
	}
	return slices.Clone(k.namespaces)
}
