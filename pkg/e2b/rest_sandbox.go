package e2b

import (
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// What E2B keeps of a sandbox, Fast Sandbox keeps in the sandbox itself,
// so that any controller (a new leader, a restarted one) serves it with no
// state of its own:
//
//   - the template and the metadata in labels (the FastPathService
//     carries no annotations); a sandbox without the template label was
//     not made through E2B's API and the server does not show it;
//   - the envVars in spec.envs, which every process inherits;
//   - the timeout in spec.expireTime, which the controller enforces by
//     deleting the sandbox.
//
// The access token is not kept at all: it is derived from the sandbox's
// namespace and name with the server's secret (Config.TokenSecret), so
// that any controller holding the secret checks it, and connect and get
// can return it (as E2B's do), while reading a sandbox (a Kubernetes
// user's get, which does not allow exec) does not give it away.
const (
	LabelTemplate = "e2b.sandbox.fast.io/template"
	// LabelMetadataPrefix starts the label of each metadata entry:
	// LabelMetadataPrefix + encodeLabel(key) = encodeLabel(value).
	LabelMetadataPrefix = "metadata.e2b.sandbox.fast.io/"
)

// maxMetadata is how many metadata entries fit beside the label of our
// own under the API's bound on labels.
const maxMetadata = v1alpha1.MaxLabels - 1

// encodedPrefix marks a label text that encodes a string a label cannot
// hold as it is (a space, '@', a leading '-', ...): the prefix and the
// string in base32hex, lower case, unpadded, which is only letters and
// digits. A string that starts with the prefix itself is encoded too, so
// decoding is unambiguous.
const encodedPrefix = "x."

var labelBase32 = base32.HexEncoding.WithPadding(base32.NoPadding)

// encodeLabel returns s as a label's value or a label key's name: s itself
// when a label can hold it, or its encoding.
func encodeLabel(s string) string {
	if len(validation.IsValidLabelValue(s)) == 0 && !strings.HasPrefix(s, encodedPrefix) {
		return s
	}
	return encodedPrefix + strings.ToLower(labelBase32.EncodeToString([]byte(s)))
}

// decodeLabel inverts encodeLabel.
func decodeLabel(s string) (string, error) {
	rest, ok := strings.CutPrefix(s, encodedPrefix)
	if !ok {
		return s, nil
	}
	b, err := labelBase32.DecodeString(strings.ToUpper(rest))
	if err != nil {
		return "", fmt.Errorf("label text %q: %w", s, err)
	}
	return string(b), nil
}

// metadataLabels returns the labels of metadata, or an error a user can
// act on when an entry does not fit in a label.
func metadataLabels(md map[string]string) (map[string]string, error) {
	if len(md) > maxMetadata {
		return nil, fmt.Errorf("metadata: %d entries, Fast Sandbox keeps at most %d", len(md), maxMetadata)
	}
	out := make(map[string]string, len(md))
	for _, k := range slices.Sorted(maps.Keys(md)) {
		if k == "" {
			return nil, fmt.Errorf("metadata: an empty key")
		}
		name, value := encodeLabel(k), encodeLabel(md[k])
		if len(name) > validation.LabelValueMaxLength {
			return nil, fmt.Errorf("metadata key %q is too long: Fast Sandbox keeps metadata in labels, and a key takes at most 63 characters of letters, digits, '-', '_' and '.' (about 38 bytes of other text)", brief(k))
		}
		if len(value) > validation.LabelValueMaxLength {
			return nil, fmt.Errorf("metadata %q: the value is too long: Fast Sandbox keeps metadata in labels, and a value takes at most 63 characters of letters, digits, '-', '_' and '.' (about 38 bytes of other text)", brief(k))
		}
		out[LabelMetadataPrefix+name] = value
	}
	return out, nil
}

// metadataOf returns the metadata kept in a sandbox's labels.
func metadataOf(labels map[string]string) map[string]string {
	md := map[string]string{}
	for l, v := range labels {
		name, ok := strings.CutPrefix(l, LabelMetadataPrefix)
		if !ok {
			continue
		}
		k, err1 := decodeLabel(name)
		val, err2 := decodeLabel(v)
		if err1 != nil || err2 != nil {
			// Only a label written by hand can fail here; it is no
			// metadata of ours.
			continue
		}
		md[k] = val
	}
	return md
}

// brief cuts a user's text short for a message.
func brief(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// tokenKey derives sandboxes' access tokens.
type tokenKey []byte

// token returns the access token of the sandbox namespace/name: 128 bits
// of HMAC-SHA256, in hex.
func (k tokenKey) token(namespace, name string) string {
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte("e2b envd access token\x00" + namespace + "/" + name))
	return hex.EncodeToString(mac.Sum(nil)[:16])
}

// matches reports whether got is the sandbox's access token, in a time
// that does not depend on how much of it matches.
func (k tokenKey) matches(sb *fsbv1.Sandbox, got string) bool {
	return hmac.Equal([]byte(k.token(sb.GetNamespace(), sb.GetName())), []byte(got))
}

// newSandboxID returns a fresh sandbox ID: 20 lower-case letters and
// digits (as E2B's are; a Fast Sandbox name must be DNS-1123), 100 random
// bits. IDs are unique across the keys' namespaces by chance alone; the
// router finds a sandbox by trying each of them.
func newSandboxID() string {
	return strings.ToLower(rand.Text())[:20]
}

// visible reports whether E2B's API shows the sandbox: one made through
// it, and alive. A sandbox that is going (Terminating, Expired) or whose
// container ended (Succeeded, Failed, Lost) is gone for E2B, which knows
// no such states: its get is a 404, as for a killed one.
func visible(sb *fsbv1.Sandbox) bool {
	if sb.GetLabels()[LabelTemplate] == "" {
		return false
	}
	switch sb.GetStatus().GetPhase() {
	case fsbv1.Phase_PHASE_UNSPECIFIED, fsbv1.Phase_PHASE_PENDING, fsbv1.Phase_PHASE_BOUND, fsbv1.Phase_PHASE_RUNNING:
		return true
	}
	return false
}

// sandboxJSON is E2B's Sandbox: the answer of create and connect.
type sandboxJSON struct {
	SandboxID       string `json:"sandboxID"`
	TemplateID      string `json:"templateID"`
	Alias           string `json:"alias,omitempty"`
	ClientID        string `json:"clientID"`
	EnvdVersion     string `json:"envdVersion"`
	EnvdAccessToken string `json:"envdAccessToken,omitempty"`
	// Domain is null: with E2B_SANDBOX_URL set the SDK needs none.
	Domain *string `json:"domain"`
}

// sandboxDetail is E2B's SandboxDetail (get) and ListedSandbox (list,
// without the token and the domain).
type sandboxDetail struct {
	SandboxID       string            `json:"sandboxID"`
	TemplateID      string            `json:"templateID"`
	Alias           string            `json:"alias,omitempty"`
	ClientID        string            `json:"clientID"`
	StartedAt       time.Time         `json:"startedAt"`
	EndAt           *time.Time        `json:"endAt"`
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken string            `json:"envdAccessToken,omitempty"`
	CPUCount        int               `json:"cpuCount"`
	MemoryMB        int               `json:"memoryMB"`
	DiskSizeMB      int               `json:"diskSizeMB"`
	Metadata        map[string]string `json:"metadata"`
	State           string            `json:"state"`
}

// stateRunning is the only state of E2B's a sandbox here has: pause is
// not supported.
const stateRunning = "running"

// clientID is E2B's (deprecated) clientID, the node a sandbox runs on:
// here the agent, once placed.
func clientID(sb *fsbv1.Sandbox) string {
	return cmp.Or(sb.GetStatus().GetAssignedPod(), "unplaced")
}

// toSandboxJSON returns the sandbox, whose access token is token, as
// E2B's Sandbox.
func toSandboxJSON(sb *fsbv1.Sandbox, token string) sandboxJSON {
	tpl := sb.GetLabels()[LabelTemplate]
	return sandboxJSON{
		SandboxID: sb.GetName(), TemplateID: tpl, Alias: tpl, ClientID: clientID(sb),
		EnvdVersion: EnvdVersion, EnvdAccessToken: token,
	}
}

// toDetail returns the sandbox as E2B's SandboxDetail, with its access
// token when token is not empty (get gives it, list does not).
func toDetail(sb *fsbv1.Sandbox, token string) sandboxDetail {
	tpl := sb.GetLabels()[LabelTemplate]
	d := sandboxDetail{
		SandboxID: sb.GetName(), TemplateID: tpl, Alias: tpl, ClientID: clientID(sb),
		StartedAt:   sb.GetCreateTime().AsTime().UTC(),
		EnvdVersion: EnvdVersion,
		CPUCount:    cpuCount(sb.GetSpec().GetResources().GetCpu()),
		MemoryMB:    memoryMB(sb.GetSpec().GetResources().GetMemory()),
		Metadata:    metadataOf(sb.GetLabels()),
		State:       stateRunning,
	}
	if t := sb.GetSpec().GetExpireTime(); t != nil {
		end := t.AsTime().UTC()
		d.EndAt = &end
	}
	d.EnvdAccessToken = token
	return d
}

// cpuCount is E2B's cpuCount of a CPU limit: whole cores, rounded up; 0
// when there is no limit.
func cpuCount(q string) int {
	v, err := resource.ParseQuantity(q)
	if q == "" || err != nil {
		return 0
	}
	return int(math.Ceil(float64(v.MilliValue()) / 1000))
}

// memoryMB is E2B's memoryMB of a memory limit, in MiB; 0 when there is no
// limit.
func memoryMB(q string) int {
	v, err := resource.ParseQuantity(q)
	if q == "" || err != nil {
		return 0
	}
	return int(v.Value() >> 20)
}
