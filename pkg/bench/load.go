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
	// Baseline, when set, runs the same work straight on containerd,
	// interleaved with the sandboxes: each worker alternates the two.
	// Dir may be empty: the run then uses a temporary directory.
	Baseline *Baseline
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
	// BaselineCreate and BaselineDelete are the same for the baseline;
	// empty without one.
	BaselineCreate, BaselineDelete []time.Duration
	// Failed and BaselineFailed count the sandboxes and baseline runs
	// that did not complete; Errors holds their errors in the order they
	// happened.
	Failed, BaselineFailed int
	Errors                 []error
}

// Err returns nil when every run completed, else an error that counts the
// failures and quotes the first.
func (r *LoadResult) Err() error {
	switch {
	case r.Failed == 0 && r.BaselineFailed == 0:
		return nil
	case r.BaselineFailed == 0:
		return fmt.Errorf("%d of %d sandboxes failed; the first: %w", r.Failed, r.N, r.Errors[0])
	}
	return fmt.Errorf("%d of %d sandboxes and %d baseline runs failed; the first: %w", r.Failed, r.N, r.BaselineFailed, r.Errors[0])
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
// worker creates one, waits for the first byte of its output in the
// agent's log dir, deletes it, and (with a baseline) does the same on
// containerd, alternating which goes first. It refuses a concurrency above
// the free slots the controller reports. Every sandbox it created is
// deleted before it returns, also when ctx is cancelled: a cancelled ctx
// stops new work, while the calls under way finish (each bounded by
// o.StepTimeout). A run that fails is counted in the result, not returned
// as an error; the error is for a run that could not start.
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
	if o.Baseline != nil {
		b := *o.Baseline
		if b.Dir == "" {
			dir, err := os.MkdirTemp("", "fsb-bench-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
			b.Dir = dir
		}
		if err := b.prepare(ctx); err != nil {
			return nil, err
		}
		o.Baseline = &b
	}

	r := &LoadResult{Mode: o.Mode, Runtime: o.Runtime, N: o.N, Concurrency: o.Concurrency}
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

	next := make(chan int)
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Go(func() {
			for i := range next {
				name := fmt.Sprintf("%s-%d", o.Prefix, i)
				fsb := func() {
					if ctx.Err() != nil {
						return
					}
					record(func() { left[name] = true })
					create, del, mode, err := o.one(ctx, api, name)
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
							r.Create = append(r.Create, create)
							r.Delete = append(r.Delete, del)
							r.Mode = cmp.Or(r.Mode, mode)
						})
					}
					record(func() { delete(left, name) })
				}
				base := func() {
					if o.Baseline == nil || ctx.Err() != nil {
						return
					}
					create, del, err := o.baseline(ctx, name+"-base")
					if err != nil {
						if ctx.Err() == nil {
							fail(&r.BaselineFailed, fmt.Errorf("baseline %s: %w", name+"-base", err))
						}
						return
					}
					record(func() {
						r.BaselineCreate = append(r.BaselineCreate, create)
						r.BaselineDelete = append(r.BaselineDelete, del)
					})
				}
				if i%2 == 0 {
					fsb()
					base()
				} else {
					base()
					fsb()
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
		return r, fmt.Errorf("interrupted after %d of %d sandboxes", len(r.Create)+r.Failed, o.N)
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

// one creates sandbox name, waits for its first output and deletes it. It
// returns both times and the mode the controller used. The create and
// delete calls outlive a cancelled ctx (bounded by StepTimeout), so that
// a sandbox is never left half made; only the wait for output stops.
func (o LoadOptions) one(ctx context.Context, api fsbv1connect.FastPathServiceClient, name string) (create, del time.Duration, mode string, err error) {
	spec := &fsbv1.SandboxSpec{Image: o.Image, Command: o.Command, Runtime: o.Runtime}
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
		return 0, 0, "", fmt.Errorf("create: %w", err)
	}
	switch resp.Msg.GetSandbox().GetSpec().GetConsistencyMode() {
	case fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST:
		mode = "fast"
	case fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG:
		mode = "strong"
	}
	waitCtx, cancelWait := context.WithTimeout(ctx, o.StepTimeout-time.Since(start))
	defer cancelWait()
	seen, err := waitForLog(waitCtx, filepath.Join(o.LogDir, o.Namespace, name))
	if err != nil {
		return 0, 0, mode, err
	}
	create = seen.Sub(start)

	delCtx, cancelDel := context.WithTimeout(context.WithoutCancel(ctx), o.StepTimeout)
	defer cancelDel()
	start = time.Now()
	if err := deleteSandbox(delCtx, api, o.Namespace, name); err != nil {
		return 0, 0, mode, fmt.Errorf("delete: %w", err)
	}
	return create, time.Since(start), mode, nil
}

// baseline runs the baseline once as container id, bounded by StepTimeout
// and not cut short by a cancelled ctx, so that it cleans up after itself.
func (o LoadOptions) baseline(ctx context.Context, id string) (create, del time.Duration, err error) {
	stepCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*o.StepTimeout)
	defer cancel()
	create, del, err = o.Baseline.Run(stepCtx, id)
	if err != nil {
		o.Baseline.remove(stepCtx, id)
	}
	return create, del, err
}

// deleted deletes sandbox name unless it is gone already and reports
// whether it is gone.
func deleted(ctx context.Context, api fsbv1connect.FastPathServiceClient, o LoadOptions, name string) bool {
	delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.StepTimeout)
	defer cancel()
	err := deleteSandbox(delCtx, api, o.Namespace, name)
	return err == nil || connect.CodeOf(err) == connect.CodeNotFound
}

