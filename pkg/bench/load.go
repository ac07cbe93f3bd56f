package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// RunLabel marks every sandbox of one load run, so that the sweep at its
// end finds any the run lost track of.
const RunLabel = "bench.fast-sandbox.io/run"

// DefaultStepTimeout bounds each step of one sandbox: the create with its
// first output, and the delete.
const DefaultStepTimeout = 60 * time.Second

// LoadOptions say what a load run does.
type LoadOptions struct {
	// N sandboxes are created, Concurrency at a time (at most N, and at
	// most the free slots the controller reports).
	N, Concurrency int
	// Namespace holds the sandboxes; empty means "default".
	Namespace string
	// Mode is "fast", "strong", or empty for the controller's default.
	Mode string
	// Image, Runtime and Command make up every sandbox. Runtime empty
	// means "runc".
	Image, Runtime string
	Command        []string
	// LogDir is the agent's --log-dir: a sandbox's output lands in
	// <LogDir>/<namespace>/<name>/*.log.
	LogDir string
	// Prefix starts every sandbox name (<Prefix>-<i>); empty means
	// "bench-<random>".
	Prefix string
	// StepTimeout bounds each step of one sandbox; zero means
	// DefaultStepTimeout.
	StepTimeout time.Duration
	// Resources are every sandbox's (and every baseline's); nil is none.
	Resources *fsbv1.Resources
	// Grace is the grace period of the deletes (0: at once).
	Grace time.Duration
	// Warm adds a second sandbox per round, whose resources are
	// WarmResources: with the image and runtime it should match a warm
	// entry of the agents, so that its create claims a warm sandbox. The
	// result counts the claims (hits) and the cold creates (misses).
	// Resources should then differ from WarmResources so that the other
	// sandbox of the round is a cold create.
	Warm          bool
	WarmResources *fsbv1.Resources
	// Baselines, when any, run the same work straight on containerd,
	// interleaved with the sandboxes: each worker rotates which goes
	// first. A Dir left empty is a temporary directory of the run.
	Baselines []Step
}

// LoadResult is what a load run measured.
type LoadResult struct {
	// Mode is the mode the controller used ("fast" or "strong"), Runtime
	// the runtime asked for.
	Mode, Runtime  string
	N, Concurrency int
	// Create holds request-to-first-output, Delete the delete calls, of
	// the sandboxes that completed.
	Create, Delete []time.Duration
	// Warm, WarmCreate and WarmDelete: whether the run made warm
	// creates, and the times of those that claimed a warm sandbox
	// (WarmHits of them); WarmMisses counts those that were created cold.
	Warm                   bool
	WarmCreate, WarmDelete []time.Duration
	WarmHits, WarmMisses   int
	// Baselines hold the same for each baseline, in the order of
	// LoadOptions.Baselines.
	Baselines []BaselineTimes
	// Failed and BaselineFailed count the sandboxes and baseline runs
	// that did not complete; Errors holds their errors in the order they
	// happened.
	Failed, BaselineFailed int
	Errors                 []error
}

// BaselineTimes are what one baseline measured.
type BaselineTimes struct {
	Name           string
	Features       Feature
	Plain          bool
	Create, Delete []time.Duration
}

// sandboxes is how many sandboxes the run makes.
func (r *LoadResult) sandboxes() int {
	if r.Warm {
		return 2 * r.N
	}
	return r.N
}

// Err returns nil when every run completed, else an error that counts the
// failures and quotes the first.
func (r *LoadResult) Err() error {
	switch {
	case r.Failed == 0 && r.BaselineFailed == 0:
		return nil
	case r.BaselineFailed == 0:
		return fmt.Errorf("%d of %d sandboxes failed; the first: %w", r.Failed, r.sandboxes(), r.Errors[0])
	}
	return fmt.Errorf("%d of %d sandboxes and %d baseline runs failed; the first: %w", r.Failed, r.sandboxes(), r.BaselineFailed, r.Errors[0])
}

