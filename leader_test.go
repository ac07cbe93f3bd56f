//go:build !fsbhelper

package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	ggcrname "github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/leader"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
	"github.com/fast-sandbox/fast-sandbox/pkg/testimage"
)

// The Lease's timing in the leader tests: a killed leader's successor may
// take over 3 s after its last renewal.
const (
	testLeaseDuration = 3 * time.Second
	testRenewDeadline = 2 * time.Second
	testRetryPeriod   = 500 * time.Millisecond
)

// replica is one controller replica of the leader tests: a process, the
// pod object it labels, and its fast-path client.
type replica struct {
	*controllerProc
	pod    string
	url    string
	client fsbv1connect.FastPathServiceClient
}

// newReplica prepares `fsb controller --store kube --leader-elect` named
// pod (a Pod object of that name is made in ns for its label).
func newReplica(t *testing.T, kube *rig.KubeServer, cs kubernetes.Interface, ns, pod string, agent *agentProc) *replica {
	t.Helper()
	dir := t.TempDir()
	userToken := filepath.Join(dir, "user-token")
	if err := os.WriteFile(userToken, []byte("user-token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agentToken := filepath.Join(dir, "agent-token")
	if err := os.WriteFile(agentToken, []byte(agent.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := cs.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "controller", Image: "fsb"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("pod %s: %v", pod, err)
	}
	port, health, metrics := freePort(t), freePort(t), freePort(t)
	c := &controllerProc{t: t, health: fmt.Sprintf("http://127.0.0.1:%d/readyz", health), log: &rig.Buffer{},
		metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics)}
	c.args = []string{"controller",
		"--fastpath-bind-address", fmt.Sprintf("127.0.0.1:%d", port),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", health),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metrics),
		"--agents", strings.TrimPrefix(agent.base, "http://"),
		"--store", "kube", "--kubeconfig", kube.Kubeconfig,
		"--leader-elect", "--leader-election-namespace", ns,
		"--lease-duration", testLeaseDuration.String(), "--renew-deadline", testRenewDeadline.String(), "--retry-period", testRetryPeriod.String(),
		"--pod-name", pod, "--pod-namespace", ns,
		"--user-token-file", userToken, "--agent-token-file", agentToken,
		"--log-format", "json"}
	t.Cleanup(c.kill)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	return &replica{controllerProc: c, pod: pod, url: url,
		client: fsbv1connect.NewFastPathServiceClient(http.DefaultClient, url, connect.WithInterceptors(auth.Bearer("user-token-1")))}
}

// signal sends sig to the replica's process.
func (r *replica) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, r.pod, err)
	}
}

// serves reports whether the replica serves the fast path, and its error
// if not.
func (r *replica) serves(ns string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := r.client.ListSandboxes(ctx, connect.NewRequest(&fsbv1.ListSandboxesRequest{Namespace: ns}))
	return err
}

// leaseHolder returns the holder of the controllers' Lease.
func leaseHolder(t *testing.T, cs kubernetes.Interface, ns string) (holder string, transitions int32) {
	t.Helper()
	l, err := cs.CoordinationV1().Leases(ns).Get(context.Background(), "fsb-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("lease: %v", err)
	}
	if l.Spec.HolderIdentity != nil {
		holder = *l.Spec.HolderIdentity
	}
	if l.Spec.LeaseTransitions != nil {
		transitions = *l.Spec.LeaseTransitions
	}
	return holder, transitions
}

// waitLeader waits until one of replicas serves and returns it.
func waitLeader(t *testing.T, ns string, within time.Duration, replicas ...*replica) *replica {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, r := range replicas {
			if r.serves(ns) == nil {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replica serves the fast path after %s", within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkLabels checks that the leader's pod, and only it, has the leader
// label.
func checkLabels(t *testing.T, cs kubernetes.Interface, ns string, leaderPod string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: leader.LabelLeader + "=true"})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range pods.Items {
			names = append(names, p.Name)
		}
		if len(names) == 1 && names[0] == leaderPod {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pods labelled %s=true: %v, want only %s", leader.LabelLeader, names, leaderPod)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sandboxContainers returns the sandbox IDs of the containers in ns.
func sandboxContainers(t *testing.T, cd *containerd.Client) map[string]bool {
	t.Helper()
	cs, err := cd.Containers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, c := range cs {
		l, err := c.Labels(context.Background())
		if err != nil {
			continue // removed meanwhile
		}
		out[l[runtime.LabelID]] = true
	}
	return out
}

// TestLeaderElection runs two controller replicas on one Lease (lease
// 3 s, renew deadline 2 s, retry 0.5 s) and one agent:
//   - the standby answers Unavailable naming the leader, both are Ready,
//     and only the leader's pod has the leader label;
//   - kill -9 of the leader during a FAST create load (3 workers) loses no
//     acknowledged sandbox, and the other replica serves within the lease
//     time (the time from the kill to its first create is logged);
//   - a leader stopped (SIGSTOP) past its lease while its create waits for
//     the image, then resumed: the agent refuses that create (no
//     container), it removes nothing, and its fast path answers
//     Unavailable naming the new leader.
func TestLeaderElection(t *testing.T) {
	kube := rig.StartKube(t)
	ns := kube.Namespace(t)
	cs, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	cd, cns := rig.Containerd(t)
	agent := startAgent(t, cns, "agent-1", t.TempDir(), "--capacity", "60")
	a := newReplica(t, kube, cs, ns, "ctrl-a", agent)
	b := newReplica(t, kube, cs, ns, "ctrl-b", agent)
	a.start()
	first := waitLeader(t, ns, 15*time.Second, a) // a alone: it leads
	b.start()                                     // Ready while standing by

	// (c) The standby names the leader; both are Ready.
	holder, _ := leaseHolder(t, cs, ns)
	if !strings.HasPrefix(holder, first.pod+"_") {
		t.Fatalf("the Lease is held by %q, want %s's identity", holder, first.pod)
	}
	// A standby that has not read the Lease yet says no leader is known:
	// it must name the leader once it has (within a few retry periods).
	names := func(err error) bool {
		return connect.CodeOf(err) == connect.CodeUnavailable && strings.Contains(err.Error(), "not the leader; the leader is "+holder)
	}
	err = b.serves(ns)
	for deadline := time.Now().Add(10 * testRetryPeriod); !names(err) && time.Now().Before(deadline); err = b.serves(ns) {
		time.Sleep(testRetryPeriod / 5)
	}
	if !names(err) {
		t.Errorf("the standby answered %v, want Unavailable naming %s", err, holder)
	}
	for _, r := range []*replica{a, b} {
		resp, err := http.Get(r.health)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("%s /readyz: %v %v, want 200", r.pod, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
	checkLabels(t, cs, ns, a.pod)

	// (a) kill -9 of the leader during a FAST create load.
	var (
		mu           sync.Mutex
		acknowledged = map[string]string{} // name -> sandbox ID
		firstOnB     time.Time
		killedAt     time.Time
	)
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; loadCtx.Err() == nil && i < 15; i++ {
				name := fmt.Sprintf("load-%d-%d", w, i)
				req := &fsbv1.CreateSandboxRequest{Namespace: ns, Name: name, Spec: &fsbv1.SandboxSpec{
					Image: rig.ImageRef, Command: []string{"sleep", "300"}, ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST}}
				// Like a client behind the Service: whichever replica
				// serves; a create is idempotent by name and spec.
				for try := 0; loadCtx.Err() == nil && try < 200; try++ {
					var resp *connect.Response[fsbv1.CreateSandboxResponse]
					var err error
					r := a
					if try%2 == 1 {
						r = b
					}
					callCtx, cancel := context.WithTimeout(loadCtx, 10*time.Second)
					resp, err = r.client.CreateSandbox(callCtx, connect.NewRequest(req))
					cancel()
					if err == nil {
						mu.Lock()
						acknowledged[name] = resp.Msg.GetSandbox().GetStatus().GetSandboxId()
						if r == b && firstOnB.IsZero() && !killedAt.IsZero() {
							firstOnB = time.Now()
						}
						mu.Unlock()
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond) // creates under way on a
	mu.Lock()
	killedAt = time.Now()
	before := len(acknowledged)
	mu.Unlock()
	a.kill()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		served := !firstOnB.IsZero()
		mu.Unlock()
		if served || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // a few creates on b
	stopLoad()
	wg.Wait()
	if firstOnB.IsZero() {
		t.Fatal("the standby never served a create after the leader was killed")
	}
	takeover := firstOnB.Sub(killedAt)
	t.Logf("kill -9 of the leader: %d creates acknowledged before, %d in all; first create on the other replica %s after the kill (lease %s)",
		before, len(acknowledged), takeover.Round(time.Millisecond), testLeaseDuration)
	if before == 0 {
		t.Fatal("no create was acknowledged before the kill: the load tested nothing")
	}
	if limit := testLeaseDuration + testRetryPeriod + 2*time.Second; takeover > limit {
		t.Errorf("the other replica served %s after the kill, want within the lease time (%s, with retry period and recovery: %s)", takeover, testLeaseDuration, limit)
	}
	// Every acknowledged sandbox has its object and its container.
	st, err := store.NewKube(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		list, err := st.List(context.Background(), ns, nil)
		if err != nil {
			t.Fatal(err)
		}
		objects := map[string]string{}
		for _, sb := range list.Items {
			objects[sb.Name] = sb.Annotations["sandbox.fast.io/id"]
		}
		containers := sandboxContainers(t, cd)
		var missing []string
		for name, id := range acknowledged {
			if objects[name] != id || !containers[id] {
				missing = append(missing, fmt.Sprintf("%s (object %q, container %v)", name, objects[name], containers[id]))
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("acknowledged sandboxes lost after the kill: %v", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
	checkLabels(t, cs, ns, b.pod)

	// (b) SIGSTOP of the leader (now b) past its lease while a create of
	// it waits for its image; a, restarted, takes over.
	a.start()
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	pulling := make(chan struct{}, 1)
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			select {
			case pulling <- struct{}{}:
			default:
			}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(free)
	image := strings.TrimPrefix(srv.URL, "http://") + "/fsb/slow:1"
	base, err := testimage.Build(testimage.DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	// A layer of its own, so that the agent has to fetch it.
	layer, err := random.Layer(1024, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ggcrname.ParseReference(image, ggcrname.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", image, err)
	}
	beforeStop := sandboxContainers(t, cd)
	inFlight := make(chan error, 1)
	go func() {
		_, err := b.client.CreateSandbox(context.Background(), connect.NewRequest(&fsbv1.CreateSandboxRequest{Namespace: ns, Name: "in-flight",
			Spec: &fsbv1.SandboxSpec{Image: image, Command: []string{"sleep", "300"}, ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST}}))
		inFlight <- err
	}()
	select {
	case <-pulling:
	case err := <-inFlight:
		t.Fatalf("the create answered before its image was pulled: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("the agent never pulled the image")
	}
	b.signal(t, syscall.SIGSTOP)
	stoppedAt := time.Now()
	waitLeader(t, ns, 15*time.Second, a) // a has raised the agent's fence
	t.Logf("SIGSTOP of the leader: the other replica served %s later", time.Since(stoppedAt).Round(time.Millisecond))
	free() // the image arrives: the create goes on, with b's old fence
	// The agent refuses it (fsb_agent_fenced_calls_total counts it).
	deadline = time.Now().Add(15 * time.Second)
	for metricSum(t, agent.metrics, `fsb_agent_fenced_calls_total{call="CreateSandbox"}`) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the agent never refused the stopped leader's create; its log:\n%s", agent.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.signal(t, syscall.SIGCONT)
	select {
	case err := <-inFlight:
		// The agent refused it (counted above). The resumed controller
		// either relays that refusal or, when it first notices that the
		// agent's heartbeats stopped while it was frozen, drops the
		// call as the agent's: both fail the create, and no container
		// is made (checked below).
		if err == nil || !strings.Contains(err.Error(), "fenced") && connect.CodeOf(err) != connect.CodeUnavailable {
			t.Errorf("the stopped leader's in-flight create answered %v, want the agent's refusal (fenced) or Unavailable", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the stopped leader's create never answered after SIGCONT")
	}
	holder, _ = leaseHolder(t, cs, ns)
	err = b.serves(ns)
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("the resumed former leader answered %v, want Unavailable", err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for err == nil || !strings.Contains(err.Error(), "the leader is "+holder) {
		if time.Now().After(deadline) {
			t.Errorf("the resumed former leader answers %v, want Unavailable naming %s", err, holder)
			break
		}
		time.Sleep(100 * time.Millisecond)
		err = b.serves(ns)
	}
	// It placed and removed nothing: the containers are those before it
	// stopped (what a placed since is a's), the in-flight one never made.
	after := sandboxContainers(t, cd)
	for id := range beforeStop {
		if !after[id] {
			t.Errorf("sandbox %s's container was removed while the former leader was back", id)
		}
	}
	for id := range after {
		if !beforeStop[id] {
			t.Errorf("a container appeared for sandbox %s", id)
		}
	}
	checkLabels(t, cs, ns, a.pod)
	for _, r := range []*replica{a, b} {
		resp, err := http.Get(r.health)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("%s /readyz after the failovers: %v %v, want 200", r.pod, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
}

// TestJanitorAsksTheElectedLeader: with leader election, the agents
// connect while the replica still campaigns (a standby); once it leads
// and has recovered them, the janitor's question about a sandbox ID
// nobody knows on such an agent is answered unknown, as without an
// election, and not "not reconciled since it connected" for as long as
// the agent stays connected.
func TestJanitorAsksTheElectedLeader(t *testing.T) {
	_, ns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, ns, "agent-1", dir)
	janitorToken := filepath.Join(dir, "janitor-token")
	if err := os.WriteFile(janitorToken, []byte("janitor-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A Lease of this test's own: a killed controller of an earlier run
	// holds its Lease for a lease duration.
	lease := fmt.Sprintf("fsb-janitor-%d", time.Now().UnixNano())
	flags := append(kubeStoreArgs(t), "--leader-elect", "--leader-election-namespace", "default", "--leader-election-id", lease,
		"--lease-duration", testLeaseDuration.String(), "--renew-deadline", testRenewDeadline.String(), "--retry-period", testRetryPeriod.String())
	ctrl, server := newControllerProcWith(t, flags, dir, a, "--janitor-token-file", janitorToken)
	ctrl.start()
	janitor := fsbv1connect.NewJanitorServiceClient(http.DefaultClient, server, connect.WithInterceptors(auth.Bearer("janitor-1")))
	ask := connect.NewRequest(&fsbv1.ClassifyRequest{Sandboxes: []*fsbv1.SandboxRef{{AgentId: "agent-1", SandboxId: "sb-x", Revision: 1}}})
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for {
		got, err := janitor.Classify(context.Background(), ask)
		if err == nil {
			c := got.Msg.GetClassifications()[0]
			if c.GetVerdict() == fsbv1.Verdict_VERDICT_UNKNOWN {
				return
			}
			last = fmt.Sprintf("%v: %s", c.GetVerdict(), c.GetReason())
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("a sandbox ID nobody knows on a connected agent, asked of the leader: %s; want unknown\ncontroller log:\n%s", last, ctrl.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
