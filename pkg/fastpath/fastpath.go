// Package fastpath serves fsb.v1.FastPathService, the API users and the CLI
// talk to. CreateSandbox has two consistency modes (DESIGN §4):
//
//   - FAST: allocate a slot, have the agent start the container, answer,
//     and write the object afterwards. Until the write lands, a table of
//     pending creates makes Get, List, Delete and the AlreadyExists check
//     see the truth. A write that fails transiently (the store is
//     unreachable, or an attempt has no answer within 5 s) is retried
//     until it lands: an acknowledged sandbox is never removed because the
//     store was down, however long it stays down. The store is known
//     unreachable from such a failure until it answers a write again
//     (storehealth.go), and meanwhile new FAST creates answer Unavailable.
//     A write the store refuses for good (invalid, the name taken by
//     another sandbox; forbidden, over quota or its namespace missing once
//     it has refused so for ForbiddenGrace, since a restarted API server
//     refuses everything until its authorization caches fill) has its
//     container removed, with an error line and a StoreRefused Event. A
//     graceful stop leaves what is not written by then to the next
//     start's recovery.
//   - STRONG: write the object; the controller persists Bound with an
//     agent, starts the container and persists Running; the request
//     answers then.
package fastpath

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/retry"

	"github.com/fast-sandbox/fast-sandbox/pkg/agent"
	"github.com/fast-sandbox/fast-sandbox/pkg/agentlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/controller"
	"github.com/fast-sandbox/fast-sandbox/pkg/ctxerr"
	"github.com/fast-sandbox/fast-sandbox/pkg/fault"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// Defaults.
const (
	DefaultNamespace = "default"
	// DefaultShutdownTimeout is how long pending object writes may go on
	// once the server's context has ended.
	DefaultShutdownTimeout = 5 * time.Second
	// StrongTimeout bounds how long a STRONG create waits for Running.
	StrongTimeout = 60 * time.Second
)

// agentCreateTimeout bounds a FAST create's agent call, which runs under
// its own deadline rather than the caller's: the agent's own bound on a
// create (an image pull included) and a margin for the answer to arrive.
const agentCreateTimeout = agent.CreateTimeout + 30*time.Second

// persistDelay is how long a FAST create's object write waits after the
// create answered.
const persistDelay = 3 * time.Millisecond

// unansweredCleanupTimeout bounds how long a FAST create whose agent call
// got no answer tries to remove what the agent may have made before it
// answers its caller.
const unansweredCleanupTimeout = 10 * time.Second

// Config is what a Server needs.
type Config struct {
	Store      store.Interface
	Registry   *registry.Registry
	Agents     *agentlink.Set
	Controller *controller.Controller
	// DefaultMode applies when a request sets none.
	DefaultMode v1alpha1.ConsistencyMode
	// ShutdownTimeout is how long FAST creates' object writes go on once
	// the server's context has ended (a graceful stop). Those not written
	// by then keep their containers, which the next start's Recover gives
	// their objects: a stop is not an orphan.
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
	// Metrics receives create latencies; nil records none.
	Metrics *Metrics
	// Events records an Event on a sandbox whose container is removed
	// because the store refused its object for good; nil records none.
	// client-go's record.EventRecorder is one.
	Events EventRecorder
	// ForbiddenGrace is how long a FAST object write answered Forbidden
	// is retried before the refusal is final (DefaultForbiddenGrace when
	// zero; negative: at once).
	ForbiddenGrace time.Duration
	// AgentGone reports an agent that is gone for good and will never
	// connect again: in Kubernetes, one whose pod no longer exists (a pod's
	// UID, the agent's ID, is never reused). What such an agent left on
	// its node can be judged without hearing from it (Janitor). Nil: no
	// agent is ever known gone (a static --agents list may come back).
	AgentGone func(agentID string) bool
	// Pools keeps the SandboxPools the pool RPCs serve, in PoolNamespace;
	// nil: pools are not served (FailedPrecondition).
	Pools         store.PoolInterface
	PoolNamespace string
}

// EventRecorder records an Event about an object; client-go's
// record.EventRecorder is one.
type EventRecorder interface {
	Eventf(object k8sruntime.Object, eventtype, reason, messageFmt string, args ...any)
}

// Server implements fsbv1connect.FastPathServiceHandler.
type Server struct {
	cfg Config
	ctx context.Context // owns the asynchronous writes
	// drain ends ShutdownTimeout after ctx: the object writes under way
	// at a stop go on until then.
	drain context.Context
	wg    sync.WaitGroup

	mu       sync.Mutex
	stopping bool                      // Wait was called: no new work may join wg
	pending  map[string]*pendingCreate // FAST creates whose object is not in the cache yet
	health   storeHealth               // whether the pending writes find the store

	// recoverMu lets one recovery run at a time (recover.go).
	recoverMu sync.Mutex
	// recovered is closed once Recover has succeeded; the queued
	// recoveries of agents that connect run only then.
	recovered     chan struct{}
	recoveredOnce sync.Once
	// terms passes runRecoveries the context of each Recover that
	// succeeded: the term it began (buffered 1, only Recover sends).
	terms  chan context.Context
	qmu    sync.Mutex
	queued map[string]bool // agent IDs whose recovery is due
	wake   chan struct{}   // has an element when queued may have one
	// connects counts each agent's connections (AgentUp); reconciled holds
	// the count its last successful recovery started from. The janitor
	// hears "unknown" only of agents whose two agree (janitor.go).
	connects, reconciled map[string]uint64
}

// pendingCreate is a FAST create whose object is being written.
type pendingCreate struct {
	id    string // the sandbox ID; never changes
	agent string // the agent it runs on; set before persist starts, then never changed

	mu  sync.Mutex
	obj *v1alpha1.Sandbox
	// writing says a write of obj is under way; written that obj is in
	// the store, where updates and deletes then go.
	writing, written bool
	// deleting counts deletes under way, during which no write starts;
	// deleted says the container is gone and the sandbox hidden.
	deleting int
	deleted  bool
	changed  chan struct{} // closed and replaced at every change of the above
}

func newPendingCreate(id string, obj *v1alpha1.Sandbox) *pendingCreate {
	return &pendingCreate{id: id, obj: obj, changed: make(chan struct{})}
}

// await waits until cond holds or ctx ends. p.mu is held when it is
// called and when it returns; it is released while waiting.
func (p *pendingCreate) await(ctx context.Context, cond func() bool) error {
	for !cond() {
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			p.mu.Lock()
			return ctx.Err()
		}
		p.mu.Lock()
	}
	return nil
}

