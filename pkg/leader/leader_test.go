package leader

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// candidate is one Elector run in the test, with the fences of its terms.
type candidate struct {
	e      *Elector
	terms  chan int64
	cancel context.CancelFunc
	done   chan struct{}
}

func campaign(t *testing.T, cs kubernetes.Interface, ns, pod string) *candidate {
	t.Helper()
	c := &candidate{terms: make(chan int64, 4), done: make(chan struct{})}
	e, err := New(Config{
		Client: cs, Namespace: ns, Name: "fsb-controller",
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond,
		PodName: pod, PodNamespace: ns,
		Lead: func(ctx context.Context, fence int64) {
			c.terms <- fence
			<-ctx.Done()
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.e = e
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() { defer close(c.done); e.Run(ctx) }()
	t.Cleanup(c.stop)
	return c
}

func (c *candidate) stop() {
	c.cancel()
	<-c.done
}

func (c *candidate) term(t *testing.T) int64 {
	t.Helper()
	select {
	case f := <-c.terms:
		return f
	case <-time.After(15 * time.Second):
		t.Fatalf("%s never led", c.e.Identity())
		return 0
	}
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func labelled(t *testing.T, cs kubernetes.Interface, ns string) []string {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: LabelLeader + "=true"})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pods.Items {
		out = append(out, p.Name)
	}
	return out
}

// TestOneLeaderAtATimeWithGrowingFences runs two candidates on one Lease of
// the real API server: one leads with fence 1 and labels its pod, the
// other stands by naming it; once the leader stops (handing the Lease
// over), the other leads with fence 2 and the label moves to its pod.
func TestOneLeaderAtATimeWithGrowingFences(t *testing.T) {
	env := rig.Kube(t)
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := env.Namespace
	for _, pod := range []string{"ctrl-1", "ctrl-2"} {
		_, err := cs.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: pod},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "fsb"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	first := campaign(t, cs, ns, "ctrl-1")
	if f := first.term(t); f != 1 {
		t.Errorf("the first leader's fence is %d, want 1", f)
	}
	eventually(t, "the first candidate leads", first.e.Leading)
	second := campaign(t, cs, ns, "ctrl-2")
	eventually(t, "the second candidate names the first as leader", func() bool { return second.e.Leader() == first.e.Identity() })
	if second.e.Leading() || second.e.Fence() != 0 {
		t.Errorf("the standby leads (%v) or has a fence (%d)", second.e.Leading(), second.e.Fence())
	}
	eventually(t, "only ctrl-1 labelled", func() bool { l := labelled(t, cs, ns); return len(l) == 1 && l[0] == "ctrl-1" })

	first.stop()
	if first.e.Leading() || first.e.Fence() != 0 {
		t.Errorf("the stopped candidate still leads (%v) or has a fence (%d)", first.e.Leading(), first.e.Fence())
	}
	start := time.Now()
	if f := second.term(t); f != 2 {
		t.Errorf("the second leader's fence is %d, want 2", f)
	}
	// The first released the Lease on its way out: no lease duration wait.
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the second candidate led %s after the first stopped, want at once (the Lease released)", took)
	}
	eventually(t, "the second candidate leads", second.e.Leading)
	eventually(t, "only ctrl-2 labelled", func() bool { l := labelled(t, cs, ns); return len(l) == 1 && l[0] == "ctrl-2" })
	second.stop()
	eventually(t, "no pod labelled once nobody leads", func() bool { return len(labelled(t, cs, ns)) == 0 })
}
