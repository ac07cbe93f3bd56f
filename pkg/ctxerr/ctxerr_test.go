package ctxerr

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
)

func TestOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want connect.Code // 0: not a context's end
	}{
		{"deadline", context.DeadlineExceeded, connect.CodeDeadlineExceeded},
		{"deadline, wrapped", fmt.Errorf("start task: %w", context.DeadlineExceeded), connect.CodeDeadlineExceeded},
		{"canceled", context.Canceled, connect.CodeCanceled},
		{"canceled, wrapped", fmt.Errorf("load: %w", context.Canceled), connect.CodeCanceled},
		{"another error", errors.New("connection refused"), 0},
		{"none", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ce, ok := Of(tc.err)
			if ok != (tc.want != 0) {
				t.Fatalf("Of(%v) ok = %v, want %v", tc.err, ok, tc.want != 0)
			}
			if ok && (ce.Code() != tc.want || !errors.Is(ce, tc.err)) {
				t.Errorf("Of(%v) = %v, want code %v wrapping the error", tc.err, ce, tc.want)
			}
		})
	}
}

func TestEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := Ended(ctx).Code(); got != connect.CodeCanceled {
		t.Errorf("a canceled context: %v, want Canceled", got)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if got := Ended(ctx).Code(); got != connect.CodeDeadlineExceeded {
		t.Errorf("a context past its deadline: %v, want DeadlineExceeded", got)
	}
}