// signal wakes await's waiters after a change; p.mu must be held.
func (p *pendingCreate) signal() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// New returns a Server whose asynchronous writes, and the recoveries of
// agents that connect, run until ctx ends; Wait waits for them.
func New(ctx context.Context, cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DefaultMode == "" {
		cfg.DefaultMode = v1alpha1.ConsistencyFast
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.ForbiddenGrace == 0 {
		cfg.ForbiddenGrace = DefaultForbiddenGrace
	}
	drain, endDrain := context.WithCancel(context.WithoutCancel(ctx))
	context.AfterFunc(ctx, func() { time.AfterFunc(cfg.ShutdownTimeout, endDrain) })
	s := &Server{
		cfg: cfg, ctx: ctx, drain: drain, pending: make(map[string]*pendingCreate),
		health: storeHealth{logger: cfg.Logger, forbiddenGrace: cfg.ForbiddenGrace,
			failing: make(map[*pendingCreate]bool), forbidden: make(map[string]time.Time)},
		recovered: make(chan struct{}), terms: make(chan context.Context, 1), queued: make(map[string]bool), wake: make(chan struct{}, 1),
		connects: make(map[string]uint64), reconciled: make(map[string]uint64),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.runRecoveries()
	}()
	return s
}

// Wait waits for the asynchronous object writes to end, and for the
// creates that have asked an agent to finish; a create that would ask one
// from now on is refused. Once the server's context has ended, the writes
// end within ShutdownTimeout.
func (s *Server) Wait() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.wg.Wait()
}

// begin counts work that Wait must wait for; false once Wait was called.
// The caller calls s.wg.Done when the work ends.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.wg.Add(1)
	return true
}

// NewID returns a fresh sandbox ID: "sb-" and 16 random base32 characters.
func NewID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return "sb-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

func key(namespace, name string) string { return namespace + "/" + name }

// lookup returns the sandbox namespace/name as the API shows it: the
// cached object once the controller has written its status, else a
// pending FAST create (withPendingStatus), else the cached object.
func (s *Server) lookup(namespace, name string) *v1alpha1.Sandbox {
	cached, ok := s.cfg.Controller.Get(namespace, name)
	if ok && observed(cached) {
		return cached
	}
	if p := s.pendingView(key(namespace, name)); p != nil {
		return withPendingStatus(cached, p)
	}
	return cached
}

// withPendingStatus is what the API shows of pending FAST create p while
// the controller has not written its status: once its object is written
// (cached, of the same sandbox ID), the object as stored, so that an
// update or a label set in the store shows at once, with p's status;
// before that, p.
func withPendingStatus(cached, p *v1alpha1.Sandbox) *v1alpha1.Sandbox {
	if cached == nil || cached.Annotations[v1alpha1.AnnotationID] != p.Annotations[v1alpha1.AnnotationID] {
		return p
	}
	out := cached.DeepCopy()
	out.Status = p.Status
	return out
}

// pendingView returns a copy of the pending FAST create k, if there is
// one and it is not being deleted.
func (s *Server) pendingView(k string) *v1alpha1.Sandbox {
	s.mu.Lock()
	p := s.pending[k]
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deleted {
		return nil
	}
	return p.obj.DeepCopy()
}

// observed reports whether the controller has written a sandbox's status.
// Until it has, a FAST create's pending entry is the better view: the
// object as written carries no status (a create drops it).
func observed(sb *v1alpha1.Sandbox) bool { return sb.Status.Phase != "" }

// CreateSandbox implements FastPathService.CreateSandbox.
func (s *Server) CreateSandbox(ctx context.Context, req *connect.Request[fsbv1.CreateSandboxRequest]) (*connect.Response[fsbv1.CreateSandboxResponse], error) {
	msg := req.Msg
	namespace := or(msg.GetNamespace(), DefaultNamespace)
	if err := validateCreate(namespace, msg); err != nil {
		return nil, err
	}
	spec := v1alpha1.SpecFromProto(msg.GetSpec())
	if spec.ConsistencyMode == "" {
		spec.ConsistencyMode = s.cfg.DefaultMode
	}
	if spec.FailurePolicy == "" {
		spec.FailurePolicy = v1alpha1.FailurePolicyManual
	}
	obj := &v1alpha1.Sandbox{
		ObjectMeta: metav1.ObjectMeta{
			Name: msg.GetName(), Namespace: namespace, Labels: msg.GetLabels(),
			Annotations: map[string]string{v1alpha1.AnnotationID: NewID()},
			Finalizers:  []string{v1alpha1.Finalizer},
		},
		Spec: spec,
	}
	if existing := s.lookup(namespace, msg.GetName()); existing != nil {
		if _, err := s.existing(existing, obj); err != nil {
			return nil, err
		}
		if spec.ConsistencyMode == v1alpha1.ConsistencyStrong {
			// A retried STRONG create answers as the first would have: once
			// the sandbox runs.
			out, err := s.awaitStrong(ctx, existing)
			if err != nil {
				return nil, err
			}
			existing = out
		}
		return connect.NewResponse(&fsbv1.CreateSandboxResponse{Sandbox: v1alpha1.ToProto(existing)}), nil
	}
	start := time.Now()
	var out *v1alpha1.Sandbox
	var err error
	if spec.ConsistencyMode == v1alpha1.ConsistencyStrong {
		out, err = s.createStrong(ctx, obj)
	} else {
		out, err = s.createFast(ctx, obj)
	}
	s.cfg.Metrics.observeCreate(string(spec.ConsistencyMode), start, outcome(err))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.CreateSandboxResponse{Sandbox: v1alpha1.ToProto(out)}), nil
}

// existing answers a create for a name that is taken: the same spec and
// labels return the sandbox, anything else is AlreadyExists.
func (s *Server) existing(have, want *v1alpha1.Sandbox) (*connect.Response[fsbv1.CreateSandboxResponse], error) {
	if have.DeletionTimestamp == nil && equality.Semantic.DeepEqual(have.Spec, want.Spec) && maps.Equal(have.Labels, want.Labels) {
		return connect.NewResponse(&fsbv1.CreateSandboxResponse{Sandbox: v1alpha1.ToProto(have)}), nil
	}
	return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("sandbox %s/%s already exists with another spec: delete it first or pick another name", have.Namespace, have.Name))
}

