// Package agent serves fsb.v1.AgentService: it runs the sandboxes the
// controller places on this node through pkg/runtime, fences what the node
// cannot take, and streams their logs.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd/errdefs"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/fault"
	"github.com/fast-sandbox/fast-sandbox/pkg/fence"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// CreateTimeout bounds one create, image pull included.
const CreateTimeout = 5 * time.Minute

// DeleteTimeout bounds one delete beyond its grace period: the kill, and
// removing the task, the container and the snapshot.
const DeleteTimeout = time.Minute

// DefaultGracePeriod is how long a delete waits between SIGTERM and SIGKILL
// when the request does not say.
const DefaultGracePeriod = 10 * time.Second

// statusCoalesce is how long WatchStatus gathers changes after the first
// before it sends them as one status.
const statusCoalesce = 5 * time.Millisecond

// Config is what an Agent needs.
type Config struct {
	Runtime *runtime.Runtime
	// AgentID names this agent in labels and status.
	AgentID string
	// Containerd is containerd's address, for messages that say it could
	// not be reached.
	Containerd string
	// AdvertiseAddress is the address sandboxes' endpoints are reached at.
	AdvertiseAddress string
	NodeName         string
	// Capacity is the most sandboxes the agent runs at once.
	Capacity int
	// Pool is the SandboxPool the agent serves, reported in every status
	// so that the controller places only that pool's sandboxes here; empty
	// for the default pool. ValidatePool checks it.
	Pool string
	// Logs says when sandbox logs are removed; nil leaves them all.
	Logs *LogPolicy
	// Fence keeps the highest controller fence seen (pkg/fence); nil
	// starts from the one the runtime kept (a containerd namespace label)
	// and keeps every new one there.
	Fence  *fence.Guard
	Logger *slog.Logger
}

// Agent implements fsbv1connect.AgentServiceHandler.
type Agent struct {
	cfg     Config
	metrics *metrics
	watcher sync.WaitGroup
	fence   *fence.Guard

	// mu guards creating: the creates under way, by container ID, with the
	// ports they expose. A create reserves its slot here before it reaches
	// containerd, so concurrent creates cannot overrun capacity or share a
	// port; once it is done the runtime's state holds the sandbox.
	mu       sync.Mutex
	creating map[string][]int32
	// creatingFor names the sandbox revision each create under way is
	// for: two creates of one revision (a retry, while the first goes on)
	// may reserve under different containers (a claim's and a cold one's)
	// and share their ports.
	creatingFor map[string]string

	// logsMu serializes removals of sandbox logs.
	logsMu sync.Mutex

	// warm is the warm sandboxes' bookkeeping (warm.go).
	warm *warmPool
}

// New starts an agent: it watches containerd's events until ctx ends (Wait
// waits for that), loads the state of the sandboxes containerd already runs
// for this agent ID — adopting them — finishes or rolls back any that a
// crash left half made, and removes snapshots a crash left without their
// container.
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
	if cfg.Fence == nil {
		g, err := keptFence(ctx, cfg.Runtime, cfg.Logger)
		if err != nil {
			return nil, err
		}
		cfg.Fence = g
	}
	a := &Agent{cfg: cfg, metrics: newMetrics(cfg.Fence), fence: cfg.Fence, creating: make(map[string][]int32),
		creatingFor: make(map[string]string), warm: newWarmPool()}
	synced := make(chan struct{})
	a.watcher.Add(1)
	go func() {
		defer a.watcher.Done()
		cfg.Runtime.Watch(ctx, synced)
		// The agent stops: its successor listens for the inits again.
		cfg.Runtime.CloseLinks()
	}()
	select {
	case <-synced:
	case <-ctx.Done():
		return nil, fmt.Errorf("agent: load sandboxes: %w", ctx.Err())
	}
	rep, err := cfg.Runtime.Repair(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent: repair half-made sandboxes: %w", err)
	}
	if cfg.Logs != nil {
		a.sweepLogsLogged()
		a.watcher.Add(1)
		go func() {
			defer a.watcher.Done()
			a.sweepLogs(ctx)
		}()
	}
	a.watcher.Add(1)
	go func() {
		defer a.watcher.Done()
		a.refill(ctx)
	}()
	sandboxes, _ := cfg.Runtime.Sandboxes()
	a.metrics.capacity.Set(float64(cfg.Capacity))
	a.metrics.sandboxes.Set(float64(len(sandboxes)))
	cfg.Logger.Info("sandboxes loaded", slog.Int("running", len(sandboxes)),
		slog.Int("finished", rep.Finished), slog.Int("rolledBack", rep.RolledBack), slog.Int("lost", rep.Lost),
		slog.Int("leftoverSnapshots", rep.Snapshots), slog.Int("leftoverCgroups", rep.Cgroups), slog.Int("leftoverLinkDirs", rep.LinkDirs))
	return a, nil
}

