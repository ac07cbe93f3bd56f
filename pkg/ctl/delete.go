package ctl

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// DefaultDeleteTimeout bounds each delete call when DeleteOptions.Timeout
// is zero.
const DefaultDeleteTimeout = time.Minute

// deleteCheckTimeout bounds the call that asks, after a delete's deadline,
// whether the deletion is recorded.
const deleteCheckTimeout = 10 * time.Second

// DeleteOptions are the arguments of `fsb ctl delete`.
type DeleteOptions struct {
	Names []string
	// GracePeriod is the seconds between SIGTERM and SIGKILL; nil leaves
	// the controller's default (10).
	GracePeriod *int32
	// NoWait answers once the deletion is recorded, before the container
	// is gone.
	NoWait bool
	// IgnoreNotFound treats a sandbox that does not exist as deleted.
	IgnoreNotFound bool
	// Timeout bounds the delete call of each sandbox; zero means
	// DefaultDeleteTimeout. What happens when it passes is Delete's to
	// say.
	Timeout time.Duration
}

// Delete deletes each named sandbox in turn. It goes on past a failure,
// reports each on Err, and fails at the end if any did.
//
// Each sandbox's call has a deadline (Timeout). When it passes, whether by
// the client's clock or by the controller's answer DeadlineExceeded, the
// delete may or may not have been recorded: a controller that has recorded
// it goes on in the background (the sandbox shows phase Terminating, with
// what it waits for as its message), while one that has not (a pending
// FAST sandbox whose agent does not answer) leaves the sandbox as it was.
// Delete asks the controller which it is. Recorded, or gone by then: the
// sandbox counts as deleted, with "still being deleted" on Err. Not
// recorded, or no answer to the question: the delete failed, and saying so
// is the only honest answer.
func (c *Client) Delete(ctx context.Context, o DeleteOptions) error {
	if len(o.Names) == 0 {
		return usagef("delete needs at least one sandbox name: fsb ctl delete NAME...")
	}
	if o.GracePeriod != nil && *o.GracePeriod < 0 {
		return usagef("--grace-period %d: want seconds, 0 or more", *o.GracePeriod)
	}
	if o.Timeout < 0 {
		return usagef("--timeout %s: want a positive duration such as 1m", o.Timeout)
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = DefaultDeleteTimeout
	}
	var failed []error
	for _, name := range o.Names {
		err := c.deleteOne(ctx, name, o, timeout)
		switch {
		case err == nil:
		case o.IgnoreNotFound && connect.CodeOf(err) == connect.CodeNotFound:
		case ctx.Err() != nil:
			return c.describe(err, target{name: name, namespace: c.namespace})
		default:
			err = c.describe(err, target{name: name, namespace: c.namespace})
			if len(o.Names) > 1 {
				fmt.Fprintf(c.err, "error: %v\n", err)
			}
			failed = append(failed, err)
		}
	}
	switch {
	case len(failed) == 0:
		return nil
	case len(o.Names) == 1:
		return failed[0]
	}
	return fmt.Errorf("%d of %d sandboxes not deleted", len(failed), len(o.Names))
}

// deleteOne deletes sandbox name within timeout and says so on Out (or,
// when it goes on in the background, on Err).
func (c *Client) deleteOne(ctx context.Context, name string, o DeleteOptions, timeout time.Duration) error {
	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := c.api.DeleteSandbox(callCtx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{
		Name:               name,
		Namespace:          c.namespace,
		GracePeriodSeconds: o.GracePeriod,
		NoWait:             o.NoWait,
	}))
	switch {
	case err == nil && o.NoWait:
		fmt.Fprintf(c.out, "sandbox %s is being deleted\n", name)
	case err == nil:
		fmt.Fprintf(c.out, "sandbox %s deleted\n", name)
	case ctx.Err() == nil && connect.CodeOf(err) == connect.CodeDeadlineExceeded:
		return c.deleteOutlived(ctx, name, timeout)
	}
	return err
}

// deleteOutlived decides, once the delete call of sandbox name has run out
// of time, whether the deletion is recorded: nil (with a note on Err when
// it goes on) if so, the error to report if not.
func (c *Client) deleteOutlived(ctx context.Context, name string, timeout time.Duration) error {
	checkCtx, cancel := context.WithTimeout(ctx, deleteCheckTimeout)
	defer cancel()
	resp, err := c.api.GetSandbox(checkCtx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: name, Namespace: c.namespace}))
	switch {
	case connect.CodeOf(err) == connect.CodeNotFound && connect.IsWireError(err):
		// Finished just as the deadline passed.
		fmt.Fprintf(c.out, "sandbox %s deleted\n", name)
		return nil
	case err != nil:
		return fmt.Errorf("sandbox %s was not deleted within %s, and whether its deletion is recorded is unknown (%v): check with fsb ctl get %s",
			name, timeout, c.describe(err, target{name: name, namespace: c.namespace}), name)
	}
	st := resp.Msg.GetSandbox().GetStatus()
	// An Expired or Lost sandbox keeps its phase while it is deleted.
	switch st.GetPhase() {
	case fsbv1.Phase_PHASE_TERMINATING, fsbv1.Phase_PHASE_EXPIRED, fsbv1.Phase_PHASE_LOST:
	default:
		return fmt.Errorf("sandbox %s was not deleted within %s, and the controller does not show it as being deleted (phase %s%s): run fsb ctl delete %s again, perhaps with a longer --timeout",
			name, timeout, phase(st.GetPhase()), prefixed(": ", st.GetMessage()), name)
	}
	fmt.Fprintf(c.err, "sandbox %s is still being deleted: the delete goes on in the background (check with fsb ctl get %s)\n", name, name)
	if msg := st.GetMessage(); msg != "" {
		fmt.Fprintf(c.err, "  status: %s\n", msg)
	}
	return nil
}

func prefixed(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}