func (s *Server) createFast(ctx context.Context, obj *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	// A sandbox acknowledged now would run without an object for as long
	// as the store stays away: refuse it before anything is allocated.
	if err := s.health.unreachable(); err != nil {
		return nil, fault.Unreachable(fault.Store, fmt.Errorf("the store is unreachable: %w; FAST creates resume when it is back", err))
	}
	k := key(obj.Namespace, obj.Name)
	id := obj.Annotations[v1alpha1.AnnotationID]
	p := newPendingCreate(id, obj)
	s.mu.Lock()
	if s.pending[k] != nil {
		s.mu.Unlock()
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("sandbox %s is being created", k))
	}
	// From here an update may change the pending object: read a copy.
	want := obj.DeepCopy()
	s.pending[k] = p
	s.mu.Unlock()
	drop := func() { s.forgetPending(k, p) }
	// The cache may have got the object between lookup and reservation.
	if existing, ok := s.cfg.Controller.Get(want.Namespace, want.Name); ok {
		drop()
		if _, err := s.existing(existing, want); err != nil {
			return nil, err
		}
		return existing, nil
	}
	req, err := controller.PlacementRequest(want, id)
	if err != nil {
		drop()
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	done := s.cfg.Metrics.Phase(fast, "allocate")
	place, err := s.cfg.Registry.Allocate(req)
	done()
	if err != nil {
		drop()
		if code, _, msg, ok := s.cfg.Controller.PoolRefusal(err); ok {
			// The pool named is missing or going: no agent search ran.
			return nil, connect.NewError(code, errors.New(msg))
		}
		return nil, s.noCapacity(want, err)
	}
	client, err := s.cfg.Agents.Client(place.AgentID)
	if err != nil {
		s.cfg.Registry.Release(id)
		drop()
		if s.cfg.Agents.Conflict(place.AgentID) != nil {
			// Placed before the registry heard that two agents report this
			// ID: the answer is the one placement gives once it has.
			return nil, connect.NewError(connect.CodeResourceExhausted,
				fmt.Errorf("no agent can take sandbox %s in namespace %s: %w", want.Name, want.Namespace, err))
		}
		return nil, s.agentUnreachable(place.AgentID, err)
	}
	if err := ctx.Err(); err != nil || !s.begin() {
		s.cfg.Registry.Release(id)
		drop()
		if ce, ok := ctxerr.Of(err); ok {
			return nil, ce
		}
		return nil, fault.Unreachable(fault.Controller, errors.New("the controller is stopping"))
	}
	defer s.wg.Done()
	// Once the agent is asked, the create ends here whatever the caller
	// does: a caller that goes away must not leave a container that no
	// object, pending create or slot accounts for (the agent finishes a
	// create whatever its caller does).
	// It also ends when the agent goes down, rather than wait on an agent
	// that stopped answering.
	timeoutCtx, cancelTimeout := context.WithTimeout(context.WithoutCancel(ctx), agentCreateTimeout)
	defer cancelTimeout()
	callCtx, cancel := s.cfg.Agents.Bind(timeoutCtx, place.AgentID)
	done = s.cfg.Metrics.Phase(fast, "agent")
	resp, err := client.CreateSandbox(callCtx, connect.NewRequest(&fsbv1.AgentServiceCreateSandboxRequest{
		SandboxId: id, Revision: 1, Namespace: want.Namespace, Name: want.Name, Spec: v1alpha1.SpecToProto(want.Spec), Labels: want.Labels,
	}))
	done()
	if cause := context.Cause(callCtx); err != nil && !connect.IsWireError(err) && errors.Is(cause, agentlink.ErrAgentDown) {
		// The call ended because the agent went silent: say that rather
		// than "context canceled".
		err = fmt.Errorf("%w: it stopped answering during the create", agentlink.ErrAgentDown)
	}
	cancel()
	if err != nil {
		return nil, s.createFailed(k, p, place.AgentID, err)
	}
	p.mu.Lock()
	p.agent = place.AgentID
	obj.Annotations[v1alpha1.AnnotationAgent] = place.AgentID
	obj.Annotations[v1alpha1.AnnotationRevision] = "1"
	warm := resp.Msg.GetSandbox().GetWarm()
	if warm {
		obj.Annotations[v1alpha1.AnnotationWarm] = "true"
	}
	obj.Status = v1alpha1.SandboxStatus{
		Phase: v1alpha1.PhaseRunning, SandboxID: id, AssignedPod: place.AgentID, NodeName: place.NodeName,
		Endpoints: resp.Msg.GetSandbox().GetEndpoints(), Revision: 1, Warm: warm,
	}
	obj.CreationTimestamp = metav1.Now()
	out := obj.DeepCopy()
	p.mu.Unlock()
	s.wg.Add(1) // within begin's count: Wait cannot have reached zero
	go func() {
		defer s.wg.Done()
		// The answer is on its way to the caller: the write (encoding,
		// the store, the watches it wakes) waits until it is out rather
		// than take the cores it needs. The pending create covers the
		// sandbox meanwhile.
		time.Sleep(persistDelay)
		s.persist(k, p)
	}()
	return out, nil
}

// createFailed ends a FAST create the agent did not run, and says why. An
// answer from the agent means it made nothing that stays (it rolls back
// what a failed create made), so the slot is free at once and the agent's
// code is the answer. Without an answer (the connection broke, the call
// timed out) the agent may have made the container: it is removed before
// the slot is released. If the agent cannot be reached for that either, a
// container it made is found when it is back (RecoverAgent) and gets its
// object.
func (s *Server) createFailed(k string, p *pendingCreate, agentID string, err error) error {
	answered := connect.IsWireError(err)
	if !answered && s.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), unansweredCleanupTimeout)
		rerr := s.removeContainer(ctx, agentID, p.id, 1)
		cancel()
		if rerr != nil {
			s.cfg.Logger.Warn("a FAST create got no answer and its agent cannot be reached; if the agent made the sandbox, its object is re-created when the agent is back",
				slog.String("sandbox", k), slog.String("id", p.id), slog.String("agent", agentID), slog.Any("err", rerr))
		}
	}
	s.cfg.Registry.Release(p.id)
	s.forgetPending(k, p)
	if ce := new(connect.Error); answered && errors.As(err, &ce) {
		return fault.Relay(ce)
	}
	return s.agentUnreachable(agentID, err)
}

// noCapacity words a placement the registry refused as ResourceExhausted:
// the sandbox by its name, why the agents refused it, and what to change —
// for a port in use, which sandboxes hold it.
func (s *Server) noCapacity(obj *v1alpha1.Sandbox, err error) error {
	var nc *registry.NoCapacityError
	if !errors.As(err, &nc) {
		return connect.NewError(connect.CodeResourceExhausted, err)
	}
	what := fmt.Sprintf("sandbox %s in namespace %s", obj.Name, obj.Namespace)
	var ports string
	if nc.PortInUse > 0 {
		ports = s.portHolders(obj.Spec.ExposedPorts)
	}
	return connect.NewError(connect.CodeResourceExhausted, errors.New(nc.Advice(what, obj.Spec.PoolRef, ports)))
}

// portHolders says which sandboxes hold the given ports, from what the
// agents last reported: "port 8080 is held by sandbox team/web (agent
// local)".
func (s *Server) portHolders(ports []int32) string {
	var held []string
	for _, st := range s.cfg.Agents.Statuses() {
		for _, sb := range st.GetSandboxes() {
			if sb.GetPhase() == fsbv1.Phase_PHASE_SUCCEEDED || sb.GetPhase() == fsbv1.Phase_PHASE_FAILED {
				continue
			}
			for _, p := range sb.GetSpec().GetExposedPorts() {
				if slices.Contains(ports, p) {
					held = append(held, fmt.Sprintf("port %d is held by sandbox %s/%s (agent %s)", p, sb.GetNamespace(), sb.GetName(), st.GetAgentId()))
				}
			}
		}
	}
	if len(held) == 0 {
		return fmt.Sprintf("a port of %v is in use", ports)
	}
	slices.Sort(held)
	return strings.Join(slices.Compact(held), ", ")
}

