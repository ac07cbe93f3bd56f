package warmpool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
)

func agentState(id, pool string, runtimes ...string) registry.AgentState {
	if len(runtimes) == 0 {
		runtimes = []string{"runc"}
	}
	return registry.AgentState{Agent: registry.Agent{ID: id, Pool: pool, Healthy: true, Capacity: 5, Runtimes: runtimes}}
}

// counts turns a plan into "agent: count of kind" per agent and image.
func counts(plan map[string][]*fsbv1.WarmTarget) map[string]int32 {
	out := make(map[string]int32)
	for id, ts := range plan {
		for _, t := range ts {
			out[id+"/"+t.GetEntry().GetImage()+"/"+t.GetEntry().GetRuntime()] += t.GetEntry().GetCount()
			if k, _ := v1alpha1.WarmEntryKey(t.GetEntry()); k != t.GetKey() {
				panic(fmt.Sprintf("target key %s, entry's %s", t.GetKey(), k))
			}
		}
	}
	return out
}

func TestPlan(t *testing.T) {
	down := agentState("d", "")
	down.Healthy = false
	cordoned := agentState("e", "")
	cordoned.Cordoned = true
	agents := []registry.AgentState{
		agentState("c", ""), agentState("a", ""), agentState("b", "", "runc", "crun"), down, cordoned,
		agentState("p1", "gpu"),
	}
	pools := map[string][]*fsbv1.WarmEntry{
		"":     {{Image: "busybox", Count: 5}, {Image: "busybox", Runtime: "crun", Count: 2}, {Image: "none", Count: 0}},
		"gpu":  {{Image: "cuda", Count: 3}},
		"gone": {{Image: "busybox", Count: 1}},
	}
	got := counts(Plan(pools, agents))
	want := map[string]int32{
		// 5 over a, b, c in ID order: 2, 2, 1.
		"a/busybox/": 2, "b/busybox/": 2, "c/busybox/": 1,
		// Only b offers crun.
		"b/busybox/crun": 2,
		"p1/cuda/":       3,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("plan %v\nwant %v", got, want)
	}
	// More agents than warm sandboxes: the first ones get one each.
	got = counts(Plan(map[string][]*fsbv1.WarmEntry{"": {{Image: "busybox", Count: 1}}}, agents))
	if fmt.Sprint(got) != fmt.Sprint(map[string]int32{"a/busybox/": 1}) {
		t.Errorf("one over three agents: %v", got)
	}
}

// fakeAgents records SetWarm calls; fail makes them fail.
type fakeAgents struct {
	mu    sync.Mutex
	calls map[string][]*fsbv1.SetWarmRequest
	fail  error
}

type fakeClient struct {
	fsbv1connect.AgentServiceClient
	f  *fakeAgents
	id string
}

func (c fakeClient) SetWarm(_ context.Context, req *connect.Request[fsbv1.SetWarmRequest]) (*connect.Response[fsbv1.SetWarmResponse], error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	c.f.calls[c.id] = append(c.f.calls[c.id], req.Msg)
	if c.f.fail != nil {
		return nil, c.f.fail
	}
	return connect.NewResponse(&fsbv1.SetWarmResponse{}), nil
}

func (f *fakeAgents) Reach(ctx context.Context, id string) (fsbv1connect.AgentServiceClient, context.Context, context.CancelFunc, error) {
	return fakeClient{f: f, id: id}, ctx, func() {}, nil
}

func (f *fakeAgents) count(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls[id])
}

type fixedRegistry []registry.AgentState

func (r fixedRegistry) Agents() []registry.AgentState { return r }

// TestPlannerSendsChanges: every agent hears once per term (even with no
// targets: it may hold an earlier term's), then only when its targets
// change, when it reconnects, or after a failed call.
func TestPlannerSendsChanges(t *testing.T) {
	f := &fakeAgents{calls: make(map[string][]*fsbv1.SetWarmRequest)}
	p := New(Config{Registry: fixedRegistry{agentState("a", ""), agentState("b", "")}, Agents: f, Resync: time.Hour})
	ctx := context.Background()
	p.sync(ctx)
	p.sync(ctx)
	if f.count("a") != 1 || f.count("b") != 1 {
		t.Fatalf("calls after two syncs: a %d, b %d; want 1 each", f.count("a"), f.count("b"))
	}
	p.SetPool("", []v1alpha1.WarmEntry{{Image: "busybox", Count: 1}})
	p.sync(ctx)
	if f.count("a") != 2 || f.count("b") != 1 {
		t.Fatalf("after a pool of 1: a %d, b %d; want 2 and 1 (b's share is still none)", f.count("a"), f.count("b"))
	}
	if got := f.calls["a"][1].GetTargets(); len(got) != 1 || got[0].GetEntry().GetCount() != 1 {
		t.Errorf("a's targets: %v", got)
	}
	p.AgentUp("b")
	p.sync(ctx)
	if f.count("b") != 2 {
		t.Errorf("b reconnected, calls %d; want 2", f.count("b"))
	}
	f.fail = connect.NewError(connect.CodeUnavailable, errors.New("down"))
	p.SetPool("", nil)
	p.sync(ctx)
	f.fail = nil
	p.sync(ctx)
	if got := f.calls["a"]; len(got) != 4 || len(got[3].GetTargets()) != 0 {
		t.Errorf("a after the pool was emptied, one call failing: %d calls, last %v; want 4, the last with no targets", len(got), got[len(got)-1])
	}
}
