//go:build !fsbhelper

package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// outageCreate is one FAST create of the outage test's load: when it was
// made, and how it ended.
type outageCreate struct {
	name       string
	start, end time.Time
	id         string // the sandbox ID, when acknowledged
	err        error
}

// TestFastThroughAnAPIServerOutage stops the API server of the kube store
// while FAST creates go on, for longer than the janitor's orphan timeout
// and the controller's longest write back-off and write attempt, with the
// janitor running. During the outage no acknowledged sandbox's container
// is removed, and once the store is known unreachable every new FAST
// create is Unavailable. After the API server is back every acknowledged
// sandbox has its object, with its placement, and its container.
func TestFastThroughAnAPIServerOutage(t *testing.T) {
	const (
		orphanTimeout = 2 * time.Second
		// Counted from when the API server is stopped (its graceful stop
		// takes ~10 s more here): past the orphan timeout, the write
		// back-off's cap (2 s) and one write attempt's bound (5 s).
		outage    = 7 * time.Second
		workers   = 3
		pace      = 150 * time.Millisecond
		beforeMin = 6 // acknowledged creates before the outage
	)
	cd, cns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, cns, "agent-1", dir, "--capacity", "60")
	janitorToken := writeFile(t, dir, "janitor-token", "janitor-1\n")
	// The API server this package's kube-mode tests share: no other test
	// runs meanwhile, and it is back before this one ends. The controller
	// runs as in production, leader election on: during the outage it
	// cannot renew its Lease either, and past the renew deadline it stops
	// leading until the API server is back.
	storeFlags := kubeStoreArgs(t)
	kubeconfig := storeFlags[len(storeFlags)-1]
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ns := "outage"
	if _, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	ctrl, server := newControllerProcWith(t, storeFlags, dir, a, "--janitor-token-file", janitorToken)
	ctrl.start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s\nagent log:\n%s", ctrl.log.String(), a.stderr.String())
		}
	})
	janitor := startJanitor(t, server, janitorToken, cns, filepath.Join(dir, "logs"), orphanTimeout)
	api := fsbv1connect.NewFastPathServiceClient(http.DefaultClient, server, connect.WithInterceptors(auth.Bearer("user-token-1")))

	// The load: FAST creates, each worker one at a time, until stopped.
	var (
		mu    sync.Mutex
		made  []outageCreate
		acked = map[string]string{} // name -> sandbox ID
	)
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; loadCtx.Err() == nil; i++ {
				c := outageCreate{name: fmt.Sprintf("out-%d-%d", w, i), start: time.Now()}
				callCtx, cancel := context.WithTimeout(loadCtx, 30*time.Second)
				resp, err := api.CreateSandbox(callCtx, connect.NewRequest(&fsbv1.CreateSandboxRequest{
					Namespace: ns, Name: c.name,
					Spec: &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"},
						ConsistencyMode: fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST},
				}))
				cancel()
				c.end, c.err = time.Now(), err
				if loadCtx.Err() != nil && err != nil {
					return // cut by the end of the load: neither way
				}
				mu.Lock()
				if err == nil {
					c.id = resp.Msg.GetSandbox().GetStatus().GetSandboxId()
					acked[c.name] = c.id
				}
				made = append(made, c)
				mu.Unlock()
				select {
				case <-loadCtx.Done():
				case <-time.After(pace):
				}
			}
		}()
	}
	ackedNow := func() map[string]string {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[string]string, len(acked))
		for k, v := range acked {
			out[k] = v
		}
		return out
	}
	// present fails the test unless every acknowledged sandbox has its
	// container in containerd.
	present := func(when string) {
		t.Helper()
		have := containersByID(t, cd, cns)
		for name, id := range ackedNow() {
			if !have[id] {
				t.Fatalf("%s: the container of acknowledged sandbox %s (%s) is gone\njanitor log:\n%s", when, name, id, janitor.log.String())
			}
		}
	}

	deadline := time.Now().Add(30 * time.Second)
	for len(ackedNow()) < beforeMin {
		if time.Now().After(deadline) {
			t.Fatalf("only %d FAST creates acknowledged in 30s before the outage: %v", len(ackedNow()), made)
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := len(ackedNow())
	stopping := time.Now()
	suiteKube.stopAPIServer(t)
	down := time.Now()
	for time.Since(down) < outage {
		present("during the outage")
		time.Sleep(250 * time.Millisecond)
	}
	present("at the end of the outage")
	passes := metricSum(t, janitor.metrics, "fsb_janitor_passes_total")
	starting := time.Now()
	suiteKube.startAPIServer(t)
	up := time.Now()

	// Creates resume once a write lands: wait for one acknowledged after
	// the restart, then stop the load.
	var resumed time.Duration
	deadline = time.Now().Add(30 * time.Second)
	for resumed == 0 {
		mu.Lock()
		for _, c := range made {
			if c.err == nil && c.start.After(up) {
				resumed = c.end.Sub(up)
			}
		}
		mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no FAST create acknowledged within 30s of the API server's restart")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopLoad()
	wg.Wait()

	// During the outage: creates were refused with Unavailable from the
	// first refusal on, and nothing acknowledged from then on.
	var firstRefusal time.Time
	var duringAcked int
	for _, c := range made {
		if c.end.Before(stopping) || c.start.After(starting) {
			continue
		}
		switch {
		case c.err == nil:
			duringAcked++
		// With leader election a replica that cannot renew its Lease for
		// the renew deadline stops leading; its answer says so instead.
		case connect.CodeOf(c.err) == connect.CodeUnavailable &&
			(strings.Contains(c.err.Error(), "the store is unreachable") || strings.Contains(c.err.Error(), "leader")):
			if firstRefusal.IsZero() || c.end.Before(firstRefusal) {
				firstRefusal = c.end
			}
		default:
			t.Errorf("create %s during the outage: %v, want acknowledged or Unavailable saying the store is unreachable (or that the replica does not lead)", c.name, c.err)
		}
	}
	if firstRefusal.IsZero() {
		t.Fatalf("no FAST create was refused during a %s outage (%d acknowledged meanwhile)", outage, duringAcked)
	}
	// From the first refusal on, once the API server is stopped (a server
	// shutting down still answers some writes) and until it is started
	// again (it takes writes before it is ready), nothing is acknowledged.
	from := firstRefusal
	if from.Before(down) {
		from = down
	}
	refusedWhileDown := 0
	for _, c := range made {
		if !c.start.After(from) || !c.end.Before(starting) {
			continue
		}
		if c.err == nil {
			t.Errorf("create %s was acknowledged %s into the outage, after creates were refused", c.name, c.start.Sub(down))
		}
		refusedWhileDown++
	}
	if refusedWhileDown == 0 {
		t.Errorf("no create was made while the API server was down")
	}

	// After the restart: every acknowledged sandbox has its object, with
	// its placement, and its container.
	objects, err := store.NewKube(cfg)
	if err != nil {
		t.Fatal(err)
	}
	all := ackedNow()
	var missing []string
	deadline = time.Now().Add(30 * time.Second)
	for {
		missing = missing[:0]
		for name, id := range all {
			sb, err := objects.Get(context.Background(), ns, name)
			if err != nil || sb.Annotations[v1alpha1.AnnotationID] != id || sb.Annotations[v1alpha1.AnnotationAgent] != "agent-1" ||
				sb.Annotations[v1alpha1.AnnotationRevision] != "1" {
				missing = append(missing, fmt.Sprintf("%s(%v)", name, err))
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	landed := time.Since(up)
	if len(missing) > 0 {
		t.Fatalf("30s after the API server's restart, acknowledged sandboxes without their object: %v", missing)
	}
	present("after the restart")
	if n := metricSum(t, janitor.metrics, "fsb_janitor_reaped_total"); n != 0 {
		t.Errorf("the janitor reaped %d things; want none\n%s", n, janitor.log.String())
	}
	if passes < 3 {
		t.Errorf("the janitor made %d passes by the outage's end, want a few during it", passes)
	}
	if strings.Contains(ctrl.log.String(), "refused a FAST sandbox's object for good") {
		t.Errorf("the controller removed a sandbox on a refusal during the outage")
	}
	t.Logf("%d acknowledged before the outage, %d from when the API server began to stop until it was started again (%d in all); "+
		"FAST creates Unavailable %s after it began to stop (it took %s to stop), and all %d made while it was down; "+
		"outage %s with the janitor at --orphan-timeout %s (%d passes); the API server took %s to start; "+
		"creates acknowledged again %s after it was ready; every object landed within %s of that",
		before, duringAcked, len(all), firstRefusal.Sub(stopping).Round(time.Millisecond), down.Sub(stopping).Round(time.Millisecond),
		refusedWhileDown, outage, orphanTimeout, passes, up.Sub(starting).Round(time.Millisecond),
		resumed.Round(time.Millisecond), landed.Round(time.Millisecond))
}

// janitorLoop is `fsb janitor` running a pass every 500 ms.
type janitorLoop struct {
	log     *rig.Buffer
	metrics string
}

// startJanitor starts the janitor's loop for containerd namespace ns
// against the controller at server, and waits until its first pass has
// ended; the test's end kills it.
func startJanitor(t *testing.T, server, tokenFile, ns, logDir string, orphanTimeout time.Duration) *janitorLoop {
	t.Helper()
	port := freePort(t)
	j := &janitorLoop{log: &rig.Buffer{}, metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", port)}
	cmd := exec.Command(rig.FsbBinary(t), "janitor", "--orphan-timeout", orphanTimeout.String(), "--interval", "500ms",
		"--server", server, "--token-file", tokenFile,
		"--containerd-socket", rig.Env(t, rig.EnvSocket), "--containerd-namespace", ns,
		"--log-dir", logDir, "--log-format", "json", "--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", port))
	cmd.Stdout, cmd.Stderr = j.log, j.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	waitReady(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/readyz", port), j.log)
	return j
}

// containersByID returns the sandbox IDs of the containers in ns.
func containersByID(t *testing.T, cd *containerd.Client, ns string) map[string]bool {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	cs, err := cd.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, c := range cs {
		labels, err := c.Labels(ctx)
		if err != nil {
			continue // removed meanwhile
		}
		out[labels[runtime.LabelID]] = true
	}
	return out
}
