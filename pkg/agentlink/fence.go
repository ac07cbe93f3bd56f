package agentlink

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/fence"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// fenceInterceptor sends the fence of the controller's current term
// (pkg/fence) with every call: read when the call starts, so that a call
// made after the term ended carries 0 and is refused by every agent that
// has seen a fence.
type fenceInterceptor func() int64

func (f fenceInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		fence.Set(req.Header(), f())
		return next(ctx, req)
	}
}

func (f fenceInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		fence.Set(conn.RequestHeader(), f())
		return conn
	}
}

func (fenceInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// raiseTimeout bounds RaiseFence's call to each agent.
const raiseTimeout = 5 * time.Second

// RaiseFence makes the fence of the current term known to every agent
// before the new leader does anything else: a status read carrying it, to
// each agent at once. From the moment an agent has answered, it refuses the
// previous leader. It returns the agents (by address) that could not be
// reached: they learn the fence from the first call that reaches them (a
// status stream when they come back, or a create), and until then only
// they could still take a deposed leader's call.
func (s *Set) RaiseFence(ctx context.Context) map[string]error {
	s.mu.Lock()
	agents := make([]*agent, 0, len(s.byKey))
	for _, a := range s.byKey {
		agents = append(agents, a)
	}
	s.mu.Unlock()
	var (
		mu     sync.Mutex
		failed = map[string]error{}
		wg     sync.WaitGroup
	)
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			callCtx, cancel := context.WithTimeout(ctx, raiseTimeout)
			defer cancel()
			if _, err := a.client.GetStatus(callCtx, connect.NewRequest(&fsbv1.GetStatusRequest{})); err != nil {
				mu.Lock()
				failed[a.addr] = fmt.Errorf("raise the fence on agent %s: %w", a.addr, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for addr, err := range failed {
		s.cfg.Logger.Warn("agent not told of the new leader's fence yet", slog.String("address", addr), slog.Any("err", err))
	}
	return failed
}
