package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

// fakeFastPath is a FastPathService that "creates" a sandbox by writing its
// output into logDir as the agent would, and keeps what it holds in memory.
type fakeFastPath struct {
	fsbv1connect.UnimplementedFastPathServiceHandler

	logDir   string
	capacity int32
	used     int               // sandboxes the agent already runs
	fail     func(string) bool // names whose create fails
	// onCreate, when set, runs at the start of every create.
	onCreate func(name string)
	// warm, when set, says whether a create claims a warm sandbox.
	warm func(*fsbv1.CreateSandboxRequest) bool
	// warmStock is the warm sandboxes the agent reports holding.
	warmStock int32

	mu       sync.Mutex
	live     map[string]map[string]string // name -> labels
	created  []string
	deleted  []string
	maxLive  int
	graceful bool // some delete asked for a grace period other than 0
}

func newFake(t *testing.T, capacity int32) *fakeFastPath {
	return &fakeFastPath{logDir: t.TempDir(), capacity: capacity, live: map[string]map[string]string{}}
}

// serve returns a client of f over a real Connect server.
func (f *fakeFastPath) serve(t *testing.T) fsbv1connect.FastPathServiceClient {
	_, h := fsbv1connect.NewFastPathServiceHandler(f)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return fsbv1connect.NewFastPathServiceClient(http.DefaultClient, srv.URL)
}

func (f *fakeFastPath) ListAgents(context.Context, *connect.Request[fsbv1.ListAgentsRequest]) (*connect.Response[fsbv1.ListAgentsResponse], error) {
	a := &fsbv1.AgentStatus{AgentId: "local", Capacity: f.capacity, Runtimes: []string{"runc", "crun"}}
	if f.warmStock > 0 {
		a.Warm = []*fsbv1.WarmStock{{Key: "k", Ready: f.warmStock - 1, Starting: 1}}
	}
	for i := range f.used {
		a.Sandboxes = append(a.Sandboxes, &fsbv1.AgentSandbox{SandboxId: fmt.Sprint("other-", i)})
	}
	return connect.NewResponse(&fsbv1.ListAgentsResponse{Agents: []*fsbv1.AgentStatus{a}}), nil
}

func (f *fakeFastPath) CreateSandbox(_ context.Context, req *connect.Request[fsbv1.CreateSandboxRequest]) (*connect.Response[fsbv1.CreateSandboxResponse], error) {
	m := req.Msg
	if f.onCreate != nil {
		f.onCreate(m.GetName())
	}
	if f.fail != nil && f.fail(m.GetName()) {
		return nil, connect.NewError(connect.CodeResourceExhausted, errors.New("no agent can take it"))
	}
	f.mu.Lock()
	f.live[m.GetName()] = m.GetLabels()
	f.created = append(f.created, m.GetName())
	f.maxLive = max(f.maxLive, len(f.live))
	f.mu.Unlock()
	// Let the workers overlap, then "start" the command.
	time.Sleep(2 * time.Millisecond)
	dir := filepath.Join(f.logDir, m.GetNamespace(), m.GetName())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "sb-"+m.GetName()+"-1.log"), []byte("2026-01-01T00:00:00Z stdout F hello\n"), 0o644); err != nil {
		return nil, err
	}
	spec := m.GetSpec()
	if spec.GetConsistencyMode() == fsbv1.ConsistencyMode_CONSISTENCY_MODE_UNSPECIFIED {
		spec.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST
	}
	var status *fsbv1.SandboxStatus
	if f.warm != nil && f.warm(m) {
		status = &fsbv1.SandboxStatus{Warm: true}
	}
	return connect.NewResponse(&fsbv1.CreateSandboxResponse{Sandbox: &fsbv1.Sandbox{Name: m.GetName(), Namespace: m.GetNamespace(), Spec: spec, Status: status}}), nil
}

