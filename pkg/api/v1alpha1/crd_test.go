package v1alpha1

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"sigs.k8s.io/yaml"
)

// crdSchema reads the openAPIV3Schema of a generated CRD in deploy/crds.
func crdSchema(t *testing.T, file string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "crds", file))
	if err != nil {
		t.Fatalf("read the CRD (make generate writes it): %v", err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if len(crd.Spec.Versions) != 1 {
		t.Fatalf("%s: %d versions, want 1", file, len(crd.Spec.Versions))
	}
	return crd.Spec.Versions[0].Schema.OpenAPIV3Schema
}

// walk calls fn with the path and node of every schema node under s.
func walk(path string, s map[string]any, fn func(string, map[string]any)) {
	fn(path, s)
	if props, ok := s["properties"].(map[string]any); ok {
		for name, p := range props {
			if m, ok := p.(map[string]any); ok {
				walk(path+"."+name, m, fn)
			}
		}
	}
	if items, ok := s["items"].(map[string]any); ok {
		walk(path+"[]", items, fn)
	}
}

// node returns the schema node at a dotted path such as
// ".spec.resources.cpu".
func node(t *testing.T, schema map[string]any, path string) map[string]any {
	t.Helper()
	var found map[string]any
	walk("", schema, func(p string, n map[string]any) {
		if p == path {
			found = n
		}
	})
	if found == nil {
		t.Fatalf("the CRD has no schema at %s", path)
	}
	return found
}

// TestCRDRulesAreGos: the schema's CEL rules say Go's messages word for
// word, and its patterns are the regular expressions Go checks with, so a
// change on one side that the other lacks fails here before it reaches an
// API server.
func TestCRDRulesAreGos(t *testing.T) {
	seen := map[string]bool{}
	for _, file := range []string{"sandbox.fast.io_sandboxes.yaml", "sandbox.fast.io_sandboxpools.yaml"} {
		walk("", crdSchema(t, file), func(path string, n map[string]any) {
			rules, _ := n["x-kubernetes-validations"].([]any)
			for _, r := range rules {
				msg, _ := r.(map[string]any)["message"].(string)
				if !slices.Contains(celMessages, msg) {
					t.Errorf("%s%s: CEL message %q is none of Go's (celMessages)", file, path, msg)
				}
				seen[msg] = true
			}
		})
	}
	for _, m := range celMessages {
		if !seen[m] {
			t.Errorf("Go's message %q is no CEL rule's of the CRDs", m)
		}
	}

	sb := crdSchema(t, "sandbox.fast.io_sandboxes.yaml")
	for _, tc := range []struct{ path, key, want string }{
		{".spec.image", "pattern", reference.ReferenceRegexp.String()},
		{".spec.envs[].name", "pattern", envName.String()},
		{".spec.image", "maxLength", jsonNumber(MaxImageBytes)},
		{".spec.workingDir", "maxLength", jsonNumber(MaxWorkingDirBytes)},
		{".spec.exposedPorts", "maxItems", jsonNumber(MaxPorts)},
		{".spec.envs", "maxItems", jsonNumber(MaxEnvs)},
		{".spec.command", "maxItems", jsonNumber(MaxCommandEntries)},
		{".spec.args", "maxItems", jsonNumber(MaxCommandEntries)},
		{".spec.command[]", "maxLength", jsonNumber(MaxCommandChars)},
		{".spec.envs[].value", "maxLength", jsonNumber(MaxEnvChars)},
		{".spec.exposedPorts", "x-kubernetes-list-type", "set"},
	} {
		got := node(t, sb, tc.path)[tc.key]
		if s, ok := got.(string); !ok && got != nil {
			b, _ := json.Marshal(got)
			got = string(b)
		} else if ok {
			got = s
		}
		if got != tc.want {
			t.Errorf("schema %s %s = %v, want %v (Go's)", tc.path, tc.key, got, tc.want)
		}
	}
}

func jsonNumber(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestResourcesDecodeIntOrString: cpu and memory written as integers, as
// the schema allows, decode to their digits; a fraction must be a string.
func TestResourcesDecodeIntOrString(t *testing.T) {
	for _, tc := range []struct{ in, cpu, memory, err string }{
		{`{"cpu":"500m","memory":"256Mi","pids":64}`, "500m", "256Mi", ""},
		{`{"cpu":2,"memory":1073741824}`, "2", "1073741824", ""},
		{`{}`, "", "", ""},
		{`{"cpu":0.5}`, "", "", "not an integer"},
		{`{"memory":true}`, "", "", "want a quantity"},
	} {
		var r Resources
		err := json.Unmarshal([]byte(tc.in), &r)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want an error saying %q", tc.in, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.in, err)
		case tc.err == "" && (r.CPU != tc.cpu || r.Memory != tc.memory):
			t.Errorf("%s: cpu %q memory %q, want %q %q", tc.in, r.CPU, r.Memory, tc.cpu, tc.memory)
		}
	}
}
