package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/fence"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// fenceKey carries a call's fence in its context, for the checks a create
// makes again once its image is there (see CreateSandbox).
type fenceKey struct{}

// fenceInterceptor admits a call only if its fence (pkg/fence) is not
// below the highest this agent has seen, raising that highest first when
// the call's is higher. Status reads (GetStatus, WatchStatus) raise it but
// are never refused: every controller replica, leader or standby, follows
// every agent to know what runs, and a read changes nothing. Every other
// call (create, delete, logs, exec, files) from a deposed leader is
// FailedPrecondition.
type fenceInterceptor struct{ a *Agent }

func (f fenceInterceptor) admit(ctx context.Context, procedure string, h http.Header) (context.Context, error) {
	n, err := fence.Parse(h)
	if err != nil {
		return ctx, connect.NewError(connect.CodeInvalidArgument, err)
	}
	err = f.a.fence.Observe(n)
	if err == nil || procedure == fsbv1connect.AgentServiceGetStatusProcedure || procedure == fsbv1connect.AgentServiceWatchStatusProcedure {
		return context.WithValue(ctx, fenceKey{}, n), nil
	}
	f.a.refusedFenced(procedure, err)
	return ctx, connect.NewError(connect.CodeFailedPrecondition, err)
}

func (f fenceInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, err := f.admit(ctx, req.Spec().Procedure, req.Header())
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (fenceInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (f fenceInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := f.admit(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// stillCurrent reports whether the fence the call in ctx came with is
// still current: a newer leader may have spoken while the call waited
// (for an image pull, say), and what the deposed one asked must not be
// made then.
func (a *Agent) stillCurrent(ctx context.Context, procedure string) error {
	n, _ := ctx.Value(fenceKey{}).(int64)
	if err := a.fence.Check(n); err != nil {
		a.refusedFenced(procedure, err)
		return err
	}
	return nil
}

func (a *Agent) refusedFenced(procedure string, err error) {
	method := procedure[strings.LastIndex(procedure, "/")+1:]
	a.metrics.fenced.WithLabelValues(method).Inc()
	a.cfg.Logger.Warn("call refused: a newer controller leads", slog.String("call", method), slog.Any("err", err))
}

// keptFence returns a Guard that starts from the fence rt kept and keeps
// every new highest one there, so that a restarted agent still refuses a
// deposed controller. Keeping it is asynchronous (a call is not held up by
// containerd), in order, and best effort: a fence not kept is logged, and
// the agent learns it again from the leader's first call after a restart.
func keptFence(ctx context.Context, rt *runtime.Runtime, log *slog.Logger) (*fence.Guard, error) {
	readCtx, cancel := context.WithTimeout(ctx, keepFenceTimeout)
	highest, err := rt.Fence(readCtx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	var (
		mu   sync.Mutex
		kept = highest
	)
	keep := func(n int64) {
		mu.Lock()
		defer mu.Unlock()
		if n <= kept {
			return
		}
		keepCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keepFenceTimeout)
		defer cancel()
		if err := rt.SetFence(keepCtx, n); err != nil {
			log.Warn("controller fence not kept across a restart", slog.Int64("fence", n), slog.Any("err", err))
			return
		}
		kept = n
	}
	return fence.NewGuard(highest, func(n int64) { go keep(n) }), nil
}

// keepFenceTimeout bounds reading and keeping the fence in containerd.
const keepFenceTimeout = 5 * time.Second

// isFenced reports whether err is a refusal for an old fence.
func isFenced(err error) bool { return errors.Is(err, fence.ErrFenced) }
