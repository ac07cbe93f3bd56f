// Package leader elects one controller replica to serve: client-go's
// leader election on a Lease (coordination.k8s.io/v1). Every replica
// campaigns; the one that holds the Lease runs a term (Config.Lead) and is
// the only one that may serve the fast path, place or remove sandboxes.
//
// The promises:
//   - A term's fence (Fence) grows with every change of holder, so agents
//     (pkg/fence) refuse the calls of every earlier leader once the new
//     one has spoken to them. It is the Lease's transitions count plus the
//     Lease's creation time (Unix seconds, by the API server's clock)
//     shifted left by 20 bits: a Lease deleted and made again (the
//     controller reinstalled) starts its count from 0, and without the
//     creation time its leaders would be refused by every agent that
//     remembers the old Lease's fences.
//   - Leading reports true only while the Lease, as this replica last
//     renewed it, is younger than the renew deadline. A replica that was
//     stopped (SIGSTOP, a frozen node) past it stops serving the instant it
//     runs again, before it has even tried to renew: others may take the
//     Lease only a full lease duration after its last renewal, and the gap
//     between the two absorbs clock-rate skew.
//   - Terms never overlap within a replica: a lost term's Lead has
//     returned before the replica campaigns again. A replica stopped
//     gracefully releases the Lease (for a successor at once) only once
//     its term's Lead has returned.
//   - With PodName set, the leader labels its own pod LabelLeader=true (so
//     a Service selects it), takes the label from any other pod that still
//     has it (a deposed leader stopped before it could), and removes its
//     own when the term ends.
package leader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LabelLeader marks the pod of the replica that leads: the Service of the
// fast path selects it.
const LabelLeader = "sandbox.fast.io/leader"

// Defaults of the Lease's timing, client-go's and kube-controller-manager's.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Config is what an Elector needs.
type Config struct {
	Client kubernetes.Interface
	// Namespace and Name name the Lease.
	Namespace, Name string
	// Identity names this replica in the Lease; empty: the pod's name (or
	// the host's) and a random suffix, unique per process.
	Identity string
	// LeaseDuration is how long others wait after the last renewal before
	// they take the Lease; RenewDeadline how long the leader keeps trying
	// to renew before it gives up its term (and stops serving);
	// RetryPeriod the spacing of tries. Zero: the defaults.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// PodName and PodNamespace name this replica's pod, labelled while it
	// leads; empty PodName: no pod to label (a local run).
	PodName, PodNamespace string
	// Lead runs one term: it must return once ctx ends (the term is lost,
	// or the Elector stops). fence is the term's fence.
	Lead   func(ctx context.Context, fence int64)
	Logger *slog.Logger
}

// Elector campaigns for the Lease and runs terms.
type Elector struct {
	cfg  Config
	lock *recordingLock
	le   atomic.Pointer[leaderelection.LeaderElector]
	// fence is the current term's fence; 0 between terms.
	fence atomic.Int64
	// labelMu serialises the pod label's patches.
	labelMu sync.Mutex
}

// New returns an Elector for cfg; Run campaigns.
func New(cfg Config) (*Elector, error) {
	if cfg.Client == nil || cfg.Name == "" || cfg.Namespace == "" || cfg.Lead == nil {
		return nil, errors.New("leader: a client, the Lease's namespace and name, and a Lead func are needed")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.LeaseDuration = orDefault(cfg.LeaseDuration, DefaultLeaseDuration)
	cfg.RenewDeadline = orDefault(cfg.RenewDeadline, DefaultRenewDeadline)
	cfg.RetryPeriod = orDefault(cfg.RetryPeriod, DefaultRetryPeriod)
	if cfg.LeaseDuration <= cfg.RenewDeadline || cfg.RenewDeadline <= cfg.RetryPeriod {
		return nil, fmt.Errorf("leader: want lease duration (%s) > renew deadline (%s) > retry period (%s)",
			cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod)
	}
	if cfg.LeaseDuration%time.Second != 0 {
		// The Lease records whole seconds: others would wait less.
		return nil, fmt.Errorf("leader: lease duration %s: want whole seconds", cfg.LeaseDuration)
	}
	if cfg.Identity == "" {
		id, err := identity(cfg.PodName)
		if err != nil {
			return nil, err
		}
		cfg.Identity = id
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, cfg.Namespace, cfg.Name,
		cfg.Client.CoreV1(), cfg.Client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: cfg.Identity})
	if err != nil {
		return nil, fmt.Errorf("leader: lease lock: %w", err)
	}
	return &Elector{cfg: cfg, lock: &recordingLock{Interface: lock}}, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// identity is name (the pod's, else the host's) and a random suffix: two
// processes never share one, or the Lease could not tell them apart.
func identity(name string) (string, error) {
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("leader: identity: %w", err)
		}
		name = h
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return name + "_" + hex.EncodeToString(b), nil
}

