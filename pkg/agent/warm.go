package agent

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// SetWarm is not served yet: this agent keeps no warm sandboxes.
func (a *Agent) SetWarm(context.Context, *connect.Request[fsbv1.SetWarmRequest]) (*connect.Response[fsbv1.SetWarmResponse], error) {
	return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this agent keeps no warm sandboxes yet"))
}