// deleteSandbox deletes a sandbox at once (no grace period: the baseline
// kills at once too) and waits until its container is gone.
func deleteSandbox(ctx context.Context, api fsbv1connect.FastPathServiceClient, namespace, name string) error {
	var grace int32
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

// waitForLog waits until a *.log file in dir holds at least one byte and
// returns when that was seen. The agent names the file after the
// sandbox's ID and revision, which the bench need not know.
func waitForLog(ctx context.Context, dir string) (time.Time, error) {
	pattern := filepath.Join(dir, "*.log")
	for {
		matches, _ := filepath.Glob(pattern)
		for _, m := range matches {
			if fi, err := os.Stat(m); err == nil && fi.Size() > 0 {
				return time.Now(), nil
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("no output in %s: %w", pattern, ctx.Err())
		case <-time.After(OutputPoll):
		}
	}
}

// prepare checks that the baseline's image is there and unpacked for its
// snapshotter (the agent unpacks on first use; the baseline must not pay
// for that inside its first run).
func (b Baseline) prepare(ctx context.Context) error {
	img, err := b.Client.GetImage(ctx, b.Image)
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

// Report is a LoadResult as `fsb ctl bench -o json` prints it. Baseline
// and RatioP50 are null without a baseline.
type Report struct {
	Mode        string       `json:"mode"`
	Runtime     string       `json:"runtime"`
	N           int          `json:"n"`
	Concurrency int          `json:"concurrency"`
	Create      Percentiles  `json:"create_ms"`
	Delete      Percentiles  `json:"delete_ms"`
	Baseline    *Percentiles `json:"baseline_ms"`
	// RatioP50 is the p50 of Create over that of Baseline.
	RatioP50 *float64 `json:"ratio_p50"`
}

// Report summarizes r.
func (r *LoadResult) Report() Report {
	rep := Report{
		Mode: r.Mode, Runtime: r.Runtime, N: r.N, Concurrency: r.Concurrency,
		Create: percentiles(r.Create), Delete: percentiles(r.Delete),
	}
	if len(r.BaselineCreate) > 0 {
		b := percentiles(r.BaselineCreate)
		rep.Baseline = &b
		if b.P50 > 0 && len(r.Create) > 0 {
			ratio := math.Round(rep.Create.P50/b.P50*100) / 100
			rep.RatioP50 = &ratio
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
// then the ratio of the p50s.
func (r *LoadResult) WriteTable(w io.Writer) error {
	rep := r.Report()
	fmt.Fprintf(w, "mode %s, runtime %s, %d sandboxes, concurrency %d\n\n", cmp.Or(rep.Mode, "?"), rep.Runtime, rep.N, rep.Concurrency)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "(ms)\t%8s\t%8s\t%8s\t%8s\n", "p50", "p90", "p99", "max")
	row := func(name string, p Percentiles) {
		fmt.Fprintf(tw, "%s\t%8.1f\t%8.1f\t%8.1f\t%8.1f\n", name, p.P50, p.P90, p.P99, p.Max)
	}
	row("create -> first output", rep.Create)
	row("delete", rep.Delete)
	if rep.Baseline != nil {
		row("containerd: create -> first output", *rep.Baseline)
		row("containerd: delete", percentiles(r.BaselineDelete))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if rep.RatioP50 != nil {
		_, err := fmt.Fprintf(w, "\nfsb / containerd, create -> first output p50: %.2f\n", *rep.RatioP50)
		return err
	}
	return nil
}