var _ fsbv1connect.AgentServiceHandler = (*Agent)(nil)

// Wait waits until the agent has stopped watching containerd and sweeping
// logs, after the context given to New has ended.
func (a *Agent) Wait() { a.watcher.Wait() }

// heldLocked returns what holds a slot, by container ID, with the ports
// each exposes: the sandboxes, the warm sandboxes and the creates under
// way, but for container except (a warm sandbox being removed to make
// room). a.mu must be held.
func (a *Agent) heldLocked(except string) map[string][]int32 {
	held := make(map[string][]int32, len(a.creating))
	sandboxes, _ := a.cfg.Runtime.Sandboxes()
	for _, info := range sandboxes {
		held[info.ContainerID] = info.Spec.GetExposedPorts()
	}
	for _, info := range a.cfg.Runtime.WarmSandboxes() {
		held[info.ContainerID] = nil
	}
	maps.Copy(held, a.creating)
	delete(held, except)
	return held
}

// reserve takes a slot and the ports for a container of sandbox name
// (namespace/name), revision rev (sandboxRev), or says why not, naming what to change. A container
// that already holds a slot keeps it: creates are idempotent. A claim
// (claim set: containerID is a taken warm sandbox) has its slot already
// and takes only the ports; evict, when set, is a taken warm sandbox whose
// slot the container gets (the caller removes it).
func (a *Agent) reserve(containerID, name, rev string, ports []int32, claim bool, evict string) (release func(), err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	held := a.heldLocked(evict)
	names := make(map[string]string, len(held))
	sandboxes, _ := a.cfg.Runtime.Sandboxes()
	for _, info := range sandboxes {
		names[info.ContainerID] = "sandbox " + info.Namespace + "/" + info.Name
	}
	if _, ok := held[containerID]; ok && !claim {
		return func() {}, nil
	}
	if !claim && len(held) >= a.cfg.Capacity {
		return nil, fmt.Errorf("%w: agent %s has no free slot for sandbox %s: it runs %d of %d sandboxes: delete a sandbox or add capacity",
			errFull, a.cfg.AgentID, name, len(held), a.cfg.Capacity)
	}
	for id, used := range held {
		if id == containerID || a.creatingFor[id] == rev {
			continue
		}
		for _, p := range ports {
			if slices.Contains(used, p) {
				holder := cmp.Or(names[id], "a sandbox being created (container "+id+")")
				return nil, fmt.Errorf("port %d of sandbox %s is already used by %s on agent %s: delete it or pick another port",
					p, name, holder, a.cfg.AgentID)
			}
		}
	}
	a.creating[containerID], a.creatingFor[containerID] = ports, rev
	return func() {
		a.mu.Lock()
		delete(a.creating, containerID)
		delete(a.creatingFor, containerID)
		a.mu.Unlock()
	}, nil
}

// sandboxRev names a sandbox revision among the creates under way.
func sandboxRev(id string, revision int64) string {
	return id + "/" + strconv.FormatInt(revision, 10)
}

