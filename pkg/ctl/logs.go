package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// LogsOptions are the arguments of `fsb ctl logs`.
type LogsOptions struct {
	Name string
	// Follow keeps streaming until the sandbox has ended and its log is
	// drained.
	Follow bool
	// Tail keeps only the last Tail lines; 0 means all of them.
	Tail int
	// Timestamps prefixes each line with the time it was written.
	Timestamps bool
	// Revision, when set, reads that revision's log (1 or more) instead of
	// the current one's.
	Revision *int64
	// Previous reads the log of the revision before the current one, as
	// kubectl logs --previous does.
	Previous bool
}

// Logs prints a sandbox's log, of its current revision or an earlier one:
// its stdout lines to Out, its stderr lines to Err. With Follow it returns when the controller ends the stream (the
// sandbox has ended) or ctx ends (the user pressed Ctrl-C).
func (c *Client) Logs(ctx context.Context, o LogsOptions) error {
	if o.Name == "" {
		return usagef("logs needs a sandbox name: fsb ctl logs NAME [-f]")
	}
	if o.Tail < 0 {
		return usagef("--tail %d: want a positive number of lines (0: all)", o.Tail)
	}
	req := &fsbv1.StreamLogsRequest{
		Name:      o.Name,
		Namespace: c.namespace,
		Tail:      int32(min(o.Tail, 1<<31-1)),
		Follow:    o.Follow,
		Previous:  o.Previous,
	}
	if o.Revision != nil {
		if o.Previous {
			return usagef("--revision and --previous both name a revision: pick one")
		}
		if *o.Revision < 1 {
			return usagef("--revision %d: want a revision number, 1 or more (fsb ctl get %s shows the current one)", *o.Revision, o.Name)
		}
		req.Revision = *o.Revision
	}
	stream, err := c.api.StreamLogs(ctx, connect.NewRequest(req))
	if err != nil {
		return c.logsError(ctx, err, o)
	}
	defer stream.Close()
	var stdout, stderr bytes.Buffer
	// midLine holds the streams whose last piece was partial: the next
	// piece goes on the same line, without a timestamp of its own.
	midLine := make(map[string]bool)
	for stream.Receive() {
		stdout.Reset()
		stderr.Reset()
		for _, l := range stream.Msg().GetLines() {
			buf := &stdout
			if l.GetStream() == "stderr" {
				buf = &stderr
			}
			if o.Timestamps && l.GetTime() != nil && !midLine[l.GetStream()] {
				buf.WriteString(l.GetTime().AsTime().UTC().Format(time.RFC3339Nano))
				buf.WriteByte(' ')
			}
			buf.WriteString(l.GetText())
			midLine[l.GetStream()] = l.GetPartial()
			if !l.GetPartial() {
				buf.WriteByte('\n')
			}
		}
		// One write per stream and message, so that a follower sees each
		// batch as soon as it arrives.
		if stdout.Len() > 0 {
			if _, err := c.out.Write(stdout.Bytes()); err != nil {
				return err
			}
		}
		if stderr.Len() > 0 {
			if _, err := c.err.Write(stderr.Bytes()); err != nil {
				return err
			}
		}
	}
	if err := stream.Err(); err != nil {
		return c.logsError(ctx, err, o)
	}
	return nil
}

func (c *Client) logsError(ctx context.Context, err error, o LogsOptions) error {
	// Ctrl-C during `logs -f` is how a follow ends by hand: not a failure.
	if o.Follow && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	// NotFound for an earlier revision may be about the sandbox or about
	// that revision's log (never run, or no longer kept): the server's
	// words say which.
	if connect.CodeOf(err) == connect.CodeNotFound && connect.IsWireError(err) {
		switch {
		case o.Revision != nil:
			return fmt.Errorf("no log of revision %d of sandbox %s in namespace %s: %s", *o.Revision, o.Name, c.namespace, message(err))
		case o.Previous:
			return fmt.Errorf("no log of a previous revision of sandbox %s in namespace %s: %s", o.Name, c.namespace, message(err))
		}
	}
	return c.describe(err, target{name: o.Name, namespace: c.namespace})
}