func (f *fakeFastPath) DeleteSandbox(_ context.Context, req *connect.Request[fsbv1.DeleteSandboxRequest]) (*connect.Response[fsbv1.DeleteSandboxResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Msg.GracePeriodSeconds == nil || req.Msg.GetGracePeriodSeconds() != 0 {
		f.graceful = true
	}
	if _, ok := f.live[req.Msg.GetName()]; !ok {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no such sandbox"))
	}
	delete(f.live, req.Msg.GetName())
	f.deleted = append(f.deleted, req.Msg.GetName())
	return connect.NewResponse(&fsbv1.DeleteSandboxResponse{}), nil
}

func (f *fakeFastPath) ListSandboxes(_ context.Context, req *connect.Request[fsbv1.ListSandboxesRequest]) (*connect.Response[fsbv1.ListSandboxesResponse], error) {
	key, value, _ := strings.Cut(req.Msg.GetLabelSelector(), "=")
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*fsbv1.Sandbox
	for name, labels := range f.live {
		if labels[key] == value {
			out = append(out, &fsbv1.Sandbox{Name: name, Labels: labels})
		}
	}
	return connect.NewResponse(&fsbv1.ListSandboxesResponse{Sandboxes: out}), nil
}

// checkAllDeleted fails t unless every sandbox f created was deleted.
func (f *fakeFastPath) checkAllDeleted(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.live) != 0 {
		t.Errorf("sandboxes left after the run: %v", f.live)
	}
	if len(f.deleted) != len(f.created) {
		t.Errorf("created %d sandboxes, deleted %d", len(f.created), len(f.deleted))
	}
	if f.graceful {
		t.Error("a delete asked for a grace period; the bench kills at once, as the baseline does")
	}
}

