package janitor

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/runtime/v2/runc/options"
	"github.com/containerd/containerd/snapshots"
	"github.com/prometheus/client_golang/prometheus"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// fakeController answers the janitor's question from a table of verdicts
// by sandbox ID (unknown when absent), or fails every call with err.
type fakeController struct {
	mu       sync.Mutex
	verdicts map[string]fsbv1.Verdict
	err      error
	calls    int
	// warm names the refs asked about as warm sandboxes.
	warm map[string]bool
}

func (f *fakeController) Classify(_ context.Context, req *connect.Request[fsbv1.ClassifyRequest]) (*connect.Response[fsbv1.ClassifyResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	resp := &fsbv1.ClassifyResponse{}
	for _, ref := range req.Msg.GetSandboxes() {
		if ref.GetWarm() {
			if f.warm == nil {
				f.warm = map[string]bool{}
			}
			f.warm[ref.GetSandboxId()] = true
		}
		v, ok := f.verdicts[ref.GetSandboxId()]
		if !ok {
			v = fsbv1.Verdict_VERDICT_UNKNOWN
		}
		resp.Classifications = append(resp.Classifications, &fsbv1.Classification{Sandbox: ref, Verdict: v, Reason: "fake: " + v.String()})
	}
	return connect.NewResponse(resp), nil
}

func (f *fakeController) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// serve serves f on loopback and returns its URL.
func (f *fakeController) serve(t *testing.T) string {
	path, h := fsbv1connect.NewJanitorServiceHandler(f)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// clock is a settable clock for Config.Now; until set it is the real one.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.now.IsZero() {
		return time.Now()
	}
	return c.now
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// env is a janitor over the rig's containerd and a fake controller.
type env struct {
	t     *testing.T
	cd    *containerd.Client
	ns    string
	ctrl  *fakeController
	url   string
	clock *clock
	log   *rig.Buffer
}

func newEnv(t *testing.T) *env {
	cd, ns := rig.Containerd(t)
	e := &env{t: t, cd: cd, ns: ns, ctrl: &fakeController{verdicts: map[string]fsbv1.Verdict{}}, clock: &clock{}, log: &rig.Buffer{}}
	e.url = e.ctrl.serve(t)
	return e
}

// janitor returns a Janitor of e with cfg's settings over e's defaults.
func (e *env) janitor(cfg Config) *Janitor {
	e.t.Helper()
	cfg.Client = e.cd
	if cfg.Namespaces == nil {
		cfg.Namespaces = []string{e.ns}
	}
	if cfg.Controller == nil {
		cfg.Controller = fsbv1connect.NewJanitorServiceClient(http.DefaultClient, e.url)
		cfg.ControllerURL = e.url
	}
	cfg.Now = e.clock.Now
	cfg.Logger = slog.New(slog.NewJSONHandler(e.log, nil))
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = 5 * time.Second
	}
	if cfg.finders == nil {
		cfg.finders = &finderSet{snapshots: noneNS, mounts: noneNS, shims: noShims, logFiles: noFiles}
	}
	j, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

func noneNS(context.Context, *containerd.Client, string) ([]Leftover, error) { return nil, nil }
func noShims(context.Context, *containerd.Client, string, string) ([]Leftover, error) {
	return nil, nil
}
func noFiles(string, time.Duration, time.Time) ([]Leftover, error) { return nil, nil }

// sandbox makes a container in ns straight on containerd, labelled with
// labels, with a running task when script is not empty (its output in
// out), and returns its creation time.
func (e *env) sandbox(ns, id string, labels map[string]string, script, out string) time.Time {
	e.t.Helper()
	ctx := namespaces.WithNamespace(e.t.Context(), ns)
	img, err := e.cd.GetImage(ctx, rig.ImageRef)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := e.cd.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithNewSnapshot(id, img),
		containerd.WithContainerLabels(labels),
		containerd.WithRuntime(rig.Runtime, &options.Options{BinaryName: "runc"}),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sh", "-c", or(script, "true"))),
	)
	if err != nil {
		e.t.Fatal(err)
	}
	if script != "" {
		task, err := c.NewTask(ctx, cio.LogFile(out))
		if err != nil {
			e.t.Fatal(err)
		}
		if err := task.Start(ctx); err != nil {
			e.t.Fatal(err)
		}
	}
	info, err := c.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.CreatedAt
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// fsbLabels are the labels an agent gives sandbox id.
func fsbLabels(id string) map[string]string {
	return map[string]string{runtime.LabelID: id, runtime.LabelRevision: "1", runtime.LabelAgent: "agent-1"}
}

// exists says whether container id is in ns.
func (e *env) exists(ns, id string) bool {
	e.t.Helper()
	_, err := e.cd.LoadContainer(namespaces.WithNamespace(e.t.Context(), ns), id)
	if err != nil && !errdefs.IsNotFound(err) {
		e.t.Fatal(err)
	}
	return err == nil
}

func (e *env) pass(j *Janitor) Report {
	e.t.Helper()
	rep, err := j.Pass(e.t.Context())
	if err != nil {
		e.t.Fatalf("pass: %v\nlog:\n%s", err, e.log.String())
	}
	return rep
}

// TestVerdicts: with Once and no orphan timeout, only the unknown sandbox
// is reaped; known and undecided ones stay, and the report says why.
func TestVerdicts(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		id      string
		verdict fsbv1.Verdict
		reaped  bool
	}{
		{"sb-known", fsbv1.Verdict_VERDICT_KNOWN, false},
		{"sb-unknown", fsbv1.Verdict_VERDICT_UNKNOWN, true},
		{"sb-undecided", fsbv1.Verdict_VERDICT_UNDECIDED, false},
		{"sb-unspecified", fsbv1.Verdict_VERDICT_UNSPECIFIED, false},
	}
	for _, tc := range cases {
		e.ctrl.verdicts[tc.id] = tc.verdict
		e.sandbox(e.ns, tc.id+"-1", fsbLabels(tc.id), "", "")
	}
	rep := e.pass(e.janitor(Config{Once: true}))
	for _, tc := range cases {
		if gone := !e.exists(e.ns, tc.id+"-1"); gone != tc.reaped {
			t.Errorf("%s (%v): reaped %v, want %v", tc.id, tc.verdict, gone, tc.reaped)
		}
	}
	want := Counts{Found: 4, Reaped: 1, Known: 1, Undecided: 2}
	if got := rep.Kinds[KindContainer]; got != want {
		t.Errorf("report: %+v, want %+v", got, want)
	}
	if s := rep.String(); s != "reaped 1: 1 container; kept 3: 1 known, 2 undecided" {
		t.Errorf("summary %q", s)
	}
	log := e.log.String()
	if !strings.Contains(log, `"msg":"removed"`) || !strings.Contains(log, `"sandbox":"sb-unknown"`) || !strings.Contains(log, "fake: VERDICT_UNKNOWN") {
		t.Errorf("no removal line with the sandbox and the controller's reason:\n%s", log)
	}
}

