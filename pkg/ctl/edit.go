package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/term"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// editedSpec is what the user writes in the editor of `fsb ctl run NAME`
// without --image: the spec's fields a person sets, keyed as the API's JSON
// keys them. The spec's other fields (pool, no-init) come from the command
// line's flags.
type editedSpec struct {
	Image         string           `json:"image"`
	Command       []string         `json:"command,omitempty"`
	Args          []string         `json:"args,omitempty"`
	Envs          []editedEnv      `json:"envs,omitempty"`
	WorkingDir    string           `json:"workingDir,omitempty"`
	ExposedPorts  []int64          `json:"exposedPorts,omitempty"`
	Resources     *editedResources `json:"resources,omitempty"`
	Runtime       string           `json:"runtime,omitempty"`
	Mode          string           `json:"consistencyMode,omitempty"`
	FailurePolicy string           `json:"failurePolicy,omitempty"`
	// RecoveryTimeoutSeconds is an int64 so that a value beyond int32 is
	// reported as out of range rather than as a decoding error.
	RecoveryTimeoutSeconds int64 `json:"recoveryTimeoutSeconds,omitempty"`
	// ExpireTime is an RFC 3339 time; empty means never.
	ExpireTime string            `json:"expireTime,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

type editedEnv struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}

type editedResources struct {
	CPU    string `json:"cpu,omitempty"`
	Memory string `json:"memory,omitempty"`
	Pids   int64  `json:"pids,omitempty"`
}

// exampleExpiry is the expireTime the template shows as an example.
const exampleExpiry = "2030-01-02T15:04:05Z"

// editField is one field of the editor's template.
type editField struct {
	key string
	// doc says what the field is; example is a value, as it follows
	// "key:", shown commented out when the field is not set.
	doc, example string
	set          bool
	value        any
}

// editAndCreate has the user write the spec of req in an editor, checks
// it, and creates the sandbox. A mistake reopens the editor on what the
// user wrote, the error on top; an empty file, or one left unchanged,
// cancels.
func (c *Client) editAndCreate(ctx context.Context, req *fsbv1.CreateSandboxRequest) error {
	f, err := os.CreateTemp("", "fsb-run-"+req.GetName()+"-*.yaml")
	if err != nil {
		return fmt.Errorf("cannot write the spec for the editor: %v", err)
	}
	path := f.Name()
	f.Close()
	keep := false
	defer func() {
		if !keep {
			os.Remove(path)
		}
	}()

	text, header := editTemplate(req), []byte(nil)
	for {
		if err := os.WriteFile(path, text, 0o600); err != nil {
			return fmt.Errorf("cannot write the spec for the editor: %v", err)
		}
		if err := c.edit(ctx, path); err != nil {
			return err
		}
		saved, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("cannot read the spec back from the editor: %v", err)
		}
		switch {
		case blank(saved):
			return errors.New("cancelled: the file was empty")
		case bytes.Equal(saved, text):
			return errors.New("cancelled: the file was not changed")
		}
		body := bytes.TrimPrefix(saved, header)
		edited, err := parseEdited(body, req, time.Now())
		if err != nil {
			fmt.Fprintf(c.err, "error: %v\n", err)
			header = errorHeader(err)
			text = append(append([]byte(nil), header...), body...)
			continue
		}
		if err := c.create(ctx, edited); err != nil {
			keep = true
			return fmt.Errorf("%w (what you wrote is kept in %s)", err, path)
		}
		return nil
	}
}

// edit runs the user's editor on path, through sh so that an EDITOR such
// as "code --wait" works, on this terminal.
func (c *Client) edit(ctx context.Context, path string) error {
	editor := c.editor
	if editor == "" {
		if !isTerminal(c.stdin) {
			// vi would wait for keys that never come.
			return errors.New("no --image given, and the spec editor (vi, as EDITOR is unset) needs a terminal: give --image, or set EDITOR")
		}
		editor = "vi"
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", editor+` "$1"`, "sh", path)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.stdin, c.out, c.err
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		return fmt.Errorf("the editor %q failed (%v): set EDITOR to one that works, or give --image", editor, err)
	}
	return nil
}

// editTemplate is the commented YAML the editor opens first: every field,
// those the flags set with their values, the others as commented examples.
func editTemplate(req *fsbv1.CreateSandboxRequest) []byte {
	spec := req.GetSpec()
	var res *editedResources
	if r := spec.GetResources(); r != nil {
		res = &editedResources{CPU: r.GetCpu(), Memory: r.GetMemory(), Pids: r.GetPids()}
	}
	var envs []editedEnv
	for _, e := range spec.GetEnvs() {
		envs = append(envs, editedEnv{Name: e.GetName(), Value: e.GetValue()})
	}
	var ports []int64
	for _, p := range spec.GetExposedPorts() {
		ports = append(ports, int64(p))
	}
	policy := ""
	if p := spec.GetFailurePolicy(); p != fsbv1.FailurePolicy_FAILURE_POLICY_UNSPECIFIED {
		policy = policyName(p)
	}
	expire := ""
	if t := spec.GetExpireTime(); t != nil {
		expire = t.AsTime().UTC().Format(time.RFC3339)
	}
	mode := ""
	switch spec.GetConsistencyMode() {
	case fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST:
		mode = "fast"
	case fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG:
		mode = "strong"
	}
	fields := []editField{
		{key: "image", doc: "The container image to run (required).", example: " localhost/fsb/busybox:latest", set: true, value: spec.GetImage()},
		{key: "command", doc: "The entrypoint; replaces the image's when set.", example: " [sh, -c, 'echo hello; sleep 30']", set: len(spec.GetCommand()) > 0, value: spec.GetCommand()},
		{key: "args", doc: "Arguments; replace the image's cmd when set.", example: " [--port, '8080']", set: len(spec.GetArgs()) > 0, value: spec.GetArgs()},
		{key: "envs", doc: "Environment variables of the main process.", example: "\n- name: GREETING\n  value: hello", set: len(envs) > 0, value: envs},
		{key: "workingDir", doc: "The command's working directory, an absolute path; the image's by default.", example: " /srv", set: spec.GetWorkingDir() != "", value: spec.GetWorkingDir()},
		{key: "exposedPorts", doc: "Ports the sandbox listens on, reported as its endpoints.", example: " [8080]", set: len(ports) > 0, value: ports},
		{key: "resources", doc: "Limits: cpu and memory as Kubernetes quantities, pids as a number of processes.", example: "\n  cpu: 500m\n  memory: 256Mi\n  pids: 64", set: res != nil, value: res},
		{key: "runtime", doc: "The OCI runtime: runc (the default), crun or gvisor.", example: " crun", set: spec.GetRuntime() != "", value: spec.GetRuntime()},
		{key: "consistencyMode", doc: "fast (start, answer, then record) or strong (record, start, answer); the controller's default when unset.", example: " strong", set: mode != "", value: mode},
		{key: "failurePolicy", doc: "Manual (the default: a non-zero exit, an OOM kill or a lost agent stays Failed or Lost) or AutoRecreate (a new revision replaces it).", example: " AutoRecreate", set: policy != "", value: policy},
		{key: "recoveryTimeoutSeconds", doc: "With AutoRecreate: seconds without a running revision before it gives up; the controller's default (300) when unset.", example: " 600", set: spec.GetRecoveryTimeoutSeconds() != 0, value: spec.GetRecoveryTimeoutSeconds()},
		{key: "expireTime", doc: "When the sandbox is stopped, marked Expired and deleted: an RFC 3339 time, or nothing for never.", example: " " + exampleExpiry, set: expire != "", value: expire},
		{key: "labels", doc: "Labels for selecting sandboxes, as in fsb ctl list -l app=demo.", example: "\n  app: demo", set: len(req.GetLabels()) > 0, value: req.GetLabels()},
	}

	var b bytes.Buffer
	fmt.Fprintf(&b, "# Sandbox %s in namespace %s.\n", req.GetName(), req.GetNamespace())
	b.WriteString("# Write its spec, save and quit to create it; empty the file to cancel.\n")
	b.WriteString("# Lines starting with # are ignored; a field left out takes its default.\n")
	for _, f := range fields {
		fmt.Fprintf(&b, "\n# %s\n", f.doc)
		if f.set {
			y, err := yaml.Marshal(map[string]any{f.key: f.value})
			if err == nil {
				b.Write(y)
				continue
			}
		}
		for _, line := range strings.Split(f.key+":"+f.example, "\n") {
			fmt.Fprintf(&b, "# %s\n", line)
		}
	}
	return b.Bytes()
}

// parseEdited checks what the user wrote and returns req with it in place
// of the editor's fields. It runs the checks the controller would, so that
// a mistake is fixed in the editor rather than after a failed call.
func parseEdited(text []byte, req *fsbv1.CreateSandboxRequest, now time.Time) (*fsbv1.CreateSandboxRequest, error) {
	var doc editedSpec
	if err := yaml.UnmarshalStrict(text, &doc); err != nil {
		return nil, yamlError(err)
	}
	out := proto.Clone(req).(*fsbv1.CreateSandboxRequest)
	spec := out.Spec
	if spec == nil {
		spec = &fsbv1.SandboxSpec{}
		out.Spec = spec
	}
	spec.Image = strings.TrimSpace(doc.Image)
	spec.Command, spec.Args, spec.WorkingDir, spec.Runtime = doc.Command, doc.Args, doc.WorkingDir, doc.Runtime
	spec.Envs, spec.ExposedPorts, spec.Resources = nil, nil, nil
	for _, e := range doc.Envs {
		spec.Envs = append(spec.Envs, &fsbv1.EnvVar{Name: e.Name, Value: e.Value})
	}
	for _, p := range doc.ExposedPorts {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("exposedPorts: %d is not a port (1-65535)", p)
		}
		spec.ExposedPorts = append(spec.ExposedPorts, int32(p))
	}
	if r := doc.Resources; r != nil {
		spec.Resources = &fsbv1.Resources{Cpu: r.CPU, Memory: r.Memory, Pids: r.Pids}
	}
	switch strings.ToLower(doc.Mode) {
	case "":
		spec.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_UNSPECIFIED
	case "fast":
		spec.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST
	case "strong":
		spec.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG
	default:
		return nil, fmt.Errorf("consistencyMode %q: want fast or strong", doc.Mode)
	}
	policy, err := failurePolicy(doc.FailurePolicy)
	if err != nil {
		return nil, fmt.Errorf("failurePolicy %q: want Manual or AutoRecreate", doc.FailurePolicy)
	}
	spec.FailurePolicy = policy
	if r := doc.RecoveryTimeoutSeconds; r < 0 || r > math.MaxInt32 {
		return nil, fmt.Errorf("recoveryTimeoutSeconds: %d is not a number of seconds from 1 to %d (leave it out for the default)", r, math.MaxInt32)
	}
	spec.RecoveryTimeoutSeconds = int32(doc.RecoveryTimeoutSeconds)
	spec.ExpireTime = nil
	if doc.ExpireTime != "" {
		at, err := time.Parse(time.RFC3339, doc.ExpireTime)
		if err != nil {
			return nil, fmt.Errorf("expireTime %q: want an RFC 3339 time such as %s, or nothing for never", doc.ExpireTime, exampleExpiry)
		}
		if !at.After(now) {
			return nil, fmt.Errorf("expireTime %s has passed: want a later time, or nothing for never", doc.ExpireTime)
		}
		spec.ExpireTime = timestamppb.New(at)
	}
	if err := v1alpha1.ValidateSpec(spec); err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "spec."))
	}
	if err := v1alpha1.ValidateLabels(doc.Labels); err != nil {
		return nil, err
	}
	out.Labels = doc.Labels
	return out, nil
}

// yamlError words a decoding error without the layers it went through.
func yamlError(err error) error {
	msg := err.Error()
	for _, prefix := range []string{"error converting YAML to JSON: ", "error unmarshaling JSON: ", "while decoding JSON: ", "json: ", "yaml: "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	msg = strings.ReplaceAll(msg, "Go struct field editedSpec.", "field ")
	msg = strings.ReplaceAll(msg, "Go value of type ", "")
	return errors.New(msg)
}

// errorHeader is the comment put on top of the user's text when the editor
// opens again, saying what to fix.
func errorHeader(err error) []byte {
	var b bytes.Buffer
	for _, line := range strings.Split("error: "+err.Error(), "\n") {
		fmt.Fprintf(&b, "# %s\n", line)
	}
	b.WriteString("# Fix it and save again, or empty the file to cancel.\n")
	return b.Bytes()
}

// blank reports whether text holds nothing but blank lines and comments.
func blank(text []byte) bool {
	for _, line := range strings.Split(string(text), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// isTerminal reports whether f is a terminal (not merely a character
// device, as /dev/null is).
func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }
