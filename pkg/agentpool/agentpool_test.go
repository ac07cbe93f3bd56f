package agentpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// rigPool is a pool controller on the rig's API server, with a real
// registry and store. There is no kubelet: pods stay Pending unless the
// test gives them a status, and agents are registered by the test under
// their pods' UIDs, as pkg/agentlink would once they connect.
type rigPool struct {
	env    *rig.KubeEnv
	client kubernetes.Interface
	reg    *registry.Registry
	store  *store.Kube
	pools  *pools
	events *record.FakeRecorder
	ctrl   *Controller

	mu      sync.Mutex
	changed []string // the pools Config.Changed was called with, in order
}

func startRig(t *testing.T) *rigPool {
	t.Helper()
	env := rig.Kube(t)
	client, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tmpl := daemonSetTemplate()
	tmpl.Spec.NodeSelector = nil
	if _, err := client.AppsV1().DaemonSets(env.Namespace).Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "fsb-agent"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels},
			Template: *tmpl,
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the agent DaemonSet: %v", err)
	}
	st, err := store.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	p, err := newPools(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	r := &rigPool{env: env, client: client, reg: registry.New(), store: st, pools: p, events: record.NewFakeRecorder(1000)}
	r.ctrl, err = New(Config{
		Config: env.Config, Client: client, Namespace: env.Namespace, DaemonSet: "fsb-agent",
		Registry: r.reg, Events: r.events,
		Sandboxes: SandboxesFunc(func() []*v1alpha1.Sandbox {
			list, err := st.List(context.Background(), "", nil)
			if err != nil {
				t.Errorf("list sandboxes: %v", err)
				return nil
			}
			var out []*v1alpha1.Sandbox
			for i := range list.Items {
				out = append(out, &list.Items[i])
			}
			return out
		}),
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		ResyncPeriod: 100 * time.Millisecond,
		Changed: func(pool string) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.changed = append(r.changed, pool)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ctrl.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	synced := make(chan struct{})
	started := make(chan error, 1)
	go func() { started <- r.ctrl.Start(runCtx, synced) }()
	worked := make(chan struct{})
	go func() { defer close(worked); r.ctrl.Work(runCtx, 2) }()
	t.Cleanup(func() {
		cancel()
		<-worked
		if err := <-started; err != nil {
			t.Errorf("Start: %v", err)
		}
	})
	select {
	case <-synced:
	case <-time.After(30 * time.Second):
		t.Fatal("the pool informer never synced")
	}
	return r
}

// createPool creates a pool in namespace ns.
func (r *rigPool) createPool(t *testing.T, ns, name string, c v1alpha1.PoolCapacity, perPod int32) {
	t.Helper()
	pool := &v1alpha1.SandboxPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1alpha1.SandboxPoolSpec{Capacity: &c, MaxSandboxesPerPod: ptr.To(perPod)},
	}
	if err := r.pools.client.Post().Namespace(ns).Resource(poolsResource).Body(pool).Do(context.Background()).Error(); err != nil {
		t.Fatalf("create pool %s/%s: %v", ns, name, err)
	}
}

func (r *rigPool) getPool(t *testing.T, ns, name string) (*v1alpha1.SandboxPool, error) {
	t.Helper()
	out := &v1alpha1.SandboxPool{}
	err := r.pools.client.Get().Namespace(ns).Resource(poolsResource).Name(name).Do(context.Background()).Into(out)
	return out, err
}

// pods returns the pool's pods not being deleted, oldest first.
func (r *rigPool) pods(t *testing.T, pool string) []corev1.Pod {
	t.Helper()
	list, err := r.client.CoreV1().Pods(r.env.Namespace).List(context.Background(),
		metav1.ListOptions{LabelSelector: labels.Set{LabelPool: pool}.String()})
	if err != nil {
		t.Fatal(err)
	}
	out := slices.DeleteFunc(list.Items, func(p corev1.Pod) bool { return p.DeletionTimestamp != nil })
	slices.SortFunc(out, func(a, b corev1.Pod) int { return a.CreationTimestamp.Compare(b.CreationTimestamp.Time) })
	return out
}

// waitPods waits until the pool has n pods, and holds there for a few
// resyncs (a controller that overshoots fails here).
func (r *rigPool) waitPods(t *testing.T, pool string, n int, why string) []corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		pods := r.pods(t, pool)
		if len(pods) == n {
			time.Sleep(500 * time.Millisecond)
			if pods = r.pods(t, pool); len(pods) == n {
				return pods
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: pool %s has %d pods, want %d", why, pool, len(pods), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitStatus waits until the pool's status satisfies ok.
func (r *rigPool) waitStatus(t *testing.T, ns, name, why string, ok func(*v1alpha1.SandboxPool) bool) *v1alpha1.SandboxPool {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		p, err := r.getPool(t, ns, name)
		if err == nil && ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: pool %s/%s: %v, status %+v", why, ns, name, err, p.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// register registers pod's agent as connected and healthy, as agentlink
// does from its status.
func (r *rigPool) register(pod corev1.Pod, pool string, capacity int) {
	r.reg.Upsert(registry.Agent{ID: string(pod.UID), Address: pod.Name + ":5758", Pool: pool, Capacity: capacity, Healthy: true})
}

// unregistered returns the one pod of pods whose agent the registry does
// not know: the pod a scale-up just made. (Creation times have whole
// seconds, so they cannot tell it.)
func (r *rigPool) unregistered(t *testing.T, pods []corev1.Pod) corev1.Pod {
	t.Helper()
	known := map[string]bool{}
	for _, a := range r.reg.Agents() {
		known[a.ID] = true
	}
	var out []corev1.Pod
	for _, p := range pods {
		if !known[string(p.UID)] {
			out = append(out, p)
		}
	}
	if len(out) != 1 {
		t.Fatalf("pods without an agent: %v, want one", podNames(out))
	}
	return out[0]
}

// fill places n sandboxes of the pool, as the fast path does.
func (r *rigPool) fill(t *testing.T, pool string, ids ...string) map[string]string {
	t.Helper()
	on := map[string]string{}
	for _, id := range ids {
		p, err := r.reg.Allocate(registry.Request{SandboxID: id, Image: "alpine", Pool: pool})
		if err != nil {
			t.Fatalf("allocate %s in pool %s: %v", id, pool, err)
		}
		on[id] = p.AgentID
	}
	return on
}

func (r *rigPool) eventsSaid(reasons ...string) map[string][]string {
	got := map[string][]string{}
	for {
		select {
		case e := <-r.events.Events:
			for _, reason := range reasons {
				if strings.Contains(e, " "+reason+" ") {
					got[reason] = append(got[reason], e)
				}
			}
		default:
			return got
		}
	}
}

// TestPoolScalesWithItsAgents: the sample's pool (poolMin 1, poolMax 3,
// bufferMin 1, bufferMax 1, maxSandboxesPerPod 2) starts one agent pod
// made from the DaemonSet; filling its agents adds one at a time up to
// poolMax; releasing the sandboxes scales back to the bounds, never
// removing an agent that runs one; the status counts follow.
func TestPoolScalesWithItsAgents(t *testing.T) {
	r := startRig(t)
	ns := r.env.Namespace
	capa := v1alpha1.PoolCapacity{PoolMin: 1, PoolMax: 3, BufferMin: 1, BufferMax: 1}
	r.createPool(t, ns, "small", capa, 2)

	pods := r.waitPods(t, "small", 1, "a new pool")
	first := pods[0]
	if !strings.HasPrefix(first.Name, "small-agent-") || len(first.Name) != len("small-agent-")+5 {
		t.Errorf("pod name %q, want small-agent-<5 characters>", first.Name)
	}
	if first.Labels["app.kubernetes.io/component"] != "agent" || first.Labels[LabelPool] != "small" {
		t.Errorf("pod labels %v, want the DaemonSet's and %s=small", first.Labels, LabelPool)
	}
	pool, err := r.getPool(t, ns, "small")
	if err != nil {
		t.Fatal(err)
	}
	if !metav1.IsControlledBy(&first, pool) {
		t.Errorf("pod owner references %+v, want the pool %s", first.OwnerReferences, pool.UID)
	}
	args := first.Spec.Containers[0].Args
	if want := []string{"--pool=small", "--capacity=2", "--runtimes=runc,crun"}; !slices.Equal(args[len(args)-3:], want) {
		t.Errorf("agent args %q, want them to end with %q", args, want)
	}
	if !slices.Contains(pool.Finalizers, Finalizer) {
		t.Errorf("pool finalizers %v, want %s", pool.Finalizers, Finalizer)
	}
	r.waitStatus(t, ns, "small", "pending pod", func(p *v1alpha1.SandboxPool) bool {
		c := meta.FindStatusCondition(p.Status.Conditions, ConditionReady)
		return p.Status.CurrentPods == 1 && p.Status.TotalAgents == 0 && c != nil && c.Status == metav1.ConditionFalse
	})

	// The agent connects, its pod is Ready: the pool is Ready and stays at one.
	r.register(first, "small", 2)
	readyPod := first.DeepCopy()
	readyPod.Status.Phase = corev1.PodRunning
	readyPod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if _, err := r.client.CoreV1().Pods(ns).UpdateStatus(context.Background(), readyPod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitStatus(t, ns, "small", "one idle ready agent", func(p *v1alpha1.SandboxPool) bool {
		return p.Status.CurrentPods == 1 && p.Status.ReadyPods == 1 && p.Status.TotalAgents == 1 && p.Status.IdleAgents == 1 &&
			meta.IsStatusConditionTrue(p.Status.Conditions, ConditionReady) && p.Status.ObservedGeneration == p.Generation
	})
	r.waitPods(t, "small", 1, "one idle agent is the buffer")

	// Filling it adds a second pod, and only one.
	placed := r.fill(t, "small", "a1", "a2")
	pods = r.waitPods(t, "small", 2, "the first agent full")
	second := r.unregistered(t, pods)
	r.register(second, "small", 2)
	r.waitStatus(t, ns, "small", "one busy, one idle", func(p *v1alpha1.SandboxPool) bool {
		return p.Status.CurrentPods == 2 && p.Status.BusyAgents == 1 && p.Status.IdleAgents == 1 && p.Status.TotalAgents == 2
	})
	for id, agent := range r.fill(t, "small", "b1", "b2") {
		placed[id] = agent
	}
	pods = r.waitPods(t, "small", 3, "two agents full")
	third := r.unregistered(t, pods)
	r.register(third, "small", 2)
	for id, agent := range r.fill(t, "small", "c1") {
		placed[id] = agent
	}
	p := r.waitStatus(t, ns, "small", "all three busy at poolMax", func(p *v1alpha1.SandboxPool) bool {
		return p.Status.CurrentPods == 3 && p.Status.BusyAgents == 3 && p.Status.IdleAgents == 0 &&
			meta.IsStatusConditionTrue(p.Status.Conditions, ConditionExhausted)
	})
	t.Logf("at poolMax: %s", meta.FindStatusCondition(p.Status.Conditions, ConditionExhausted).Message)
	r.waitPods(t, "small", 3, "never past poolMax")

	// Release all but the sandbox on the second agent: the others go down
	// to the buffer, the second (busy) stays.
	for id, agent := range placed {
		if agent != string(second.UID) {
			r.reg.Release(id)
		}
	}
	pods = r.waitPods(t, "small", 2, "one busy agent and one idle left")
	if !slices.ContainsFunc(pods, func(p corev1.Pod) bool { return p.UID == second.UID }) {
		t.Fatalf("the busy agent's pod %s was deleted; left: %v", second.Name, podNames(pods))
	}
	for _, a := range r.reg.PoolAgents("small") {
		kept := slices.ContainsFunc(pods, func(p corev1.Pod) bool { return string(p.UID) == a.ID })
		if kept == a.Cordoned {
			t.Errorf("agent %s: cordoned %v, its pod kept %v: want a deleted pod's agent cordoned and only it", a.ID, a.Cordoned, kept)
		}
	}
	// Then the last: down to poolMin.
	for id, agent := range placed {
		if agent == string(second.UID) {
			r.reg.Release(id)
		}
	}
	r.waitPods(t, "small", 1, "all empty: poolMin")
	r.waitStatus(t, ns, "small", "back at rest", func(p *v1alpha1.SandboxPool) bool {
		return p.Status.CurrentPods == 1 && p.Status.IdleAgents == 1 && p.Status.BusyAgents == 0 &&
			!meta.IsStatusConditionTrue(p.Status.Conditions, ConditionExhausted)
	})

	said := r.eventsSaid(ReasonScaledUp, ReasonScaledDown)
	if len(said[ReasonScaledUp]) != 3 || len(said[ReasonScaledDown]) != 2 {
		t.Errorf("Events: %d ScaledUp, %d ScaledDown, want 3 and 2: %v", len(said[ReasonScaledUp]), len(said[ReasonScaledDown]), said)
	}
}

// TestPoolDeletionWaitsForItsSandboxes: a pool that a Sandbox names is
// closed in the registry on deletion but held by the finalizer, with a
// condition and an Event naming the sandbox; once the Sandbox is gone the
// pool's pods are removed and the pool goes, and the registry forgets it.
func TestPoolDeletionWaitsForItsSandboxes(t *testing.T) {
	r := startRig(t)
	ns := r.env.Namespace
	r.createPool(t, ns, "doomed", v1alpha1.PoolCapacity{PoolMin: 2, PoolMax: 2}, 1)
	pods := r.waitPods(t, "doomed", 2, "a new pool")
	for _, pod := range pods {
		r.register(pod, "doomed", 1)
	}
	r.waitStatus(t, ns, "doomed", "finalizer", func(p *v1alpha1.SandboxPool) bool {
		return slices.Contains(p.Finalizers, Finalizer) && p.Status.IdleAgents == 2
	})

	ctx := context.Background()
	if _, err := r.store.Create(ctx, &v1alpha1.Sandbox{
		ObjectMeta: metav1.ObjectMeta{Name: "user", Namespace: ns},
		Spec:       v1alpha1.SandboxSpec{Image: "alpine:latest", PoolRef: "doomed"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.pools.client.Delete().Namespace(ns).Resource(poolsResource).Name("doomed").Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	p := r.waitStatus(t, ns, "doomed", "deletion held", func(p *v1alpha1.SandboxPool) bool {
		c := meta.FindStatusCondition(p.Status.Conditions, ConditionDeleting)
		return c != nil && c.Reason == ReasonSandboxesRemain
	})
	if ready := meta.FindStatusCondition(p.Status.Conditions, ConditionReady); ready == nil || ready.Reason != ReasonDeleting {
		t.Errorf("Ready while the deletion is held: %+v, want reason %s (it scales no more)", ready, ReasonDeleting)
	}
	msg := meta.FindStatusCondition(p.Status.Conditions, ConditionDeleting).Message
	if !strings.Contains(msg, ns+"/user") || !strings.Contains(msg, "1 Sandboxes") {
		t.Errorf("Deleting says %q, want it to count and name %s/user", msg, ns)
	}
	_, err := r.reg.Allocate(registry.Request{SandboxID: "late", Pool: "doomed"})
	if !errors.Is(err, registry.ErrPoolClosed) {
		t.Errorf("a create in a pool being deleted: %v, want ErrPoolClosed", err)
	}
	time.Sleep(500 * time.Millisecond)
	if got := r.pods(t, "doomed"); len(got) != 2 {
		t.Errorf("a held pool's pods: %d, want both kept", len(got))
	}
	if said := r.eventsSaid(ReasonDeleteBlocked); len(said[ReasonDeleteBlocked]) != 1 {
		t.Errorf("DeleteBlocked Events %v, want one", said)
	}

	if err := r.store.Delete(ctx, ns, "user"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := r.getPool(t, ns, "doomed")
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pool was not removed once its sandbox was: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := r.pods(t, "doomed"); len(got) != 0 {
		t.Errorf("a deleted pool's pods left: %v", podNames(got))
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, err = r.reg.Allocate(registry.Request{SandboxID: "later", Pool: "doomed"})
		if errors.Is(err, registry.ErrNoPool) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a create in a deleted pool: %v, want ErrNoPool", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The sandbox controller heard of the pool three times: declared,
	// closed, forgotten; never of its status writes.
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, pool := range r.changed {
		if pool == "doomed" {
			n++
		}
	}
	if n != 3 {
		t.Errorf("Changed called %d times for the pool (%v), want 3: declared, closed, forgotten", n, r.changed)
	}
}

// TestPoolElsewhereIsRefused: a pool outside the pool namespace gets no
// pods and no finalizer, is not declared, and says where pools belong;
// unless it has the finalizer, which says another controller serves it.
func TestPoolElsewhereIsRefused(t *testing.T) {
	r := startRig(t)
	other := rig.Kube(t).Namespace
	r.createPool(t, other, "stray", v1alpha1.PoolCapacity{PoolMin: 1, PoolMax: 1}, 1)
	p := r.waitStatus(t, other, "stray", "WrongNamespace", func(p *v1alpha1.SandboxPool) bool {
		c := meta.FindStatusCondition(p.Status.Conditions, ConditionReady)
		return c != nil && c.Reason == ReasonWrongNamespace
	})
	if msg := meta.FindStatusCondition(p.Status.Conditions, ConditionReady).Message; !strings.Contains(msg, fmt.Sprintf("namespace %s only", r.env.Namespace)) {
		t.Errorf("condition says %q, want the pool namespace %s", msg, r.env.Namespace)
	}
	if len(p.Finalizers) != 0 {
		t.Errorf("finalizers %v on a pool not served", p.Finalizers)
	}
	if pods := r.pods(t, "stray"); len(pods) != 0 {
		t.Errorf("pods made for a pool not served: %v", podNames(pods))
	}
	if _, err := r.reg.Allocate(registry.Request{SandboxID: "x", Pool: "stray"}); !errors.Is(err, registry.ErrNoPool) {
		t.Errorf("a create naming it: %v, want ErrNoPool", err)
	}

	// One with the pool finalizer is another controller's: left alone.
	theirs := &v1alpha1.SandboxPool{
		ObjectMeta: metav1.ObjectMeta{Name: "theirs", Namespace: other, Finalizers: []string{Finalizer}},
		Spec:       v1alpha1.SandboxPoolSpec{Capacity: &v1alpha1.PoolCapacity{PoolMin: 1, PoolMax: 1}},
	}
	if err := r.pools.client.Post().Namespace(other).Resource(poolsResource).Body(theirs).Do(context.Background()).Error(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // ten resyncs
	if p, err := r.getPool(t, other, "theirs"); err != nil || len(p.Status.Conditions) != 0 {
		t.Errorf("another controller's pool: %v, conditions %+v, want none written", err, p.Status.Conditions)
	}
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

// TestScaleDownNeverTakesABusyAgent: creates keep landing on a pool's
// agents (Allocate, held a moment, Release) while it scales up and down;
// every agent that holds a sandbox still has its pod, so no create is lost
// to a scale-down.
func TestScaleDownNeverTakesABusyAgent(t *testing.T) {
	r := startRig(t)
	ns := r.env.Namespace
	r.createPool(t, ns, "churn", v1alpha1.PoolCapacity{PoolMin: 1, PoolMax: 4, BufferMin: 1, BufferMax: 1}, 1)
	r.waitPods(t, "churn", 1, "a new pool")

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	done := make(chan struct{})
	// The agents connect as their pods appear, as agentlink would.
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			for _, pod := range r.pods(t, "churn") {
				if !slices.ContainsFunc(r.reg.PoolAgents("churn"), func(a registry.AgentState) bool { return a.ID == string(pod.UID) }) {
					r.register(pod, "churn", 1)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	errs := make(chan error, 4)
	var placedCount, refused int
	counts := make(chan [2]int, 4)
	for w := range 4 {
		go func() {
			placed, noCapacity := 0, 0
			defer func() { counts <- [2]int{placed, noCapacity} }()
			for i := 0; ctx.Err() == nil; i++ {
				if (i/8+w)%2 == 1 {
					// Each worker rests in turn: agents empty, the pool
					// scales down while the others go on.
					time.Sleep(200 * time.Millisecond)
					continue
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				p, err := r.reg.Allocate(registry.Request{SandboxID: id, Pool: "churn"})
				if errors.Is(err, registry.ErrNoCapacity) {
					noCapacity++
					time.Sleep(10 * time.Millisecond)
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				placed++
				time.Sleep(time.Duration(i%5) * 20 * time.Millisecond)
				pod, err := r.podByUID(p.AgentID)
				r.reg.Release(id)
				if err != nil {
					errs <- fmt.Errorf("sandbox %s on agent %s: %w", id, p.AgentID, err)
					return
				}
				if pod.DeletionTimestamp != nil {
					errs <- fmt.Errorf("sandbox %s on agent %s: its pod %s is being deleted", id, p.AgentID, pod.Name)
					return
				}
			}
		}()
	}
	for range 4 {
		c := <-counts
		placedCount, refused = placedCount+c[0], refused+c[1]
	}
	<-done
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	said := r.eventsSaid(ReasonScaledUp, ReasonScaledDown)
	t.Logf("%d sandboxes placed, %d refused for no capacity; %d pods added, %d removed", placedCount, refused,
		len(said[ReasonScaledUp]), len(said[ReasonScaledDown]))
	if placedCount == 0 || len(said[ReasonScaledDown]) == 0 {
		t.Errorf("want sandboxes placed while the pool scaled down: %d placed, %d ScaledDown", placedCount, len(said[ReasonScaledDown]))
	}
}

// podByUID returns the test namespace's pod of that UID, being deleted or
// not; an error when there is none.
func (r *rigPool) podByUID(uid string) (*corev1.Pod, error) {
	list, err := r.client.CoreV1().Pods(r.env.Namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for i := range list.Items {
		if string(list.Items[i].UID) == uid {
			return &list.Items[i], nil
		}
	}
	return nil, errors.New("its pod is gone")
}