// TestWarmContainersAreAskedAsWarm: a warm sandbox's container names no
// sandbox; the janitor asks about it as a warm one (by its container ID,
// for its agent), keeps it while the controller knows it and reaps it once
// the controller does not (its agent gone for good).
func TestWarmContainersAreAskedAsWarm(t *testing.T) {
	e := newEnv(t)
	labels := map[string]string{runtime.LabelWarm: "kind", runtime.LabelAgent: "agent-1"}
	e.ctrl.verdicts["warm-kept"] = fsbv1.Verdict_VERDICT_KNOWN
	e.sandbox(e.ns, "warm-kept", labels, "", "")
	e.sandbox(e.ns, "warm-orphan", labels, "", "")
	e.pass(e.janitor(Config{Once: true}))
	if !e.exists(e.ns, "warm-kept") {
		t.Error("a warm sandbox the controller knows was reaped")
	}
	if e.exists(e.ns, "warm-orphan") {
		t.Error("a warm sandbox the controller does not know was kept")
	}
	e.ctrl.mu.Lock()
	defer e.ctrl.mu.Unlock()
	if !e.ctrl.warm["warm-kept"] || !e.ctrl.warm["warm-orphan"] {
		t.Errorf("warm containers not asked about as warm: %v", e.ctrl.warm)
	}
}