// FreeSlots returns how many more sandboxes of runtime the controller's
// agents can take, as ListAgents reports them, and a one-line account of
// each agent for messages.
func FreeSlots(ctx context.Context, api fsbv1connect.FastPathServiceClient, runtime string) (int, string, error) {
	resp, err := api.ListAgents(ctx, connect.NewRequest(&fsbv1.ListAgentsRequest{}))
	if err != nil {
		return 0, "", fmt.Errorf("list agents: %w", err)
	}
	runtime = cmp.Or(runtime, "runc")
	free := 0
	var seen []string
	for _, a := range resp.Msg.GetAgents() {
		used := len(a.GetSandboxes())
		if rt := a.GetRuntimes(); len(rt) > 0 && !slices.Contains(rt, runtime) {
			seen = append(seen, fmt.Sprintf("%s %d/%d used, no %s", a.GetAgentId(), used, a.GetCapacity(), runtime))
			continue
		}
		// Warm sandboxes are left out, as the controller leaves them out:
		// an agent gives one up to make room for a create that finds it
		// full, and a claim turns one into the sandbox.
		free += max(int(a.GetCapacity())-used, 0)
		seen = append(seen, fmt.Sprintf("%s %d/%d used", a.GetAgentId(), used, a.GetCapacity()))
	}
	if len(seen) == 0 {
		return 0, "no agents", nil
	}
	slices.Sort(seen)
	return free, strings.Join(seen, ", "), nil
}

