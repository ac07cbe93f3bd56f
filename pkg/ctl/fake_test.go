package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

const testToken = "s3cret-token"

// fakeFastPath is an in-memory FastPathService: enough of the controller's
// behaviour for the CLI to be exercised over real Connect calls.
type fakeFastPath struct {
	fsbv1connect.UnimplementedFastPathServiceHandler

	mu        sync.Mutex
	sandboxes map[string]*fsbv1.Sandbox // by namespace/name
	logs      map[string][]*fsbv1.LogLine
	// oldLogs holds the logs of earlier revisions, by namespace/name and
	// revision; logs holds the current revision's.
	oldLogs map[string]map[int64][]*fsbv1.LogLine
	agents  []*fsbv1.AgentStatus
	// createErr, when set, is what CreateSandbox answers.
	createErr error
	// followGate, when set, holds a followed log stream open after its
	// first lines until it is closed; then followLines are sent and the
	// stream ends, as the controller's does once the sandbox has exited.
	followGate  chan struct{}
	followLines []*fsbv1.LogLine

	// stalls, by sandbox name, makes DeleteSandbox behave as a controller
	// whose delete cannot finish in time.
	stalls map[string]deleteStall

	// pools are the SandboxPools, by name (apply_test.go).
	pools map[string]*fsbv1.SandboxPool

	// usage is what GetSandboxUsage answers for any sandbox it has.
	usage *fsbv1.SandboxUsage

	creates []*fsbv1.CreateSandboxRequest
	updates []*fsbv1.UpdateSandboxRequest
	deletes []*fsbv1.DeleteSandboxRequest
	lists   []*fsbv1.ListSandboxesRequest
	logReqs []*fsbv1.StreamLogsRequest
}

func newFake() *fakeFastPath {
	return &fakeFastPath{sandboxes: map[string]*fsbv1.Sandbox{}, logs: map[string][]*fsbv1.LogLine{}}
}

func key(ns, name string) string { return ns + "/" + name }

// add stores a Running sandbox created age ago.
func (f *fakeFastPath) add(ns, name, image string, age time.Duration, endpoints ...string) *fsbv1.Sandbox {
	sb := &fsbv1.Sandbox{
		Name:       name,
		Namespace:  ns,
		Spec:       &fsbv1.SandboxSpec{Image: image},
		CreateTime: timestamppb.New(time.Now().Add(-age)),
		Status: &fsbv1.SandboxStatus{
			Phase:       fsbv1.Phase_PHASE_RUNNING,
			SandboxId:   "sb-" + name,
			AssignedPod: "local",
			NodeName:    "node-1",
			Endpoints:   endpoints,
			Revision:    1,
		},
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sandboxes[key(ns, name)] = sb
	return sb
}

func (f *fakeFastPath) CreateSandbox(_ context.Context, req *connect.Request[fsbv1.CreateSandboxRequest]) (*connect.Response[fsbv1.CreateSandboxResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates = append(f.creates, req.Msg)
	if f.createErr != nil {
		return nil, f.createErr
	}
	k := key(req.Msg.GetNamespace(), req.Msg.GetName())
	if _, ok := f.sandboxes[k]; ok {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("sandbox %s exists with another spec", k))
	}
	var endpoints []string
	for _, p := range req.Msg.GetSpec().GetExposedPorts() {
		endpoints = append(endpoints, fmt.Sprintf("127.0.0.1:%d", p))
	}
	sb := &fsbv1.Sandbox{
		Name:       req.Msg.GetName(),
		Namespace:  req.Msg.GetNamespace(),
		Labels:     req.Msg.GetLabels(),
		Spec:       req.Msg.GetSpec(),
		CreateTime: timestamppb.Now(),
		Status: &fsbv1.SandboxStatus{
			Phase:       fsbv1.Phase_PHASE_RUNNING,
			SandboxId:   "sb-" + req.Msg.GetName(),
			AssignedPod: "local",
			Endpoints:   endpoints,
			Revision:    1,
		},
	}
	f.sandboxes[k] = sb
	return connect.NewResponse(&fsbv1.CreateSandboxResponse{Sandbox: sb}), nil
}

// UpdateSandbox behaves as the controller's: it replaces the labels when
// the request has any, and sets the spec's lifecycle fields the request
// names; a reset records its time, as the controller does before it acts.
func (f *fakeFastPath) UpdateSandbox(_ context.Context, req *connect.Request[fsbv1.UpdateSandboxRequest]) (*connect.Response[fsbv1.UpdateSandboxResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates = append(f.updates, proto.Clone(req.Msg).(*fsbv1.UpdateSandboxRequest))
	sb, ok := f.sandboxes[key(req.Msg.GetNamespace(), req.Msg.GetName())]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such sandbox"))
	}
	if req.Msg.GetExpireTime() != nil && req.Msg.GetClearExpireTime() {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("expire_time and clear_expire_time together"))
	}
	if req.Msg.GetLabels() != nil {
		sb.Labels = req.Msg.GetLabels()
	}
	if p := req.Msg.GetFailurePolicy(); p != fsbv1.FailurePolicy_FAILURE_POLICY_UNSPECIFIED {
		sb.Spec.FailurePolicy = p
	}
	if req.Msg.RecoveryTimeoutSeconds != nil {
		sb.Spec.RecoveryTimeoutSeconds = req.Msg.GetRecoveryTimeoutSeconds()
	}
	switch {
	case req.Msg.GetClearExpireTime():
		sb.Spec.ExpireTime = nil
	case req.Msg.GetExpireTime() != nil:
		sb.Spec.ExpireTime = req.Msg.GetExpireTime()
	}
	if req.Msg.GetResetRevision() {
		sb.Spec.ResetRevision = timestamppb.Now()
	}
	return connect.NewResponse(&fsbv1.UpdateSandboxResponse{Sandbox: sb}), nil
}