// TestTwoAnswers: without Once, an unknown container old enough is reaped
// only once it was unknown at two answers at least half the orphan timeout
// apart; any other answer in between starts the count again.
func TestTwoAnswers(t *testing.T) {
	const timeout = 10 * time.Minute
	type step struct {
		at      time.Duration // after the first answer
		verdict fsbv1.Verdict
		want    Counts
	}
	U, K, D := fsbv1.Verdict_VERDICT_UNKNOWN, fsbv1.Verdict_VERDICT_KNOWN, fsbv1.Verdict_VERDICT_UNDECIDED
	waiting, reaped := Counts{Found: 1, Waiting: 1}, Counts{Found: 1, Reaped: 1}
	cases := []struct {
		name  string
		steps []step
	}{
		{"half the timeout apart", []step{{0, U, waiting}, {timeout/2 - time.Second, U, waiting}, {timeout / 2, U, reaped}}},
		{"known between", []step{{0, U, waiting}, {timeout/2 - time.Second, K, Counts{Found: 1, Known: 1}},
			{timeout / 2, U, waiting}, {timeout - time.Second, U, waiting}, {timeout, U, reaped}}},
		{"undecided between", []step{{0, U, waiting}, {time.Second, D, Counts{Found: 1, Undecided: 1}},
			{timeout / 2, U, waiting}, {timeout, U, reaped}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			created := e.sandbox(e.ns, "sb-orphan-1", fsbLabels("sb-orphan"), "", "")
			j := e.janitor(Config{OrphanTimeout: timeout})
			t0 := created.Add(timeout)
			for i, s := range tc.steps {
				e.clock.set(t0.Add(s.at))
				e.ctrl.verdicts["sb-orphan"] = s.verdict
				rep := e.pass(j)
				if got := rep.Kinds[KindContainer]; got != s.want {
					t.Fatalf("step %d at +%s (%v): %+v, want %+v", i, s.at, s.verdict, got, s.want)
				}
				if gone := !e.exists(e.ns, "sb-orphan-1"); gone != (s.want.Reaped == 1) {
					t.Fatalf("step %d: container gone %v, want %v", i, gone, s.want.Reaped == 1)
				}
			}
		})
	}
}

// TestTooYoungIsKept: an unknown container younger than the orphan
// timeout is kept, though its answers are far enough apart.
func TestTooYoungIsKept(t *testing.T) {
	e := newEnv(t)
	const timeout = 10 * time.Minute
	created := e.sandbox(e.ns, "sb-young-1", fsbLabels("sb-young"), "", "")
	j := e.janitor(Config{OrphanTimeout: timeout})
	for _, at := range []time.Duration{0, timeout - time.Second} {
		e.clock.set(created.Add(at))
		if got := e.pass(j).Kinds[KindContainer]; got != (Counts{Found: 1, TooYoung: 1}) {
			t.Fatalf("at +%s: %+v, want kept as too young", at, got)
		}
	}
	// Old enough now, and unknown since the first pass: reaped.
	e.clock.set(created.Add(timeout))
	if got := e.pass(j).Kinds[KindContainer]; got.Reaped != 1 || e.exists(e.ns, "sb-young-1") {
		t.Fatalf("at +%s: %+v, want reaped", timeout, got)
	}
}

// TestOnceUsesCreationTimeAlone: with Once, one unknown answer is enough,
// and the creation time decides.
func TestOnceUsesCreationTimeAlone(t *testing.T) {
	e := newEnv(t)
	const timeout = 10 * time.Minute
	created := e.sandbox(e.ns, "sb-once-1", fsbLabels("sb-once"), "", "")
	e.clock.set(created.Add(timeout - time.Second))
	if got := e.pass(e.janitor(Config{Once: true, OrphanTimeout: timeout})).Kinds[KindContainer]; got.TooYoung != 1 || !e.exists(e.ns, "sb-once-1") {
		t.Fatalf("younger than the timeout: %+v, want kept as too young", got)
	}
	e.clock.set(created.Add(timeout))
	if got := e.pass(e.janitor(Config{Once: true, OrphanTimeout: timeout})).Kinds[KindContainer]; got.Reaped != 1 || e.exists(e.ns, "sb-once-1") {
		t.Fatalf("as old as the timeout, first answer unknown: %+v, want reaped", got)
	}
}