// CreateSandbox implements AgentService.CreateSandbox.
func (a *Agent) CreateSandbox(ctx context.Context, req *connect.Request[fsbv1.AgentServiceCreateSandboxRequest]) (*connect.Response[fsbv1.AgentServiceCreateSandboxResponse], error) {
	start := time.Now()
	a.warm.createBegan()
	defer a.warm.createEnded()
	msg := req.Msg
	if err := validateCreate(msg); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	sb := runtime.Sandbox{ID: msg.GetSandboxId(), Revision: msg.GetRevision(), Namespace: msg.GetNamespace(), Name: msg.GetName(),
		Spec: msg.GetSpec(), Labels: msg.GetLabels(), Persisted: msg.GetPersisted(),
		// A pull may take long: a controller deposed meanwhile gets no
		// container.
		Proceed: func() error { return a.stillCurrent(ctx, req.Spec().Procedure) }}
	name, rev := sb.Namespace+"/"+sb.Name, sandboxRev(sb.ID, sb.Revision)
	// The sandbox's container when it has one (a retry; a claimed one has
	// a warm sandbox's ID), else a warm sandbox of its kind to claim, else
	// a cold create's.
	cid, exists := a.cfg.Runtime.SandboxContainer(sb.ID, sb.Revision)
	key, claimable := v1alpha1.WarmKey(sb.Spec)
	var release func()
	var err error
	if !exists && claimable {
		if w := a.takeWarm(key); w != "" {
			if release, err = a.reserve(w, name, rev, sb.Spec.GetExposedPorts(), true, ""); err != nil {
				a.giveBack(w)
				a.metrics.observeCreate(start, "refused")
				return nil, connect.NewError(connect.CodeResourceExhausted, err)
			}
			cid, sb.Claim = w, w
			defer a.giveBack(w)
		}
	}
	if !exists && sb.Claim == "" {
		cid = runtime.ContainerID(sb.ID, sb.Revision)
	}
	if release == nil {
		release, err = a.reserve(cid, name, rev, sb.Spec.GetExposedPorts(), false, "")
		if errors.Is(err, errFull) {
			// Warm sandboxes hold slots a create may have: one goes.
			if victim := a.takeVictim(key); victim != "" {
				if release, err = a.reserve(cid, name, rev, sb.Spec.GetExposedPorts(), false, victim); err == nil {
					if rerr := a.removeWarm(ctx, victim); rerr != nil {
						a.cfg.Logger.Warn("remove a warm sandbox to make room", slog.String("container", victim), slog.Any("err", rerr))
					}
				} else {
					a.giveBack(victim)
				}
			}
		}
	}
	if err != nil {
		a.metrics.observeCreate(start, "refused")
		return nil, connect.NewError(connect.CodeResourceExhausted, err)
	}
	// A create runs to its end even when the caller goes away (a controller
	// crashing mid-call): half-made work would otherwise be rolled back
	// under a sandbox the caller's successor may already have adopted.
	// Retries of the same ID and revision find it done.
	ensureCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), CreateTimeout)
	info, err := a.cfg.Runtime.Ensure(ensureCtx, sb)
	cancel()
	release()
	if claimable && !exists && err == nil {
		if sb.Claim != "" && info.ContainerID == sb.Claim {
			a.metrics.warmClaims.WithLabelValues("hit").Inc()
			a.metrics.warmClaim.Observe(time.Since(start).Seconds())
		} else {
			a.metrics.warmClaims.WithLabelValues("miss").Inc()
		}
	}
	if isFenced(err) {
		a.metrics.observeCreate(start, "refused")
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	}
	if err != nil {
		a.metrics.observeCreate(start, "error")
		a.cfg.Logger.Warn("create sandbox failed", slog.String("sandbox", sb.ID), slog.Int64("revision", sb.Revision), slog.Any("err", err))
		return nil, a.failure(ctx, err)
	}
	a.metrics.observeCreate(start, "ok")
	a.cfg.Logger.Debug("sandbox running", slog.String("sandbox", sb.ID), slog.String("container", info.ContainerID),
		slog.Bool("warm", info.Claimed), slog.Duration("took", time.Since(start)))
	return connect.NewResponse(&fsbv1.AgentServiceCreateSandboxResponse{Sandbox: a.toProto(info)}), nil
}

// failure is the answer to a call the runtime failed. An error that says
// containerd did not answer, or one that came while containerd does not
// answer a ping, is marked as containerd's (fault.Containerd, with its
// address and this agent's ID): the user is then pointed at this node's
// containerd rather than at the controller that relayed the error.
func (a *Agent) failure(ctx context.Context, err error) *connect.Error {
	code := createCode(err)
	down := code == connect.CodeUnavailable && !errors.Is(err, runtime.ErrRegistryUnavailable)
	if !down && (code == connect.CodeInternal || code == connect.CodeDeadlineExceeded) {
		pingCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pingTimeout)
		down = a.cfg.Runtime.Ping(pingCtx) != nil
		cancel()
	}
	if !down {
		return connect.NewError(code, err)
	}
	where := "containerd"
	if a.cfg.Containerd != "" {
		where += " at " + a.cfg.Containerd
	}
	return fault.OnAgent(fault.Unreachable(fault.Containerd, fmt.Errorf("%s is unreachable: %w", where, err)), a.cfg.AgentID)
}

