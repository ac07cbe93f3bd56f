// Package janitor finds and removes what sandboxes leave behind on a node:
// sandbox containers nobody holds, and the snapshots, shims, mounts and log
// files of sandboxes that are gone (`fsb janitor`).
//
// Its promise is to lean to keeping. Every pass asks the controller first
// (fsb.v1.JanitorService/Classify), even when it found nothing, and when it
// cannot ask — the controller is unreachable, not Ready, or refuses its
// token — it removes nothing at all. A sandbox container (or log file) is
// removed only when the controller called it unknown, twice, at least half
// the orphan timeout apart (with Once: once), and a container only when it
// is older than the orphan timeout as well. Known and undecided ones are
// never removed, nor is a log file of a sandbox whose container is on the
// node (or when a namespace's containers could not be listed). Containers
// without both fsb labels (sandbox ID and agent) and namespaces it is not
// given are never looked at. Snapshots, shims and mounts are removed only
// when their finder has tied them to a container or task that is gone and
// they are older than the orphan timeout.
package janitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/prometheus/client_golang/prometheus"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// maxClassify is the most SandboxRefs one Classify call carries: the
// controller's bound (fastpath.MaxClassify, not imported: it would pull the
// whole controller into the janitor).
const maxClassify = 10000

// maxRefIDBytes is the controller's bound on a ref's sandbox and agent IDs;
// a label past it names nothing the controller could know, and one such ref
// would make it refuse the whole question.
const maxRefIDBytes = 253

// Defaults of Config's zero values.
const (
	DefaultInterval    = time.Minute
	DefaultGracePeriod = 10 * time.Second
)

// removeTimeout bounds one removal beyond the grace period: a pass that is
// stopping still finishes the removal under way, but never waits forever
// on containerd.
const removeTimeout = time.Minute

// Config is what a Janitor needs.
type Config struct {
	// Client is containerd; its default namespace is not used.
	Client *containerd.Client
	// ContainerdAddress is containerd's socket, which names its shims.
	ContainerdAddress string
	// Namespaces are the containerd namespaces of fsb's sandboxes; nothing
	// in any other is looked at.
	Namespaces []string
	// Controller asks the controller's JanitorService; ControllerURL names
	// it in log lines and errors.
	Controller    fsbv1connect.JanitorServiceClient
	ControllerURL string
	// OrphanTimeout: a leftover is removed only once it is older than this
	// and, without Once, was unknown at two answers at least half of it
	// apart.
	OrphanTimeout time.Duration
	// Once: single-pass semantics, the creation time alone counts (the
	// second answer is not waited for).
	Once bool
	// DryRun finds, asks and logs what it would remove, and removes
	// nothing.
	DryRun bool
	// LogDirs are agents' log directories whose files of gone sandboxes are
	// removed once LogRetention has passed since they were last written;
	// none, no file is looked at. An entry with a pattern (filepath.Match
	// syntax: /var/log/fsb-pools/*) stands for every directory it matches
	// at each pass — the log dirs of a SandboxPool's agents, one per agent
	// pod — and a matched dir left with nothing but its lock, no agent
	// holding it, is removed.
	LogDirs      []string
	LogRetention time.Duration
	// GracePeriod is how long a reaped container's task gets between
	// SIGTERM and SIGKILL (0: DefaultGracePeriod; negative: none).
	GracePeriod time.Duration
	// Interval is the time between passes of Run (0: DefaultInterval).
	Interval time.Duration
	Logger   *slog.Logger
	// Registerer receives the janitor's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock (nil: time.Now).
	Now func() time.Time

	// finders replaces the leftover finders in tests (nil: the real ones).
	finders *finderSet
}

// finderSet are the finders of the leftovers beyond containers.
type finderSet struct {
	snapshots func(ctx context.Context, client *containerd.Client, ns string) ([]Leftover, error)
	shims     func(ctx context.Context, client *containerd.Client, ns, containerdAddress string) ([]Leftover, error)
	mounts    func(ctx context.Context, client *containerd.Client, ns string) ([]Leftover, error)
	logFiles  func(dir string, retention time.Duration, now time.Time) ([]Leftover, error)
}

var realFinders = finderSet{snapshots: findSnapshots, shims: findShims, mounts: findMounts, logFiles: findLogFiles}

