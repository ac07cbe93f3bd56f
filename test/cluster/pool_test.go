package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
)

const (
	// poolWait bounds one scaling step: a pod made, started and its agent
	// registered, or an idle agent cordoned and its pod gone.
	poolWait = 90 * time.Second
	// Load while the pool scales down: poolLoadWorkers creating and
	// deleting at once, with poolLoadPause after each, until each made
	// poolLoadAfter creates after the scale-down began, at most
	// poolLoadMax. Two at once fit on one agent of the pool
	// (maxSandboxesPerPod 2), so no create needs an agent the pool is
	// still starting.
	poolLoadWorkers = 2
	poolLoadPause   = 300 * time.Millisecond
	poolLoadAfter   = 4
	poolLoadMax     = 60
)

// TestSandboxPool: a SandboxPool with poolMin 1, poolMax 3, bufferMin 1,
// bufferMax 1 and maxSandboxesPerPod 2 starts one agent pod; filling its
// agents makes the pool controller add one, up to poolMax; a sandbox with
// poolRef lands only on the pool's agents, one without on the DaemonSet's,
// and one naming a missing pool gets NotFound. Deleting the sandboxes
// scales the pool back to its bounds, never removing an agent that runs a
// sandbox, and a create load while it scales down sees no failure. A pool
// deleted while a sandbox names it is held by its finalizer, refuses new
// creates, and goes with its pods once the sandbox is gone.
func TestSandboxPool(t *testing.T) {
	e := cluster(t)
	_, daemonAgent := e.whole(t)
	pool := "e2e-" + randomSuffix()
	// Registered before the namespace: cleanups run last-first, so the
	// pool goes after the namespace's sandboxes.
	t.Cleanup(func() { e.removePool(t, pool) })
	ns := e.namespace(t)
	api := e.fastPath(t)
	watcher := e.watchPoolPods(t, pool, ns)

	e.mustKubectlIn(t, []byte(fmt.Sprintf(`apiVersion: sandbox.fast.io/v1alpha1
kind: SandboxPool
metadata:
  name: %s
  namespace: %s
spec:
  capacity: {poolMin: 1, poolMax: 3, bufferMin: 1, bufferMax: 1}
  maxSandboxesPerPod: 2
`, pool, e.Namespace)), "apply", "-f", "-")

	// poolMin 1 and bufferMin 1: one agent, idle.
	agents := e.waitPool(t, api, pool, "one idle agent", func(st v1alpha1.SandboxPoolStatus, agents []*fsbv1.AgentStatus) bool {
		return len(agents) == 1 && st.CurrentPods == 1 && st.ReadyPods == 1 && st.IdleAgents == 1
	})
	first := agents[0].GetAgentId()
	if c := agents[0].GetCapacity(); c != 2 {
		t.Errorf("the pool's agent has capacity %d, want maxSandboxesPerPod 2", c)
	}

	spec := func(poolRef string) *fsbv1.SandboxSpec {
		return &fsbv1.SandboxSpec{Image: testImage, Command: []string{"sleep", "3600"}, PoolRef: poolRef,
			ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST}
	}
	create := func(name string, s *fsbv1.SandboxSpec) (*fsbv1.Sandbox, error) {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		resp, err := api.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Namespace: ns, Name: name, Spec: s}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetSandbox(), nil
	}
	mustCreate := func(name string, s *fsbv1.SandboxSpec) string {
		t.Helper()
		sb, err := create(name, s)
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		return sb.GetStatus().GetAssignedPod()
	}
	remove := func(name string) error {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		_, err := api.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{Namespace: ns, Name: name}))
		return err
	}
	mustRemove := func(names ...string) {
		t.Helper()
		for _, name := range names {
			if err := remove(name); err != nil {
				t.Fatalf("delete %s: %v", name, err)
			}
		}
	}

	// Filling the first agent makes the pool add a second. p1 says a line:
	// its logs come from the pool agent's own log dir.
	const line = "hello from the pool"
	talker := spec(pool)
	talker.Command = []string{"sh", "-c", "echo '" + line + "'; exec sleep 3600"}
	for name, s := range map[string]*fsbv1.SandboxSpec{"p1": talker, "p2": spec(pool)} {
		if got := mustCreate(name, s); got != first {
			t.Fatalf("%s landed on %s, want the pool's only agent %s", name, got, first)
		}
	}
	waitUntil(t, 30*time.Second, "p1's line in its logs", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		stream, err := api.StreamLogs(ctx, connect.NewRequest(&fsbv1.StreamLogsRequest{Namespace: ns, Name: "p1"}))
		if err != nil {
			return false, err.Error()
		}
		defer stream.Close()
		var got []string
		for stream.Receive() {
			for _, l := range stream.Msg().GetLines() {
				got = append(got, l.GetText())
			}
		}
		if err := stream.Err(); err != nil {
			return false, err.Error()
		}
		return slices.Contains(got, line), fmt.Sprintf("lines %q", got)
	})
	agents = e.waitPool(t, api, pool, "a second agent, idle", func(st v1alpha1.SandboxPoolStatus, agents []*fsbv1.AgentStatus) bool {
		return len(agents) == 2 && st.CurrentPods == 2 && st.BusyAgents == 1 && st.IdleAgents == 1
	})
	second := otherAgent(agents, first)
	// The third sandbox can only go to the second agent; filling that one
	// too brings the pool to poolMax.
	if got := mustCreate("p3", spec(pool)); got != second {
		t.Fatalf("p3 landed on %s, want the pool's free agent %s", got, second)
	}
	e.waitPool(t, api, pool, "a third agent (poolMax), idle", func(st v1alpha1.SandboxPoolStatus, agents []*fsbv1.AgentStatus) bool {
		return len(agents) == 3 && st.CurrentPods == 3 && st.BusyAgents == 2 && st.IdleAgents == 1
	})

	// Placement: the default pool is the DaemonSet's agent; a missing pool
	// is NotFound, naming it, in either mode.
	if got := mustCreate("plain", spec("")); got != string(daemonAgent.UID) {
		t.Errorf("a sandbox without poolRef landed on %s, want the DaemonSet's agent %s (pod %s)", got, daemonAgent.UID, daemonAgent.Name)
	}
	for _, mode := range []fsbv1.ConsistencyMode{fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST, fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG} {
		s := spec("no-such-pool")
		s.ConsistencyMode = mode
		_, err := create("lost-"+strings.ToLower(strings.TrimPrefix(mode.String(), "CONSISTENCY_MODE_")), s)
		if connect.CodeOf(err) != connect.CodeNotFound || !strings.Contains(err.Error(), `"no-such-pool"`) {
			t.Errorf("%s create naming a missing pool: %v; want NotFound naming the pool", mode, err)
		}
	}

	// Emptying the first agent: one idle agent too many (bufferMax 1), and
	// the second, which runs p3, stays.
	mustRemove("p1", "p2")
	e.waitPool(t, api, pool, "back to one idle agent beside the busy one", func(st v1alpha1.SandboxPoolStatus, agents []*fsbv1.AgentStatus) bool {
		return len(agents) == 2 && st.CurrentPods == 2 && st.BusyAgents == 1 && st.IdleAgents == 1 && hasAgent(agents, second)
	})

	// Emptying the second while creates come and go in the pool: the pool
	// scales down under the load, and no create fails. The load is sparse
	// (a pause after each delete) so that the pool finds both agents idle
	// at one of its passes; it goes on until a pod of the pool has gone
	// and each worker created a few more sandboxes after that.
	before := watcher.deletions()
	loadStart := time.Now()
	mustRemove("p3")
	var (
		mu      sync.Mutex
		failed  []string
		landed  = map[string]int{}
		created int
	)
	var wg sync.WaitGroup
	for w := range poolLoadWorkers {
		wg.Go(func() {
			after := 0 // creates since the scale-down
			for i := 0; i < poolLoadMax && after < poolLoadAfter; i++ {
				if watcher.deletions() > before {
					after++
				}
				name := fmt.Sprintf("load-%d-%02d", w, i)
				sb, err := create(name, spec(pool))
				mu.Lock()
				if err != nil {
					failed = append(failed, fmt.Sprintf("create %s: %v", name, err))
				} else {
					created++
					landed[sb.GetStatus().GetAssignedPod()]++
				}
				mu.Unlock()
				if err == nil {
					if err := remove(name); err != nil {
						mu.Lock()
						failed = append(failed, fmt.Sprintf("delete %s: %v", name, err))
						mu.Unlock()
					}
				}
				time.Sleep(poolLoadPause)
			}
		})
	}
	wg.Wait()
	loadEnd := time.Now()
	t.Logf("load: %d creates and deletes in %s, on agents %v", created, loadEnd.Sub(loadStart).Round(time.Millisecond), landed)
	for _, f := range failed {
		t.Errorf("under the scale-down: %s", f)
	}
	for agent := range landed {
		if !watcher.isPoolAgent(agent) {
			t.Errorf("a sandbox with poolRef %s landed on %s, not an agent of the pool", pool, agent)
		}
	}

	// Back to the bounds: poolMin 1, one idle agent.
	e.waitPool(t, api, pool, "back to poolMin, one idle agent", func(st v1alpha1.SandboxPoolStatus, agents []*fsbv1.AgentStatus) bool {
		return len(agents) == 1 && st.CurrentPods == 1 && st.IdleAgents == 1 && st.BusyAgents == 0
	})
	deleted, violations := watcher.report()
	for _, v := range violations {
		t.Error(v)
	}
	during := 0
	for _, at := range deleted {
		if at.After(loadStart) && at.Before(loadEnd) {
			during++
		}
	}
	t.Logf("agent pods deleted by the pool: %d, %d of them during the load", len(deleted), during)
	if len(deleted) < 2 || during == 0 {
		t.Errorf("%d agent pods deleted, %d during the load: the pool did not scale down under the load as the test means it to", len(deleted), during)
	}

	out := e.mustKubectl(t, "get", "sandboxpools", "-n", e.Namespace, pool)
	t.Logf("kubectl get sandboxpools:\n%s", out)
	for _, column := range []string{"MIN", "MAX", "CURRENT", "READY", "BUSY", "IDLE"} {
		if !strings.Contains(out, column) {
			t.Errorf("kubectl get sandboxpools has no %s column", column)
		}
	}
	events := e.mustKubectl(t, "get", "events", "-n", e.Namespace, "--field-selector", "involvedObject.name="+pool, "-o", "custom-columns=REASON:.reason")
	for _, reason := range []string{"ScaledUp", "ScaledDown"} {
		if !strings.Contains(events, reason) {
			t.Errorf("no %s Event on the pool; its events: %s", reason, strings.Join(strings.Fields(events), " "))
		}
	}

	// Deleting the pool while a sandbox names it: held, and says why.
	mustCreate("keeps-the-pool", spec(pool))
	e.mustKubectl(t, "delete", "sandboxpools", "-n", e.Namespace, pool, "--wait=false")
	e.waitPool(t, nil, pool, "held by the sandbox that names it", func(st v1alpha1.SandboxPoolStatus, _ []*fsbv1.AgentStatus) bool {
		return strings.Contains(conditionMessages(st), ns+"/keeps-the-pool")
	})
	if _, err := create("too-late", spec(pool)); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("a create naming a pool being deleted: %v; want FailedPrecondition", err)
	}
	mustRemove("keeps-the-pool")
	waitUntil(t, poolWait, "the pool and its agent pods gone", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		_, err := e.sandboxPool(ctx, pool)
		pods, perr := e.poolPods(ctx, pool)
		if perr != nil {
			return false, perr.Error()
		}
		return apierrors.IsNotFound(err) && len(pods) == 0, fmt.Sprintf("pool: %v; %d pods", errOrOK(err), len(pods))
	})
}