// agentUnreachable is the answer to a call that could not reach an agent:
// Unavailable, marked as the agent's (fault.Agent) with its ID and address.
// An agent that takes no calls because two addresses report its ID is
// reachable: that error says so as it is.
func (s *Server) agentUnreachable(agentID string, err error) error {
	if s.cfg.Agents.Conflict(agentID) != nil {
		return connect.NewError(connect.CodeUnavailable, err)
	}
	where := "agent " + agentID
	if addr := s.cfg.Agents.Address(agentID); addr != "" {
		where += " at " + addr
	}
	return fault.OnAgent(fault.Unreachable(fault.Agent, fmt.Errorf("%s is unreachable: %w", where, err)), agentID)
}

// removeContainer removes a sandbox revision's container (grace 0),
// retrying with back-off until its agent confirms it is gone or ctx ends.
func (s *Server) removeContainer(ctx context.Context, agentID, id string, revision int64) error {
	zero := int32(0)
	backoff := 50 * time.Millisecond
	for {
		client, err := s.cfg.Agents.Client(agentID)
		if err == nil {
			_, err = client.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{
				SandboxId: id, Revision: revision, GracePeriodSeconds: &zero,
			}))
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove sandbox %s from agent %s: %w", id, agentID, err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// persist writes a FAST create's object. A write that fails transiently
// is retried with back-off until it lands: the sandbox was acknowledged,
// and a store that is away is no reason to remove it. A write the store
// refuses for good has the container removed (refused). A graceful stop
// lets the write go on for ShutdownTimeout; if it has not landed by then
// the container stays, unmarked, for the next start's recovery to give it
// its object.
func (s *Server) persist(k string, p *pendingCreate) {
	done := s.cfg.Metrics.Phase(fast, "store")
	backoff := writeBackoff
	warnedForbidden := false
	stopped := func(err error) {
		s.cfg.Logger.Warn("stopped before a FAST sandbox's object was written; the next start re-creates it from its agent",
			slog.String("sandbox", k), slog.String("id", p.id), slog.Any("err", err))
		s.forgetPending(k, p)
	}
	for {
		p.mu.Lock()
		// No write starts while a delete is under way: the delete hides
		// the sandbox once the container is gone, and an object written
		// meanwhile would bring it back.
		if err := p.await(s.drain, func() bool { return p.deleting == 0 || p.deleted }); err != nil {
			p.mu.Unlock()
			stopped(err)
			return
		}
		if p.deleted {
			p.mu.Unlock()
			s.forgetPending(k, p)
			return
		}
		obj := p.obj.DeepCopy()
		p.writing = true
		p.mu.Unlock()
		err := s.write(k, p, obj)
		p.mu.Lock()
		p.writing, p.written = false, err == nil
		p.signal()
		p.mu.Unlock()
		switch {
		case err == nil:
			s.health.answered()
			done()
			// Keep answering from the table until the controller has
			// written the object's status: the object as written has none.
			s.awaitObserved(k, p)
			s.forgetPending(k, p)
			return
		case refusedForGood(err) && s.health.final(p.id, err):
			s.health.answered()
			if s.ctx.Err() != nil {
				// Stopping: the next start's recovery meets the refusal
				// and deals with the container.
				s.forgetPending(k, p)
				return
			}
			s.refused(k, p, err)
			return
		case s.drain.Err() != nil:
			stopped(err)
			return
		case refusedForGood(err):
			// Forbidden, within the grace: the store answered, and may be
			// an API server that has just started.
			s.health.answered()
			if !warnedForbidden {
				warnedForbidden = true
				s.cfg.Logger.Warn("the store answers a FAST sandbox's object write with Forbidden; retrying before removing its container, since an API server that has just started refuses until its authorization caches fill",
					slog.String("sandbox", k), slog.String("id", p.id), slog.Duration("grace", s.cfg.ForbiddenGrace), slog.Any("err", err))
			}
		default:
			s.health.failed(p, err)
		}
		select {
		case <-s.drain.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, writeBackoffMax)
	}
}

// observeTimeout bounds how long a FAST create's pending entry outlives its
// written object's arrival in the store, waiting for the controller to
// write its status.
const observeTimeout = 30 * time.Second

// goneCheckInterval is how often the store is asked about a FAST create's
// written object while the cache has not shown it yet.
const goneCheckInterval = 200 * time.Millisecond

// awaitObserved waits until a FAST create's written object has its status
// from the controller, is being deleted, or is gone, or observeTimeout
// passes. Gone is absent from the cache once the cache has shown it here:
// the cache is read after every change, so its last state is never missed.
// Its changes between two reads are, though: an object deleted, to the
// end, before a read showed it would look the same as one the cache has
// not caught up with yet, so until the cache has shown it, the store tells
// the two apart.
func (s *Server) awaitObserved(k string, p *pendingCreate) {
	ctx, cancel := context.WithTimeout(s.ctx, observeTimeout)
	defer cancel()
	ns, name, _ := strings.Cut(k, "/")
	// Only this sandbox's object counts: the name may show another's (an
	// earlier holder of it the cache still has, a later one).
	own := func(sb *v1alpha1.Sandbox) bool {
		_, id, _ := v1alpha1.Placement(sb)
		return id == p.id
	}
	seen := false
	for {
		checkCtx, cancelCheck := context.WithTimeout(ctx, goneCheckInterval)
		_, err := s.cfg.Controller.Wait(checkCtx, ns, name, func(sb *v1alpha1.Sandbox) bool {
			if sb == nil || !own(sb) {
				return seen
			}
			seen = true
			return observed(sb) || sb.DeletionTimestamp != nil
		})
		cancelCheck()
		if err == nil || ctx.Err() != nil {
			return
		}
		if seen {
			continue
		}
		have, err := s.cfg.Store.Get(ctx, ns, name)
		if apierrors.IsNotFound(err) || (err == nil && !own(have)) {
			return
		}
	}
}

// write creates a FAST create's object. Nil means the object is in the
// store: written now, or by an earlier attempt whose answer was lost.
func (s *Server) write(k string, p *pendingCreate, obj *v1alpha1.Sandbox) error {
	ctx, cancel := context.WithTimeout(s.drain, writeAttemptTimeout)
	defer cancel()
	_, err := s.cfg.Store.Create(ctx, obj)
	if apierrors.IsAlreadyExists(err) {
		return s.nameHolder(ctx, k, p, obj)
	}
	return err
}

// nameHolder settles a write of a FAST create's object that found its name
// taken. Nil means the object there is this sandbox's own (an earlier
// attempt landed though its answer was lost), brought up to date with
// want, which updates may have changed since that attempt; a
// *nameTakenError means another sandbox holds the name; any other error
// means it cannot tell yet.
func (s *Server) nameHolder(ctx context.Context, k string, p *pendingCreate, want *v1alpha1.Sandbox) error {
	ns, name, _ := strings.Cut(k, "/")
	have, err := s.cfg.Store.Get(ctx, ns, name)
	if err != nil {
		return fmt.Errorf("read the holder of the name %s: %w", k, err)
	}
	if _, id, _ := v1alpha1.Placement(have); id != p.id {
		return &nameTakenError{name: k, holder: id, id: p.id}
	}
	if equality.Semantic.DeepEqual(have.Spec, want.Spec) && maps.Equal(have.Labels, want.Labels) {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		have, err := s.cfg.Store.Get(ctx, ns, name)
		if err != nil {
			return err
		}
		have.Spec, have.Labels = want.Spec, want.Labels
		_, err = s.cfg.Store.Update(ctx, have)
		return err
	})
}