func (f *fakeFastPath) GetSandbox(_ context.Context, req *connect.Request[fsbv1.GetSandboxRequest]) (*connect.Response[fsbv1.GetSandboxResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.sandboxes[key(req.Msg.GetNamespace(), req.Msg.GetName())]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such sandbox"))
	}
	return connect.NewResponse(&fsbv1.GetSandboxResponse{Sandbox: sb}), nil
}

func (f *fakeFastPath) ListSandboxes(_ context.Context, req *connect.Request[fsbv1.ListSandboxesRequest]) (*connect.Response[fsbv1.ListSandboxesResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists = append(f.lists, req.Msg)
	resp := &fsbv1.ListSandboxesResponse{}
	for _, sb := range f.sandboxes {
		if ns := req.Msg.GetNamespace(); ns != "" && sb.GetNamespace() != ns {
			continue
		}
		if !matches(sb.GetLabels(), req.Msg.GetLabelSelector()) {
			continue
		}
		resp.Sandboxes = append(resp.Sandboxes, sb)
	}
	return connect.NewResponse(resp), nil
}

// matches understands the equality selectors the tests use: "a=b,c=d".
func matches(labels map[string]string, selector string) bool {
	if selector == "" {
		return true
	}
	for _, term := range strings.Split(selector, ",") {
		k, v, _ := strings.Cut(term, "=")
		if labels[k] != v {
			return false
		}
	}
	return true
}

// deleteStall is how a delete that does not finish in time behaves.
type deleteStall struct {
	// record marks the sandbox Terminating with message, as the
	// controller does once the deletion is recorded; without it the
	// sandbox stays as it was (a pending FAST sandbox whose agent does
	// not answer).
	record  bool
	message string
	// answer returns DeadlineExceeded at once, as a controller whose own
	// wait ran out; otherwise the call holds until the caller gives up.
	answer bool
	// finish removes the sandbox before the call holds: the delete
	// completed, but its answer came too late.
	finish bool
}

func (f *fakeFastPath) DeleteSandbox(ctx context.Context, req *connect.Request[fsbv1.DeleteSandboxRequest]) (*connect.Response[fsbv1.DeleteSandboxResponse], error) {
	f.mu.Lock()
	f.deletes = append(f.deletes, req.Msg)
	k := key(req.Msg.GetNamespace(), req.Msg.GetName())
	sb, ok := f.sandboxes[k]
	if !ok {
		f.mu.Unlock()
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such sandbox"))
	}
	stall, stalled := f.stalls[req.Msg.GetName()]
	if !stalled {
		delete(f.sandboxes, k)
		f.mu.Unlock()
		return connect.NewResponse(&fsbv1.DeleteSandboxResponse{}), nil
	}
	if stall.record {
		sb.Status.Phase = fsbv1.Phase_PHASE_TERMINATING
		sb.Status.Message = stall.message
	}
	if stall.finish {
		delete(f.sandboxes, k)
	}
	f.mu.Unlock()
	if !stall.answer {
		<-ctx.Done()
	}
	return nil, connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("sandbox %s is still being deleted", k))
}