// Janitor reaps leftovers, one Pass at a time.
type Janitor struct {
	cfg     Config
	finders finderSet
	metrics *metrics

	// mu makes passes one at a time: firstUnknown is their memory.
	mu sync.Mutex
	// firstUnknown holds, per leftover (see key) found unknown at the last
	// pass, when it was first found unknown in a row; any other answer, or
	// not finding it, forgets it.
	firstUnknown map[string]time.Time

	lastPass atomic.Int64 // when the last pass ended, Unix nanoseconds
}

// LastPass returns when the last pass ended, whatever its result; zero
// before the first.
func (j *Janitor) LastPass() time.Time {
	if n := j.lastPass.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// New returns a Janitor for cfg.
func New(cfg Config) (*Janitor, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("janitor: no containerd client")
	case cfg.Controller == nil:
		return nil, errors.New("janitor: no controller client")
	case len(cfg.Namespaces) == 0:
		return nil, errors.New("janitor: no containerd namespace")
	case cfg.OrphanTimeout < 0 || cfg.LogRetention < 0 || cfg.Interval < 0:
		return nil, fmt.Errorf("janitor: orphan timeout %s, log retention %s and interval %s: want 0 or more", cfg.OrphanTimeout, cfg.LogRetention, cfg.Interval)
	}
	for _, ns := range cfg.Namespaces {
		if ns == "" {
			return nil, errors.New("janitor: an empty containerd namespace")
		}
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	switch {
	case cfg.GracePeriod == 0:
		cfg.GracePeriod = DefaultGracePeriod
	case cfg.GracePeriod < 0:
		cfg.GracePeriod = 0
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	f := realFinders
	if cfg.finders != nil {
		f = *cfg.finders
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("janitor: metrics: %w", err)
	}
	return &Janitor{cfg: cfg, finders: f, metrics: m, firstUnknown: map[string]time.Time{}}, nil
}

// Run makes a pass at once and then every Interval until ctx ends. A pass's
// errors are logged (Pass does) and the next pass tries again.
func (j *Janitor) Run(ctx context.Context) {
	t := time.NewTicker(j.cfg.Interval)
	defer t.Stop()
	for {
		j.Pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Counts are one kind's numbers of one pass. Kept ones are counted by why:
// Known and Undecided are the controller's answers, TooYoung is younger
// than the orphan timeout, Waiting was unknown but waits for a second
// answer.
type Counts struct {
	Found, Reaped, Failed               int
	Known, Undecided, TooYoung, Waiting int
}

// Kept is how many of the kind were kept.
func (c Counts) Kept() int { return c.Known + c.Undecided + c.TooYoung + c.Waiting }

// Report says what one pass found, reaped and kept, per kind. In a dry
// run, Reaped counts what would have been removed.
type Report struct {
	DryRun bool
	Kinds  map[Kind]Counts
}

func (r Report) sum(f func(Counts) int) int {
	n := 0
	for _, c := range r.Kinds {
		n += f(c)
	}
	return n
}

// Reaped is how many leftovers the pass removed (in a dry run: would have).
func (r Report) Reaped() int { return r.sum(func(c Counts) int { return c.Reaped }) }

// Kept is how many it kept.
func (r Report) Kept() int { return r.sum(Counts.Kept) }

// Failed is how many removals failed.
func (r Report) Failed() int { return r.sum(func(c Counts) int { return c.Failed }) }

// String is the pass's summary in one line, such as
// "reaped 2: 1 container, 1 log; kept 3: 2 known, 1 too young".
func (r Report) String() string {
	var b strings.Builder
	if r.DryRun {
		b.WriteString("dry run, would have ")
	}
	byKind := func(f func(Counts) int) string {
		var parts []string
		for _, k := range allKinds {
			if n := f(r.Kinds[k]); n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, k))
			}
		}
		return strings.Join(parts, ", ")
	}
	item := func(name string, n int, detail string) {
		fmt.Fprintf(&b, "%s %d", name, n)
		if n > 0 {
			b.WriteString(": " + detail)
		}
	}
	item("reaped", r.Reaped(), byKind(func(c Counts) int { return c.Reaped }))
	b.WriteString("; ")
	var why []string
	for _, w := range []struct {
		n    int
		name string
	}{
		{r.sum(func(c Counts) int { return c.Known }), "known"},
		{r.sum(func(c Counts) int { return c.Undecided }), "undecided"},
		{r.sum(func(c Counts) int { return c.TooYoung }), "too young"},
		{r.sum(func(c Counts) int { return c.Waiting }), "waiting for a second answer"},
	} {
		if w.n > 0 {
			why = append(why, fmt.Sprintf("%d %s", w.n, w.name))
		}
	}
	item("kept", r.Kept(), strings.Join(why, ", "))
	if n := r.Failed(); n > 0 {
		b.WriteString("; ")
		item("failed", n, byKind(func(c Counts) int { return c.Failed }))
	}
	return b.String()
}

// count adds to kind's counts.
func (r Report) count(k Kind, f func(*Counts)) {
	c := r.Kinds[k]
	f(&c)
	r.Kinds[k] = c
}

// ErrNotAsked wraps a pass's error when it could not ask the controller:
// it removed nothing.
var ErrNotAsked = errors.New("the controller could not be asked, so nothing was removed")

// Pass finds the leftovers in every namespace and log dir, asks the
// controller about the sandboxes they name, and removes those that its
// rules allow (see the package doc). It returns what it did; its error
// wraps ErrNotAsked when it removed nothing because the controller could
// not be asked, and names what it could not list otherwise (what it could
// list was handled). A removal that fails is logged and counted, and the
// pass goes on. When ctx ends the removal under way finishes and the pass
// stops there.
func (j *Janitor) Pass(ctx context.Context) (Report, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	rep, err := j.pass(ctx)
	end := j.cfg.Now()
	j.metrics.observe(rep, err, end)
	j.lastPass.Store(end.UnixNano())
	log := j.cfg.Logger
	if errors.Is(err, ErrNotAsked) {
		// pass logged it: one line says why nothing was removed.
		return rep, err
	}
	attrs := []any{slog.Int("reaped", rep.Reaped()), slog.Int("kept", rep.Kept()), slog.Int("failed", rep.Failed()), slog.Bool("dry_run", rep.DryRun)}
	if err != nil {
		log.Warn("janitor pass incomplete", append(attrs, slog.Any("err", err))...)
	} else {
		log.Info("janitor pass", append(attrs, slog.String("summary", rep.String()))...)
	}
	return rep, err
}

// candidate is one leftover of a pass and what is decided about it.
type candidate struct {
	Leftover
	asks bool // it needs the controller's answer
	// held, when set, says why the janitor keeps it without asking: a log
	// file of a sandbox whose container is on the node (see pass).
	held    string
	verdict fsbv1.Verdict
	reason  string // the controller's answer's reason, when asked
}

func (j *Janitor) pass(ctx context.Context) (Report, error) {
	rep := Report{DryRun: j.cfg.DryRun, Kinds: map[Kind]Counts{}}
	now := j.cfg.Now()
	var cands []*candidate
	var listErrs []error
	// The sandbox IDs of the containers found, and whether every namespace
	// could be listed: a log file of a sandbox whose container is on the
	// node is not a gone sandbox's, whatever the controller says of a file
	// (after a controller restart it has no status from an agent that is
	// down, whose sandboxes run on and may write nothing for hours).
	onNode, containersListed := map[string]bool{}, true
	add := func(asks bool, los []Leftover, err error, what string) {
		if err != nil {
			j.cfg.Logger.Warn("cannot list leftovers; those are kept this pass", slog.String("what", what), slog.Any("err", err))
			listErrs = append(listErrs, fmt.Errorf("%s: %w", what, err))
		}
		for _, lo := range los {
			cands = append(cands, &candidate{Leftover: lo, asks: asks})
			rep.count(lo.Kind, func(c *Counts) { c.Found++ })
		}
	}
	for _, ns := range j.cfg.Namespaces {
		los, err := j.findContainers(ctx, ns)
		add(true, los, err, "containers of namespace "+ns)
		containersListed = containersListed && err == nil
		for _, lo := range los {
			onNode[lo.SandboxID] = true
		}
		los, err = j.finders.snapshots(ctx, j.cfg.Client, ns)
		add(false, los, err, "snapshots of namespace "+ns)
		los, err = j.finders.shims(ctx, j.cfg.Client, ns, j.cfg.ContainerdAddress)
		add(false, los, err, "shims of namespace "+ns)
		los, err = j.finders.mounts(ctx, j.cfg.Client, ns)
		add(false, los, err, "mounts of namespace "+ns)
	}
	dirs, matched, err := logDirs(j.cfg.LogDirs)
	if err != nil {
		listErrs = append(listErrs, err)
	}
	for _, dir := range dirs {
		los, err := j.finders.logFiles(dir, j.cfg.LogRetention, now)
		add(true, los, err, "log files in "+dir)
	}
	for _, c := range cands {
		switch {
		case c.Kind != KindLog:
		case !containersListed:
			c.held = "the containers could not all be listed: the sandbox's may be on the node"
		case onNode[c.SandboxID]:
			c.held = "a container of the sandbox is on the node"
		}
	}

	if err := j.ask(ctx, cands); err != nil {
		j.cfg.Logger.Error("the controller cannot be asked; this pass removes nothing",
			slog.String("controller", j.cfg.ControllerURL), slog.Any("err", err))
		return rep, fmt.Errorf("%w: controller %s: %w", ErrNotAsked, j.cfg.ControllerURL, err)
	}

	remembered := make(map[string]time.Time, len(j.firstUnknown))
	for _, c := range cands {
		why := j.decide(c, now, remembered)
		if why != nil {
			rep.count(c.Kind, why)
			j.cfg.Logger.Debug("kept", append(j.attrs(c, now), slog.String("verdict", c.verdict.String()))...)
			continue
		}
		if ctx.Err() != nil {
			// Stopping: what is left waits for the next run.
			continue
		}
		if j.remove(ctx, c, now) {
			rep.count(c.Kind, func(n *Counts) { n.Reaped++ })
		} else {
			rep.count(c.Kind, func(n *Counts) { n.Failed++ })
		}
	}
	j.firstUnknown = remembered
	if !j.cfg.DryRun && ctx.Err() == nil {
		for _, dir := range matched {
			removed, err := removeEmptyLogDir(dir)
			switch {
			case err != nil:
				j.cfg.Logger.Warn("an empty log dir of a gone agent not removed", slog.String("dir", dir), slog.Any("err", err))
			case removed:
				j.cfg.Logger.Info("removed the empty log dir of a gone agent", slog.String("dir", dir))
			}
		}
	}
	if err := ctx.Err(); err != nil {
		listErrs = append(listErrs, err)
	}
	return rep, errors.Join(listErrs...)
}

// decide returns how to count c when it is kept, or nil when it is to be
// removed. It records in remembered when c was first found unknown.
func (j *Janitor) decide(c *candidate, now time.Time, remembered map[string]time.Time) func(*Counts) {
	timeout := j.cfg.OrphanTimeout
	if !c.asks {
		// The finder tied it to a container or task that is gone: age alone.
		if c.Created.IsZero() || now.Sub(c.Created) < timeout {
			return func(n *Counts) { n.TooYoung++ }
		}
		return nil
	}
	switch c.verdict {
	case fsbv1.Verdict_VERDICT_KNOWN:
		return func(n *Counts) { n.Known++ }
	case fsbv1.Verdict_VERDICT_UNKNOWN:
	default:
		return func(n *Counts) { n.Undecided++ }
	}
	k := key(c.Leftover)
	first, ok := j.firstUnknown[k]
	if !ok {
		first = now
	}
	remembered[k] = first
	// A container counts its age from its creation; a log file's finder
	// has applied the log retention already.
	if c.Kind == KindContainer && (c.Created.IsZero() || now.Sub(c.Created) < timeout) {
		return func(n *Counts) { n.TooYoung++ }
	}
	if !j.cfg.Once && now.Sub(first) < timeout/2 {
		return func(n *Counts) { n.Waiting++ }
	}
	return nil
}

// attrs are the attributes of c's log lines.
func (j *Janitor) attrs(c *candidate, now time.Time) []any {
	reason := c.Reason
	if c.asks {
		reason = c.reason
	}
	return []any{
		slog.String("kind", string(c.Kind)), slog.String("namespace", c.Namespace), slog.String("name", c.Name),
		slog.String("sandbox", c.SandboxID), slog.Int64("revision", c.Revision), slog.String("agent", c.AgentID),
		slog.String("age", now.Sub(c.Created).Round(time.Second).String()), slog.String("reason", reason),
	}
}

// key names a leftover across passes.
func key(lo Leftover) string { return string(lo.Kind) + "\x00" + lo.Namespace + "\x00" + lo.Name }

// remove removes c (or, in a dry run, says it would) and logs it; it
// reports whether it is gone.
func (j *Janitor) remove(ctx context.Context, c *candidate, now time.Time) bool {
	attrs := j.attrs(c, now)
	if j.cfg.DryRun {
		j.cfg.Logger.Info("would remove", attrs...)
		return true
	}
	// The removal under way finishes even when the janitor is stopping:
	// half a removal is a leftover of its own.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), j.cfg.GracePeriod+removeTimeout)
	defer cancel()
	if c.Namespace != "" {
		rctx = namespaces.WithNamespace(rctx, c.Namespace)
	}
	if err := c.Remove(rctx); err != nil {
		j.cfg.Logger.Warn("removal failed; the next pass tries again", append(attrs, slog.Any("err", err))...)
		return false
	}
	j.cfg.Logger.Info("removed", attrs...)
	return true
}

// findContainers lists the sandbox containers of ns: those with both a
// sandbox ID and an agent label. Any other container is not fsb's.
func (j *Janitor) findContainers(ctx context.Context, ns string) ([]Leftover, error) {
	ctx = namespaces.WithNamespace(ctx, ns)
	cs, err := j.cfg.Client.Containers(ctx)
	if err != nil {
		return nil, err
	}
	var out []Leftover
	for _, c := range cs {
		info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
		if err != nil {
			return out, fmt.Errorf("inspect %s: %w", c.ID(), err)
		}
		id, agent := info.Labels[runtime.LabelID], info.Labels[runtime.LabelAgent]
		containerID := c.ID()
		warm := id == "" && info.Labels[runtime.LabelWarm] != ""
		if warm {
			// A warm sandbox names no sandbox: the question is about its
			// agent, which keeps it while it is around. A claimed one
			// carries its sandbox's labels and is judged as any.
			id = containerID
		}
		if id == "" || agent == "" {
			continue
		}
		rev, _ := strconv.ParseInt(info.Labels[runtime.LabelRevision], 10, 64)
		out = append(out, Leftover{
			Kind:      KindContainer,
			Namespace: ns,
			Name:      containerID,
			AgentID:   agent,
			SandboxID: id,
			Revision:  rev,
			Warm:      warm,
			Created:   info.CreatedAt,
			Remove: func(ctx context.Context) error {
				return runtime.RemoveSandboxContainer(ctx, j.cfg.Client, containerID, j.cfg.GracePeriod, j.cfg.Logger)
			},
		})
	}
	return out, nil
}

// refKey identifies a question's ref.
type refKey struct {
	agent, sandbox string
	revision       int64
	warm           bool
}

// ask asks the controller about every candidate that needs an answer, in
// calls of at most maxClassify refs, and at least one call even when none
// does: the answer says the controller is there and Ready. A ref the
// controller could not take (no sandbox ID, IDs past its bounds) is not
// asked; its candidate stays undecided.
func (j *Janitor) ask(ctx context.Context, cands []*candidate) error {
	index := map[refKey]int{}
	var refs []*fsbv1.SandboxRef
	for _, c := range cands {
		if !c.asks {
			continue
		}
		c.verdict, c.reason = fsbv1.Verdict_VERDICT_UNDECIDED, "names no sandbox the controller can be asked about"
		if c.held != "" {
			c.reason = c.held
			continue
		}
		if c.SandboxID == "" || len(c.SandboxID) > maxRefIDBytes || len(c.AgentID) > maxRefIDBytes || c.Revision < 0 {
			continue
		}
		k := refKey{c.AgentID, c.SandboxID, c.Revision, c.Warm}
		if _, ok := index[k]; !ok {
			index[k] = len(refs)
			refs = append(refs, &fsbv1.SandboxRef{AgentId: c.AgentID, SandboxId: c.SandboxID, Revision: c.Revision, Warm: c.Warm})
		}
	}
	answers := make([]*fsbv1.Classification, 0, len(refs))
	for start := 0; start == 0 || start < len(refs); start += maxClassify {
		chunk := refs[start:min(start+maxClassify, len(refs))]
		resp, err := j.cfg.Controller.Classify(ctx, connect.NewRequest(&fsbv1.ClassifyRequest{Sandboxes: chunk}))
		if err != nil {
			return err
		}
		got := resp.Msg.GetClassifications()
		if len(got) != len(chunk) {
			return fmt.Errorf("asked about %d sandboxes, answered %d", len(chunk), len(got))
		}
		for i, a := range got {
			if a.GetSandbox().GetSandboxId() != chunk[i].GetSandboxId() || a.GetSandbox().GetAgentId() != chunk[i].GetAgentId() || a.GetSandbox().GetRevision() != chunk[i].GetRevision() {
				return fmt.Errorf("answer %d names sandbox %q, asked about %q", start+i, a.GetSandbox().GetSandboxId(), chunk[i].GetSandboxId())
			}
		}
		answers = append(answers, got...)
	}
	for _, c := range cands {
		if i, ok := index[refKey{c.AgentID, c.SandboxID, c.Revision, c.Warm}]; ok && c.asks && c.held == "" {
			c.verdict, c.reason = answers[i].GetVerdict(), answers[i].GetReason()
		}
	}
	return nil
}