// Load creates o.N sandboxes through api, o.Concurrency at a time. Each
// worker, for each round, creates one, waits for the first byte of its
// output in the agent's log dir and deletes it; with o.Warm it does the
// same with a sandbox meant to claim a warm one; and it runs each of
// o.Baselines once on containerd, rotating which goes first. It refuses a
// concurrency above the free slots the controller reports. Every sandbox
// it created is deleted before it returns, also when ctx is cancelled: a
// cancelled ctx stops new work, while the calls under way finish (each
// bounded by o.StepTimeout). A run that fails is counted in the result,
// not returned as an error; the error is for a run that could not start.
func Load(ctx context.Context, api fsbv1connect.FastPathServiceClient, o LoadOptions) (*LoadResult, error) {
	o, err := o.complete()
	if err != nil {
		return nil, err
	}
	free, agents, err := FreeSlots(ctx, api, o.Runtime)
	if err != nil {
		return nil, err
	}
	if o.Concurrency > free {
		return nil, fmt.Errorf("concurrency %d is more than the %d free slots for runtime %s the controller reports (%s): lower the concurrency or delete sandboxes",
			o.Concurrency, free, o.Runtime, agents)
	}
	if len(o.Baselines) > 0 {
		dir, err := os.MkdirTemp("", "fsb-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		steps := make([]Step, len(o.Baselines))
		for i, st := range o.Baselines {
			st.Baseline.Dir = cmp.Or(st.Baseline.Dir, dir)
			if err := st.Baseline.prepare(ctx); err != nil {
				return nil, err
			}
			steps[i] = st
		}
		o.Baselines = steps
	}

	r := &LoadResult{Mode: o.Mode, Runtime: o.Runtime, N: o.N, Concurrency: o.Concurrency, Warm: o.Warm}
	for _, st := range o.Baselines {
		r.Baselines = append(r.Baselines, BaselineTimes{Name: st.Name, Features: st.Baseline.Features, Plain: st.Baseline.plain()})
	}
	var mu sync.Mutex
	record := func(f func()) {
		mu.Lock()
		defer mu.Unlock()
		f()
	}
	fail := func(counter *int, err error) {
		record(func() { *counter++; r.Errors = append(r.Errors, err) })
	}
	// left holds the sandboxes whose delete has not been confirmed.
	left := map[string]bool{}

	// sandbox is one sandbox of a round; warm says which kind.
	sandbox := func(name string, warm bool) {
		if ctx.Err() != nil {
			return
		}
		record(func() { left[name] = true })
		res := o.Resources
		if warm {
			res = o.WarmResources
		}
		t, err := o.one(ctx, api, name, res)
		if err != nil {
			// A wait cut short by an interrupt is no failure.
			if ctx.Err() == nil {
				fail(&r.Failed, fmt.Errorf("sandbox %s: %w", name, err))
			}
			if !deleted(ctx, api, o, name) {
				return
			}
		} else {
			record(func() {
				r.Mode = cmp.Or(r.Mode, t.mode)
				switch {
				case !warm:
					r.Create = append(r.Create, t.create)
					r.Delete = append(r.Delete, t.del)
				case t.warm:
					r.WarmHits++
					r.WarmCreate = append(r.WarmCreate, t.create)
					r.WarmDelete = append(r.WarmDelete, t.del)
				default:
					r.WarmMisses++
				}
			})
		}
		record(func() { delete(left, name) })
	}
	base := func(k int, id string) {
		if ctx.Err() != nil {
			return
		}
		create, del, err := o.baseline(ctx, o.Baselines[k].Baseline, id)
		if err != nil {
			if ctx.Err() == nil {
				fail(&r.BaselineFailed, fmt.Errorf("baseline %q %s: %w", o.Baselines[k].Name, id, err))
			}
			return
		}
		record(func() {
			r.Baselines[k].Create = append(r.Baselines[k].Create, create)
			r.Baselines[k].Delete = append(r.Baselines[k].Delete, del)
		})
	}

	next := make(chan int)
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Go(func() {
			for i := range next {
				name := fmt.Sprintf("%s-%d", o.Prefix, i)
				jobs := []func(){func() { sandbox(name, false) }}
				if o.Warm {
					jobs = append(jobs, func() { sandbox(name+"-warm", true) })
				}
				for k := range o.Baselines {
					jobs = append(jobs, func() { base(k, fmt.Sprintf("%s-base%d", name, k)) })
				}
				// Each round starts with another job, so that all see the
				// same load and the same noise.
				for j := range jobs {
					jobs[(i+j)%len(jobs)]()
				}
			}
		})
	}
feed:
	for i := range o.N {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()

	o.sweep(ctx, api, left)
	if len(left) > 0 {
		names := slices.Sorted(func(yield func(string) bool) {
			for n := range left {
				if !yield(n) {
					return
				}
			}
		})
		return r, fmt.Errorf("could not delete %d sandboxes (%s) in namespace %s: delete them with fsb ctl delete",
			len(names), strings.Join(names, " "), o.Namespace)
	}
	if err := ctx.Err(); err != nil {
		return r, fmt.Errorf("interrupted after %d of %d sandboxes", len(r.Create)+len(r.WarmCreate)+r.WarmMisses+r.Failed, r.sandboxes())
	}
	return r, nil
}

// complete checks o and fills in its defaults.
func (o LoadOptions) complete() (LoadOptions, error) {
	switch {
	case o.N < 1:
		return o, fmt.Errorf("the number of sandboxes must be 1 or more, not %d", o.N)
	case o.Concurrency < 1:
		return o, fmt.Errorf("the concurrency must be 1 or more, not %d", o.Concurrency)
	case o.Concurrency > o.N:
		return o, fmt.Errorf("the concurrency (%d) must not exceed the number of sandboxes (%d)", o.Concurrency, o.N)
	case o.Image == "":
		return o, errors.New("no image")
	case o.LogDir == "":
		return o, errors.New("no log dir: the agent's --log-dir is where the output is seen")
	}
	switch o.Mode {
	case "", "fast", "strong":
	default:
		return o, fmt.Errorf("mode %q: want fast or strong", o.Mode)
	}
	o.Namespace = cmp.Or(o.Namespace, "default")
	o.Runtime = cmp.Or(o.Runtime, "runc")
	o.StepTimeout = cmp.Or(o.StepTimeout, DefaultStepTimeout)
	if o.Prefix == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		o.Prefix = "bench-" + hex.EncodeToString(b)
	}
	return o, nil
}

// times are what one sandbox measured: its create and delete, the mode
// the controller used, and whether it claimed a warm sandbox.
type times struct {
	create, del time.Duration
	mode        string
	warm        bool
}