// pingTimeout bounds the ping that tells a failed call's cause apart from
// a containerd that does not answer.
const pingTimeout = 2 * time.Second

func createCode(err error) connect.Code {
	switch {
	case errors.Is(err, runtime.ErrInvalid):
		return connect.CodeInvalidArgument
	case errors.Is(err, runtime.ErrImageNotFound):
		return connect.CodeNotFound
	case errors.Is(err, runtime.ErrRegistryUnavailable):
		return connect.CodeUnavailable
	case errors.Is(err, runtime.ErrRegistryDenied):
		return connect.CodePermissionDenied
	case errors.Is(err, runtime.ErrUnavailable):
		return connect.CodeFailedPrecondition
	case errors.Is(err, runtime.ErrExists):
		return connect.CodeAlreadyExists
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
	// A delete runs to its end even when the caller goes away (a
	// controller killed or stopped mid-call), as a create does: cut short,
	// it left the sandbox running past its grace period, or a shim without
	// its task.
	deleteCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace+DeleteTimeout)
	ended, err := a.cfg.Runtime.Delete(deleteCtx, msg.GetSandboxId(), msg.GetRevision(), grace)
	cancel()
	if err != nil {
		a.metrics.observeDelete(start, "error")
		return nil, a.failure(ctx, err)
	}
	a.metrics.observeDelete(start, "ok")
	a.removeDeletedSandboxLogs(msg.GetSandboxId(), ended)
	resp := &fsbv1.AgentServiceDeleteSandboxResponse{}
	for _, info := range ended {
		resp.Sandboxes = append(resp.Sandboxes, a.toProto(info))
	}
	return connect.NewResponse(resp), nil
}

// MarkPersisted implements AgentService.MarkPersisted.
func (a *Agent) MarkPersisted(ctx context.Context, req *connect.Request[fsbv1.MarkPersistedRequest]) (*connect.Response[fsbv1.MarkPersistedResponse], error) {
	if err := validateID(req.Msg.GetSandboxId(), req.Msg.GetRevision()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if err := a.cfg.Runtime.MarkPersisted(ctx, req.Msg.GetSandboxId(), req.Msg.GetRevision()); err != nil {
		return nil, a.failure(ctx, err)
	}
	return connect.NewResponse(&fsbv1.MarkPersistedResponse{}), nil
}

// GetStatus implements AgentService.GetStatus.
func (a *Agent) GetStatus(_ context.Context, _ *connect.Request[fsbv1.GetStatusRequest]) (*connect.Response[fsbv1.GetStatusResponse], error) {
	infos, _ := a.cfg.Runtime.Sandboxes()
	return connect.NewResponse(&fsbv1.GetStatusResponse{Status: a.status(infos)}), nil
}

// status describes the agent and the sandboxes and images in the runtime's
// state, which containerd's events keep current: no call to containerd, so
// it answers while containerd restarts too.
func (a *Agent) status(infos []runtime.Info) *fsbv1.AgentStatus {
	a.metrics.sandboxes.Set(float64(len(infos)))
	st := &fsbv1.AgentStatus{
		AgentId:          a.cfg.AgentID,
		AdvertiseAddress: a.cfg.AdvertiseAddress,
		NodeName:         a.cfg.NodeName,
		Capacity:         int32(a.cfg.Capacity),
		Pool:             a.cfg.Pool,
		Images:           a.cfg.Runtime.ImageNames(),
		Runtimes:         a.cfg.Runtime.Runtimes(),
		Warm:             a.warmStock(),
	}
	for _, info := range infos {
		st.Sandboxes = append(st.Sandboxes, a.toProto(info))
	}
	return st
}

// WatchStatus implements AgentService.WatchStatus: the full status first,
// then again after every change, until the caller goes away; with a
// heartbeat asked for, an empty message every interval besides.
func (a *Agent) WatchStatus(ctx context.Context, req *connect.Request[fsbv1.WatchStatusRequest], stream *connect.ServerStream[fsbv1.WatchStatusResponse]) error {
	if req.Msg.GetHeartbeatMillis() < 0 {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("heartbeat_millis %d: want 0 (none) or more", req.Msg.GetHeartbeatMillis()))
	}
	var beat <-chan time.Time
	if ms := req.Msg.GetHeartbeatMillis(); ms > 0 {
		t := time.NewTicker(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		beat = t.C
	}
	infos, changed := a.cfg.Runtime.Sandboxes()
	msg := &fsbv1.WatchStatusResponse{Status: a.status(infos)}
	for {
		if err := stream.Send(msg); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-beat:
			msg = &fsbv1.WatchStatusResponse{}
		case <-changed:
			// Changes come in bursts (a create records its sandbox, then
			// the start): one message carries a burst, and a create's
			// answer is on its way before the message takes the cores.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(statusCoalesce):
			}
			infos, changed = a.cfg.Runtime.Sandboxes()
			msg = &fsbv1.WatchStatusResponse{Status: a.status(infos)}
		}
	}
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
	if msg.GetNamespace() != "" || msg.GetName() != "" {
		if err := v1alpha1.ValidateObjectName(msg.GetNamespace(), msg.GetName()); err != nil {
			return connect.NewError(connect.CodeInvalidArgument, err)
		}
	}
	path, done, err := a.logOf(msg)
	if err != nil {
		return err
	}
	err = logfile.Stream(ctx, path, logStreamOptions(int(msg.GetTail()), msg.GetFollow(), done), logSender(stream.Send))
	if err != nil && ctx.Err() == nil {
		return connect.NewError(connect.CodeInternal, err)
	}
	return nil
}

