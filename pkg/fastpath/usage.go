package fastpath

import (
	"context"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// GetSandboxUsage implements FastPathService.GetSandboxUsage: the agent
// of the sandbox reads its cgroup and snapshot. Unlike exec and files it
// needs no fsb init, so a --no-init sandbox answers too; like them, a
// sandbox that is starting is waited for (placed).
func (s *Server) GetSandboxUsage(ctx context.Context, req *connect.Request[fsbv1.GetSandboxUsageRequest]) (*connect.Response[fsbv1.GetSandboxUsageResponse], error) {
	namespace := or(req.Msg.GetNamespace(), DefaultNamespace)
	if err := validateRef(namespace, req.Msg.GetName()); err != nil {
		return nil, err
	}
	t, err := s.placed(ctx, namespace, req.Msg.GetName())
	if err != nil {
		return nil, err
	}
	r, err := unaryTo(ctx, s, t, func(ctx context.Context, c fsbv1connect.AgentServiceClient, t *target) (*fsbv1.AgentServiceGetSandboxUsageResponse, error) {
		r, err := c.GetSandboxUsage(ctx, connect.NewRequest(&fsbv1.AgentServiceGetSandboxUsageRequest{SandboxId: t.sandboxID}))
		return msgOf(r), err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.GetSandboxUsageResponse{Usage: r.GetUsage()}), nil
}
