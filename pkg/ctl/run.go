package ctl

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// RunOptions are the arguments of `fsb ctl run`, as the user typed them.
type RunOptions struct {
	Name  string
	Image string
	// Ports are the ports the sandbox listens on, such as "8080".
	Ports []string
	// Env holds NAME=VALUE pairs for the main process.
	Env []string
	// Labels holds KEY=VALUE pairs for the sandbox.
	Labels []string
	Pool   string
	// Mode is "fast", "strong" or empty for the controller's default.
	Mode string
	// Runtime is "runc", "crun", "gvisor" or empty for the agent's default.
	Runtime string
	WorkDir string
	// CPU and Memory are Kubernetes quantities, such as "500m" and "256Mi".
	CPU, Memory string
	// Pids caps the sandbox's processes; 0 leaves the agent's default.
	Pids int64
	// FailurePolicy is "manual", "auto-recreate" or empty (manual).
	FailurePolicy string
	// RecoveryTimeout, a duration of whole seconds such as "10m", bounds
	// how long AutoRecreate keeps trying; empty leaves the controller's
	// default.
	RecoveryTimeout string
	// ExpireIn, a duration such as "10m", makes the sandbox expire that
	// long after the create; empty means never.
	ExpireIn string
	NoInit   bool
	// Command replaces the image's entrypoint and cmd when set.
	Command []string
}

// Run creates a sandbox and prints it with the time the call took. Without
// an image it first has the user write the spec in an editor (see edit).
func (c *Client) Run(ctx context.Context, o RunOptions) error {
	req, err := c.createRequest(o)
	if err != nil {
		return err
	}
	if req.GetSpec().GetImage() == "" {
		return c.editAndCreate(ctx, req)
	}
	return c.create(ctx, req)
}

// create sends req and prints the sandbox it made.
func (c *Client) create(ctx context.Context, req *fsbv1.CreateSandboxRequest) error {
	start := time.Now()
	resp, err := c.api.CreateSandbox(ctx, connect.NewRequest(req))
	took := time.Since(start)
	if err != nil {
		if answerLost(err) {
			return c.createUnanswered(err, req)
		}
		return c.describe(err, target{name: req.Name, namespace: req.Namespace, create: true})
	}
	sb := resp.Msg.GetSandbox()
	st := sb.GetStatus()
	fmt.Fprintf(c.out, "sandbox %s created in %s\n", sb.GetName(), millis(took))
	fmt.Fprintf(c.out, "  namespace: %s\n", sb.GetNamespace())
	fmt.Fprintf(c.out, "  phase:     %s\n", phase(st.GetPhase()))
	fmt.Fprintf(c.out, "  agent:     %s\n", orNone(st.GetAssignedPod()))
	fmt.Fprintf(c.out, "  started:   %s\n", startedString(st.GetWarm()))
	fmt.Fprintf(c.out, "  endpoints: %s\n", orNone(strings.Join(st.GetEndpoints(), ",")))
	if at := sb.GetSpec().GetExpireTime(); at != nil {
		fmt.Fprintf(c.out, "  expires:   %s\n", expiryString(at, time.Now()))
	}
	if st.GetMessage() != "" {
		fmt.Fprintf(c.out, "  message:   %s\n", st.GetMessage())
	}
	return nil
}

// answerLost reports whether a create's request may have reached the
// controller while its answer did not reach us: the connection broke
// after it was made, the call ran out of time, or the user interrupted it.
// A connection that could not be made at all sent nothing.
func answerLost(err error) bool {
	if unreachable(err) {
		return false // no connection was made, so nothing was sent
	}
	if errors.Is(err, context.Canceled) || connect.CodeOf(err) == connect.CodeDeadlineExceeded {
		return true
	}
	if connect.IsWireError(err) {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeInternal, connect.CodeAborted:
		return true
	}
	return false
}

// createUnanswered words a create whose answer was lost: the controller
// finishes a create whether or not its caller is still there, so the
// sandbox may exist; and a create is idempotent, so trying again is safe.
func (c *Client) createUnanswered(err error, req *fsbv1.CreateSandboxRequest) error {
	what := fmt.Sprintf("the controller at %s did not answer (%s)", c.server, message(err))
	if errors.Is(err, context.Canceled) {
		what = "interrupted before the controller answered"
	}
	return fmt.Errorf("%s: sandbox %s may have been created; check with fsb ctl get %s -n %s. "+
		"Running the same command again is safe: a create with the same spec returns the sandbox it made",
		what, req.GetName(), req.GetName(), req.GetNamespace())
}

// createRequest checks o and builds the request it stands for. Without an
// image the request has none: the editor asks for it.
func (c *Client) createRequest(o RunOptions) (*fsbv1.CreateSandboxRequest, error) {
	if o.Name == "" {
		return nil, usagef("run needs a sandbox name: fsb ctl run NAME --image IMAGE [-- COMMAND...]")
	}
	spec := &fsbv1.SandboxSpec{
		Image:      o.Image,
		Command:    o.Command,
		PoolRef:    o.Pool,
		Runtime:    o.Runtime,
		WorkingDir: o.WorkDir,
		NoInit:     o.NoInit,
	}
	for _, p := range o.Ports {
		port, err := strconv.ParseUint(strings.TrimSpace(p), 10, 16)
		if err != nil || port == 0 {
			return nil, usagef("--port %q: want a port number from 1 to 65535", p)
		}
		spec.ExposedPorts = append(spec.ExposedPorts, int32(port))
	}
	for _, e := range o.Env {
		name, value, ok := strings.Cut(e, "=")
		if !ok || name == "" {
			return nil, usagef("--env %q: want NAME=VALUE", e)
		}
		spec.Envs = append(spec.Envs, &fsbv1.EnvVar{Name: name, Value: value})
	}
	labels, err := pairs("--label", o.Labels)
	if err != nil {
		return nil, err
	}
	switch strings.ToLower(o.Mode) {
	case "":
	case "fast":
		spec.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST
	case "strong":
		spec.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG
	default:
		return nil, usagef("--mode %q: want fast (start first, record after) or strong (record first)", o.Mode)
	}
	if spec.FailurePolicy, err = failurePolicy(o.FailurePolicy); err != nil {
		return nil, err
	}
	if o.RecoveryTimeout != "" {
		if spec.RecoveryTimeoutSeconds, err = recoverySeconds(o.RecoveryTimeout); err != nil {
			return nil, err
		}
	}
	if o.ExpireIn != "" {
		if spec.ExpireTime, err = expireAt(o.ExpireIn, time.Now()); err != nil {
			return nil, err
		}
	}
	if o.Pids < 0 {
		return nil, usagef("--pids %d: want a positive number (0: the agent's default)", o.Pids)
	}
	if o.CPU != "" || o.Memory != "" || o.Pids != 0 {
		spec.Resources = &fsbv1.Resources{Cpu: o.CPU, Memory: o.Memory, Pids: o.Pids}
	}
	return &fsbv1.CreateSandboxRequest{
		Name:      o.Name,
		Namespace: c.namespace,
		Labels:    labels,
		Spec:      spec,
	}, nil
}

// pairs parses KEY=VALUE arguments of flag into a map.
func pairs(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef("%s %q: want KEY=VALUE", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

// millis formats d in milliseconds, with one decimal below 10 ms.
func millis(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	if ms < 10 {
		return strconv.FormatFloat(ms, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + " ms"
}
