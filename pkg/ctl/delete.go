package ctl

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

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
}

// Delete deletes each named sandbox in turn. It goes on past a failure,
// reports each on Err, and fails at the end if any did.
func (c *Client) Delete(ctx context.Context, o DeleteOptions) error {
	if len(o.Names) == 0 {
		return usagef("delete needs at least one sandbox name: fsb ctl delete NAME...")
	}
	if o.GracePeriod != nil && *o.GracePeriod < 0 {
		return usagef("--grace-period %d: want seconds, 0 or more", *o.GracePeriod)
	}
	var failed []error
	for _, name := range o.Names {
		_, err := c.api.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{
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
