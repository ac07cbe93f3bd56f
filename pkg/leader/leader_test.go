package leader

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

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
// the real API server: one leads and labels its pod, the other stands by
// naming it; once the leader stops (handing the Lease over), the other
// leads with a fence one higher and the label moves to its pod. A Lease
// deleted and made again still gives a higher fence.
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
	f := first.term(t)
	lease, err := cs.CoordinationV1().Leases(ns).Get(context.Background(), "fsb-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base := lease.CreationTimestamp.Unix() << fenceBits
	if f != base {
		t.Errorf("the first leader's fence is %d, want %d (the Lease's creation second << %d, no transition)", f, base, fenceBits)
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
	if f := second.term(t); f != base+1 {
		t.Errorf("the second leader's fence is %d, want %d (one transition more)", f, base+1)
	}
	// The first released the Lease on its way out: no lease duration wait.
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the second candidate led %s after the first stopped, want at once (the Lease released)", took)
	}
	eventually(t, "the second candidate leads", second.e.Leading)
	eventually(t, "only ctrl-2 labelled", func() bool { l := labelled(t, cs, ns); return len(l) == 1 && l[0] == "ctrl-2" })
	second.stop()
	eventually(t, "no pod labelled once nobody leads", func() bool { return len(labelled(t, cs, ns)) == 0 })

	// A Lease deleted and made again (the controller reinstalled) counts
	// its transitions from 0: its leader's fence is still above all before,
	// the new Lease being made in a later second (the fence's limit).
	for time.Now().Unix() <= lease.CreationTimestamp.Unix() {
		time.Sleep(50 * time.Millisecond)
	}
	if err := cs.CoordinationV1().Leases(ns).Delete(context.Background(), "fsb-controller", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	third := campaign(t, cs, ns, "ctrl-1")
	if f := third.term(t); f <= base+1 {
		t.Errorf("the leader on a Lease made again has fence %d, want above %d", f, base+1)
	}
}

// failingFenceRead fails, once, the first read of the Lease after this
// client created it: the new leader's read of its fence.
type failingFenceRead struct {
	next    http.RoundTripper
	created atomic.Bool
	failed  atomic.Bool
}

func (f *failingFenceRead) RoundTrip(req *http.Request) (*http.Response, error) {
	lease := strings.Contains(req.URL.Path, "/leases")
	if lease && req.Method == http.MethodGet && f.created.Load() && f.failed.CompareAndSwap(false, true) {
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable", Request: req,
			Header: http.Header{"Content-Type": {"text/plain"}}, Body: io.NopCloser(strings.NewReader("injected: the API server is busy"))}, nil
	}
	resp, err := f.next.RoundTrip(req)
	if err == nil && lease && req.Method == http.MethodPost && resp.StatusCode == http.StatusCreated {
		f.created.Store(true)
	}
	return resp, err
}

// TestAFenceReadThatFailsIsRetried: the new leader's read of its fence
// fails once (the API server busy). The term is not given up while the
// Lease is still renewed: the fence is read again and the replica leads.
func TestAFenceReadThatFailsIsRetried(t *testing.T) {
	env := rig.Kube(t)
	cfg := rest.CopyConfig(env.Config)
	inject := &failingFenceRead{}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { inject.next = rt; return inject })
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := campaign(t, cs, env.Namespace, "")
	if f := c.term(t); f == 0 {
		t.Errorf("term with fence 0")
	}
	if !inject.failed.Load() {
		t.Fatal("the fence read was never failed: the test injects nothing")
	}
	eventually(t, "the candidate leads", c.e.Leading)
}

// TestAGracefulStopHandsOverOnceTheTermEnded: a leader stopped gracefully
// hands the Lease over, but only once its term has returned (its workers
// finishing, here 1 s): the standby's term never overlaps it.
func TestAGracefulStopHandsOverOnceTheTermEnded(t *testing.T) {
	env := rig.Kube(t)
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	var active atomic.Int32
	var overlapped atomic.Bool
	run := func() (*Elector, chan int64, context.CancelFunc, chan struct{}) {
		terms := make(chan int64, 4)
		e, err := New(Config{
			Client: cs, Namespace: env.Namespace, Name: "fsb-controller",
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 100 * time.Millisecond,
			Lead: func(ctx context.Context, fence int64) {
				if active.Add(1) > 1 {
					overlapped.Store(true)
				}
				defer active.Add(-1)
				terms <- fence
				<-ctx.Done()
				time.Sleep(time.Second) // the term's work finishing
			},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); e.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return e, terms, cancel, done
	}
	wait := func(terms chan int64, who string) int64 {
		select {
		case f := <-terms:
			return f
		case <-time.After(15 * time.Second):
			t.Fatalf("%s never led", who)
			return 0
		}
	}
	_, firstTerms, stopFirst, firstDone := run()
	f1 := wait(firstTerms, "the first candidate")
	second, secondTerms, _, _ := run()
	eventually(t, "the second candidate sees the first lead", func() bool { return second.Leader() != "" })
	stopFirst()
	f2 := wait(secondTerms, "the second candidate")
	<-firstDone
	if overlapped.Load() {
		t.Error("the second candidate's term began while the first's was still running")
	}
	if f2 <= f1 {
		t.Errorf("fences %d then %d: want growing", f1, f2)
	}
}