func TestLoadConcurrencyAndCleanup(t *testing.T) {
	for _, tc := range []struct {
		n, c int
		mode string
	}{
		{n: 5, c: 1},
		{n: 12, c: 3, mode: "strong"},
		{n: 8, c: 8, mode: "fast"},
	} {
		t.Run(fmt.Sprintf("n%d-c%d", tc.n, tc.c), func(t *testing.T) {
			f := newFake(t, 8)
			r, err := Load(context.Background(), f.serve(t), LoadOptions{
				N: tc.n, Concurrency: tc.c, Mode: tc.mode, Image: "busybox", Command: []string{"echo", "hello"}, LogDir: f.logDir,
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Err(); err != nil {
				t.Fatal(err)
			}
			if len(r.Create) != tc.n || len(r.Delete) != tc.n {
				t.Errorf("measured %d creates and %d deletes, want %d each", len(r.Create), len(r.Delete), tc.n)
			}
			for _, d := range r.Create {
				if d <= 0 {
					t.Errorf("create time %v", d)
				}
			}
			if f.maxLive > tc.c {
				t.Errorf("%d sandboxes lived at once, more than concurrency %d", f.maxLive, tc.c)
			}
			want := tc.mode
			if want == "" {
				want = "fast" // the fake's default, as the controller reports it
			}
			if r.Mode != want || r.Runtime != "runc" || r.N != tc.n || r.Concurrency != tc.c {
				t.Errorf("result says mode %q runtime %q n %d c %d", r.Mode, r.Runtime, r.N, r.Concurrency)
			}
			f.checkAllDeleted(t)
			seen := map[string]bool{}
			for _, name := range f.created {
				if !strings.HasPrefix(name, "bench-") || seen[name] {
					t.Errorf("sandbox name %q is not a unique bench-<random>-<i>", name)
				}
				seen[name] = true
			}
		})
	}
}

// TestLoadWarmCountsClaims: with Warm, each round makes a second sandbox
// with the warm resources; the creates the controller says were claimed
// warm are hits and timed, the others misses, and the cold sandboxes keep
// their own resources.
func TestLoadWarmCountsClaims(t *testing.T) {
	f := newFake(t, 8)
	warmRes, coldRes := &fsbv1.Resources{Memory: "64Mi"}, &fsbv1.Resources{Memory: "64Mi", Pids: 1024}
	var mu sync.Mutex
	claimed := 0
	var wrongSpec []string
	f.warm = func(m *fsbv1.CreateSandboxRequest) bool {
		mu.Lock()
		defer mu.Unlock()
		isWarm := strings.HasSuffix(m.GetName(), "-warm")
		want := coldRes
		if isWarm {
			want = warmRes
		}
		if m.GetSpec().GetResources().GetPids() != want.GetPids() || m.GetSpec().GetResources().GetMemory() != want.GetMemory() {
			wrongSpec = append(wrongSpec, m.GetName())
		}
		// The stock runs out after 3 claims.
		if isWarm && claimed < 3 {
			claimed++
			return true
		}
		return false
	}
	r, err := Load(context.Background(), f.serve(t), LoadOptions{
		N: 5, Concurrency: 2, Image: "busybox", Command: []string{"echo", "hello"}, LogDir: f.logDir,
		Warm: true, WarmResources: warmRes, Resources: coldRes,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if r.WarmHits != 3 || r.WarmMisses != 2 || len(r.WarmCreate) != 3 || len(r.WarmDelete) != 3 || len(r.Create) != 5 {
		t.Errorf("hits %d, misses %d, %d warm times, %d cold; want 3, 2, 3, 5", r.WarmHits, r.WarmMisses, len(r.WarmCreate), len(r.Create))
	}
	if len(wrongSpec) > 0 {
		t.Errorf("sandboxes with the other kind's resources: %v", wrongSpec)
	}
	if len(f.created) != 10 {
		t.Errorf("created %d sandboxes, want 2 per round", len(f.created))
	}
	f.checkAllDeleted(t)
}

// TestFreeSlotsLeavesWarmSandboxesOut: as the controller's registry, the
// bench counts a warm sandbox as no slot (the agent gives it up for a
// create that finds it full).
func TestFreeSlotsLeavesWarmSandboxesOut(t *testing.T) {
	f := newFake(t, 8)
	f.used, f.warmStock = 2, 3
	if free, _, err := FreeSlots(context.Background(), f.serve(t), "runc"); err != nil || free != 6 {
		t.Errorf("FreeSlots = %d, %v; want 8 - 2 sandboxes = 6", free, err)
	}
}

func TestLoadRefusesMoreThanFreeSlots(t *testing.T) {
	f := newFake(t, 4)
	f.used = 3
	_, err := Load(context.Background(), f.serve(t), LoadOptions{N: 4, Concurrency: 2, Image: "busybox", LogDir: f.logDir})
	if err == nil || !strings.Contains(err.Error(), "concurrency 2 is more than the 1 free slots") {
		t.Fatalf("Load = %v, want a refusal naming the free slots", err)
	}
	if len(f.created) != 0 {
		t.Errorf("created %v after refusing", f.created)
	}
}

func TestLoadRejectsBadOptions(t *testing.T) {
	f := newFake(t, 4)
	api := f.serve(t)
	for _, o := range []LoadOptions{
		{N: 0, Concurrency: 1, Image: "i", LogDir: "d"},
		{N: 2, Concurrency: 0, Image: "i", LogDir: "d"},
		{N: 2, Concurrency: 3, Image: "i", LogDir: "d"},
		{N: 2, Concurrency: 1, LogDir: "d"},
		{N: 2, Concurrency: 1, Image: "i"},
		{N: 2, Concurrency: 1, Image: "i", LogDir: "d", Mode: "eventual"},
	} {
		if _, err := Load(context.Background(), api, o); err == nil {
			t.Errorf("Load(%+v) succeeded", o)
		}
	}
}

func TestLoadCountsCreateFailures(t *testing.T) {
	f := newFake(t, 4)
	f.fail = func(name string) bool { return strings.HasSuffix(name, "-1") || strings.HasSuffix(name, "-4") }
	r, err := Load(context.Background(), f.serve(t), LoadOptions{N: 6, Concurrency: 2, Image: "busybox", LogDir: f.logDir})
	if err != nil {
		t.Fatal(err)
	}
	if r.Failed != 2 || len(r.Create) != 4 {
		t.Errorf("failed %d, measured %d; want 2 and 4", r.Failed, len(r.Create))
	}
	err = r.Err()
	if err == nil || !strings.Contains(err.Error(), "2 of 6 sandboxes failed") || !strings.Contains(err.Error(), "no agent can take it") {
		t.Errorf("Err = %v, want the count of failures and the first cause", err)
	}
	f.checkAllDeleted(t)
}

func TestLoadMissingOutputFailsAndDeletes(t *testing.T) {
	f := newFake(t, 4)
	r, err := Load(context.Background(), f.serve(t), LoadOptions{
		N: 2, Concurrency: 1, Image: "busybox", LogDir: t.TempDir(), StepTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Failed != 2 || r.Err() == nil || !strings.Contains(r.Err().Error(), "no output") {
		t.Errorf("failed %d, Err %v; want 2 runs without output", r.Failed, r.Err())
	}
	f.checkAllDeleted(t)
}

func TestLoadInterruptedDeletesEverything(t *testing.T) {
	f := newFake(t, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	creates := 0
	f.onCreate = func(string) {
		f.mu.Lock()
		creates++
		n := creates
		f.mu.Unlock()
		if n == 3 {
			once.Do(cancel) // Ctrl-C while creates are under way
		}
	}
	r, err := Load(ctx, f.serve(t), LoadOptions{N: 50, Concurrency: 2, Image: "busybox", LogDir: f.logDir})
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("Load = %v, want interrupted", err)
	}
	if r == nil || len(r.Create)+r.Failed >= 50 {
		t.Errorf("the run went on after the interrupt: %+v", r)
	}
	f.checkAllDeleted(t)
}

func TestReportJSON(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		var ds []time.Duration
		for _, v := range vs {
			ds = append(ds, time.Duration(v)*time.Millisecond)
		}
		return ds
	}
	var hundred []int
	for i := 1; i <= 100; i++ {
		hundred = append(hundred, i)
	}
	for _, tc := range []struct {
		name string
		r    LoadResult
		want string
	}{
		{
			name: "no baseline",
			r:    LoadResult{Mode: "fast", Runtime: "runc", N: 100, Concurrency: 2, Create: ms(hundred...), Delete: ms(hundred...)},
			want: `{"mode":"fast","runtime":"runc","n":100,"concurrency":2,
				"create_ms":{"p50":50,"p90":90,"p99":99,"max":100},
				"delete_ms":{"p50":50,"p90":90,"p99":99,"max":100},
				"baseline_ms":null,"ratio_p50":null,"plain_baseline_ms":null,"plain_ratio_p50":null,
				"warm_ms":null,"warm_delete_ms":null,"warm_hits":null,"warm_misses":null,"baselines":null}`,
		},
		{
			name: "baseline",
			r: LoadResult{Mode: "strong", Runtime: "crun", N: 3, Concurrency: 1,
				Create: ms(30, 10, 20), Delete: ms(5, 5, 6), Baselines: []BaselineTimes{
					{Name: "plain", Plain: true, Create: ms(4, 5, 4), Delete: ms(1, 1, 1)},
					{Name: "equivalent", Features: Equivalent, Create: ms(6, 8, 7), Delete: ms(2, 2, 2)},
				}},
			want: `{"mode":"strong","runtime":"crun","n":3,"concurrency":1,
				"create_ms":{"p50":20,"p90":30,"p99":30,"max":30},
				"delete_ms":{"p50":5,"p90":6,"p99":6,"max":6},
				"baseline_ms":{"p50":7,"p90":8,"p99":8,"max":8},"ratio_p50":2.86,
				"plain_baseline_ms":{"p50":4,"p90":5,"p99":5,"max":5},"plain_ratio_p50":5,
				"warm_ms":null,"warm_delete_ms":null,"warm_hits":null,"warm_misses":null,
				"baselines":[
					{"name":"plain","create_ms":{"p50":4,"p90":5,"p99":5,"max":5},"delete_ms":{"p50":1,"p90":1,"p99":1,"max":1}},
					{"name":"equivalent","create_ms":{"p50":7,"p90":8,"p99":8,"max":8},"delete_ms":{"p50":2,"p90":2,"p99":2,"max":2}}]}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tc.r.WriteJSON(&buf); err != nil {
				t.Fatal(err)
			}
			var got, want any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, buf.String())
			}
			if err := json.Unmarshal([]byte(tc.want), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("JSON = %s\nwant   %s", buf.String(), tc.want)
			}

			buf.Reset()
			if err := tc.r.WriteTable(&buf); err != nil {
				t.Fatal(err)
			}
			table := buf.String()
			if !strings.Contains(table, "create -> first output") || !strings.Contains(table, "delete") {
				t.Errorf("table lacks its rows:\n%s", table)
			}
			if hasBaseline := tc.r.Baselines != nil; strings.Contains(table, "containerd") != hasBaseline || strings.Contains(table, "2.86") != hasBaseline {
				t.Errorf("table and baseline disagree:\n%s", table)
			}
		})
	}
}

func TestFreeSlotsCountsOnlyAgentsWithTheRuntime(t *testing.T) {
	f := newFake(t, 5)
	f.used = 2
	api := f.serve(t)
	if free, _, err := FreeSlots(context.Background(), api, "runc"); err != nil || free != 3 {
		t.Errorf("FreeSlots(runc) = %d, %v; want 3", free, err)
	}
	if free, desc, err := FreeSlots(context.Background(), api, "gvisor"); err != nil || free != 0 || !strings.Contains(desc, "no gvisor") {
		t.Errorf("FreeSlots(gvisor) = %d, %q, %v; want 0 and why", free, desc, err)
	}
}
