package ctl

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// UpdateOptions are the arguments of `fsb ctl update`.
type UpdateOptions struct {
	Name string
	// Labels holds KEY=VALUE pairs to add or change.
	Labels []string
	// RemoveLabels holds the keys of labels to remove.
	RemoveLabels []string
	// FailurePolicy is "manual", "auto-recreate" or empty (unchanged).
	FailurePolicy string
	// ResetRevision re-creates the sandbox as a new revision; the old one
	// is stopped gracefully first.
	ResetRevision bool
	// ExpireIn, a duration such as "30s", makes the sandbox expire that
	// long from now; empty leaves the expiry as it is.
	ExpireIn string
	// NoExpire removes the expiry.
	NoExpire bool
	// RecoveryTimeout, a duration of whole seconds such as "5m", bounds how
	// long AutoRecreate keeps trying; empty leaves it as it is.
	RecoveryTimeout string
	// Output is empty for a summary, or one of the Output formats.
	Output string
}

// Update changes a sandbox's labels, failure policy, expiry or recovery
// timeout, or asks for a new revision, and prints the sandbox as the
// controller then has it. The API replaces the labels as a whole, so Update
// reads the sandbox first and sends the merged map; a concurrent label
// change between the two calls is overwritten.
func (c *Client) Update(ctx context.Context, o UpdateOptions) error {
	if o.Name == "" {
		return usagef("update needs a sandbox name: fsb ctl update NAME [--label K=V]... [--remove-label K]... [--failure-policy P] [--expire-in D | --no-expire] [--recovery-timeout D] [--reset-revision]")
	}
	if err := checkSandboxOutput(o.Output); err != nil {
		return err
	}
	set, err := pairs("--label", o.Labels)
	if err != nil {
		return err
	}
	for _, k := range o.RemoveLabels {
		if k == "" || strings.Contains(k, "=") {
			return usagef("--remove-label %q: want a label KEY", k)
		}
		if _, ok := set[k]; ok {
			return usagef("label %s is both set (--label) and removed (--remove-label): pick one", k)
		}
	}
	policy, err := failurePolicy(o.FailurePolicy)
	if err != nil {
		return err
	}
	req := &fsbv1.UpdateSandboxRequest{
		Name: o.Name, Namespace: c.namespace,
		FailurePolicy: policy, ResetRevision: o.ResetRevision, ClearExpireTime: o.NoExpire,
	}
	if o.ExpireIn != "" {
		if o.NoExpire {
			return usagef("--expire-in and --no-expire contradict each other: pick one")
		}
		if req.ExpireTime, err = expireAt(o.ExpireIn, time.Now()); err != nil {
			return err
		}
	}
	if o.RecoveryTimeout != "" {
		s, err := recoverySeconds(o.RecoveryTimeout)
		if err != nil {
			return err
		}
		req.RecoveryTimeoutSeconds = &s
	}
	if len(set) == 0 && len(o.RemoveLabels) == 0 && policy == fsbv1.FailurePolicy_FAILURE_POLICY_UNSPECIFIED &&
		!o.ResetRevision && req.ExpireTime == nil && !o.NoExpire && req.RecoveryTimeoutSeconds == nil {
		return usagef("nothing to update: give --label K=V, --remove-label K, --failure-policy P, --expire-in D, --no-expire, --recovery-timeout D or --reset-revision")
	}
	t := target{name: o.Name, namespace: c.namespace}
	if len(set) > 0 || len(o.RemoveLabels) > 0 {
		resp, err := c.api.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: o.Name, Namespace: c.namespace}))
		if err != nil {
			return c.describe(err, t)
		}
		labels := maps.Clone(resp.Msg.GetSandbox().GetLabels())
		if labels == nil {
			labels = map[string]string{}
		}
		maps.Copy(labels, set)
		for _, k := range o.RemoveLabels {
			delete(labels, k)
		}
		// An empty map does not reach the controller as "no labels": on the
		// wire it is the same as no map at all, which leaves them as they are.
		if len(labels) == 0 {
			return fmt.Errorf("cannot remove every label of sandbox %s: the API keeps the labels when the new set is empty; keep at least one", o.Name)
		}
		req.Labels = labels
	}
	resp, err := c.api.UpdateSandbox(ctx, connect.NewRequest(req))
	if err != nil {
		return c.describe(err, t)
	}
	sb := resp.Msg.GetSandbox()
	if o.Output != "" {
		return c.writeSandbox(sb, o.Output)
	}
	now := time.Now()
	spec, st := sb.GetSpec(), sb.GetStatus()
	fmt.Fprintf(c.out, "sandbox %s updated: %s\n", sb.GetName(), strings.Join(changes(req, sb, now), "; "))
	fmt.Fprintf(c.out, "  namespace:        %s\n", sb.GetNamespace())
	fmt.Fprintf(c.out, "  labels:           %s\n", orNone(labelString(sb.GetLabels())))
	fmt.Fprintf(c.out, "  failure policy:   %s\n", policyName(spec.GetFailurePolicy()))
	fmt.Fprintf(c.out, "  recovery timeout: %s\n", recoveryString(spec.GetRecoveryTimeoutSeconds()))
	fmt.Fprintf(c.out, "  expires:          %s\n", expiryString(spec.GetExpireTime(), now))
	fmt.Fprintf(c.out, "  phase:            %s\n", phase(st.GetPhase()))
	fmt.Fprintf(c.out, "  revision:         %d\n", st.GetRevision())
	return nil
}

// changes names what an update request changed, as the sandbox now has it,
// in the order of the flags' help.
func changes(req *fsbv1.UpdateSandboxRequest, sb *fsbv1.Sandbox, now time.Time) []string {
	var out []string
	if req.Labels != nil {
		out = append(out, "labels "+labelString(sb.GetLabels()))
	}
	if req.GetFailurePolicy() != fsbv1.FailurePolicy_FAILURE_POLICY_UNSPECIFIED {
		out = append(out, "failure policy "+policyName(sb.GetSpec().GetFailurePolicy()))
	}
	if req.RecoveryTimeoutSeconds != nil {
		out = append(out, "recovery timeout "+recoveryString(sb.GetSpec().GetRecoveryTimeoutSeconds()))
	}
	switch {
	case req.GetClearExpireTime():
		out = append(out, "expiry removed")
	case req.GetExpireTime() != nil:
		out = append(out, "expires "+expiryString(sb.GetSpec().GetExpireTime(), now))
	}
	if req.GetResetRevision() {
		// The controller acts after the answer: the revision shown may
		// still be the one being replaced.
		out = append(out, fmt.Sprintf("new revision requested (at revision %d now; fsb ctl get %s shows the next one)",
			sb.GetStatus().GetRevision(), sb.GetName()))
	}
	return out
}