// one creates sandbox name, waits for its first output and deletes it.
// The create and delete calls outlive a cancelled ctx (bounded by
// StepTimeout), so that a sandbox is never left half made; only the wait
// for output stops.
func (o LoadOptions) one(ctx context.Context, api fsbv1connect.FastPathServiceClient, name string, res *fsbv1.Resources) (times, error) {
	var t times
	spec := &fsbv1.SandboxSpec{Image: o.Image, Command: o.Command, Runtime: o.Runtime, Resources: res}
	switch o.Mode {
	case "fast":
		spec.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST
	case "strong":
		spec.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG
	}
	stepCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.StepTimeout)
	defer cancel()
	start := time.Now()
	resp, err := api.CreateSandbox(stepCtx, connect.NewRequest(&fsbv1.CreateSandboxRequest{
		Name: name, Namespace: o.Namespace, Labels: map[string]string{RunLabel: o.Prefix}, Spec: spec,
	}))
	if err != nil {
		return t, fmt.Errorf("create: %w", err)
	}
	switch resp.Msg.GetSandbox().GetSpec().GetConsistencyMode() {
	case fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST:
		t.mode = "fast"
	case fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG:
		t.mode = "strong"
	}
	t.warm = resp.Msg.GetSandbox().GetStatus().GetWarm()
	waitCtx, cancelWait := context.WithTimeout(ctx, o.StepTimeout-time.Since(start))
	defer cancelWait()
	seen, err := WaitForLog(waitCtx, filepath.Join(o.LogDir, o.Namespace, name))
	if err != nil {
		return t, err
	}
	t.create = seen.Sub(start)

	delCtx, cancelDel := context.WithTimeout(context.WithoutCancel(ctx), o.StepTimeout+o.Grace)
	defer cancelDel()
	start = time.Now()
	if err := deleteSandbox(delCtx, api, o.Namespace, name, o.Grace); err != nil {
		return t, fmt.Errorf("delete: %w", err)
	}
	t.del = time.Since(start)
	return t, nil
}

// baseline runs b once as container id, bounded by StepTimeout and not
// cut short by a cancelled ctx, so that it cleans up after itself.
func (o LoadOptions) baseline(ctx context.Context, b Baseline, id string) (create, del time.Duration, err error) {
	stepCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*o.StepTimeout+o.Grace)
	defer cancel()
	create, del, err = b.Run(stepCtx, id)
	if err != nil {
		b.remove(stepCtx, id)
	}
	return create, del, err
}

// deleted deletes sandbox name unless it is gone already and reports
// whether it is gone.
func deleted(ctx context.Context, api fsbv1connect.FastPathServiceClient, o LoadOptions, name string) bool {
	delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.StepTimeout)
	defer cancel()
	err := deleteSandbox(delCtx, api, o.Namespace, name, 0)
	return err == nil || connect.CodeOf(err) == connect.CodeNotFound
}

// deleteSandbox deletes a sandbox with grace (whole seconds; the
// equivalent baseline waits as long) and waits until its container is
// gone.
func deleteSandbox(ctx context.Context, api fsbv1connect.FastPathServiceClient, namespace, name string, g time.Duration) error {
	grace := int32(g / time.Second)
	_, err := api.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{
		Name: name, Namespace: namespace, GracePeriodSeconds: &grace,
	}))
	return err
}

// sweep deletes whatever of this run is still there: the sandboxes in left
// and any the controller lists with this run's label (a create that
// answered too late for its worker). It removes from left what is gone.
func (o LoadOptions) sweep(ctx context.Context, api fsbv1connect.FastPathServiceClient, left map[string]bool) {
	listCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.StepTimeout)
	defer cancel()
	resp, err := api.ListSandboxes(listCtx, connect.NewRequest(&fsbv1.ListSandboxesRequest{
		Namespace: o.Namespace, LabelSelector: RunLabel + "=" + o.Prefix,
	}))
	if err == nil {
		for _, sb := range resp.Msg.GetSandboxes() {
			left[sb.GetName()] = true
		}
	}
	for name := range left {
		if deleted(ctx, api, o, name) {
			delete(left, name)
		}
	}
}

