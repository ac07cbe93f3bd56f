package ctl

import (
	"context"
	"fmt"
	"maps"
	"strings"

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
	// Output is empty for a summary, or one of the Output formats.
	Output string
}

// Update changes a sandbox's labels or failure policy and prints the
// sandbox as the controller then has it. The API replaces the labels as a
// whole, so Update reads the sandbox first and sends the merged map; a
// concurrent label change between the two calls is overwritten.
func (c *Client) Update(ctx context.Context, o UpdateOptions) error {
	if o.Name == "" {
		return usagef("update needs a sandbox name: fsb ctl update NAME [--label K=V]... [--remove-label K]... [--failure-policy P]")
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
	if len(set) == 0 && len(o.RemoveLabels) == 0 && policy == fsbv1.FailurePolicy_FAILURE_POLICY_UNSPECIFIED {
		return usagef("nothing to update: give --label K=V, --remove-label K or --failure-policy P")
	}
	t := target{name: o.Name, namespace: c.namespace}
	req := &fsbv1.UpdateSandboxRequest{Name: o.Name, Namespace: c.namespace, FailurePolicy: policy}
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
	fmt.Fprintf(c.out, "sandbox %s updated\n", sb.GetName())
	fmt.Fprintf(c.out, "  namespace:      %s\n", sb.GetNamespace())
	fmt.Fprintf(c.out, "  labels:         %s\n", orNone(labelString(sb.GetLabels())))
	fmt.Fprintf(c.out, "  failure policy: %s\n", policyName(sb.GetSpec().GetFailurePolicy()))
	fmt.Fprintf(c.out, "  phase:          %s\n", phase(sb.GetStatus().GetPhase()))
	return nil
}

// failurePolicy parses a --failure-policy value; empty means unset.
func failurePolicy(s string) (fsbv1.FailurePolicy, error) {
	switch strings.ToLower(strings.ReplaceAll(s, "-", "")) {
	case "":
		return fsbv1.FailurePolicy_FAILURE_POLICY_UNSPECIFIED, nil
	case "manual":
		return fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL, nil
	case "autorecreate":
		return fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE, nil
	}
	return 0, usagef("--failure-policy %q: want manual or auto-recreate", s)
}

// policyName names a failure policy as the Sandbox object does.
func policyName(p fsbv1.FailurePolicy) string {
	if p == fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE {
		return "AutoRecreate"
	}
	return "Manual"
}
