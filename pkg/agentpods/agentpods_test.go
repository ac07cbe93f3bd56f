package agentpods

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// agents records what a Watcher feeds it: the agents followed now, by key.
type agents struct {
	mu        sync.Mutex
	followed  map[string]string // key -> address
	listed    []string          // the keys followed when Listed was called
	wasListed bool
	removed   []string
}

func (a *agents) Add(key, addr string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.followed[key] = addr
}

func (a *agents) Remove(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.followed, key)
	a.removed = append(a.removed, key)
}

func (a *agents) Listed() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.wasListed = true
	for k := range a.followed {
		a.listed = append(a.listed, k)
	}
}

// state returns the agents followed now, as "key=address" sorted.
func (a *agents) state() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for k, v := range a.followed {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// waitFor polls until the followed agents are want.
func (a *agents) waitFor(t *testing.T, what string, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := a.state()
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: agents followed %v, want %v", what, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var agentLabels = map[string]string{"app.kubernetes.io/name": "fsb", "app.kubernetes.io/component": "agent"}

// makePod creates a pod bound to a node that does not exist (nothing runs
// it), and gives it phase and ip through the status subresource, as a
// kubelet would.
func makePod(t *testing.T, client kubernetes.Interface, ns, name string, podLabels map[string]string, phase corev1.PodPhase, ip string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: podLabels},
		Spec: corev1.PodSpec{
			NodeName:   "no-such-node",
			Containers: []corev1.Container{{Name: "agent", Image: "localhost/fsb/fsb:latest"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	return setStatus(t, client, pod, phase, ip)
}

func setStatus(t *testing.T, client kubernetes.Interface, pod *corev1.Pod, phase corev1.PodPhase, ip string) *corev1.Pod {
	t.Helper()
	pod = pod.DeepCopy()
	pod.Status.Phase = phase
	pod.Status.PodIP = ip
	pod.Status.PodIPs = nil
	if ip != "" {
		pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	out, err := client.CoreV1().Pods(pod.Namespace).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("set the status of pod %s: %v", pod.Name, err)
	}
	return out
}

// start runs a Watcher on the test's namespace until the test ends.
func start(t *testing.T, client kubernetes.Interface, ns string, tls bool) *agents {
	t.Helper()
	fed := &agents{followed: map[string]string{}}
	w, err := New(Config{
		Client: client, Namespace: ns, Selector: labels.SelectorFromSet(agentLabels), Port: 5758, TLS: tls,
		Agents: fed, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return fed
}

// TestPodsAreAgentsWhileRunning drives pods through the API server as a
// kubelet would and checks which of them are agents: Running with an IP
// and matching the selector, until deleted, failed or being deleted. The
// pods there at the start are added before Listed.
func TestPodsAreAgentsWhileRunning(t *testing.T) {
	env := rig.Kube(t)
	client, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace
	other := map[string]string{"app.kubernetes.io/name": "fsb", "app.kubernetes.io/component": "janitor"}
	first := makePod(t, client, ns, "agent-a", agentLabels, corev1.PodRunning, "127.0.0.11")
	makePod(t, client, ns, "janitor", other, corev1.PodRunning, "127.0.0.12")
	pending := makePod(t, client, ns, "agent-b", agentLabels, corev1.PodPending, "")

	fed := start(t, client, ns, false)
	a := string(first.UID) + "=127.0.0.11:5758"
	fed.waitFor(t, "at the start", a)
	fed.mu.Lock()
	if !fed.wasListed || !slices.Equal(fed.listed, []string{string(first.UID)}) {
		t.Errorf("Listed with %v followed (called: %v), want the running agent's pod added before it", fed.listed, fed.wasListed)
	}
	fed.mu.Unlock()

	steps := []struct {
		what   string
		change func()
		want   []string
	}{
		{"a pending pod gets an IP, not yet Running", func() {
			pending = setStatus(t, client, pending, corev1.PodPending, "127.0.0.13")
		}, []string{a}},
		{"the pod runs", func() {
			pending = setStatus(t, client, pending, corev1.PodRunning, "127.0.0.13")
		}, []string{a, string(pending.UID) + "=127.0.0.13:5758"}},
		{"the pod fails", func() {
			pending = setStatus(t, client, pending, corev1.PodFailed, "127.0.0.13")
		}, []string{a}},
		{"the first pod's deletion begins (a node would stop it)", func() {
			if err := client.CoreV1().Pods(ns).Delete(context.Background(), first.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}, nil},
	}
	for _, step := range steps {
		step.change()
		fed.waitFor(t, step.what, step.want...)
	}
	fed.mu.Lock()
	removed := slices.Clone(fed.removed)
	fed.mu.Unlock()
	if want := []string{string(pending.UID), string(first.UID)}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
}

// TestAgentsMoveWithTheirPods: a pod deleted for good takes its agent with
// it, a new pod of the same name is a new agent (its own UID) even at the
// old address, and TLS makes the address an https:// URL.
func TestAgentsMoveWithTheirPods(t *testing.T) {
	env := rig.Kube(t)
	client, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace
	fed := start(t, client, ns, true)
	fed.waitFor(t, "no pods")
	old := makePod(t, client, ns, "agent", agentLabels, corev1.PodRunning, "127.0.0.21")
	fed.waitFor(t, "a running pod", string(old.UID)+"=https://127.0.0.21:5758")
	zero := int64(0)
	if err := client.CoreV1().Pods(ns).Delete(context.Background(), old.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	fed.waitFor(t, "the pod deleted")
	// Gone from the API server before the name is taken again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := client.CoreV1().Pods(ns).Get(context.Background(), old.Name, metav1.GetOptions{})
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deleted pod is still there")
		}
		time.Sleep(20 * time.Millisecond)
	}
	again := makePod(t, client, ns, "agent", agentLabels, corev1.PodRunning, "127.0.0.21")
	if again.UID == old.UID {
		t.Fatal("the new pod has the old one's UID")
	}
	fed.waitFor(t, "a new pod of the same name at the same address", string(again.UID)+"=https://127.0.0.21:5758")
	fed.mu.Lock()
	defer fed.mu.Unlock()
	if got := strings.Join(fed.removed, ","); got != string(old.UID) {
		t.Errorf("removed %s, want only the old pod's agent %s", got, old.UID)
	}
}

// TestNewRefusesWhatWouldTakeEveryPod: an empty selector would make every
// pod of the namespace an agent.
func TestNewRefusesWhatWouldTakeEveryPod(t *testing.T) {
	_, err := New(Config{Client: kubernetes.New(nil), Namespace: "fsb-system", Selector: labels.Everything(), Port: 5758, Agents: &agents{}})
	if err == nil || !strings.Contains(err.Error(), "every pod") {
		t.Fatalf("New with an empty selector: %v, want a refusal", err)
	}
}
