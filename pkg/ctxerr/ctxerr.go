// Package ctxerr gives the Connect error that says a call ended with its
// context: DeadlineExceeded once its deadline passed, Canceled when its
// caller went away. Every server of Fast Sandbox answers a context's end
// the same way through it.
package ctxerr

import (
	"context"
	"errors"

	"connectrpc.com/connect"
)

// Of returns the Connect error for err when err is, or wraps, a context's
// end (context.DeadlineExceeded or context.Canceled); ok is false for any
// other error.
func Of(err error) (ce *connect.Error, ok bool) {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err), true
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err), true
	}
	return nil, false
}

// Ended returns the Connect error for ctx, which has ended.
func Ended(ctx context.Context) *connect.Error {
	if ce, ok := Of(ctx.Err()); ok {
		return ce
	}
	// Not ended after all: the caller's mistake, said as a cancel.
	return connect.NewError(connect.CodeCanceled, errors.New("the call was ended"))
}