func (f *fakeFastPath) StreamLogs(ctx context.Context, req *connect.Request[fsbv1.StreamLogsRequest], stream *connect.ServerStream[fsbv1.StreamLogsResponse]) error {
	f.mu.Lock()
	f.logReqs = append(f.logReqs, req.Msg)
	k := key(req.Msg.GetNamespace(), req.Msg.GetName())
	sb, ok := f.sandboxes[k]
	lines := f.logs[k]
	gate, more := f.followGate, f.followLines
	rev := req.Msg.GetRevision()
	if req.Msg.GetPrevious() {
		rev = sb.GetStatus().GetRevision() - 1
	}
	if rev != 0 && rev != sb.GetStatus().GetRevision() {
		lines, ok = f.oldLogs[k][rev]
		gate = nil
	}
	f.mu.Unlock()
	if sb == nil {
		return connect.NewError(connect.CodeNotFound, errors.New("no such sandbox"))
	}
	if !ok {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("revision %d of sandbox %s has no log kept", rev, k))
	}
	if n := int(req.Msg.GetTail()); n > 0 && n < len(lines) {
		lines = lines[len(lines)-n:]
	}
	if err := stream.Send(&fsbv1.StreamLogsResponse{Lines: lines}); err != nil {
		return err
	}
	if !req.Msg.GetFollow() || gate == nil {
		return nil
	}
	select {
	case <-gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return stream.Send(&fsbv1.StreamLogsResponse{Lines: more})
}

func (f *fakeFastPath) ListAgents(context.Context, *connect.Request[fsbv1.ListAgentsRequest]) (*connect.Response[fsbv1.ListAgentsResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return connect.NewResponse(&fsbv1.ListAgentsResponse{Agents: f.agents}), nil
}

// lastCreate returns a copy of the last CreateSandbox request.
func (f *fakeFastPath) lastCreate(t *testing.T) *fsbv1.CreateSandboxRequest {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.creates) == 0 {
		t.Fatal("no CreateSandbox call reached the server")
	}
	return proto.Clone(f.creates[len(f.creates)-1]).(*fsbv1.CreateSandboxRequest)
}

func (f *fakeFastPath) GetSandboxUsage(ctx context.Context, req *connect.Request[fsbv1.GetSandboxUsageRequest]) (*connect.Response[fsbv1.GetSandboxUsageResponse], error) {
	if _, err := f.GetSandbox(ctx, connect.NewRequest(&fsbv1.GetSandboxRequest{Name: req.Msg.GetName(), Namespace: req.Msg.GetNamespace()})); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return connect.NewResponse(&fsbv1.GetSandboxUsageResponse{Usage: f.usage}), nil
}

// serve starts f behind the bearer-token check the controller has and
// returns its URL.
func serve(t *testing.T, f *fakeFastPath) string {
	t.Helper()
	mux := http.NewServeMux()
	path, api := fsbv1connect.NewFastPathServiceHandler(f)
	mux.Handle(path, auth.Middleware(auth.Tokens{testToken}.As(auth.RoleUser), auth.FastPathPolicy, nil, api))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader in different
// goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// client returns a Client of url with the test token in namespace ns, and
// its stdout and stderr.
func client(t *testing.T, url, token, ns string) (*Client, *syncBuffer, *syncBuffer) {
	t.Helper()
	var out, errw syncBuffer
	c, err := New(Config{Server: url, Token: token, Namespace: ns, Out: &out, Err: &errw})
	if err != nil {
		t.Fatal(err)
	}
	return c, &out, &errw
}
