package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/distribution/reference"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// AnnotationWarm marks a Sandbox whose create claimed a warm sandbox. Like
// the placement annotations it survives a create through the API, which
// drops status; status.warm says the same once the controller wrote it.
const AnnotationWarm = "sandbox.fast.io/warm"

// MaxWarmCount bounds one warm entry's count, and MaxWarmEntries the
// entries of one pool: warm sandboxes are real containers holding slots.
const (
	MaxWarmCount   = 1000
	MaxWarmEntries = 16
)

// WarmEntry is one kind of sandbox a pool keeps pre-started: its container,
// task and fsb init run, its main process does not yet. A create whose
// image, runtime and resources match (WarmKey) claims one, and fsb init
// starts the create's command in it.
type WarmEntry struct {
	// Image is the image the warm sandboxes run.
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	Image string `json:"image"`
	// Runtime is "runc" (the default), "crun" or "gvisor".
	//
	// +kubebuilder:validation:Enum="";runc;crun;gvisor
	// +optional
	Runtime string `json:"runtime,omitempty"`
	// Resources are the warm sandboxes' limits; a create must ask for the
	// same to claim one.
	//
	// +optional
	Resources *Resources `json:"resources,omitempty"`
	// Count is how many to keep ready across the pool's agents.
	//
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Count int32 `json:"count"`
}

// NormalizeImage turns a user's image reference into containerd's full name
// ("busybox" becomes "docker.io/library/busybox:latest").
func NormalizeImage(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("image %q: %v", ref, err)
	}
	return named.String(), nil
}

// WarmKey names the kind of a warm sandbox: what must match between a warm
// entry and a create for the create to claim one. These are the parts of a
// sandbox fixed when its container is made: the image (normalized), the
// runtime (empty is runc) and the resources (quantities by value, so
// "0.5" and "500m" match, as do "64Mi" and "67108864"). What fsb init sets when it starts the main
// process (command, args, env, working dir) and what the agent reserves at
// the claim (ports) do not count. A spec that runs without init (noInit)
// has no key: it can never be claimed warm. An image that does not parse
// has none either; validation refuses it elsewhere.
func WarmKey(spec *fsbv1.SandboxSpec) (string, bool) {
	if spec.GetNoInit() {
		return "", false
	}
	image, err := NormalizeImage(spec.GetImage())
	if err != nil {
		return "", false
	}
	rt := spec.GetRuntime()
	if rt == "" {
		rt = RuntimeRunc
	}
	res := spec.GetResources()
	h := sha256.New()
	for _, part := range []string{image, rt, canonicalQuantity(res.GetCpu(), true), canonicalQuantity(res.GetMemory(), false), strconv.FormatInt(res.GetPids(), 10)} {
		// Length-prefixed, so that no two lists of parts hash alike.
		fmt.Fprintf(h, "%d:%s;", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil)[:12]), true
}

// WarmEntryKey is WarmKey of the sandboxes a warm entry keeps.
func WarmEntryKey(e *fsbv1.WarmEntry) (string, bool) {
	return WarmKey(WarmEntrySpec(e))
}

// WarmEntrySpec is the spec a warm entry's sandboxes are made from: its
// image, runtime and resources, nothing else.
func WarmEntrySpec(e *fsbv1.WarmEntry) *fsbv1.SandboxSpec {
	return &fsbv1.SandboxSpec{Image: e.GetImage(), Runtime: e.GetRuntime(), Resources: e.GetResources()}
}

// canonicalQuantity writes a quantity as a number of millis (milli) or of
// units, so that every way of writing one value reads alike; text that is
// no quantity stays as it is.
func canonicalQuantity(v string, milli bool) string {
	if v == "" {
		return ""
	}
	q, err := quantity(v)
	if err != nil {
		return v
	}
	if milli {
		return strconv.FormatInt(q.MilliValue(), 10) + "m"
	}
	return strconv.FormatInt(q.Value(), 10)
}

// WarmEntryToProto converts a pool's warm entry for the API.
func WarmEntryToProto(e WarmEntry) *fsbv1.WarmEntry {
	out := &fsbv1.WarmEntry{Image: e.Image, Runtime: e.Runtime, Count: e.Count}
	if e.Resources != nil {
		out.Resources = &fsbv1.Resources{Cpu: e.Resources.CPU, Memory: e.Resources.Memory, Pids: e.Resources.Pids}
	}
	return out
}

// WarmEntryFromProto converts an API warm entry into a pool's.
func WarmEntryFromProto(e *fsbv1.WarmEntry) WarmEntry {
	out := WarmEntry{Image: e.GetImage(), Runtime: e.GetRuntime(), Count: e.GetCount()}
	if r := e.GetResources(); r != nil {
		out.Resources = &Resources{CPU: r.GetCpu(), Memory: r.GetMemory(), Pids: r.GetPids()}
	}
	return out
}

// ValidateWarm checks a pool's warm entries (field is their path, such as
// "spec.warm"): each must describe a sandbox a create could ask for, with a
// count in bounds, and no two may be of one kind.
func ValidateWarm(field string, entries []WarmEntry) error {
	if len(entries) > MaxWarmEntries {
		return fmt.Errorf("%s: %d entries, want at most %d", field, len(entries), MaxWarmEntries)
	}
	seen := make(map[string]int, len(entries))
	for i, e := range entries {
		at := fmt.Sprintf("%s[%d]", field, i)
		if e.Count < 0 || e.Count > MaxWarmCount {
			return fmt.Errorf("%s.count %d: want 0 to %d", at, e.Count, MaxWarmCount)
		}
		p := WarmEntryToProto(e)
		spec := WarmEntrySpec(p)
		if err := validateImage(spec.GetImage()); err != nil {
			return fmt.Errorf("%s: %w", at, err)
		}
		switch spec.GetRuntime() {
		case "", RuntimeRunc, RuntimeCrun, RuntimeGVisor:
		default:
			return fmt.Errorf("%s.runtime %s: want runc, crun or gvisor", at, brief(spec.GetRuntime()))
		}
		if err := validateResources(spec.GetResources(), spec.GetRuntime()); err != nil {
			return fmt.Errorf("%s: %w", at, err)
		}
		key, ok := WarmKey(spec)
		if !ok {
			return fmt.Errorf("%s.image %s: %s", at, brief(e.Image), msgImage)
		}
		if j, dup := seen[key]; dup {
			return fmt.Errorf("%s: the same image, runtime and resources as %s[%d]", at, field, j)
		}
		seen[key] = i
	}
	return nil
}