// forgetPending drops a pending create from the table, which hides it
// unless the cache has its object.
func (s *Server) forgetPending(k string, p *pendingCreate) {
	s.mu.Lock()
	if s.pending[k] == p {
		delete(s.pending, k)
	}
	s.mu.Unlock()
	s.health.forget(p)
}

// refused removes the container of a FAST create whose object the store
// refused for good: retrying cannot make it land. Until the container is
// gone the sandbox stays visible, Terminating, with the reason as its
// message; then its slot and ports are released and it is hidden, as
// every removal does. The removal is retried until it succeeds or the
// server stops; then the container stays, unmarked, for the next start's
// recovery.
func (s *Server) refused(k string, p *pendingCreate, cause error) {
	s.cfg.Logger.Error("the store refused a FAST sandbox's object for good; removing its container",
		slog.String("sandbox", k), slog.String("id", p.id), slog.String("agent", p.agent), slog.Any("err", cause))
	p.mu.Lock()
	p.obj.Status.Phase = v1alpha1.PhaseTerminating
	p.obj.Status.Message = fmt.Sprintf("the store refused the object: %v; the container is being removed", cause)
	refusedObj := p.obj.DeepCopy()
	p.mu.Unlock()
	s.refusedEvent(refusedObj, cause)
	if err := s.removeContainer(s.ctx, p.agent, p.id, 1); err != nil {
		s.cfg.Logger.Warn("stopped before the container of a refused FAST sandbox was removed; the next start's recovery deals with it",
			slog.String("sandbox", k), slog.String("id", p.id), slog.Any("err", err))
		s.forgetPending(k, p)
		return
	}
	s.cfg.Registry.Release(p.id)
	p.mu.Lock()
	p.deleted = true
	p.signal()
	p.mu.Unlock()
	s.forgetPending(k, p)
}

// ReasonStoreRefused is the reason of the Warning Event on a sandbox whose
// object the store refused for good, and whose container was removed.
const ReasonStoreRefused = "StoreRefused"

// refusedEvent records the StoreRefused Event on a sandbox whose object
// the store refused for good. The object is not in the store; the Event
// names it by kind, namespace and name, so that `kubectl get events`
// says why the sandbox is gone.
func (s *Server) refusedEvent(obj *v1alpha1.Sandbox, cause error) {
	if s.cfg.Events == nil {
		return
	}
	obj.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("Sandbox"))
	s.cfg.Events.Eventf(obj, "Warning", ReasonStoreRefused, "the store refused the object of sandbox %s: %v; its container is removed",
		obj.Annotations[v1alpha1.AnnotationID], cause)
}

func (s *Server) createStrong(ctx context.Context, obj *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	done := s.cfg.Metrics.Phase(strong, "store")
	_, err := s.cfg.Store.Create(ctx, obj)
	done()
	if err != nil {
		if apierrors.IsAlreadyExists(err) {
			if have, gerr := s.cfg.Store.Get(ctx, obj.Namespace, obj.Name); gerr == nil {
				if _, err := s.existing(have, obj); err != nil {
					return nil, err
				}
				obj = have
			}
		} else {
			return nil, storeError(err)
		}
	}
	return s.awaitStrong(ctx, obj)
}

// awaitStrong waits until the controller has the sandbox running (or it
// failed, or the agent refused it) and answers as STRONG does.
func (s *Server) awaitStrong(ctx context.Context, obj *v1alpha1.Sandbox) (*v1alpha1.Sandbox, error) {
	defer s.cfg.Metrics.Phase(strong, "wait")()
	waitCtx, cancel := context.WithTimeout(ctx, StrongTimeout)
	defer cancel()
	// The cache may not have the new object yet: absent counts as deleted
	// only once it has been seen.
	seen := false
	sb, err := s.cfg.Controller.Wait(waitCtx, obj.Namespace, obj.Name, func(sb *v1alpha1.Sandbox) bool {
		if sb == nil {
			return seen
		}
		seen = true
		if _, _, refused := controller.Refusal(sb); refused {
			return true
		}
		switch sb.Status.Phase {
		case v1alpha1.PhaseRunning, v1alpha1.PhaseSucceeded, v1alpha1.PhaseFailed, v1alpha1.PhaseLost:
			return true
		}
		return false
	})
	if err != nil {
		return nil, connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("sandbox %s/%s did not start in time (last phase %q); it is still there", obj.Namespace, obj.Name, phaseOf(sb)))
	}
	if sb == nil {
		return nil, connect.NewError(connect.CodeAborted, fmt.Errorf("sandbox %s/%s was deleted while it started", obj.Namespace, obj.Name))
	}
	if code, msg, refused := controller.Refusal(sb); refused {
		// Nothing runs: take the object back, as a FAST create that the
		// agent refused leaves nothing either, and answer once it is gone
		// from what Get and List read. The object has the controller's
		// finalizer: the delete only marks it, and it goes once the
		// controller has seen that (at once with the embedded store, a
		// watch round trip or two later on an API server).
		goneCtx, cancelGone := context.WithTimeout(context.WithoutCancel(ctx), refusedGoneTimeout)
		defer cancelGone()
		if err := s.cfg.Store.Delete(goneCtx, sb.Namespace, sb.Name); err == nil || apierrors.IsNotFound(err) {
			_, _ = s.cfg.Controller.Wait(goneCtx, sb.Namespace, sb.Name, func(sb *v1alpha1.Sandbox) bool { return sb == nil })
		}
		return nil, connect.NewError(code, errors.New(msg))
	}
	return sb, nil
}

// refusedGoneTimeout bounds how long a STRONG create that the agents
// refused waits for its object to be gone before it answers.
const refusedGoneTimeout = 10 * time.Second

