package e2b

import (
	"strings"
	"testing"
)

func TestParseTemplates(t *testing.T) {
	ts, err := ParseTemplates([]byte(`
templates:
  base:
    image: localhost/fsb/e2b-base:latest
    runtime: runc
    resources: {cpu: "1", memory: 512Mi}
    pool: ""
  big:
    image: localhost/fsb/e2b-base:latest
    resources: {cpu: 2, memory: 2Gi, pids: 4096}
    pool: warm
    command: [/bin/sleep, infinity]
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ts.Names(), ","); got != "base,big" {
		t.Fatalf("names %s, want base,big", got)
	}
	spec := ts["big"].spec()
	if spec.GetImage() != DefaultImage || spec.GetPoolRef() != "warm" || spec.GetResources().GetCpu() != "2" ||
		spec.GetResources().GetMemory() != "2Gi" || spec.GetResources().GetPids() != 4096 || strings.Join(spec.GetCommand(), " ") != "/bin/sleep infinity" {
		t.Errorf("spec of big: %v", spec)
	}
	if spec := ts["base"].spec(); spec.GetRuntime() != "runc" || spec.GetResources().GetMemory() != "512Mi" {
		t.Errorf("spec of base: %v", spec)
	}
}

func TestParseTemplatesRefuses(t *testing.T) {
	for name, tc := range map[string]struct{ file, want string }{
		"empty":         {"templates: {}\n", "no template"},
		"no image":      {"templates: {base: {runtime: runc}}\n", "template base: image is required"},
		"bad runtime":   {"templates: {base: {image: a, runtime: kata}}\n", "spec.runtime"},
		"bad memory":    {"templates: {base: {image: a, resources: {memory: 1Ki}}}\n", "spec.resources.memory"},
		"bad pool":      {"templates: {base: {image: a, pool: Not_A_Pool}}\n", "template base"},
		"bad name":      {"templates: {'a b': {image: a}}\n", "label value"},
		"unknown field": {"templates: {base: {image: a, imge: b}}\n", "imge"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseTemplates([]byte(tc.file)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseTemplates: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestDefaultTemplates(t *testing.T) {
	tpl, ok := DefaultTemplates()[DefaultTemplate]
	if !ok || tpl.Image != DefaultImage {
		t.Fatalf("DefaultTemplates: %v", DefaultTemplates())
	}
	if err := tpl.validate(DefaultTemplate); err != nil {
		t.Fatal(err)
	}
}