// randomSuffix returns 6 random hex digits.
func randomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func otherAgent(agents []*fsbv1.AgentStatus, not string) string {
	for _, a := range agents {
		if a.GetAgentId() != not {
			return a.GetAgentId()
		}
	}
	return ""
}

func hasAgent(agents []*fsbv1.AgentStatus, id string) bool {
	return slices.ContainsFunc(agents, func(a *fsbv1.AgentStatus) bool { return a.GetAgentId() == id })
}

func conditionMessages(st v1alpha1.SandboxPoolStatus) string {
	var msgs []string
	for _, c := range st.Conditions {
		msgs = append(msgs, fmt.Sprintf("%s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message))
	}
	return strings.Join(msgs, "; ")
}

// mustKubectlIn is kubectl with stdin, failing t on an error.
func (e *env) mustKubectlIn(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := e.kubectlIn(ctx, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sandboxPool reads a SandboxPool of the system namespace.
func (e *env) sandboxPool(ctx context.Context, name string) (*v1alpha1.SandboxPool, error) {
	raw, err := e.cs.CoreV1().RESTClient().Get().AbsPath("/apis/sandbox.fast.io/v1alpha1/namespaces", e.Namespace, "sandboxpools", name).
		DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	var p v1alpha1.SandboxPool
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("sandbox pool %s: %w", name, err)
	}
	return &p, nil
}

// poolPods lists the agent pods of one pool.
func (e *env) poolPods(ctx context.Context, pool string) ([]corev1.Pod, error) {
	list, err := e.cs.CoreV1().Pods(e.Namespace).List(ctx, metav1.ListOptions{LabelSelector: labelPool + "=" + pool})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// poolAgents returns the registered agents of one pool, as the fast path
// lists them, without the cordoned ones (on their way out).
func poolAgents(ctx context.Context, api fsbv1connect.FastPathServiceClient, pool string) ([]*fsbv1.AgentStatus, error) {
	resp, err := api.ListAgents(ctx, connect.NewRequest(&fsbv1.ListAgentsRequest{}))
	if err != nil {
		return nil, err
	}
	var out []*fsbv1.AgentStatus
	for _, a := range resp.Msg.GetAgents() {
		if a.GetPool() == pool && !a.GetCordoned() {
			out = append(out, a)
		}
	}
	return out, nil
}

// waitPool waits until ok accepts the pool's status and its agents (none
// when api is nil), and returns those agents.
func (e *env) waitPool(t testing.TB, api fsbv1connect.FastPathServiceClient, pool, what string,
	ok func(v1alpha1.SandboxPoolStatus, []*fsbv1.AgentStatus) bool) []*fsbv1.AgentStatus {
	t.Helper()
	start := time.Now()
	var agents []*fsbv1.AgentStatus
	waitUntil(t, poolWait, "pool "+pool+": "+what, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		p, err := e.sandboxPool(ctx, pool)
		if err != nil {
			return false, err.Error()
		}
		agents = nil
		if api != nil {
			if agents, err = poolAgents(ctx, api, pool); err != nil {
				return false, err.Error()
			}
		}
		st := p.Status
		var ids []string
		for _, a := range agents {
			ids = append(ids, fmt.Sprintf("%s(%d/%d)", a.GetAgentId(), len(a.GetSandboxes()), a.GetCapacity()))
		}
		return ok(st, agents), fmt.Sprintf("status current %d ready %d agents %d busy %d idle %d [%s]; registered %v",
			st.CurrentPods, st.ReadyPods, st.TotalAgents, st.BusyAgents, st.IdleAgents, conditionMessages(st), ids)
	})
	t.Logf("pool %s: %s after %s", pool, what, time.Since(start).Round(time.Millisecond))
	return agents
}

// waitUntil polls check until it says done, failing t after within with
// the last state it described.
func waitUntil(t testing.TB, within time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(within); ; {
		var done bool
		if done, last = check(); done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not %s after %s; last: %s", what, within, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// poolWatch follows the agent pods of one pool: every agent (pod UID) it
// ever had, when each pod's deletion began, and whether a sandbox of the
// test's namespace ran on it then.
type poolWatch struct {
	mu         sync.Mutex
	agents     map[string]bool
	deleted    map[types.UID]time.Time
	violations []string
}

// watchPoolPods starts a poolWatch until the test ends. When a pod's
// deletion begins, no sandbox not itself being deleted may be assigned to
// its agent: the pool scales down only empty agents.
func (e *env) watchPoolPods(t testing.TB, pool, ns string) *poolWatch {
	t.Helper()
	w := &poolWatch{agents: map[string]bool{}, deleted: map[types.UID]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			watcher, err := e.cs.CoreV1().Pods(e.Namespace).Watch(ctx, metav1.ListOptions{LabelSelector: labelPool + "=" + pool})
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			for ev := range watcher.ResultChan() {
				pod, ok := ev.Object.(*corev1.Pod)
				if !ok || ev.Type == watch.Error {
					break
				}
				w.seen(ctx, e, ns, pod, ev.Type == watch.Deleted)
			}
			watcher.Stop()
		}
	}()
	return w
}

func (w *poolWatch) seen(ctx context.Context, e *env, ns string, pod *corev1.Pod, gone bool) {
	w.mu.Lock()
	w.agents[string(pod.UID)] = true
	_, known := w.deleted[pod.UID]
	w.mu.Unlock()
	if known || (pod.DeletionTimestamp == nil && !gone) {
		return
	}
	at := time.Now()
	var busy []string
	listCtx, cancel := context.WithTimeout(ctx, callTimeout)
	list, err := e.store.List(listCtx, ns, nil)
	cancel()
	if err == nil {
		for _, sb := range list.Items {
			// The placement a FAST object carries from its first write
			// (annotations), before its status is written.
			if agent, _, _ := v1alpha1.Placement(&sb); (agent == string(pod.UID) || sb.Status.AssignedPod == string(pod.UID)) &&
				sb.DeletionTimestamp == nil {
				busy = append(busy, sb.Name)
			}
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deleted[pod.UID] = at
	switch {
	case err != nil && !errors.Is(err, context.Canceled):
		w.violations = append(w.violations, fmt.Sprintf("pod %s deleted; the sandboxes could not be listed: %v", pod.Name, err))
	case len(busy) > 0:
		w.violations = append(w.violations, fmt.Sprintf("pod %s (agent %s) deleted while sandboxes ran on it: %v", pod.Name, pod.UID, busy))
	}
}

// deletions counts the pods whose deletion was seen.
func (w *poolWatch) deletions() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.deleted)
}

func (w *poolWatch) isPoolAgent(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.agents[id]
}

// report returns when each deleted pod's deletion was seen, and the
// violations.
func (w *poolWatch) report() ([]time.Time, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var at []time.Time
	for _, t := range w.deleted {
		at = append(at, t)
	}
	return at, slices.Clone(w.violations)
}

// removePool deletes a pool left by a failed test and waits until it and
// its pods are gone, so that the next tests find one agent pod per node.
func (e *env) removePool(t testing.TB, pool string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := e.kubectl(ctx, "delete", "sandboxpools", "-n", e.Namespace, pool, "--ignore-not-found", "--wait", "--timeout=90s"); err != nil {
		t.Errorf("delete pool %s: %v", pool, err)
		return
	}
	for ctx.Err() == nil {
		pods, err := e.poolPods(ctx, pool)
		if err == nil && len(pods) == 0 {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Errorf("the agent pods of pool %s are still there 2 minutes after its deletion", pool)
}