// Consistency modes as metric labels.
const (
	fast   = string(v1alpha1.ConsistencyFast)
	strong = string(v1alpha1.ConsistencyStrong)
)

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	switch connect.CodeOf(err) {
	case connect.CodeResourceExhausted, connect.CodeInvalidArgument, connect.CodeAlreadyExists,
		connect.CodeNotFound, connect.CodeFailedPrecondition:
		return "refused"
	}
	return "error"
}

func phaseOf(sb *v1alpha1.Sandbox) v1alpha1.Phase {
	if sb == nil {
		return ""
	}
	return sb.Status.Phase
}

// DeleteSandbox implements FastPathService.DeleteSandbox.
func (s *Server) DeleteSandbox(ctx context.Context, req *connect.Request[fsbv1.DeleteSandboxRequest]) (*connect.Response[fsbv1.DeleteSandboxResponse], error) {
	msg := req.Msg
	namespace := or(msg.GetNamespace(), DefaultNamespace)
	if err := validateRef(namespace, msg.GetName()); err != nil {
		return nil, err
	}
	if msg.GracePeriodSeconds != nil && msg.GetGracePeriodSeconds() < 0 {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("grace_period_seconds %d: want 0 or more", msg.GetGracePeriodSeconds()))
	}
	k := key(namespace, msg.GetName())
	if _, cached := s.cfg.Controller.Get(namespace, msg.GetName()); !cached {
		s.mu.Lock()
		p := s.pending[k]
		s.mu.Unlock()
		if p != nil {
			return s.deletePending(ctx, k, p, msg)
		}
	}
	return s.deleteStored(ctx, namespace, msg)
}

// deleteStored deletes a sandbox whose object is in the store: the
// controller stops the container before it lets the object go.
func (s *Server) deleteStored(ctx context.Context, namespace string, msg *fsbv1.DeleteSandboxRequest) (*connect.Response[fsbv1.DeleteSandboxResponse], error) {
	k := key(namespace, msg.GetName())
	if msg.GracePeriodSeconds != nil {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			sb, err := s.cfg.Store.Get(ctx, namespace, msg.GetName())
			if err != nil {
				return err
			}
			if sb.Annotations == nil {
				sb.Annotations = map[string]string{}
			}
			sb.Annotations[controller.AnnotationGracePeriod] = strconv.Itoa(int(msg.GetGracePeriodSeconds()))
			_, err = s.cfg.Store.Update(ctx, sb)
			return err
		})
		if err != nil {
			return nil, storeError(err)
		}
	}
	if err := s.cfg.Store.Delete(ctx, namespace, msg.GetName()); err != nil {
		return nil, storeError(err)
	}
	if !msg.GetNoWait() {
		// Gone from the cache is not enough: the cache may not have seen
		// the object yet. The store's word settles it.
		_, err := s.cfg.Controller.Wait(ctx, namespace, msg.GetName(), func(sb *v1alpha1.Sandbox) bool {
			if sb != nil {
				return false
			}
			_, err := s.cfg.Store.Get(ctx, namespace, msg.GetName())
			return apierrors.IsNotFound(err)
		})
		if err != nil {
			return nil, connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("sandbox %s is still being deleted", k))
		}
	}
	return connect.NewResponse(&fsbv1.DeleteSandboxResponse{}), nil
}

// deletePending deletes a FAST sandbox whose object is not written yet: the
// sandbox is hidden, and its slot released, only once the agent has
// removed the container; a delete that fails or is cancelled leaves it
// visible with its slot held. No object write starts meanwhile; if one
// landed before, the delete goes the way of a stored sandbox.
func (s *Server) deletePending(ctx context.Context, k string, p *pendingCreate, msg *fsbv1.DeleteSandboxRequest) (*connect.Response[fsbv1.DeleteSandboxResponse], error) {
	p.mu.Lock()
	if p.deleted {
		p.mu.Unlock()
		return connect.NewResponse(&fsbv1.DeleteSandboxResponse{}), nil
	}
	p.deleting++
	err := p.await(ctx, func() bool { return !p.writing })
	written, agentID, namespace := p.written, p.agent, p.obj.Namespace
	p.mu.Unlock()
	end := func(deleted bool) {
		p.mu.Lock()
		p.deleting--
		p.deleted = p.deleted || deleted
		p.signal()
		p.mu.Unlock()
	}
	switch {
	case err != nil:
		end(false)
		return nil, connect.NewError(connect.CodeCanceled, fmt.Errorf("delete sandbox %s: %w", k, err))
	case written:
		end(false)
		return s.deleteStored(ctx, namespace, msg)
	case agentID == "":
		end(false)
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("sandbox %s is being created: delete it once the create has answered", k))
	}
	client, err := s.cfg.Agents.Client(agentID)
	if err != nil {
		end(false)
		return nil, s.agentUnreachable(agentID, err)
	}
	if _, err := client.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.AgentServiceDeleteSandboxRequest{SandboxId: p.id, GracePeriodSeconds: msg.GracePeriodSeconds})); err != nil {
		end(false)
		if ce := new(connect.Error); errors.As(err, &ce) && connect.IsWireError(ce) {
			// The agent answered: its words, and its marks (containerd
			// unreachable), reach the caller.
			return nil, fault.Relay(ce)
		}
		return nil, s.agentUnreachable(agentID, err)
	}
	end(true)
	s.cfg.Registry.Release(p.id)
	s.forgetPending(k, p)
	return connect.NewResponse(&fsbv1.DeleteSandboxResponse{}), nil
}

// UpdateSandbox implements FastPathService.UpdateSandbox: labels and the
// lifecycle fields (failure policy, reset revision, expiry, recovery
// timeout), each changed only when the request sets it. A FAST sandbox
// whose object is not written yet is updated in the pending table, so the
// update is in the object that lands; any other goes through the store.
func (s *Server) UpdateSandbox(ctx context.Context, req *connect.Request[fsbv1.UpdateSandboxRequest]) (*connect.Response[fsbv1.UpdateSandboxResponse], error) {
	msg := req.Msg
	namespace := or(msg.GetNamespace(), DefaultNamespace)
	now := time.Now()
	if err := validateUpdate(namespace, msg, now); err != nil {
		return nil, err
	}
	apply := func(sb *v1alpha1.Sandbox) { applyUpdate(sb, msg, now) }
	if _, cached := s.cfg.Controller.Get(namespace, msg.GetName()); !cached {
		s.mu.Lock()
		p := s.pending[key(namespace, msg.GetName())]
		s.mu.Unlock()
		if p != nil {
			out, inStore, err := s.updatePending(ctx, p, apply)
			if err != nil {
				return nil, err
			}
			if !inStore {
				return connect.NewResponse(&fsbv1.UpdateSandboxResponse{Sandbox: v1alpha1.ToProto(out)}), nil
			}
		}
	}
	var out *v1alpha1.Sandbox
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sb, err := s.cfg.Store.Get(ctx, namespace, msg.GetName())
		if err != nil {
			return err
		}
		apply(sb)
		out, err = s.cfg.Store.Update(ctx, sb)
		return err
	})
	if err != nil {
		return nil, storeError(err)
	}
	s.awaitCached(ctx, out)
	return connect.NewResponse(&fsbv1.UpdateSandboxResponse{Sandbox: v1alpha1.ToProto(out)}), nil
}