// WaitForLog waits until a *.log file in dir holds at least one byte and
// returns when that was seen. The agent names the file after the
// sandbox's ID and revision, which the bench need not know; dir itself
// may not be there yet.
func WaitForLog(ctx context.Context, dir string) (time.Time, error) {
	pattern := filepath.Join(dir, "*.log")
	seen, err := awaitFile(ctx, dir, func() (bool, error) {
		matches, _ := filepath.Glob(pattern)
		for _, m := range matches {
			if fi, err := os.Stat(m); err == nil && fi.Size() > 0 {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("no output in %s: %w", pattern, err)
	}
	return seen, nil
}

// prepare checks that the baseline's image is there and unpacked for its
// snapshotter (the agent unpacks on first use; the baseline must not pay
// for that inside its first run).
func (b Baseline) prepare(ctx context.Context) error {
	ctx = b.context(ctx)
	img, err := b.Client.GetImage(ctx, b.Image)
	if errdefs.IsNotFound(err) && b.Namespace != "" {
		if err := b.copyImage(ctx); err != nil {
			return err
		}
		img, err = b.Client.GetImage(ctx, b.Image)
	}
	if err != nil {
		return fmt.Errorf("baseline: image %s: %w", b.Image, err)
	}
	ok, err := img.IsUnpacked(ctx, b.Snapshotter)
	if err != nil {
		return fmt.Errorf("baseline: image %s: %w", b.Image, err)
	}
	if !ok {
		if err := img.Unpack(ctx, b.Snapshotter); err != nil {
			return fmt.Errorf("baseline: unpack %s: %w", b.Image, err)
		}
	}
	return nil
}

// remove deletes what a failed baseline run may have left: its task and
// container with its snapshot.
func (b Baseline) remove(ctx context.Context, id string) {
	ctx = b.context(ctx)
	c, err := b.Client.LoadContainer(ctx, id)
	if err != nil {
		return
	}
	if t, err := c.Task(ctx, nil); err == nil {
		_, _ = t.Delete(ctx, containerd.WithProcessKill)
	}
	_ = c.Delete(ctx, containerd.WithSnapshotCleanup)
}

// Percentiles are a Summary in milliseconds, as Report prints them.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func percentiles(ds []time.Duration) Percentiles {
	s := Summarize(ds)
	return Percentiles{P50: Millis(s.P50), P90: Millis(s.P90), P99: Millis(s.P99), Max: Millis(s.Max)}
}

// Report is a LoadResult as `fsb ctl bench -o json` prints it. What a run
// did not measure is null, so that the shape never changes.
type Report struct {
	Mode        string      `json:"mode"`
	Runtime     string      `json:"runtime"`
	N           int         `json:"n"`
	Concurrency int         `json:"concurrency"`
	Create      Percentiles `json:"create_ms"`
	Delete      Percentiles `json:"delete_ms"`
	// Baseline is the equivalent baseline's create -> first output,
	// PlainBaseline the plain one's.
	Baseline      *Percentiles `json:"baseline_ms"`
	PlainBaseline *Percentiles `json:"plain_baseline_ms"`
	// RatioP50 is the p50 of Create over that of Baseline, PlainRatioP50
	// over that of PlainBaseline.
	RatioP50      *float64 `json:"ratio_p50"`
	PlainRatioP50 *float64 `json:"plain_ratio_p50"`
	// Warm and WarmDelete are the warm hits' times; WarmHits and
	// WarmMisses are null without --warm.
	Warm       *Percentiles `json:"warm_ms"`
	WarmDelete *Percentiles `json:"warm_delete_ms"`
	WarmHits   *int         `json:"warm_hits"`
	WarmMisses *int         `json:"warm_misses"`
	// Baselines are every baseline the run measured, in order: with
	// --attribute, the steps from the plain one to the equivalent one.
	Baselines []BaselineReport `json:"baselines"`
}

// BaselineReport is one baseline's times.
type BaselineReport struct {
	Name   string      `json:"name"`
	Create Percentiles `json:"create_ms"`
	Delete Percentiles `json:"delete_ms"`
}

// ratio is a over b, rounded to two decimals; nil when b is 0.
func ratio(a, b float64) *float64 {
	if b <= 0 || a <= 0 {
		return nil
	}
	r := math.Round(a/b*100) / 100
	return &r
}

// equivalent and plain return the equivalent and the plain baseline's
// times, or nil.
func (r *LoadResult) equivalent() *BaselineTimes {
	for i := len(r.Baselines) - 1; i >= 0; i-- {
		if b := &r.Baselines[i]; b.Features == Equivalent && len(b.Create) > 0 {
			return b
		}
	}
	return nil
}

func (r *LoadResult) plain() *BaselineTimes {
	for i := range r.Baselines {
		if b := &r.Baselines[i]; b.Plain && len(b.Create) > 0 {
			return b
		}
	}
	return nil
}

// Report summarizes r.
func (r *LoadResult) Report() Report {
	rep := Report{
		Mode: r.Mode, Runtime: r.Runtime, N: r.N, Concurrency: r.Concurrency,
		Create: percentiles(r.Create), Delete: percentiles(r.Delete),
	}
	if b := r.equivalent(); b != nil {
		p := percentiles(b.Create)
		rep.Baseline, rep.RatioP50 = &p, ratio(rep.Create.P50, p.P50)
	}
	if b := r.plain(); b != nil {
		p := percentiles(b.Create)
		rep.PlainBaseline, rep.PlainRatioP50 = &p, ratio(rep.Create.P50, p.P50)
	}
	if r.Warm {
		hits, misses := r.WarmHits, r.WarmMisses
		rep.WarmHits, rep.WarmMisses = &hits, &misses
		if len(r.WarmCreate) > 0 {
			c, d := percentiles(r.WarmCreate), percentiles(r.WarmDelete)
			rep.Warm, rep.WarmDelete = &c, &d
		}
	}
	for _, b := range r.Baselines {
		if len(b.Create) > 0 {
			rep.Baselines = append(rep.Baselines, BaselineReport{Name: b.Name, Create: percentiles(b.Create), Delete: percentiles(b.Delete)})
		}
	}
	return rep
}

// WriteJSON writes r's Report as one JSON object.
func (r *LoadResult) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r.Report())
}

