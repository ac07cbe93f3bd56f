// Package agent serves fsb.v1.AgentService: it runs the sandboxes the
// controller places on this node through pkg/runtime, fences what the node
// cannot take, and streams their logs.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd/errdefs"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// DefaultGracePeriod is how long a delete waits between SIGTERM and SIGKILL
// when the request does not say.
const DefaultGracePeriod = 10 * time.Second

// Config is what an Agent needs.
type Config struct {
	Runtime *runtime.Runtime
	// AgentID names this agent in labels and status.
	AgentID string
	// AdvertiseAddress is the address sandboxes' endpoints are reached at.
	AdvertiseAddress string
	NodeName         string
	// Capacity is the most sandboxes the agent runs at once.
	Capacity int
	Logger   *slog.Logger
}

// Agent implements fsbv1connect.AgentServiceHandler.
type Agent struct {
	cfg     Config
	metrics *metrics

	// mu guards slots: every sandbox container this agent holds, by
	// container ID, with the ports it exposes. A create reserves its slot
	// here before it reaches containerd, so concurrent creates cannot
	// overrun capacity or share a port.
	mu    sync.Mutex
	slots map[string][]int32
}

// New returns an Agent that has adopted the sandboxes its runtime already
// holds for this agent ID.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	if cfg.Runtime == nil {
		return nil, errors.New("agent: no runtime")
	}
	if cfg.Capacity < 1 {
		return nil, fmt.Errorf("agent: capacity %d: want 1 or more", cfg.Capacity)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Agent{cfg: cfg, metrics: newMetrics(), slots: make(map[string][]int32)}
	existing, err := cfg.Runtime.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("adopt sandboxes: %w", err)
	}
	for _, info := range existing {
		a.slots[info.ContainerID] = info.Spec.GetExposedPorts()
	}
	a.metrics.capacity.Set(float64(cfg.Capacity))
	a.metrics.sandboxes.Set(float64(len(a.slots)))
	if len(existing) > 0 {
		cfg.Logger.Info("adopted sandboxes", slog.Int("count", len(existing)))
	}
	return a, nil
}

// reserve takes a slot and the ports for a container, or says why not. A
// container that already holds a slot keeps it: creates are idempotent.
func (a *Agent) reserve(containerID string, ports []int32) (release func(), err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.slots[containerID]; ok {
		return func() {}, nil
	}
	if len(a.slots) >= a.cfg.Capacity {
		return nil, fmt.Errorf("agent %s is full: %d of %d sandboxes", a.cfg.AgentID, len(a.slots), a.cfg.Capacity)
	}
	for id, used := range a.slots {
		for _, p := range ports {
			if slices.Contains(used, p) {
				return nil, fmt.Errorf("port %d is already used by sandbox container %s on agent %s", p, id, a.cfg.AgentID)
			}
		}
	}
	a.slots[containerID] = ports
	a.metrics.sandboxes.Set(float64(len(a.slots)))
	return func() { a.free(containerID) }, nil
}

func (a *Agent) free(containerID string) {
	a.mu.Lock()
	delete(a.slots, containerID)
	a.metrics.sandboxes.Set(float64(len(a.slots)))
	a.mu.Unlock()
}

// CreateSandbox implements AgentService.CreateSandbox.
func (a *Agent) CreateSandbox(ctx context.Context, req *connect.Request[fsbv1.AgentServiceCreateSandboxRequest]) (*connect.Response[fsbv1.AgentServiceCreateSandboxResponse], error) {
	start := time.Now()
	msg := req.Msg
	if err := validateCreate(msg); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	sb := runtime.Sandbox{ID: msg.GetSandboxId(), Revision: msg.GetRevision(), Namespace: msg.GetNamespace(), Name: msg.GetName(), Spec: msg.GetSpec()}
	cid := runtime.ContainerID(sb.ID, sb.Revision)
	release, err := a.reserve(cid, sb.Spec.GetExposedPorts())
	if err != nil {
		a.metrics.observeCreate(start, "refused")
		return nil, connect.NewError(connect.CodeResourceExhausted, err)
	}
	info, err := a.cfg.Runtime.Ensure(ctx, sb)
	if err != nil {
		release()
		a.metrics.observeCreate(start, "error")
		a.cfg.Logger.Warn("create sandbox failed", slog.String("sandbox", cid), slog.Any("err", err))
		return nil, connect.NewError(createCode(err), err)
	}
	a.metrics.observeCreate(start, "ok")
	a.cfg.Logger.Debug("sandbox running", slog.String("sandbox", cid), slog.Duration("took", time.Since(start)))
	return connect.NewResponse(&fsbv1.AgentServiceCreateSandboxResponse{Sandbox: a.toProto(info)}), nil
}

