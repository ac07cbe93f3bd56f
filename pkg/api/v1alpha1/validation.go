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
	"unicode/utf8"

	"github.com/distribution/reference"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// The limits a Sandbox's spec is held to. They are what the runtime
// accepts, with room to spare, and keep the OCI spec an agent sends to
// containerd far below containerd's 4 MiB message limit: a spec within them
// cannot crash it. This file is the one place the rules of a valid Sandbox
// live: the fast path, the agent and fsb ctl's editor check them through
// ValidateSpec, objects of the Kubernetes API through ValidateSandbox, and
// the CRD's schema holds the same ones through the markers on the types
// (TestSchemaAgreesWithGo runs one table of cases through both). Every
// message names the field and the limit; where the schema needs a CEL rule,
// its message is one of the msg constants below, word for word.
//
// Lengths summed over many strings count characters (Unicode code points),
// as the schema's maxLength and CEL's size() do, so that both sides draw the
// line at the same place; a single path counts bytes, as the kernel does.
const (
	// MaxImageBytes bounds spec.image, a reference such as
	// registry/repository:tag@digest.
	MaxImageBytes = 1024
	// MaxCommandEntries bounds the entries of spec.command and spec.args
	// together.
	MaxCommandEntries = 1024
	// MaxCommandChars bounds the characters of spec.command and spec.args
	// together (at most 4 bytes each in UTF-8: 512 KiB).
	MaxCommandChars = 128 << 10
	// MaxWorkingDirBytes bounds spec.workingDir, as Linux's PATH_MAX does.
	MaxWorkingDirBytes = 4096
	// MaxEnvs bounds the entries of spec.envs.
	MaxEnvs = 1024
	// MaxEnvChars bounds the characters of spec.envs' names and values
	// together.
	MaxEnvChars = 128 << 10
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

// Runtime types a SandboxPool may name; empty means container.
const (
	RuntimeTypeContainer = "container"
	RuntimeTypeGVisor    = "gvisor"
)

// The messages of the rules the CRD's schema holds as CEL
// (x-kubernetes-validations on the types): Go's errors end with the same
// words, so a user reads one message whichever side refused.
const (
	msgImage          = "want an image reference such as alpine:latest: a repository path of at most 255 characters (library/ added to a name without one), a sha256, sha384 or sha512 digest, not a bare 64-character hex ID"
	msgCommandEntries = "spec.command and spec.args: at most 1024 entries together"
	msgCommandChars   = "spec.command and spec.args: at most 131072 characters together (128 KiB)"
	msgEnvChars       = "spec.envs: at most 131072 characters of names and values together (128 KiB)"
	msgCPU            = "want a positive quantity such as 500m or 2, at most 256 cores"
	msgMemory         = "want a positive quantity such as 256Mi, at least 8Mi and at most 1Ti"
	msgGVisorMemory   = "at least 32Mi with runtime gvisor, whose kernel runs inside the limit"
	msgPids           = "want 0 (the agent's default) or 16 to 4194304 (its threads count, fsb init's too)"
	msgWorkingDir     = "at most 4096 bytes"
	msgPoolMinMax     = "poolMin must be at most poolMax"
	msgBufferMinMax   = "bufferMin must be at most bufferMax"
	msgBufferPoolMax  = "bufferMin must be at most poolMax: a pool cannot keep more idle agents than it may have pods"
	msgPoolName       = "a SandboxPool's name must be a DNS-1123 label: at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit (it becomes a label value and its agents' --pool)"
)

// celMessages are the messages above, for the test that finds each CEL
// rule's message of the CRDs among them.
var celMessages = []string{
	msgImage, msgCommandEntries, msgCommandChars, msgEnvChars, msgCPU, msgMemory, msgGVisorMemory,
	msgPids, msgWorkingDir, msgPoolMinMax, msgBufferMinMax, msgBufferPoolMax, msgPoolName,
}

// ValidatePoolName checks a SandboxPool's name, as a Sandbox's poolRef
// and an agent's --pool name it.
func ValidatePoolName(name string) error {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Errorf("%q: %s", name, msgPoolName)
	}
	return nil
}

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
		return fmt.Errorf("spec.image %s: %v: %s", brief(image), err, msgImage)
	}
	return nil
}

func validateCommand(command, args []string) error {
	if n := len(command) + len(args); n > MaxCommandEntries {
		return fmt.Errorf("%s (%d)", msgCommandEntries, n)
	}
	total := 0
	for _, f := range []struct {
		field string
		list  []string
	}{{"spec.command", command}, {"spec.args", args}} {
		for i, s := range f.list {
			total += utf8.RuneCountInString(s)
			if strings.IndexByte(s, 0) >= 0 {
				return fmt.Errorf("%s[%d]: holds a NUL byte, which no process argument can", f.field, i)
			}
		}
	}
	if total > MaxCommandChars {
		return fmt.Errorf("%s (%d)", msgCommandChars, total)
	}
	return nil
}

