package agent

import (
	"fmt"
	"slices"
	"strings"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// knownRuntimes are the runtime names an agent can offer, in the order
// messages list them.
var knownRuntimes = []string{runtime.RuntimeRunc, runtime.RuntimeCrun, runtime.RuntimeGVisor}

// ValidatePool checks an agent's --pool: empty (the default pool) or a
// SandboxPool's name, a DNS-1123 label, since a Sandbox's poolRef must name
// it exactly.
func ValidatePool(pool string) error {
	if pool == "" {
		return nil
	}
	if err := v1alpha1.ValidatePoolName(pool); err != nil {
		return fmt.Errorf("--pool %w; or leave it empty for the default pool", err)
	}
	return nil
}

// ParseRuntimes reads an agent's --runtimes: a comma-separated list of
// runc, crun and gvisor, each at most once. Empty means every installed
// runtime (nil).
func ParseRuntimes(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var out []string
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(knownRuntimes, name) {
			return nil, fmt.Errorf("--runtimes %q: %q is not a runtime: want a comma-separated list of %s", list, name, strings.Join(knownRuntimes, ", "))
		}
		if slices.Contains(out, name) {
			return nil, fmt.Errorf("--runtimes %q: %s is listed twice", list, name)
		}
		out = append(out, name)
	}
	return out, nil
}

// SelectRuntimes keeps, of the installed runtimes (name -> the binary the
// runc shim runs), those wanted lists; nil wants them all and returns
// installed as it is. When a list is given and none of it is installed the
// agent would offer nothing its pool asks for: an error, so that a pool
// whose nodes lack its runtime fails at start rather than refusing every
// create.
func SelectRuntimes(installed map[string]string, wanted []string) (map[string]string, error) {
	if wanted == nil {
		return installed, nil
	}
	out := make(map[string]string)
	for name, binary := range installed {
		if slices.Contains(wanted, name) {
			out[name] = binary
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	var have []string
	for _, name := range knownRuntimes {
		if _, ok := installed[name]; ok {
			have = append(have, name)
		}
	}
	if len(have) == 0 {
		have = []string{"none"}
	}
	return nil, fmt.Errorf("--runtimes %s: none of them is installed on this node (installed: %s)", strings.Join(wanted, ","), strings.Join(have, ", "))
}