func createCode(err error) connect.Code {
	switch {
	case errors.Is(err, runtime.ErrInvalid):
		return connect.CodeInvalidArgument
	case errors.Is(err, runtime.ErrImageNotFound):
		return connect.CodeNotFound
	case errors.Is(err, runtime.ErrUnavailable):
		return connect.CodeFailedPrecondition
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errdefs.IsUnavailable(err):
		return connect.CodeUnavailable
	}
	return connect.CodeInternal
}

// DeleteSandbox implements AgentService.DeleteSandbox.
func (a *Agent) DeleteSandbox(ctx context.Context, req *connect.Request[fsbv1.AgentServiceDeleteSandboxRequest]) (*connect.Response[fsbv1.AgentServiceDeleteSandboxResponse], error) {
	start := time.Now()
	msg := req.Msg
	if err := validateID(msg.GetSandboxId(), msg.GetRevision()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	grace := DefaultGracePeriod
	if msg.GracePeriodSeconds != nil {
		if msg.GetGracePeriodSeconds() < 0 {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("grace_period_seconds %d: want 0 or more", msg.GetGracePeriodSeconds()))
		}
		grace = time.Duration(msg.GetGracePeriodSeconds()) * time.Second
	}
	ended, err := a.cfg.Runtime.Delete(ctx, msg.GetSandboxId(), msg.GetRevision(), grace)
	for _, info := range ended {
		a.free(info.ContainerID)
	}
	if err != nil {
		a.metrics.observeDelete(start, "error")
		return nil, connect.NewError(createCode(err), err)
	}
	a.metrics.observeDelete(start, "ok")
	resp := &fsbv1.AgentServiceDeleteSandboxResponse{}
	for _, info := range ended {
		resp.Sandboxes = append(resp.Sandboxes, a.toProto(info))
	}
	return connect.NewResponse(resp), nil
}

// GetStatus implements AgentService.GetStatus.
func (a *Agent) GetStatus(ctx context.Context, _ *connect.Request[fsbv1.GetStatusRequest]) (*connect.Response[fsbv1.GetStatusResponse], error) {
	st, err := a.status(ctx)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return connect.NewResponse(&fsbv1.GetStatusResponse{Status: st}), nil
}

func (a *Agent) status(ctx context.Context) (*fsbv1.AgentStatus, error) {
	infos, err := a.cfg.Runtime.List(ctx)
	if err != nil {
		return nil, err
	}
	images, err := a.cfg.Runtime.Images(ctx)
	if err != nil {
		return nil, err
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].ContainerID < infos[j].ContainerID })
	st := &fsbv1.AgentStatus{
		AgentId:          a.cfg.AgentID,
		AdvertiseAddress: a.cfg.AdvertiseAddress,
		NodeName:         a.cfg.NodeName,
		Capacity:         int32(a.cfg.Capacity),
		Images:           images,
		Runtimes:         a.cfg.Runtime.Runtimes(),
	}
	for _, info := range infos {
		st.Sandboxes = append(st.Sandboxes, a.toProto(info))
	}
	return st, nil
}

// WatchStatus implements AgentService.WatchStatus.
func (a *Agent) WatchStatus(context.Context, *connect.Request[fsbv1.WatchStatusRequest], *connect.ServerStream[fsbv1.WatchStatusResponse]) error {
	return connect.NewError(connect.CodeUnimplemented, errors.New("WatchStatus is not served by this agent version yet: poll GetStatus"))
}