// WriteTable writes r for people: one row per measure, in milliseconds,
// then the warm claims, the ratios of the p50s and, with more baselines
// than the plain and the equivalent one, what each step between them adds.
func (r *LoadResult) WriteTable(w io.Writer) error {
	rep := r.Report()
	fmt.Fprintf(w, "mode %s, runtime %s, %d rounds, concurrency %d\n\n", cmp.Or(rep.Mode, "?"), rep.Runtime, rep.N, rep.Concurrency)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "(ms)\t%8s\t%8s\t%8s\t%8s\n", "p50", "p90", "p99", "max")
	row := func(name string, p Percentiles) {
		fmt.Fprintf(tw, "%s\t%8.1f\t%8.1f\t%8.1f\t%8.1f\n", name, p.P50, p.P90, p.P99, p.Max)
	}
	cold := "fsb"
	if r.Warm {
		cold = "fsb cold"
	}
	row(cold+": create -> first output", rep.Create)
	row(cold+": delete", rep.Delete)
	if rep.Warm != nil {
		row("fsb warm hits: create -> first output", *rep.Warm)
		row("fsb warm hits: delete", *rep.WarmDelete)
	}
	for _, b := range []struct {
		name string
		t    *BaselineTimes
	}{{"plain", r.plain()}, {"equivalent", r.equivalent()}} {
		if b.t != nil {
			row("containerd "+b.name+": create -> first output", percentiles(b.t.Create))
			row("containerd "+b.name+": delete", percentiles(b.t.Delete))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if rep.WarmHits != nil {
		fmt.Fprintf(w, "\nwarm claims: %d hits, %d misses", *rep.WarmHits, *rep.WarmMisses)
		if *rep.WarmHits == 0 {
			fmt.Fprint(w, " (no create claimed a warm sandbox: the agents hold none matching this image, runtime and resources, or keep no warm sandboxes at all)")
		}
		fmt.Fprintln(w)
	}
	if len(rep.Baselines) > 0 || rep.RatioP50 != nil {
		fmt.Fprintln(w)
	}
	if rep.RatioP50 != nil {
		fmt.Fprintf(w, "%s / containerd equivalent, create -> first output p50: %.2f\n", cold, *rep.RatioP50)
	}
	if rep.PlainRatioP50 != nil {
		fmt.Fprintf(w, "%s / containerd plain, create -> first output p50: %.2f\n", cold, *rep.PlainRatioP50)
	}
	if len(rep.Baselines) <= 2 {
		return nil
	}
	// The attribution: each step adds one difference to the one above.
	fmt.Fprintln(w, "\nfrom the plain to the equivalent baseline, one difference at a time:")
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "(ms)\t%8s\t%8s\t%8s\t%8s\n", "create p50", "+/-", "delete p50", "+/-")
	for i, b := range rep.Baselines {
		if i == 0 {
			fmt.Fprintf(tw, "%s\t%8.1f\t%8s\t%8.1f\t%8s\n", b.Name, b.Create.P50, "", b.Delete.P50, "")
			continue
		}
		prev := rep.Baselines[i-1]
		fmt.Fprintf(tw, "%s\t%8.1f\t%+8.1f\t%8.1f\t%+8.1f\n", b.Name, b.Create.P50, b.Create.P50-prev.Create.P50, b.Delete.P50, b.Delete.P50-prev.Delete.P50)
	}
	return tw.Flush()
}