func validateWorkingDir(wd string) error {
	switch {
	case wd == "":
		return nil
	case len(wd) > MaxWorkingDirBytes:
		return fmt.Errorf("spec.workingDir: %d bytes: %s", len(wd), msgWorkingDir)
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
		total += utf8.RuneCountInString(e.GetName()) + utf8.RuneCountInString(e.GetValue())
		if !envName.MatchString(e.GetName()) {
			return fmt.Errorf("spec.envs: %s is not a variable name: want letters, digits and '_', not starting with a digit", brief(e.GetName()))
		}
		if strings.IndexByte(e.GetValue(), 0) >= 0 {
			return fmt.Errorf("spec.envs[%d] (%s): the value holds a NUL byte, which no environment can", i, e.GetName())
		}
	}
	if total > MaxEnvChars {
		return fmt.Errorf("%s (%d)", msgEnvChars, total)
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
		case err != nil || q.Sign() <= 0 || q.Cmp(*resource.NewQuantity(MaxCPUCores, resource.DecimalSI)) > 0:
			return fmt.Errorf("spec.resources.cpu %s: %s", brief(v), msgCPU)
		}
	}
	if v := res.GetMemory(); v != "" {
		q, err := quantity(v)
		switch {
		case err != nil || q.Sign() <= 0 || q.Cmp(*resource.NewQuantity(MaxMemoryBytes, resource.BinarySI)) > 0 ||
			q.Cmp(*resource.NewQuantity(MinMemoryBytes, resource.BinarySI)) < 0:
			return fmt.Errorf("spec.resources.memory %s: %s", brief(v), msgMemory)
		case rt == RuntimeGVisor && q.Cmp(*resource.NewQuantity(MinGVisorMemoryBytes, resource.BinarySI)) < 0:
			return fmt.Errorf("spec.resources.memory %s: %s", brief(v), msgGVisorMemory)
		}
	}
	if p := res.GetPids(); p < 0 || p > MaxPids || (p > 0 && p < MinPids) {
		return fmt.Errorf("spec.resources.pids %d: %s", p, msgPids)
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

// ValidateSandbox checks a Sandbox object as the Kubernetes API takes it
// (kubectl, a YAML file): its name and labels, the spellings of its enums,
// which the wire form cannot carry wrong, and its spec by ValidateSpec. An
// object it accepts, the CRD's schema accepts, and the other way round.
func ValidateSandbox(sb *Sandbox) error {
	if err := ValidateObjectName(sb.Namespace, sb.Name); err != nil {
		return err
	}
	if err := ValidateLabels(sb.Labels); err != nil {
		return err
	}
	switch sb.Spec.ConsistencyMode {
	case "", ConsistencyFast, ConsistencyStrong:
	default:
		return fmt.Errorf("spec.consistencyMode %s: want %s or %s", brief(string(sb.Spec.ConsistencyMode)), ConsistencyFast, ConsistencyStrong)
	}
	switch sb.Spec.FailurePolicy {
	case "", FailurePolicyManual, FailurePolicyAutoRecreate:
	default:
		return fmt.Errorf("spec.failurePolicy %s: want %s or %s", brief(string(sb.Spec.FailurePolicy)), FailurePolicyManual, FailurePolicyAutoRecreate)
	}
	return ValidateSpec(SpecToProto(sb.Spec))
}

// ValidatePool checks a SandboxPool: its name, its capacity's bounds and
// their order, its agents' capacity and its runtime type: the rules of the
// CRD's schema (types.go), in the same words.
func ValidatePool(p *SandboxPool) error {
	if err := ValidateObjectName(p.Namespace, p.Name); err != nil {
		return err
	}
	if err := ValidatePoolName(p.Name); err != nil {
		return fmt.Errorf("metadata.name %w", err)
	}
	if err := validateCapacity(p.Spec.Capacity); err != nil {
		return err
	}
	// nil is the field left out: the agent's own capacity.
	if n := p.Spec.MaxSandboxesPerPod; n != nil && *n < 1 {
		return fmt.Errorf("spec.maxSandboxesPerPod %d: want 1 or more", *n)
	}
	switch p.Spec.RuntimeType {
	case "", RuntimeTypeContainer, RuntimeTypeGVisor:
	default:
		return fmt.Errorf("spec.runtimeType %s: want %s or %s", brief(p.Spec.RuntimeType), RuntimeTypeContainer, RuntimeTypeGVisor)
	}
	return ValidateWarm("spec.warm", p.Spec.Warm)
}

// validateCapacity checks a pool's capacity; nil (left out: the pool
// controller keeps no pods for the pool) is valid.
func validateCapacity(c *PoolCapacity) error {
	if c == nil {
		return nil
	}
	for _, f := range []struct {
		field    string
		v, least int32
	}{
		{"spec.capacity.poolMin", c.PoolMin, 0}, {"spec.capacity.poolMax", c.PoolMax, 1},
		{"spec.capacity.bufferMin", c.BufferMin, 0}, {"spec.capacity.bufferMax", c.BufferMax, 0},
	} {
		if f.v < f.least {
			return fmt.Errorf("%s %d: want %d or more", f.field, f.v, f.least)
		}
	}
	if c.PoolMin > c.PoolMax {
		return fmt.Errorf("spec.capacity.poolMin %d, poolMax %d: %s", c.PoolMin, c.PoolMax, msgPoolMinMax)
	}
	if c.BufferMin > c.BufferMax {
		return fmt.Errorf("spec.capacity.bufferMin %d, bufferMax %d: %s", c.BufferMin, c.BufferMax, msgBufferMinMax)
	}
	if c.BufferMin > c.PoolMax {
		return fmt.Errorf("spec.capacity.bufferMin %d, poolMax %d: %s", c.BufferMin, c.PoolMax, msgBufferPoolMax)
	}
	return nil
}