// Identity is this replica's name in the Lease.
func (e *Elector) Identity() string { return e.cfg.Identity }

// Run campaigns until ctx ends, running a term each time it wins.
func (e *Elector) Run(ctx context.Context) {
	for ctx.Err() == nil {
		termDone := make(chan struct{})
		e.lock.wrote.Store(false)
		// le.Run hands the Lease over (ReleaseOnCancel) as soon as its
		// context ends, so that context ends only once the term it started
		// has returned: a successor must not lead while this term's work
		// (syncs, agent calls, object writes) is still under way. The term
		// itself ends with ctx.
		runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
		stopRun := context.AfterFunc(ctx, func() {
			if e.lock.wrote.Load() {
				<-termDone
			}
			cancelRun()
		})
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:          e.lock,
			LeaseDuration: e.cfg.LeaseDuration,
			RenewDeadline: e.cfg.RenewDeadline,
			RetryPeriod:   e.cfg.RetryPeriod,
			// A replica that stops gracefully hands the Lease over once
			// its term has returned.
			ReleaseOnCancel: true,
			Name:            e.cfg.Name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(leCtx context.Context) {
					defer close(termDone)
					termCtx, cancel := context.WithCancel(leCtx)
					defer cancel()
					defer context.AfterFunc(ctx, cancel)()
					e.term(termCtx)
				},
				OnStoppedLeading: func() {},
				OnNewLeader: func(id string) {
					if id != e.cfg.Identity {
						e.cfg.Logger.Info("leader elected", slog.String("leader", id))
					}
				},
			},
		})
		if err != nil {
			// Only a bad configuration, which New has checked.
			stopRun()
			cancelRun()
			e.cfg.Logger.Error("leader election", slog.Any("err", err))
			return
		}
		e.le.Store(le)
		le.Run(runCtx)
		if e.lock.wrote.Load() {
			// The Lease was won, so a term was started (Run starts it on a
			// goroutine of its own): it ends before the next campaign.
			<-termDone
		}
		stopRun()
		cancelRun()
	}
}

// term runs one term: the fence, the pod label, Lead.
func (e *Elector) term(ctx context.Context) {
	fence, err := e.fenceOf(ctx)
	for err != nil {
		if errors.Is(err, errNotHolder) {
			// Taken already: the term ends as soon as the renewal sees it.
			e.cfg.Logger.Error("leading without a fence: not serving this term", slog.Any("err", err))
			<-ctx.Done()
			return
		}
		// Without a fence this term cannot act safely, but a read that
		// failed (a timeout, an API server that throttles) is tried again:
		// the renewals go on meanwhile, so a term that gave up here would
		// hold the Lease with nobody serving, as long as it lasts.
		e.cfg.Logger.Warn("leading, but the fence cannot be read yet; retrying before serving", slog.Any("err", err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(e.cfg.RetryPeriod):
		}
		fence, err = e.fenceOf(ctx)
	}
	e.fence.Store(fence)
	defer e.fence.Store(0)
	e.cfg.Logger.Info("leading", slog.String("identity", e.cfg.Identity), slog.Int64("fence", fence),
		slog.String("lease", e.cfg.Namespace+"/"+e.cfg.Name))
	e.label(ctx, true)
	e.cfg.Lead(ctx, fence)
	e.cfg.Logger.Warn("leadership lost: no longer serving", slog.String("identity", e.cfg.Identity), slog.Int64("fence", fence))
	// The term's ctx is over; the label goes with a context of its own.
	unlabelCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.RenewDeadline)
	defer cancel()
	e.label(unlabelCtx, false)
}

// fenceBits is how far the Lease's creation time is shifted in a fence:
// room for a million changes of leader per Lease and second of its age.
const fenceBits = 20