// TestNotFsbsIsLeftAlone: containers without both fsb labels, and fsb
// containers in a namespace the janitor is not given, are not touched.
func TestNotFsbsIsLeftAlone(t *testing.T) {
	e := newEnv(t)
	_, other := rig.Containerd(t)
	e.sandbox(e.ns, "plain", nil, "", "")
	e.sandbox(e.ns, "id-only", map[string]string{runtime.LabelID: "sb-id-only"}, "", "")
	e.sandbox(e.ns, "agent-only", map[string]string{runtime.LabelAgent: "agent-1"}, "", "")
	e.sandbox(other, "sb-elsewhere-1", fsbLabels("sb-elsewhere"), "", "")
	e.sandbox(e.ns, "sb-orphan-1", fsbLabels("sb-orphan"), "", "")
	rep := e.pass(e.janitor(Config{Once: true}))
	if got := rep.Kinds[KindContainer]; got != (Counts{Found: 1, Reaped: 1}) {
		t.Errorf("report %+v, want only sb-orphan found and reaped", got)
	}
	for _, c := range []struct{ ns, id string }{{e.ns, "plain"}, {e.ns, "id-only"}, {e.ns, "agent-only"}, {other, "sb-elsewhere-1"}} {
		if !e.exists(c.ns, c.id) {
			t.Errorf("%s/%s was removed", c.ns, c.id)
		}
	}
	if e.exists(e.ns, "sb-orphan-1") {
		t.Error("the orphan in the janitor's namespace was kept")
	}
}

// TestCannotAskRemovesNothing: when the controller cannot be asked — down,
// not Ready, or refusing the token — nothing is removed, not even what a
// finder found without a question, and the error says why; it asks even
// when it found nothing.
func TestCannotAskRemovesNothing(t *testing.T) {
	e := newEnv(t)
	e.sandbox(e.ns, "sb-orphan-1", fsbLabels("sb-orphan"), "", "")
	snaps := e.cd.SnapshotService(rig.Snapshotter)
	ctx := namespaces.WithNamespace(t.Context(), e.ns)
	// A root for containerd's garbage collector, as a leftover is until
	// removed (an unreferenced snapshot would be collected on its own).
	if _, err := snaps.Prepare(ctx, "left-snapshot", "", snapshots.WithLabels(map[string]string{"containerd.io/gc.root": "test"})); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "sb-gone-1.log")
	if err := os.WriteFile(file, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := e.clock.Now().Add(-time.Hour)
	finders := &finderSet{
		snapshots: func(_ context.Context, _ *containerd.Client, ns string) ([]Leftover, error) {
			return []Leftover{{Kind: KindSnapshot, Namespace: ns, Name: "left-snapshot", Created: old, Reason: "test: no container",
				Remove: func(ctx context.Context) error { return snaps.Remove(ctx, "left-snapshot") }}}, nil
		},
		shims: noShims, mounts: noneNS,
		logFiles: func(string, time.Duration, time.Time) ([]Leftover, error) {
			return []Leftover{{Kind: KindLog, Name: file, SandboxID: "sb-gone", Revision: 1, Created: old,
				Remove: func(context.Context) error { return os.Remove(file) }}}, nil
		},
	}
	left := func() (snapshot, container, logFile bool) {
		_, err := snaps.Stat(ctx, "left-snapshot")
		_, ferr := os.Stat(file)
		return err == nil, e.exists(e.ns, "sb-orphan-1"), ferr == nil
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	cases := []struct {
		name   string
		url    string
		err    error
		nsOnly bool // a namespace with nothing in it
		says   string
	}{
		{"unreachable", closed.URL, nil, false, "connection refused"},
		{"not ready", "", connect.NewError(connect.CodeUnavailable, errors.New("the controller is not Ready")), false, "not Ready"},
		{"wrong token", "", connect.NewError(connect.CodePermissionDenied, errors.New("janitor calls only")), false, "permission_denied"},
		{"nothing found", "", connect.NewError(connect.CodeUnavailable, errors.New("the controller is not Ready")), true, "not Ready"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.ctrl.set(tc.err)
			cfg := Config{Once: true, LogDirs: []string{"logs"}, finders: finders}
			url := e.url
			if tc.url != "" {
				url = tc.url
				cfg.Controller, cfg.ControllerURL = fsbv1connect.NewJanitorServiceClient(http.DefaultClient, url), url
			}
			if tc.nsOnly {
				_, empty := rig.Containerd(t)
				cfg.Namespaces, cfg.LogDirs, cfg.finders = []string{empty}, nil, nil
			}
			reg := prometheus.NewRegistry()
			cfg.Registerer = reg
			rep, err := e.janitor(cfg).Pass(t.Context())
			if !errors.Is(err, ErrNotAsked) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("pass error %v, want ErrNotAsked naming %s and %q", err, url, tc.says)
			}
			if rep.Reaped() != 0 {
				t.Errorf("report: %s", rep)
			}
			if s, c, f := left(); !s || !c || !f {
				t.Errorf("left: snapshot %v, container %v, log file %v; want all", s, c, f)
			}
			if n := metricValue(t, reg, "fsb_janitor_passes_total", "result", "error"); n != 1 {
				t.Errorf("fsb_janitor_passes_total{result=error} = %v, want 1", n)
			}
		})
	}
	// Once the controller answers, the same pass removes all three: the
	// finders' leftovers did count.
	e.ctrl.set(nil)
	rep := e.pass(e.janitor(Config{Once: true, LogDirs: []string{"logs"}, finders: finders}))
	if s, c, f := left(); s || c || f {
		t.Errorf("with the controller answering, left: snapshot %v, container %v, log file %v; want none (%s)", s, c, f, rep)
	}
}

