package v1alpha1

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// The limits a Sandbox's spec is held to. They are what the runtime
// accepts, with room to spare, and keep the OCI spec an agent sends to
// containerd far below containerd's 4 MiB message limit: a spec within them
// cannot crash it. The fast path, the agent and fsb ctl's editor check the
// same rules (ValidateSpec), and every message names the field and the limit.
const (
	// MaxImageBytes bounds spec.image, a reference such as
	// registry/repository:tag@digest.
	MaxImageBytes = 1024
	// MaxCommandEntries bounds the entries of spec.command and spec.args
	// together.
	MaxCommandEntries = 1024
	// MaxCommandBytes bounds the bytes of spec.command and spec.args
	// together.
	MaxCommandBytes = 128 << 10
	// MaxWorkingDirBytes bounds spec.workingDir, as Linux's PATH_MAX does.
	MaxWorkingDirBytes = 4096
	// MaxEnvs bounds the entries of spec.envs.
	MaxEnvs = 1024
	// MaxEnvBytes bounds the bytes of spec.envs' names and values together.
	MaxEnvBytes = 128 << 10
	// MaxPorts bounds spec.exposedPorts.
	MaxPorts = 64
	// MinMemoryBytes is the least spec.resources.memory. Measured on the
	// rig: runc 1.1.5 refuses 2 MiB (its init uses about 2.2 MB before the
	// sandbox's process starts), 4 MiB runs busybox under fsb init; crun
	// 1.8.1 starts at 2 MiB and OOM-kills below. 8 MiB leaves headroom for
	// fsb init, which also serves exec and files (about 1 MB more than
	// before it did: at 6 MiB a flood of output at start was OOM-killed
	// before it ended, 1 run in 4).
	MinMemoryBytes = 8 << 20
	// MinGVisorMemoryBytes is the least spec.resources.memory of a gVisor
	// sandbox, whose kernel (runsc's sentry) runs inside the limit:
	// measured on the rig, runsc 12 MiB fails to start the sandbox and
	// 16 MiB runs busybox; 32 MiB leaves headroom.
	MinGVisorMemoryBytes = 32 << 20
	// MaxMemoryBytes bounds spec.resources.memory.
	MaxMemoryBytes = 1 << 40
	// MaxCPUCores bounds spec.resources.cpu, the same at the fast path, the
	// agent and the editor, so whether a spec is valid never depends on
	// where it is placed. A quota past a node's cores only means the
	// sandbox is never throttled there.
	MaxCPUCores = 256
	// MaxPids bounds spec.resources.pids: the kernel's PID_MAX_LIMIT on
	// 64-bit machines, the most pids.max accepts.
	MaxPids = 1 << 22
	// MinPids is the least spec.resources.pids other than 0: the limit
	// counts threads, and fsb init, a Go program, runs several before the
	// sandbox's first process (8 was seen to fail a fork under load).
	MinPids = 16
	// MaxLabels bounds a sandbox's labels; each key and value is held to
	// Kubernetes' rules (a qualified name, a 63-character value).
	MaxLabels = 64
)

// Runtimes a spec may name; empty means runc.
const (
	RuntimeRunc   = "runc"
	RuntimeCrun   = "crun"
	RuntimeGVisor = "gvisor"
)