// errNotHolder says the Lease just won is held by another replica already.
var errNotHolder = errors.New("no longer held")

// fenceOf reads the Lease just won and returns the term's fence.
func (e *Elector) fenceOf(ctx context.Context) (int64, error) {
	l, err := e.cfg.Client.CoordinationV1().Leases(e.cfg.Namespace).Get(ctx, e.cfg.Name, metav1.GetOptions{})
	if err != nil {
		return 0, fmt.Errorf("read lease %s/%s: %w", e.cfg.Namespace, e.cfg.Name, err)
	}
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != e.cfg.Identity {
		// Taken again already: the fence read would be the new holder's.
		return 0, fmt.Errorf("lease %s/%s: %w by %s", e.cfg.Namespace, e.cfg.Name, errNotHolder, e.cfg.Identity)
	}
	var transitions int64
	if l.Spec.LeaseTransitions != nil {
		transitions = int64(*l.Spec.LeaseTransitions)
	}
	return l.CreationTimestamp.Unix()<<fenceBits + transitions, nil
}

// Leading reports whether this replica leads now: in a term, and the
// Lease as last renewed is younger than the renew deadline.
func (e *Elector) Leading() bool {
	le := e.le.Load()
	if le == nil || e.fence.Load() == 0 || !le.IsLeader() {
		return false
	}
	// Check fails once the last renewal is older than the lease duration
	// plus its argument: here, older than the renew deadline.
	return le.Check(e.cfg.RenewDeadline-e.cfg.LeaseDuration) == nil
}

// Leader returns the identity of the leader as last observed ("" when
// none was seen yet).
func (e *Elector) Leader() string {
	if le := e.le.Load(); le != nil {
		return le.GetLeader()
	}
	return ""
}

// Fence returns the current term's fence: 0 when not in a term.
func (e *Elector) Fence() int64 { return e.fence.Load() }

// label sets (or removes) LabelLeader on this replica's pod; as leader it
// also removes it from the other pods of the namespace that still carry it.
// Without a pod name it only logs. Failures are logged: the label routes
// traffic, the Lease decides who serves.
func (e *Elector) label(ctx context.Context, leading bool) {
	if e.cfg.PodName == "" {
		if leading {
			e.cfg.Logger.Info("no pod to label (no --pod-name / POD_NAME): route clients to this replica yourself")
		}
		return
	}
	e.labelMu.Lock()
	defer e.labelMu.Unlock()
	pods := e.cfg.Client.CoreV1().Pods(e.cfg.PodNamespace)
	if leading {
		others, err := pods.List(ctx, metav1.ListOptions{LabelSelector: LabelLeader + "=true"})
		if err != nil {
			e.cfg.Logger.Warn("list pods labelled leader", slog.Any("err", err))
		} else {
			for _, p := range others.Items {
				if p.Name != e.cfg.PodName {
					e.patchLabel(ctx, p.Name, false)
				}
			}
		}
	}
	e.patchLabel(ctx, e.cfg.PodName, leading)
}

func (e *Elector) patchLabel(ctx context.Context, pod string, on bool) {
	patch := []byte(`{"metadata":{"labels":{"` + LabelLeader + `":null}}}`)
	if on {
		patch = []byte(`{"metadata":{"labels":{"` + LabelLeader + `":"true"}}}`)
	}
	_, err := e.cfg.Client.CoreV1().Pods(e.cfg.PodNamespace).Patch(ctx, pod, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		e.cfg.Logger.Warn("label pod", slog.String("pod", e.cfg.PodNamespace+"/"+pod), slog.Bool("leader", on), slog.Any("err", err))
		return
	}
	e.cfg.Logger.Info("pod labelled", slog.String("pod", e.cfg.PodNamespace+"/"+pod), slog.String("label", LabelLeader), slog.Bool("leader", on))
}

// recordingLock is the Lease lock that notes when this replica's record
// was written: it won the Lease.
type recordingLock struct {
	resourcelock.Interface
	// wrote says a write of this replica's record succeeded in this
	// campaign.
	wrote atomic.Bool
}

func (l *recordingLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Create(ctx, ler)
	if err == nil {
		l.wrote.Store(true)
	}
	return err
}

func (l *recordingLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Update(ctx, ler)
	if err == nil {
		l.wrote.Store(true)
	}
	return err
}