// cacheWait bounds how long an update waits for the controller's cache
// to hold what it wrote.
const cacheWait = 2 * time.Second

// awaitCached waits, up to cacheWait, until the controller's cache holds
// written or a later version of it (or it is gone), so that a Get or List
// right after an update reads the update: they answer from the cache, and
// the kube store's watch brings a write a moment later (a CI run read the
// old failure policy just after an update). Versions are the stores'
// revision counters, compared as numbers; past the bound the update is
// answered anyway.
func (s *Server) awaitCached(ctx context.Context, written *v1alpha1.Sandbox) {
	want, err := strconv.ParseUint(written.ResourceVersion, 10, 64)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, cacheWait)
	defer cancel()
	_, _ = s.cfg.Controller.Wait(ctx, written.Namespace, written.Name, func(sb *v1alpha1.Sandbox) bool {
		if sb == nil {
			return true
		}
		have, err := strconv.ParseUint(sb.ResourceVersion, 10, 64)
		return err != nil || have >= want
	})
}

// applyUpdate makes the changes a validated update asks for, at time now.
func applyUpdate(sb *v1alpha1.Sandbox, msg *fsbv1.UpdateSandboxRequest, now time.Time) {
	if msg.GetLabels() != nil {
		sb.Labels = msg.GetLabels()
	}
	switch msg.GetFailurePolicy() {
	case fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL:
		sb.Spec.FailurePolicy = v1alpha1.FailurePolicyManual
	case fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE:
		sb.Spec.FailurePolicy = v1alpha1.FailurePolicyAutoRecreate
	}
	if msg.GetResetRevision() {
		// The field is stored to the second: a reset within the same
		// second as the last one must still be a later time, or the
		// controller would take it for one it has done.
		t := metav1.NewTime(now.Truncate(time.Second))
		if prev := sb.Spec.ResetRevision; prev != nil && !t.After(prev.Time) {
			t = metav1.NewTime(prev.Add(time.Second))
		}
		sb.Spec.ResetRevision = &t
	}
	switch {
	case msg.GetExpireTime() != nil:
		t := metav1.NewTime(msg.GetExpireTime().AsTime())
		sb.Spec.ExpireTime = &t
	case msg.GetClearExpireTime():
		sb.Spec.ExpireTime = nil
	}
	if msg.RecoveryTimeoutSeconds != nil {
		sb.Spec.RecoveryTimeoutSeconds = msg.GetRecoveryTimeoutSeconds()
	}
}

// updatePending applies an update to a pending FAST create's object, once
// no write of it is under way; inStore says the object has been written,
// and the update belongs in the store instead.
func (s *Server) updatePending(ctx context.Context, p *pendingCreate, apply func(*v1alpha1.Sandbox)) (out *v1alpha1.Sandbox, inStore bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.await(ctx, func() bool { return !p.writing }); err != nil {
		return nil, false, connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("update sandbox %s/%s: %w", p.obj.Namespace, p.obj.Name, err))
	}
	switch {
	case p.deleted:
		return nil, false, notFound(p.obj.Namespace, p.obj.Name)
	case p.written:
		return nil, true, nil
	}
	apply(p.obj)
	return p.obj.DeepCopy(), false, nil
}

// ListSandboxes implements FastPathService.ListSandboxes.
func (s *Server) ListSandboxes(_ context.Context, req *connect.Request[fsbv1.ListSandboxesRequest]) (*connect.Response[fsbv1.ListSandboxesResponse], error) {
	if ns := req.Msg.GetNamespace(); ns != "" {
		if err := v1alpha1.ValidateNamespace(ns); err != nil {
			return nil, invalid(err)
		}
	}
	sel, err := labels.Parse(req.Msg.GetLabelSelector())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("label selector: %w", err))
	}
	ns := req.Msg.GetNamespace()
	seen := map[string]bool{}
	var items []*v1alpha1.Sandbox
	add := func(sb *v1alpha1.Sandbox) {
		k := key(sb.Namespace, sb.Name)
		if seen[k] || (ns != "" && sb.Namespace != ns) || !sel.Matches(labels.Set(sb.Labels)) {
			return
		}
		seen[k] = true
		items = append(items, sb)
	}
	unobserved := map[string]*v1alpha1.Sandbox{}
	for _, sb := range s.cfg.Controller.List() {
		if observed(sb) {
			add(sb)
		} else {
			unobserved[key(sb.Namespace, sb.Name)] = sb
		}
	}
	s.mu.Lock()
	pending := slices.Collect(maps.Values(s.pending))
	s.mu.Unlock()
	for _, p := range pending {
		p.mu.Lock()
		if !p.deleted {
			add(withPendingStatus(unobserved[key(p.obj.Namespace, p.obj.Name)], p.obj.DeepCopy()))
		}
		p.mu.Unlock()
	}
	for _, sb := range unobserved {
		add(sb)
	}
	slices.SortFunc(items, func(a, b *v1alpha1.Sandbox) int {
		return strings.Compare(key(a.Namespace, a.Name), key(b.Namespace, b.Name))
	})
	resp := &fsbv1.ListSandboxesResponse{}
	for _, sb := range items {
		resp.Sandboxes = append(resp.Sandboxes, v1alpha1.ToProto(sb))
	}
	return connect.NewResponse(resp), nil
}

// GetSandbox implements FastPathService.GetSandbox.
func (s *Server) GetSandbox(_ context.Context, req *connect.Request[fsbv1.GetSandboxRequest]) (*connect.Response[fsbv1.GetSandboxResponse], error) {
	namespace := or(req.Msg.GetNamespace(), DefaultNamespace)
	if err := validateRef(namespace, req.Msg.GetName()); err != nil {
		return nil, err
	}
	sb := s.lookup(namespace, req.Msg.GetName())
	if sb == nil {
		return nil, notFound(namespace, req.Msg.GetName())
	}
	return connect.NewResponse(&fsbv1.GetSandboxResponse{Sandbox: v1alpha1.ToProto(sb)}), nil
}