// metricValue returns the value of series name{label=value} in reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

// TestDryRunRemovesNothing: a dry run finds, asks and says what it would
// remove, and removes nothing.
func TestDryRunRemovesNothing(t *testing.T) {
	e := newEnv(t)
	e.sandbox(e.ns, "sb-orphan-1", fsbLabels("sb-orphan"), "sleep 300", filepath.Join(t.TempDir(), "out"))
	reg := prometheus.NewRegistry()
	rep := e.pass(e.janitor(Config{Once: true, DryRun: true, Registerer: reg}))
	if !e.exists(e.ns, "sb-orphan-1") {
		t.Fatal("a dry run removed the container")
	}
	if rep.Kinds[KindContainer].Reaped != 1 || !strings.HasPrefix(rep.String(), "dry run, would have reaped 1") {
		t.Errorf("report %q, want it to say it would have reaped 1", rep)
	}
	if !strings.Contains(e.log.String(), `"msg":"would remove"`) {
		t.Errorf("no \"would remove\" line:\n%s", e.log.String())
	}
	for _, k := range allKinds {
		if n := metricValue(t, reg, "fsb_janitor_reaped_total", "kind", string(k)); n != 0 {
			t.Errorf("fsb_janitor_reaped_total{kind=%s} = %v after a dry run, want 0", k, n)
		}
	}
	if n := metricValue(t, reg, "fsb_janitor_found", "kind", "container"); n != 1 {
		t.Errorf("fsb_janitor_found{kind=container} = %v, want 1", n)
	}
}

