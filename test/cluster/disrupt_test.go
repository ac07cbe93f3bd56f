package cluster

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// sandboxNamespace is the CRI containerd's namespace the agent keeps
// sandboxes in (the agent's and the janitor's default).
const sandboxNamespace = "fsb"

// containers returns the IDs of the containers of one sandbox ID in the
// node's containerd, by revision.
func (e *env) containers(t testing.TB, id string) map[int64][]string {
	t.Helper()
	cd, err := containerd.New(e.Containerd, containerd.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatalf("the node's containerd at %s: %v", e.Containerd, err)
	}
	defer cd.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), sandboxNamespace), 10*time.Second)
	defer cancel()
	list, err := cd.Containers(ctx, fmt.Sprintf("labels.%q==%q", runtime.LabelID, id))
	if err != nil {
		t.Fatalf("containers of %s: %v", id, err)
	}
	out := map[int64][]string{}
	for _, c := range list {
		labels, err := c.Labels(ctx)
		if err != nil {
			t.Fatalf("labels of container %s: %v", c.ID(), err)
		}
		rev, _ := strconv.ParseInt(labels[runtime.LabelRevision], 10, 64)
		out[rev] = append(out[rev], c.ID())
	}
	return out
}

// transition is one state of a Sandbox seen by a watch.
type transition struct {
	at       time.Time
	phase    v1alpha1.Phase
	revision int64
	agent    string
	reason   string // the AgentReachable or Recovering condition's reason
}

// watchSandbox records every change of phase, revision or agent of one
// Sandbox until stop is called, which returns what it saw.
func (e *env) watchSandbox(t testing.TB, ns, name string) (stop func() []transition) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sb, err := e.sandbox(ctx, ns, name)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen []transition
	)
	record := func(sb *v1alpha1.Sandbox) {
		tr := transition{at: time.Now(), phase: sb.Status.Phase, revision: sb.Status.Revision, agent: sb.Status.AssignedPod}
		var reasons []string
		for _, c := range sb.Status.Conditions {
			if c.Type == "AgentReachable" || c.Type == "Recovering" {
				reasons = append(reasons, c.Type+"="+string(c.Status)+"/"+c.Reason)
			}
		}
		tr.reason = strings.Join(reasons, " ")
		mu.Lock()
		defer mu.Unlock()
		if n := len(seen); n > 0 && seen[n-1].phase == tr.phase && seen[n-1].revision == tr.revision &&
			seen[n-1].agent == tr.agent && seen[n-1].reason == tr.reason {
			return
		}
		seen = append(seen, tr)
	}
	record(sb)
	done := make(chan struct{})
	go func() {
		defer close(done)
		rv := sb.ResourceVersion
		// A watch may end (the API server closes long watches): pick up
		// from the last version seen, until the test stops it.
		for ctx.Err() == nil {
			w, err := e.store.Watch(ctx, ns, rv)
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			for ev := range w.ResultChan() {
				obj, ok := ev.Object.(*v1alpha1.Sandbox)
				if !ok || ev.Type == watch.Error {
					break
				}
				rv = obj.ResourceVersion
				if obj.Name == name {
					record(obj)
				}
			}
			w.Stop()
		}
	}()
	var once sync.Once
	stop = func() []transition {
		once.Do(func() { cancel(); <-done })
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
	t.Cleanup(func() { stop() })
	return stop
}

func timeline(seen []transition, since time.Time) string {
	var b strings.Builder
	for _, tr := range seen {
		fmt.Fprintf(&b, "\n  %+8.3fs %-8s rev %d agent %s %s", tr.at.Sub(since).Seconds(), tr.phase, tr.revision, tr.agent, tr.reason)
	}
	return b.String()
}