// StreamLogs implements FastPathService.StreamLogs, relayed from an agent.
// It reads the current revision, or an earlier one (revision, previous).
// An earlier revision's log is on the agent that ran it, which may not be
// the current one: the current agent is asked first, then the agents
// whose status shows the sandbox, then every other, until one has it.
func (s *Server) StreamLogs(ctx context.Context, req *connect.Request[fsbv1.StreamLogsRequest], stream *connect.ServerStream[fsbv1.StreamLogsResponse]) error {
	msg := req.Msg
	namespace := or(msg.GetNamespace(), DefaultNamespace)
	if err := validateRef(namespace, msg.GetName()); err != nil {
		return err
	}
	if msg.GetTail() < 0 {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("tail %d: want 0 (everything) or more", msg.GetTail()))
	}
	sb := s.lookup(namespace, msg.GetName())
	if sb == nil {
		return notFound(namespace, msg.GetName())
	}
	agentID, id, current := v1alpha1.Placement(sb)
	if agentID == "" {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("sandbox %s/%s is not placed yet: no logs", namespace, msg.GetName()))
	}
	revision, err := logRevision(current, msg.GetRevision(), msg.GetPrevious())
	if err != nil {
		return err
	}
	areq := &fsbv1.AgentServiceStreamLogsRequest{
		SandboxId: id, Revision: revision, Tail: msg.GetTail(), Follow: msg.GetFollow(), Namespace: namespace, Name: msg.GetName(),
	}
	var unreachable error // the first answer other than NotFound, if none has the log
	for _, a := range s.logAgents(agentID, id) {
		in, first, err := s.openLogs(ctx, a, areq)
		switch {
		case connect.CodeOf(err) == connect.CodeNotFound:
			continue
		case err != nil:
			if unreachable == nil {
				unreachable = err
			}
			continue
		case in == nil:
			return nil // the log is empty
		}
		defer in.Close()
		for out := first; ; out = in.Msg() {
			if err := stream.Send(&fsbv1.StreamLogsResponse{Lines: out.GetLines()}); err != nil {
				return err
			}
			if !in.Receive() {
				return in.Err()
			}
		}
	}
	if unreachable != nil {
		return unreachable
	}
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("no agent has the log of sandbox %s/%s revision %d", namespace, msg.GetName(), revision))
}

// openLogs asks one agent for a log and waits for its first message, so
// that an agent without the log can be told from one that has it before
// anything is relayed. A nil stream with no error is an empty log.
func (s *Server) openLogs(ctx context.Context, agentID string, req *fsbv1.AgentServiceStreamLogsRequest) (*connect.ServerStreamForClient[fsbv1.AgentServiceStreamLogsResponse], *fsbv1.AgentServiceStreamLogsResponse, error) {
	client, err := s.cfg.Agents.Client(agentID)
	if err != nil {
		return nil, nil, s.agentUnreachable(agentID, err)
	}
	in, err := client.StreamLogs(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, nil, fmt.Errorf("logs from agent %s: %w", agentID, err)
	}
	if in.Receive() {
		return in, in.Msg(), nil
	}
	err = in.Err()
	in.Close()
	if err != nil {
		return nil, nil, connect.NewError(connect.CodeOf(err), fmt.Errorf("logs from agent %s: %w", agentID, err))
	}
	return nil, nil, nil
}

// logRevision is the revision a logs request reads of a sandbox whose
// current revision is current: revision when set, the one before the
// current with previous, else the current.
func logRevision(current, revision int64, previous bool) (int64, error) {
	switch {
	case revision < 0:
		return 0, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("revision %d: want 0 (the current one) or more", revision))
	case previous && revision != 0:
		return 0, connect.NewError(connect.CodeInvalidArgument, errors.New("revision and previous: set one, not both"))
	case previous && current <= 1:
		return 0, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("no previous revision: the sandbox is at revision %d", current))
	case previous:
		return current - 1, nil
	case revision == 0:
		return current, nil
	case revision > current:
		return 0, connect.NewError(connect.CodeNotFound, fmt.Errorf("no revision %d: the sandbox is at revision %d", revision, current))
	}
	return revision, nil
}

// logAgents orders the agents to ask for a sandbox's log: its current
// agent, then those whose status shows the sandbox, then every other known
// one.
func (s *Server) logAgents(current, sandboxID string) []string {
	order := []string{current}
	var rest []string
	for _, st := range s.cfg.Agents.Statuses() {
		a := st.GetAgentId()
		if a == current {
			continue
		}
		if slices.ContainsFunc(st.GetSandboxes(), func(asb *fsbv1.AgentSandbox) bool { return asb.GetSandboxId() == sandboxID }) {
			order = append(order, a)
		} else {
			rest = append(rest, a)
		}
	}
	return append(order, rest...)
}

// ListAgents implements FastPathService.ListAgents: each agent's status
// (its pool as it reports it), marked cordoned when the registry keeps new
// sandboxes off it while its pool scales it down.
func (s *Server) ListAgents(context.Context, *connect.Request[fsbv1.ListAgentsRequest]) (*connect.Response[fsbv1.ListAgentsResponse], error) {
	cordoned := make(map[string]bool)
	for _, a := range s.cfg.Registry.Agents() {
		if a.Cordoned {
			cordoned[a.ID] = true
		}
	}
	agents := s.cfg.Agents.Statuses()
	for i, st := range agents {
		if cordoned[st.GetAgentId()] {
			st = proto.CloneOf(st) // the link's copy is shared
			st.Cordoned = true
			agents[i] = st
		}
	}
	return connect.NewResponse(&fsbv1.ListAgentsResponse{Agents: agents}), nil
}

func notFound(namespace, name string) error {
	return connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox %s not found in namespace %s", name, namespace))
}

// storeError maps a store error to the Connect code a user should see. A
// refusal says why; what the store did not answer (refusedForGood's
// transient errors) is Unavailable, which a retry may get past.
func storeError(err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return connect.NewError(connect.CodeNotFound, err)
	case apierrors.IsAlreadyExists(err):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case apierrors.IsConflict(err):
		return connect.NewError(connect.CodeAborted, err)
	case apierrors.IsForbidden(err):
		return connect.NewError(connect.CodePermissionDenied, err)
	case apierrors.IsMethodNotSupported(err):
		return connect.NewError(connect.CodeUnimplemented, err)
	case refusedForGood(err):
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	if ce, ok := ctxerr.Of(err); ok {
		return ce
	}
	return fault.Unreachable(fault.Store, fmt.Errorf("the store is unreachable: %w", err))
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// invalid wraps a validation error as InvalidArgument; nil stays nil.
func invalid(err error) error {
	if err == nil {
		return nil
	}
	return connect.NewError(connect.CodeInvalidArgument, err)
}

// validateCreate checks a create once, at the edge, saying what to fix.
func validateCreate(namespace string, msg *fsbv1.CreateSandboxRequest) error {
	return invalid(v1alpha1.ValidateCreate(namespace, msg, time.Now()))
}

// validateUpdate checks an update once, at the edge, saying what to fix.
func validateUpdate(namespace string, msg *fsbv1.UpdateSandboxRequest, now time.Time) error {
	return invalid(v1alpha1.ValidateUpdate(namespace, msg, now))
}

// validateRef checks the namespace (after the default applies) and name a
// request names a sandbox by, as a create does.
func validateRef(namespace, name string) error {
	return invalid(v1alpha1.ValidateObjectName(namespace, name))
}

var _ fsbv1connect.FastPathServiceHandler = (*Server)(nil)