// envName is what POSIX shells accept as a variable name.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidateSpec checks a sandbox spec against the rules and limits above.
// The error names the field and what it accepts.
func ValidateSpec(spec *fsbv1.SandboxSpec) error {
	if spec == nil {
		return errors.New("spec is required")
	}
	if err := validateImage(spec.GetImage()); err != nil {
		return err
	}
	switch spec.GetRuntime() {
	case "", RuntimeRunc, RuntimeCrun, RuntimeGVisor:
	default:
		return fmt.Errorf("spec.runtime %s: want runc, crun or gvisor", brief(spec.GetRuntime()))
	}
	if err := validateCommand(spec.GetCommand(), spec.GetArgs()); err != nil {
		return err
	}
	if err := validateWorkingDir(spec.GetWorkingDir()); err != nil {
		return err
	}
	if err := validateEnvs(spec.GetEnvs()); err != nil {
		return err
	}
	if err := validatePorts(spec.GetExposedPorts()); err != nil {
		return err
	}
	if err := validateResources(spec.GetResources(), spec.GetRuntime()); err != nil {
		return err
	}
	if p := spec.GetPoolRef(); p != "" {
		if errs := validation.IsDNS1123Subdomain(p); len(errs) > 0 {
			return fmt.Errorf("spec.poolRef %s: %s", brief(p), strings.Join(errs, "; "))
		}
	}
	if err := ValidateConsistencyMode("spec.consistencyMode", spec.GetConsistencyMode()); err != nil {
		return err
	}
	if err := ValidateFailurePolicy("spec.failurePolicy", spec.GetFailurePolicy()); err != nil {
		return err
	}
	if n := spec.GetRecoveryTimeoutSeconds(); n < 0 {
		return fmt.Errorf("spec.recoveryTimeoutSeconds %d: want 0 (the default, %d) or more", n, DefaultRecoveryTimeoutSeconds)
	}
	for _, f := range []struct {
		field string
		t     *timestamppb.Timestamp
	}{{"spec.resetRevision", spec.GetResetRevision()}, {"spec.expireTime", spec.GetExpireTime()}} {
		if f.t != nil {
			if err := f.t.CheckValid(); err != nil {
				return fmt.Errorf("%s: %w", f.field, err)
			}
		}
	}
	return nil
}

// DefaultRecoveryTimeoutSeconds is what the controller applies when a
// spec's recoveryTimeoutSeconds is 0; named here for the messages.
const DefaultRecoveryTimeoutSeconds = 300

func validateImage(image string) error {
	switch {
	case image == "":
		return errors.New("spec.image is required, such as localhost/fsb/busybox:latest")
	case len(image) > MaxImageBytes:
		return fmt.Errorf("spec.image: %d bytes, at most %d", len(image), MaxImageBytes)
	}
	if _, err := reference.ParseDockerRef(image); err != nil {
		return fmt.Errorf("spec.image %s: %v", brief(image), err)
	}
	return nil
}

func validateCommand(command, args []string) error {
	if n := len(command) + len(args); n > MaxCommandEntries {
		return fmt.Errorf("spec.command and spec.args: %d entries, at most %d", n, MaxCommandEntries)
	}
	total := 0
	for _, f := range []struct {
		field string
		list  []string
	}{{"spec.command", command}, {"spec.args", args}} {
		for i, s := range f.list {
			total += len(s)
			if strings.IndexByte(s, 0) >= 0 {
				return fmt.Errorf("%s[%d]: holds a NUL byte, which no process argument can", f.field, i)
			}
		}
	}
	if total > MaxCommandBytes {
		return fmt.Errorf("spec.command and spec.args: %d bytes, at most %d (%s)", total, MaxCommandBytes, kib(MaxCommandBytes))
	}
	return nil
}

func validateWorkingDir(wd string) error {
	switch {
	case wd == "":
		return nil
	case len(wd) > MaxWorkingDirBytes:
		return fmt.Errorf("spec.workingDir: %d bytes, at most %d", len(wd), MaxWorkingDirBytes)
	case strings.IndexByte(wd, 0) >= 0:
		return errors.New("spec.workingDir: holds a NUL byte, which no path can")
	case !path.IsAbs(wd):
		return fmt.Errorf("spec.workingDir %s: want an absolute path", brief(wd))
	}
	return nil
}