// TestAgentPodDeleted: an AutoRecreate sandbox runs on the agent pod; the
// pod is deleted and the DaemonSet makes a new one (a new UID, a new
// agent). The sandbox shows Lost once the controller's lost timeout
// passed (the test overlay's --agent-lost-timeout) — AutoRecreate writes
// Lost, with Recovering True, for its first back-off (1 s) before it places
// the next revision (docs/controller.md) — then runs as revision+1 on the
// new agent; and the old revision's container leaves containerd, which
// only the janitor does (nothing else knows the old agent's containers).
func TestAgentPodDeleted(t *testing.T) {
	e := cluster(t)
	_, agent := e.whole(t)
	ns := e.namespace(t)
	api := e.fastPath(t)
	const name = "survivor"

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	resp, err := api.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Namespace: ns, Name: name, Spec: &fsbv1.SandboxSpec{
		Image: testImage, Command: []string{"sh", "-c", "echo up; exec sleep 3600"},
		ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST, FailurePolicy: fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE,
	}}))
	cancel()
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	id := resp.Msg.GetSandbox().GetStatus().GetSandboxId()
	sb := e.waitSandbox(t, ns, name, time.Minute, "Running", func(sb *v1alpha1.Sandbox) bool {
		return sb.Status.Phase == v1alpha1.PhaseRunning
	})
	oldRev, oldAgent := sb.Status.Revision, sb.Status.AssignedPod
	if oldAgent != string(agent.UID) {
		t.Fatalf("the sandbox runs on agent %q, want the agent pod %s's UID %s", oldAgent, agent.Name, agent.UID)
	}
	before := e.containers(t, id)
	if len(before[oldRev]) != 1 {
		t.Fatalf("containers of sandbox %s revision %d in the node's containerd: %v, want one", id, oldRev, before)
	}
	oldContainer := before[oldRev][0]
	t.Logf("sandbox %s (%s) runs revision %d as container %s on agent %s", name, id, oldRev, oldContainer, agent.Name)

	stop := e.watchSandbox(t, ns, name)
	deletedAt := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), callTimeout)
	err = e.cs.CoreV1().Pods(e.Namespace).Delete(ctx, agent.Name, metav1.DeleteOptions{})
	cancel()
	if err != nil {
		t.Fatal(err)
	}

	sb = e.waitSandbox(t, ns, name, 3*time.Minute, "Running as a new revision on a new agent", func(sb *v1alpha1.Sandbox) bool {
		return sb.Status.Phase == v1alpha1.PhaseRunning && sb.Status.Revision > oldRev && sb.Status.AssignedPod != oldAgent
	})
	back := time.Since(deletedAt)
	seen := stop()
	t.Logf("agent pod deleted; the sandbox ran revision %d on agent %s after %s:%s", sb.Status.Revision, sb.Status.AssignedPod,
		back.Round(time.Millisecond), timeline(seen, deletedAt))

	// The new revision runs on the DaemonSet's new pod.
	_, newAgent := e.whole(t)
	if sb.Status.AssignedPod != string(newAgent.UID) || newAgent.UID == agent.UID {
		t.Errorf("revision %d runs on agent %q; the agent pod now is %s (UID %s), the deleted one had %s",
			sb.Status.Revision, sb.Status.AssignedPod, newAgent.Name, newAgent.UID, agent.UID)
	}
	// Lost was shown, after the delete and before the new revision.
	lostAt := -1
	for i, tr := range seen {
		if tr.phase == v1alpha1.PhaseLost && tr.revision == oldRev {
			lostAt = i
			break
		}
	}
	switch {
	case lostAt < 0:
		t.Errorf("the sandbox never showed Lost for revision %d between the delete and revision %d Running", oldRev, sb.Status.Revision)
	default:
		t.Logf("Lost %s after the agent pod's delete", seen[lostAt].at.Sub(deletedAt).Round(time.Millisecond))
		for _, tr := range seen[lostAt+1:] {
			if tr.revision == oldRev && tr.phase == v1alpha1.PhaseRunning {
				t.Errorf("revision %d was Running again after Lost, on agent %s: the deleted pod's agent cannot come back", oldRev, tr.agent)
			}
		}
	}

	// The old revision's container leaves the node's containerd; the new
	// one is there.
	var now map[int64][]string
	for deadline := time.Now().Add(2 * time.Minute); ; {
		now = e.containers(t, id)
		if len(now[oldRev]) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s (revision %d, agent %s) is still in containerd %s after the agent pod was deleted; containers: %v",
				oldContainer, oldRev, oldAgent, back+2*time.Minute, now)
		}
		time.Sleep(time.Second)
	}
	t.Logf("the old revision's container %s left containerd %s after the agent pod's delete", oldContainer, time.Since(deletedAt).Round(time.Second))
	// The janitor removed it: nothing else knows the old agent's containers.
	logs := e.mustKubectl(t, "logs", "-n", e.Namespace, "-l", labelName+"=fsb,"+labelComponent+"=janitor", "--tail=-1")
	var removal string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `"msg":"removed"`) && strings.Contains(line, `"name":"`+oldContainer+`"`) {
			removal = line
		}
	}
	if removal == "" {
		t.Errorf("the janitor's log does not say it removed container %s", oldContainer)
	} else {
		t.Logf("janitor: %s", removal)
	}
	if len(now[sb.Status.Revision]) != 1 {
		t.Errorf("containers of revision %d: %v, want one", sb.Status.Revision, now)
	}
}

