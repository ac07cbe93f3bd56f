package e2b

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// DefaultTemplate is the template a create that names none gets: the
// SDK's own default.
const DefaultTemplate = "base"

// DefaultImage is the image of the default template when no templates file
// is given: the rig's build of E2B's base template (bash, busybox, the
// user `user`).
const DefaultImage = "localhost/fsb/e2b-base:latest"

// Template is what a template name stands for: the sandbox a create of it
// makes.
type Template struct {
	// Image is the image reference.
	Image string `json:"image"`
	// Runtime is the OCI runtime: runc (the default), crun or gvisor.
	Runtime string `json:"runtime,omitempty"`
	// Resources bound the sandbox, as in a Sandbox's spec.
	Resources v1alpha1.Resources `json:"resources,omitempty"`
	// Pool is the SandboxPool the sandbox is placed in; creates that
	// match one of its warm entries claim a warm sandbox.
	Pool string `json:"pool,omitempty"`
	// Command replaces the image's command as the sandbox's main process,
	// which must run until the sandbox is killed (an E2B sandbox is a
	// place to run commands in): for images whose own command ends at
	// once. Empty: the image's.
	Command []string `json:"command,omitempty"`
}

// Templates maps template names to templates.
type Templates map[string]Template

// DefaultTemplates is the templates of a server started without a
// templates file: `base` on DefaultImage.
func DefaultTemplates() Templates {
	return Templates{DefaultTemplate: {Image: DefaultImage}}
}

// ReadTemplates reads a templates file:
//
//	templates:
//	  base:
//	    image: localhost/fsb/e2b-base:latest
//	    runtime: runc
//	    resources: {cpu: "1", memory: 512Mi}
//	    pool: ""
//	    command: [/bin/sleep, infinity]   # optional: the image's otherwise
//
// Every template is checked as a sandbox's spec would be, so that a bad one
// fails the start, not a user's create.
func ReadTemplates(path string) (Templates, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("E2B templates: %w", err)
	}
	ts, err := ParseTemplates(b)
	if err != nil {
		return nil, fmt.Errorf("E2B templates file %s: %w", path, err)
	}
	return ts, nil
}

// ParseTemplates parses ReadTemplates's format.
func ParseTemplates(b []byte) (Templates, error) {
	var file struct {
		Templates Templates `json:"templates"`
	}
	if err := yaml.UnmarshalStrict(b, &file); err != nil {
		return nil, err
	}
	if len(file.Templates) == 0 {
		return nil, fmt.Errorf("no template under `templates:`")
	}
	for _, name := range slices.Sorted(maps.Keys(file.Templates)) {
		if err := file.Templates[name].validate(name); err != nil {
			return nil, err
		}
	}
	return file.Templates, nil
}

// validate checks the template of the given name.
func (t Template) validate(name string) error {
	// The name is kept in a label of every sandbox made from it.
	if errs := validation.IsValidLabelValue(name); name == "" || len(errs) > 0 {
		return fmt.Errorf("template %q: the name must be a Kubernetes label value (letters, digits, '-', '_', '.', at most 63): %s", name, strings.Join(errs, "; "))
	}
	if t.Image == "" {
		return fmt.Errorf("template %s: image is required", name)
	}
	if err := v1alpha1.ValidateSpec(t.spec()); err != nil {
		return fmt.Errorf("template %s: %w", name, err)
	}
	if t.Pool != "" {
		if err := v1alpha1.ValidatePoolName(t.Pool); err != nil {
			return fmt.Errorf("template %s: %w", name, err)
		}
	}
	return nil
}

// spec is the sandbox spec a create of the template starts from.
func (t Template) spec() *fsbv1.SandboxSpec {
	spec := &fsbv1.SandboxSpec{Image: t.Image, Runtime: t.Runtime, PoolRef: t.Pool, Command: t.Command}
	if t.Resources != (v1alpha1.Resources{}) {
		spec.Resources = &fsbv1.Resources{Cpu: t.Resources.CPU, Memory: t.Resources.Memory, Pids: t.Resources.Pids}
	}
	return spec
}

// Names returns the template names, sorted.
func (ts Templates) Names() []string {
	return slices.Sorted(maps.Keys(ts))
}