// logOf finds the log a StreamLogs request asks for, and what tells a
// follower that it is complete: the log of the sandbox's container, or,
// when the container is gone and the request names the sandbox's
// namespace and name, the log file its revision left on this node, which
// is complete already.
func (a *Agent) logOf(msg *fsbv1.AgentServiceStreamLogsRequest) (string, func() bool, error) {
	info, err := a.find(msg.GetSandboxId(), msg.GetRevision())
	if err == nil {
		return info.LogPath, func() bool {
			cur, ok := a.cfg.Runtime.Sandbox(info.ContainerID)
			return !ok || cur.Phase == runtime.PhaseExited
		}, nil
	}
	if msg.GetNamespace() == "" {
		return "", nil, err
	}
	path, _, ok := a.cfg.Runtime.RevisionLog(msg.GetNamespace(), msg.GetName(), msg.GetSandboxId(), msg.GetRevision())
	if !ok {
		what := "any revision"
		if msg.GetRevision() > 0 {
			what = "revision " + strconv.FormatInt(msg.GetRevision(), 10)
		}
		return "", nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox %s (%s/%s) has no container and no log of %s on agent %s",
			msg.GetSandboxId(), msg.GetNamespace(), msg.GetName(), what, a.cfg.AgentID))
	}
	return path, func() bool { return true }, nil
}

// find returns a sandbox revision, or its newest one when revision is 0.
func (a *Agent) find(sandboxID string, revision int64) (runtime.Info, error) {
	infos, _ := a.cfg.Runtime.Sandboxes()
	var found runtime.Info
	for _, info := range infos {
		if info.ID == sandboxID && (info.Revision == revision || revision == 0 && info.Revision > found.Revision) {
			found = info
		}
	}
	if found.ContainerID == "" {
		if revision > 0 {
			return runtime.Info{}, connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox %s revision %d is not on agent %s", sandboxID, revision, a.cfg.AgentID))
		}
		return runtime.Info{}, connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox %s is not on agent %s", sandboxID, a.cfg.AgentID))
	}
	return found, nil
}

func (a *Agent) toProto(info runtime.Info) *fsbv1.AgentSandbox {
	out := &fsbv1.AgentSandbox{
		SandboxId:   info.ID,
		Revision:    info.Revision,
		Namespace:   info.Namespace,
		Name:        info.Name,
		ContainerId: info.ContainerID,
		Spec:        info.Spec,
		Labels:      info.Labels,
		LogPath:     info.LogPath,
		Persisted:   info.Persisted,
		Warm:        info.Claimed,
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
		if info.ExitCode != 0 || info.Reason == runtime.ReasonLost {
			out.Phase = fsbv1.Phase_PHASE_FAILED
		}
		out.ExitCode = int32(info.ExitCode)
		out.Reason = info.Reason
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