// createLoad is the bounded create load of TestLeaderDeletedUnderLoad.
const (
	loadCreates     = 40
	loadConcurrency = 4
	// loadPace spaces one worker's creates so that the load spans the
	// leader's delete and the takeover after it.
	loadPace = 2 * time.Second
	// loadRetryFor bounds how long one create is retried.
	loadRetryFor = 2 * time.Minute
)

// retryable reports whether a create may be sent again: the fast path or
// the way to it was away (no leader, a dropped connection, a call that
// timed out). A create is idempotent by name and spec, so a retry of one
// that landed answers with the same sandbox.
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeUnknown, connect.CodeAborted:
		return true
	}
	return false
}

// TestLeaderDeletedUnderLoad: a bounded FAST create load runs through the
// Service's forwarder while the test deletes the leader controller pod.
// Every acknowledged sandbox then exists and reaches Running, and a new
// leader serves. The fast path's unavailability is the longest gap between
// acknowledged creates across the delete.
func TestLeaderDeletedUnderLoad(t *testing.T) {
	e := cluster(t)
	leader, _ := e.whole(t)
	ns := e.namespace(t)
	api := e.fastPath(t)

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	agents, err := api.ListAgents(ctx, connect.NewRequest(&fsbv1.ListAgentsRequest{}))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	free := 0
	for _, a := range agents.Msg.GetAgents() {
		free += int(a.GetCapacity()) - len(a.GetSandboxes())
	}
	if free < loadCreates {
		t.Fatalf("the agents have %d free slots, want at least %d for the load: deploy/overlays/test must raise the agent's capacity (AGENT_CAPACITY)", free, loadCreates)
	}

	type ack struct {
		id string
		at time.Time
	}
	var (
		mu           sync.Mutex
		acknowledged = map[string]ack{}
		refused      []string
		retries      int
		// failedAt are the times retryable calls failed: the fast path's
		// outage runs from the first to the next acknowledged create.
		failedAt  []time.Time
		deletedAt time.Time
		// slowest is the longest an acknowledged create took, retries
		// included: a call may also wait out the takeover without failing.
		slowest   time.Duration
		slowestAt time.Time
	)
	names := make(chan string, loadCreates)
	for i := range loadCreates {
		names <- fmt.Sprintf("load-%02d", i)
	}
	close(names)
	spec := &fsbv1.SandboxSpec{Image: testImage, Command: []string{"sleep", "3600"}, ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST}
	create := func(name string) {
		began := time.Now()
		deadline := began.Add(loadRetryFor)
		for {
			callCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			resp, err := api.CreateSandbox(callCtx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Namespace: ns, Name: name, Spec: spec}))
			cancel()
			mu.Lock()
			switch {
			case err == nil:
				acknowledged[name] = ack{id: resp.Msg.GetSandbox().GetStatus().GetSandboxId(), at: time.Now()}
				if d := time.Since(began); d > slowest {
					slowest, slowestAt = d, began
				}
			case !retryable(err) || time.Now().After(deadline):
				refused = append(refused, fmt.Sprintf("%s: %v", name, err))
			default:
				retries++
				failedAt = append(failedAt, time.Now())
			}
			mu.Unlock()
			if err == nil || !retryable(err) || time.Now().After(deadline) {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var wg sync.WaitGroup
	// A failure below ends the test before the load is through: the load
	// stops with it, rather than creating sandboxes under the next tests.
	stopLoad := make(chan struct{})
	defer func() {
		close(stopLoad)
		wg.Wait()
	}()
	start := time.Now()
	for range loadConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range names {
				select {
				case <-stopLoad:
					return
				default:
				}
				next := time.Now().Add(loadPace)
				create(name)
				time.Sleep(time.Until(next))
			}
		}()
	}

	// Delete the leader once a quarter of the load is acknowledged.
	for deadline := time.Now().Add(time.Minute); ; {
		mu.Lock()
		n := len(acknowledged)
		mu.Unlock()
		if n >= loadCreates/4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d creates acknowledged after a minute of load, before any disruption", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	deletedAt = time.Now()
	ackedBefore := len(acknowledged)
	mu.Unlock()
	ctx, cancel = context.WithTimeout(context.Background(), callTimeout)
	err = e.cs.CoreV1().Pods(e.Namespace).Delete(ctx, leader.Name, metav1.DeleteOptions{})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	loadTime := time.Since(start)

	mu.Lock()
	defer mu.Unlock()
	var times []time.Time
	ackedAfter := 0
	for _, a := range acknowledged {
		times = append(times, a.at)
		if a.at.After(deletedAt) {
			ackedAfter++
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	var gap time.Duration
	var gapFrom time.Time
	for i := 1; i < len(times); i++ {
		if times[i].After(deletedAt) && times[i].Sub(times[i-1]) > gap {
			gap, gapFrom = times[i].Sub(times[i-1]), times[i-1]
		}
	}
	t.Logf("load: %d creates in %s at concurrency %d; %d acknowledged (%d before the leader %s was deleted, %d after), %d retried calls, %d refused",
		loadCreates, loadTime.Round(time.Millisecond), loadConcurrency, len(acknowledged), ackedBefore, leader.Name, ackedAfter, retries, len(refused))
	t.Logf("the longest gap between acknowledged creates around the delete: %s, from %+.3fs to %+.3fs (the load acknowledges one every ~%s)",
		gap.Round(time.Millisecond), gapFrom.Sub(deletedAt).Seconds(), gapFrom.Add(gap).Sub(deletedAt).Seconds(), loadPace/loadConcurrency)
	t.Logf("the slowest acknowledged create took %s (retries included), sent at %+.3fs", slowest.Round(time.Millisecond), slowestAt.Sub(deletedAt).Seconds())
	if len(failedAt) > 0 {
		first, last := failedAt[0], failedAt[len(failedAt)-1]
		var back time.Time
		for _, at := range times {
			if at.After(last) {
				back = at
				break
			}
		}
		t.Logf("the fast path was unavailable for %s: calls failed from %+.3fs to %+.3fs after the delete, the next create was acknowledged at %+.3fs",
			back.Sub(first).Round(time.Millisecond), first.Sub(deletedAt).Seconds(), last.Sub(deletedAt).Seconds(), back.Sub(deletedAt).Seconds())
	} else {
		t.Logf("no call failed: the fast path stayed available through the delete")
	}
	if len(refused) > 0 {
		t.Errorf("creates refused or given up (never counted as acknowledged): %s", strings.Join(refused, "; "))
	}
	if ackedAfter == 0 {
		t.Fatal("no create was acknowledged after the leader's delete: no new leader served")
	}

	// Every acknowledged sandbox exists, with its sandbox ID, and runs.
	verifyStart := time.Now()
	var missing []string
	for deadline := time.Now().Add(2 * time.Minute); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		list, err := e.store.List(ctx, ns, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		objects := map[string]*v1alpha1.Sandbox{}
		for i := range list.Items {
			objects[list.Items[i].Name] = &list.Items[i]
		}
		missing = missing[:0]
		for name, a := range acknowledged {
			sb := objects[name]
			switch {
			case sb == nil:
				missing = append(missing, name+" (no object)")
			case sb.Annotations[v1alpha1.AnnotationID] != a.id:
				missing = append(missing, fmt.Sprintf("%s (sandbox ID %q, acknowledged as %q)", name, sb.Annotations[v1alpha1.AnnotationID], a.id))
			case sb.Status.Phase != v1alpha1.PhaseRunning:
				missing = append(missing, fmt.Sprintf("%s (%s)", name, sb.Status.Phase))
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			slices.Sort(missing)
			t.Fatalf("%d of %d acknowledged sandboxes are not Running with their object 2 minutes after the load: %s",
				len(missing), len(acknowledged), strings.Join(missing, ", "))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("all %d acknowledged sandboxes have their object and are Running (%s after the load)", len(acknowledged), time.Since(verifyStart).Round(time.Millisecond))

	// A new leader serves, and the installation is whole again.
	newLeader, _ := e.whole(t)
	if newLeader.Name == leader.Name {
		t.Errorf("the leader is still the deleted pod %s", leader.Name)
	}
	ctx, cancel = context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := api.ListSandboxes(ctx, connect.NewRequest(&fsbv1.ListSandboxesRequest{Namespace: ns})); err != nil {
		t.Errorf("the new leader %s does not serve: %v", newLeader.Name, err)
	}
	t.Logf("the new leader is %s", newLeader.Name)
}