func validateEnvs(envs []*fsbv1.EnvVar) error {
	if len(envs) > MaxEnvs {
		return fmt.Errorf("spec.envs: %d entries, at most %d", len(envs), MaxEnvs)
	}
	total := 0
	for i, e := range envs {
		total += len(e.GetName()) + len(e.GetValue())
		if !envName.MatchString(e.GetName()) {
			return fmt.Errorf("spec.envs: %s is not a variable name: want letters, digits and '_', not starting with a digit", brief(e.GetName()))
		}
		if strings.IndexByte(e.GetValue(), 0) >= 0 {
			return fmt.Errorf("spec.envs[%d] (%s): the value holds a NUL byte, which no environment can", i, e.GetName())
		}
	}
	if total > MaxEnvBytes {
		return fmt.Errorf("spec.envs: %d bytes of names and values, at most %d (%s)", total, MaxEnvBytes, kib(MaxEnvBytes))
	}
	return nil
}

func validatePorts(ports []int32) error {
	if len(ports) > MaxPorts {
		return fmt.Errorf("spec.exposedPorts: %d ports, at most %d", len(ports), MaxPorts)
	}
	seen := make(map[int32]bool, len(ports))
	for _, p := range ports {
		if p < 1 || p > 65535 {
			return fmt.Errorf("spec.exposedPorts: %d is not a port (1-65535)", p)
		}
		if seen[p] {
			return fmt.Errorf("spec.exposedPorts: %d is listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

func validateResources(res *fsbv1.Resources, rt string) error {
	if res == nil {
		return nil
	}
	if v := res.GetCpu(); v != "" {
		q, err := quantity(v)
		switch {
		case err != nil || q.Sign() <= 0:
			return fmt.Errorf("spec.resources.cpu %s: want a positive quantity such as 500m or 2", brief(v))
		case q.Cmp(*resource.NewQuantity(MaxCPUCores, resource.DecimalSI)) > 0:
			return fmt.Errorf("spec.resources.cpu %s: at most %d cores", brief(v), MaxCPUCores)
		}
	}
	if v := res.GetMemory(); v != "" {
		q, err := quantity(v)
		switch {
		case err != nil || q.Sign() <= 0:
			return fmt.Errorf("spec.resources.memory %s: want a positive quantity such as 256Mi", brief(v))
		case q.Cmp(*resource.NewQuantity(MaxMemoryBytes, resource.BinarySI)) > 0:
			return fmt.Errorf("spec.resources.memory %s: at most %s", brief(v), resource.NewQuantity(MaxMemoryBytes, resource.BinarySI))
		case rt == RuntimeGVisor && q.Cmp(*resource.NewQuantity(MinGVisorMemoryBytes, resource.BinarySI)) < 0:
			return fmt.Errorf("spec.resources.memory %s: at least %s with runtime gvisor, whose kernel runs inside the limit", brief(v), resource.NewQuantity(MinGVisorMemoryBytes, resource.BinarySI))
		case q.Cmp(*resource.NewQuantity(MinMemoryBytes, resource.BinarySI)) < 0:
			return fmt.Errorf("spec.resources.memory %s: at least %s, what the runtime needs to start a sandbox", brief(v), resource.NewQuantity(MinMemoryBytes, resource.BinarySI))
		}
	}
	if p := res.GetPids(); p < 0 || p > MaxPids || (p > 0 && p < MinPids) {
		return fmt.Errorf("spec.resources.pids %d: want 0 (the agent's default) or %d to %d (its threads count, fsb init's too)", p, MinPids, MaxPids)
	}
	return nil
}

// quantity parses a Kubernetes quantity, refusing text too long to be one
// before the parser sees it.
func quantity(v string) (resource.Quantity, error) {
	if len(v) > 64 {
		return resource.Quantity{}, errors.New("too long")
	}
	return resource.ParseQuantity(v)
}

// ValidateConsistencyMode refuses a value outside the enum: JSON may carry
// any number.
func ValidateConsistencyMode(field string, m fsbv1.ConsistencyMode) error {
	switch m {
	case fsbv1.ConsistencyMode_CONSISTENCY_MODE_UNSPECIFIED, fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST, fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG:
		return nil
	}
	return fmt.Errorf("%s %d: want CONSISTENCY_MODE_FAST or CONSISTENCY_MODE_STRONG (unset for the controller's default)", field, m)
}

// ValidateFailurePolicy refuses a value outside the enum: JSON may carry
// any number.
func ValidateFailurePolicy(field string, p fsbv1.FailurePolicy) error {
	switch p {
	case fsbv1.FailurePolicy_FAILURE_POLICY_UNSPECIFIED, fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL, fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE:
		return nil
	}
	return fmt.Errorf("%s %d: want FAILURE_POLICY_MANUAL or FAILURE_POLICY_AUTO_RECREATE", field, p)
}

// ValidateExpireTime accepts no time, or a valid one after now.
func ValidateExpireTime(field string, t *timestamppb.Timestamp, now time.Time) error {
	if t == nil {
		return nil
	}
	if err := t.CheckValid(); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if !t.AsTime().After(now) {
		return fmt.Errorf("%s %s is not in the future (now %s)", field,
			t.AsTime().UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// ValidateLabels checks a sandbox's labels as Kubernetes checks an
// object's, and their number.
func ValidateLabels(ls map[string]string) error {
	if len(ls) > MaxLabels {
		return fmt.Errorf("labels: %d entries, at most %d", len(ls), MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(ls)) {
		v := ls[k]
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("labels: key %s: %s", brief(k), strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("labels: %s value %s: %s", k, brief(v), strings.Join(errs, "; "))
		}
	}
	return nil
}

// ValidateName checks a sandbox's name: required, a DNS-1123 subdomain (it
// names a directory of the log dir, so it can hold no '/').
func ValidateName(name string) error {
	if name == "" {
		return errors.New("name is required")
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("name %s: %s", brief(name), strings.Join(errs, "; "))
	}
	return nil
}

// ValidateNamespace checks a namespace: a DNS-1123 label.
func ValidateNamespace(namespace string) error {
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return fmt.Errorf("namespace %s: %s", brief(namespace), strings.Join(errs, "; "))
	}
	return nil
}

// ValidateObjectName checks a sandbox's namespace and name.
func ValidateObjectName(namespace, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	return ValidateNamespace(namespace)
}

// ValidateCreate checks a CreateSandboxRequest as the fast path takes it,
// with namespace its namespace after the default applies, at time now.
func ValidateCreate(namespace string, req *fsbv1.CreateSandboxRequest, now time.Time) error {
	if err := ValidateObjectName(namespace, req.GetName()); err != nil {
		return err
	}
	if err := ValidateLabels(req.GetLabels()); err != nil {
		return err
	}
	if err := ValidateSpec(req.GetSpec()); err != nil {
		return err
	}
	return ValidateExpireTime("spec.expireTime", req.GetSpec().GetExpireTime(), now)
}

// ValidateUpdate checks an UpdateSandboxRequest, with namespace its
// namespace after the default applies, at time now.
func ValidateUpdate(namespace string, req *fsbv1.UpdateSandboxRequest, now time.Time) error {
	if err := ValidateObjectName(namespace, req.GetName()); err != nil {
		return err
	}
	if err := ValidateLabels(req.GetLabels()); err != nil {
		return err
	}
	if err := ValidateFailurePolicy("failure_policy", req.GetFailurePolicy()); err != nil {
		return err
	}
	if req.GetExpireTime() != nil && req.GetClearExpireTime() {
		return errors.New("expire_time and clear_expire_time: set one, not both")
	}
	if err := ValidateExpireTime("expire_time", req.GetExpireTime(), now); err != nil {
		return err
	}
	if req.RecoveryTimeoutSeconds != nil && req.GetRecoveryTimeoutSeconds() < 0 {
		return fmt.Errorf("recovery_timeout_seconds %d: want 0 (the default, %d) or more", req.GetRecoveryTimeoutSeconds(), DefaultRecoveryTimeoutSeconds)
	}
	return nil
}

// brief quotes s for a message, cut short: a hostile value may be
// megabytes long.
func brief(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q… (%d bytes)", s[:max], len(s))
	}
	return fmt.Sprintf("%q", s)
}

func kib(n int) string { return fmt.Sprintf("%d KiB", n>>10) }