// TestReapStopsGracefully: a reaped sandbox's running task gets SIGTERM
// first, and its task, container and snapshot are all gone; the metrics
// count it.
func TestReapStopsGracefully(t *testing.T) {
	e := newEnv(t)
	out := filepath.Join(t.TempDir(), "out")
	script := `trap 'echo got-sigterm; exit 0' TERM; echo ready; while true; do sleep 0.1; done`
	e.sandbox(e.ns, "sb-orphan-1", fsbLabels("sb-orphan"), script, out)
	deadline := time.Now().Add(10 * time.Second)
	for b, _ := os.ReadFile(out); !bytes.Contains(b, []byte("ready")); b, _ = os.ReadFile(out) {
		if time.Now().After(deadline) {
			t.Fatalf("the sandbox did not start: %q", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	reg := prometheus.NewRegistry()
	start := time.Now()
	e.pass(e.janitor(Config{Once: true, GracePeriod: 20 * time.Second, Registerer: reg}))
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the pass took %s: the task did not end on SIGTERM", took)
	}
	if b, _ := os.ReadFile(out); !bytes.Contains(b, []byte("got-sigterm")) {
		t.Errorf("the task's output %q lacks got-sigterm: it was not sent SIGTERM first", b)
	}
	ctx := namespaces.WithNamespace(t.Context(), e.ns)
	if e.exists(e.ns, "sb-orphan-1") {
		t.Error("the container is left")
	}
	tasks, err := e.cd.TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks.GetTasks()) != 0 {
		t.Errorf("tasks left: %v", tasks.GetTasks())
	}
	if _, err := e.cd.SnapshotService(rig.Snapshotter).Stat(ctx, "sb-orphan-1"); !errdefs.IsNotFound(err) {
		t.Errorf("the snapshot is left: %v", err)
	}
	if n := metricValue(t, reg, "fsb_janitor_reaped_total", "kind", "container"); n != 1 {
		t.Errorf("fsb_janitor_reaped_total{kind=container} = %v, want 1", n)
	}
}

// byAgentController answers a ref with an agent (a container's) with
// UNDECIDED, as the controller does while that agent is down, and a ref
// without one (a file's) with UNKNOWN, as it does when no agent status it
// has reports the sandbox: after a restart, it has none from a down agent.
type byAgentController struct{}

func (byAgentController) Classify(_ context.Context, req *connect.Request[fsbv1.ClassifyRequest]) (*connect.Response[fsbv1.ClassifyResponse], error) {
	resp := &fsbv1.ClassifyResponse{}
	for _, ref := range req.Msg.GetSandboxes() {
		v := fsbv1.Verdict_VERDICT_UNKNOWN
		if ref.GetAgentId() != "" {
			v = fsbv1.Verdict_VERDICT_UNDECIDED
		}
		resp.Classifications = append(resp.Classifications, &fsbv1.Classification{Sandbox: ref, Verdict: v, Reason: "fake: " + v.String()})
	}
	return connect.NewResponse(resp), nil
}

// TestLogOfASandboxOnTheNodeIsKept: a log file the controller calls
// unknown stays while a container of its sandbox is on the node (a
// quiet sandbox of a down agent, kept as undecided), and every log file
// stays when a namespace's containers cannot be listed; the log of a
// sandbox with no container goes.
func TestLogOfASandboxOnTheNodeIsKept(t *testing.T) {
	e := newEnv(t)
	e.sandbox(e.ns, "sb-live-1", fsbLabels("sb-live"), "", "")
	cases := []struct {
		name       string
		namespaces []string
		wantLeft   map[string]bool // by sandbox ID
	}{
		{"containers listed", []string{e.ns}, map[string]bool{"sb-live": true, "sb-gone": false}},
		{"a namespace not listed", []string{e.ns, "not a namespace!"}, map[string]bool{"sb-live": true, "sb-gone": true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			old := e.clock.Now().Add(-2 * time.Hour)
			var logs []Leftover
			for _, id := range []string{"sb-live", "sb-gone"} {
				file := filepath.Join(dir, id+"-1.log")
				if err := os.WriteFile(file, []byte("quiet\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				logs = append(logs, Leftover{Kind: KindLog, Name: file, SandboxID: id, Revision: 1, Created: old,
					Remove: func(context.Context) error { return os.Remove(file) }})
			}
			finders := &finderSet{snapshots: noneNS, mounts: noneNS, shims: noShims,
				logFiles: func(string, time.Duration, time.Time) ([]Leftover, error) { return logs, nil }}
			j := e.janitor(Config{Once: true, Namespaces: tc.namespaces, LogDirs: []string{dir}, finders: finders,
				Controller: byAgentController{}, ControllerURL: "fake"})
			_, err := j.Pass(t.Context())
			if len(tc.namespaces) == 1 && err != nil {
				t.Fatalf("pass: %v", err)
			}
			if len(tc.namespaces) > 1 && err == nil {
				t.Fatal("the pass listed a namespace containerd refuses")
			}
			for id, want := range tc.wantLeft {
				_, ferr := os.Stat(filepath.Join(dir, id+"-1.log"))
				if left := ferr == nil; left != want {
					t.Errorf("log of %s left: %v, want %v\nlog:\n%s", id, left, want, e.log.String())
				}
			}
			if !e.exists(e.ns, "sb-live-1") {
				t.Error("the undecided container was removed")
			}
		})
	}
}
