package agent

import (
	"fmt"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// sandboxIDPattern keeps container IDs, labels and file names simple.
var sandboxIDPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$`)

// validateCreate checks a create request once, at the edge, and says what
// to fix.
func validateCreate(req *fsbv1.AgentServiceCreateSandboxRequest) error {
	if err := validateID(req.GetSandboxId(), req.GetRevision()); err != nil {
		return err
	}
	if req.GetRevision() < 1 {
		return fmt.Errorf("revision %d: want 1 or more", req.GetRevision())
	}
	if err := validateObjectName(req.GetNamespace(), req.GetName()); err != nil {
		return err
	}
	for k, v := range req.GetLabels() {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("label key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("label %s value %q: %s", k, v, strings.Join(errs, "; "))
		}
	}
	return ValidateSpec(req.GetSpec())
}

// validateObjectName checks a Sandbox object's namespace (a DNS-1123
// label) and name (a DNS-1123 subdomain). Both name directories of the log
// dir, and neither can then hold '/' or be "." or "..".
func validateObjectName(namespace, name string) error {
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return fmt.Errorf("namespace %q: %s", namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("name %q: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

func validateID(id string, revision int64) error {
	if !sandboxIDPattern.MatchString(id) {
		return fmt.Errorf("sandbox_id %q: want 1-52 characters of a-z, 0-9 and '-', starting and ending with a letter or digit", id)
	}
	if revision < 0 {
		return fmt.Errorf("revision %d: want 0 (every revision) or more", revision)
	}
	return nil
}

// ValidateSpec checks the fields an agent acts on.
func ValidateSpec(spec *fsbv1.SandboxSpec) error {
	if spec == nil {
		return fmt.Errorf("spec is required")
	}
	if spec.GetImage() == "" {
		return fmt.Errorf("spec.image is required, such as localhost/fsb/busybox:latest")
	}
	if _, err := runtime.NormalizeImage(spec.GetImage()); err != nil {
		return err
	}
	switch spec.GetRuntime() {
	case "", runtime.RuntimeRunc, runtime.RuntimeCrun, "gvisor":
	default:
		return fmt.Errorf("spec.runtime %q: want runc, crun or gvisor", spec.GetRuntime())
	}
	seen := make(map[int32]bool)
	for _, p := range spec.GetExposedPorts() {
		if p < 1 || p > 65535 {
			return fmt.Errorf("spec.exposedPorts: %d is not a port (1-65535)", p)
		}
		if seen[p] {
			return fmt.Errorf("spec.exposedPorts: %d is listed twice", p)
		}
		seen[p] = true
	}
	for _, e := range spec.GetEnvs() {
		if e.GetName() == "" || strings.ContainsAny(e.GetName(), "=\x00") {
			return fmt.Errorf("spec.envs: %q is not a variable name", e.GetName())
		}
	}
	if res := spec.GetResources(); res != nil {
		for field, v := range map[string]string{"cpu": res.GetCpu(), "memory": res.GetMemory()} {
			if v == "" {
				continue
			}
			q, err := resource.ParseQuantity(v)
			if err != nil || q.Sign() <= 0 {
				return fmt.Errorf("spec.resources.%s %q: want a positive quantity such as 500m or 256Mi", field, v)
			}
		}
		if res.GetPids() < 0 {
			return fmt.Errorf("spec.resources.pids %d: want 0 (the default) or more", res.GetPids())
		}
	}
	if wd := spec.GetWorkingDir(); wd != "" && !strings.HasPrefix(wd, "/") {
		return fmt.Errorf("spec.workingDir %q: want an absolute path", wd)
	}
	return nil
}