// StreamLogs implements AgentService.StreamLogs.
func (a *Agent) StreamLogs(ctx context.Context, req *connect.Request[fsbv1.AgentServiceStreamLogsRequest], stream *connect.ServerStream[fsbv1.AgentServiceStreamLogsResponse]) error {
	msg := req.Msg
	if err := validateID(msg.GetSandboxId(), msg.GetRevision()); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	if msg.GetTail() < 0 {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("tail %d: want 0 (everything) or more", msg.GetTail()))
	}
	info, err := a.find(ctx, msg.GetSandboxId(), msg.GetRevision())
	if err != nil {
		return err
	}
	done := func() bool {
		cur, err := a.cfg.Runtime.Get(ctx, info.ID, info.Revision)
		return err != nil || cur.Phase == runtime.PhaseExited
	}
	opts := logfile.StreamOptions{Tail: int(msg.GetTail()), Follow: msg.GetFollow(), Done: done}
	err = logfile.Stream(ctx, info.LogPath, opts, func(lines []logfile.Line) error {
		resp := &fsbv1.AgentServiceStreamLogsResponse{Lines: make([]*fsbv1.LogLine, len(lines))}
		for i, l := range lines {
			resp.Lines[i] = &fsbv1.LogLine{Time: timestamppb.New(l.Time), Stream: l.Stream, Text: string(l.Text)}
		}
		return stream.Send(resp)
	})
	if err != nil && ctx.Err() == nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	return nil
}

// find returns a sandbox revision, or its newest one when revision is 0.
func (a *Agent) find(ctx context.Context, sandboxID string, revision int64) (runtime.Info, error) {
	if revision > 0 {
		info, err := a.cfg.Runtime.Get(ctx, sandboxID, revision)
		if errdefs.IsNotFound(err) {
			return runtime.Info{}, connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox %s revision %d is not on agent %s", sandboxID, revision, a.cfg.AgentID))
		}
		if err != nil {
			return runtime.Info{}, connect.NewError(connect.CodeUnavailable, err)
		}
		return info, nil
	}
	infos, err := a.cfg.Runtime.List(ctx)
	if err != nil {
		return runtime.Info{}, connect.NewError(connect.CodeUnavailable, err)
	}
	var newest runtime.Info
	for _, info := range infos {
		if info.ID == sandboxID && info.Revision > newest.Revision {
			newest = info
		}
	}
	if newest.ContainerID == "" {
		return runtime.Info{}, connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox %s is not on agent %s", sandboxID, a.cfg.AgentID))
	}
	return newest, nil
}

func (a *Agent) toProto(info runtime.Info) *fsbv1.AgentSandbox {
	out := &fsbv1.AgentSandbox{
		SandboxId:   info.ID,
		Revision:    info.Revision,
		Namespace:   info.Namespace,
		Name:        info.Name,
		ContainerId: info.ContainerID,
		Spec:        info.Spec,
		LogPath:     info.LogPath,
	}
	if !info.Created.IsZero() {
		out.CreateTime = timestamppb.New(info.Created)
	}
	switch info.Phase {
	case runtime.PhaseCreated:
		out.Phase = fsbv1.Phase_PHASE_PENDING
	case runtime.PhaseRunning:
		out.Phase = fsbv1.Phase_PHASE_RUNNING
	case runtime.PhaseExited:
		out.Phase = fsbv1.Phase_PHASE_SUCCEEDED
		if info.ExitCode != 0 {
			out.Phase = fsbv1.Phase_PHASE_FAILED
		}
		out.ExitCode = int32(info.ExitCode)
		if !info.ExitTime.IsZero() {
			out.ExitTime = timestamppb.New(info.ExitTime)
		}
	}
	if a.cfg.AdvertiseAddress != "" {
		for _, p := range info.Spec.GetExposedPorts() {
			out.Endpoints = append(out.Endpoints, a.cfg.AdvertiseAddress+":"+strconv.Itoa(int(p)))
		}
	}
	return out
}
