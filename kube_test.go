//go:build !fsbhelper

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// kubePlane is a controller on the kube store of an API server private to
// the test (a controller adopts every Sandbox it can see, so it must not
// share a server with other tests' objects), over one agent.
type kubePlane struct {
	t      *testing.T
	kube   *rig.KubeServer
	ns     string      // the test's Kubernetes namespace
	store  *store.Kube // the test's own view of the objects
	ctrl   *controllerProc
	server string
	agent  *agentProc
	cd     *containerd.Client
	cns    string // the agent's containerd namespace
}

func startKubePlane(t *testing.T, extra ...string) *kubePlane {
	t.Helper()
	cd, cns := rig.Containerd(t)
	dir := t.TempDir()
	a := startAgent(t, cns, "agent-1", dir)
	ks := rig.StartKube(t)
	ctrl, server := newControllerProc(t, dir, a, extra...)
	useKubeStore(t, ctrl, ks.Kubeconfig)
	ctrl.start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log:\n%s", ctrl.log.String())
			t.Logf("agent log:\n%s", a.stderr.String())
		}
	})
	st, err := store.NewKube(ks.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &kubePlane{t: t, kube: ks, ns: ks.Namespace(t), store: st, ctrl: ctrl, server: server, agent: a, cd: cd, cns: cns}
}

// useKubeStore turns a controller's arguments from the embedded store to the
// kube store on kubeconfig. Leader election, where the binary has it, is
// off: a controller killed with SIGKILL would hold its lease for the lease's
// whole duration, and leader_test.go tests that.
func useKubeStore(t *testing.T, ctrl *controllerProc, kubeconfig string) {
	t.Helper()
	for i, arg := range ctrl.args {
		if arg == "--store" {
			ctrl.args[i+1] = "kube"
		}
	}
	ctrl.args = append(ctrl.args, "--kubeconfig", kubeconfig)
	if help, _ := fsb(t, "controller", "--help"); strings.Contains(help, "--leader-elect ") {
		ctrl.args = append(ctrl.args, "--leader-elect=false")
	}
}

func (p *kubePlane) ctl(args ...string) (stdout, stderr string, code int) {
	p.t.Helper()
	return runCtl(p.t, p.server, "user-token-1", append([]string{"--namespace", p.ns}, args...)...)
}

func (p *kubePlane) mustCtl(args ...string) string {
	p.t.Helper()
	out, errOut, code := p.ctl(args...)
	if code != 0 {
		p.t.Fatalf("fsb ctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (p *kubePlane) kubectl(args ...string) string {
	p.t.Helper()
	out, err := p.kube.Kubectl(p.t, append(args, "--namespace", p.ns)...)
	if err != nil {
		p.t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// statusPuts is the API server's count of PUTs to sandboxes/status (its
// apiserver_request_total metric): every status update the controller sent.
func (p *kubePlane) statusPuts() int {
	p.t.Helper()
	client, err := rest.HTTPClientFor(p.kube.Config)
	if err != nil {
		p.t.Fatal(err)
	}
	resp, err := client.Get(p.kube.Config.Host + "/metrics")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		p.t.Fatalf("API server metrics: HTTP %d, %v", resp.StatusCode, err)
	}
	n := 0
	for line := range strings.Lines(string(body)) {
		if !strings.HasPrefix(line, "apiserver_request_total{") ||
			!strings.Contains(line, `resource="sandboxes"`) || !strings.Contains(line, `subresource="status"`) || !strings.Contains(line, `verb="PUT"`) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[strings.LastIndex(line, " "):]), 64)
		if err != nil {
			p.t.Fatalf("metric line %q: %v", line, err)
		}
		n += int(v)
	}
	return n
}

// waitObject polls the object until ok says yes.
func (p *kubePlane) waitObject(name string, timeout time.Duration, what string, ok func(*v1alpha1.Sandbox) bool) *v1alpha1.Sandbox {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	var last *v1alpha1.Sandbox
	var err error
	for time.Now().Before(deadline) {
		if last, err = p.store.Get(context.Background(), p.ns, name); err == nil && ok(last) {
			return last
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatalf("sandbox %s/%s: not %s within %s; last: %+v (%v)", p.ns, name, what, timeout, last, err)
	return nil
}

func phase(ph v1alpha1.Phase) func(*v1alpha1.Sandbox) bool {
	return func(sb *v1alpha1.Sandbox) bool { return sb.Status.Phase == ph }
}

// watchFromNow watches the test's namespace from the current state on.
func (p *kubePlane) watchFromNow() watch.Interface {
	p.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p.t.Cleanup(cancel)
	w, err := p.store.Watch(ctx, p.ns, "")
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(w.Stop)
	return w
}

// next returns the next event about name, skipping others.
func next(t *testing.T, w watch.Interface, name string, timeout time.Duration) watch.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("the watch ended before an event about %s", name)
			}
			sb, isSandbox := e.Object.(*v1alpha1.Sandbox)
			if !isSandbox {
				t.Fatalf("watch event %s %v", e.Type, e.Object)
			}
			if sb.Name == name {
				return e
			}
		case <-deadline:
			t.Fatalf("no watch event about %s within %s", name, timeout)
		}
	}
}

// TestKubeStoreEndToEnd runs the controller on a real API server: Sandboxes
// applied and deleted with the pinned kubectl, STRONG and FAST creates
// through fsb ctl and the order in which their objects and containers
// appear, a controller killed and started again, status writes only when
// something changed, and the Events kubectl shows.
func TestKubeStoreEndToEnd(t *testing.T) {
	p := startKubePlane(t, "--resync-period", "1s")
	ctx := context.Background()

	t.Run("kubectl apply runs the sandbox", func(t *testing.T) {
		manifest := filepath.Join(t.TempDir(), "sandbox.yaml")
		yaml := fmt.Sprintf(`apiVersion: sandbox.fast.io/v1alpha1
kind: Sandbox
metadata:
  name: applied
spec:
  image: %s
  command: ["sh", "-c", "echo hello from kubectl; exec sleep 300"]
`, rig.ImageRef)
		if err := os.WriteFile(manifest, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		p.kubectl("apply", "-f", manifest)
		sb := p.waitObject("applied", 20*time.Second, "Running", phase(v1alpha1.PhaseRunning))
		if sb.Status.AssignedPod != "agent-1" || sb.Status.SandboxID == "" || sb.Status.Revision != 1 {
			t.Errorf("status %+v, want revision 1 of a sandbox ID on agent-1", sb.Status)
		}
		running := 0
		for _, st := range revisions(t, p.cd, p.cns, sb.Status.SandboxID) {
			if st == containerd.Running {
				running++
			}
		}
		if running != 1 {
			t.Errorf("containerd runs %d containers of %s, want 1", running, sb.Status.SandboxID)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, _, _ := p.ctl("logs", "applied")
			if strings.Contains(out, "hello from kubectl") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("fsb ctl logs applied = %q, want the sandbox's output", out)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if out := p.kubectl("get", "sbx", "applied"); !strings.Contains(out, "Running") {
			t.Errorf("kubectl get sbx applied:\n%s\nwant it Running", out)
		}
	})

	t.Run("a steady sandbox's status is not written again", func(t *testing.T) {
		// With --resync-period 1s every sandbox is synced each second, and
		// the agent reports every 2 s: none of that may send a status (the
		// API server's count of status PUTs stays), let alone write one
		// (the resourceVersion stays).
		before := p.waitObject("applied", 10*time.Second, "Running", phase(v1alpha1.PhaseRunning))
		puts := p.statusPuts()
		if puts == 0 {
			t.Fatal("the API server counted no status update, though the controller wrote Bound and Running")
		}
		time.Sleep(3 * time.Second)
		after, err := p.store.Get(ctx, p.ns, "applied")
		if err != nil {
			t.Fatal(err)
		}
		if after.ResourceVersion != before.ResourceVersion {
			t.Errorf("resourceVersion %s -> %s over 3 s of a steady sandbox: status %+v -> %+v",
				before.ResourceVersion, after.ResourceVersion, before.Status, after.Status)
		}
		if n := p.statusPuts() - puts; n != 0 {
			t.Errorf("the controller sent %d status updates over 3 s of a steady sandbox, want none", n)
		}
	})

	t.Run("kubectl delete removes the container before the object", func(t *testing.T) {
		sb, err := p.store.Get(ctx, p.ns, "applied")
		if err != nil {
			t.Fatal(err)
		}
		id := sb.Status.SandboxID
		w := p.watchFromNow()
		p.kubectl("delete", "sbx", "applied", "--wait=false")
		for {
			e := next(t, w, "applied", 20*time.Second)
			if e.Type != watch.Deleted {
				continue
			}
			// The object is gone this instant: its container must be too.
			if left := revisions(t, p.cd, p.cns, id); len(left) != 0 {
				t.Errorf("the object went while containerd still held %v", left)
			}
			break
		}
		if _, err := p.kube.Kubectl(t, "get", "sbx", "applied", "--namespace", p.ns); err == nil {
			t.Error("kubectl get sbx applied found it after the delete")
		}
	})

	t.Run("a STRONG create is an object before its container exists", func(t *testing.T) {
		// The agent is stopped (SIGSTOP) while the controller places the
		// sandbox: the object, with Bound persisted, must exist while the
		// agent cannot have made anything, and the container comes after.
		w := p.watchFromNow()
		if err := p.agent.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				_ = p.agent.cmd.Process.Signal(syscall.SIGCONT)
			}
		}
		defer resume()
		created := make(chan string, 1)
		go func() {
			out, errOut, code := runCtl(t, p.server, "user-token-1", "run", "strong", "--image", rig.ImageRef, "--mode", "strong",
				"--namespace", p.ns, "--", "sh", "-c", "echo strong; exec sleep 300")
			created <- fmt.Sprintf("exit %d\n%s%s", code, out, errOut)
		}()
		first := next(t, w, "strong", 10*time.Second)
		if first.Type != watch.Added {
			t.Fatalf("first event about strong: %s, want ADDED", first.Type)
		}
		var bound *v1alpha1.Sandbox
		for e := first; ; e = next(t, w, "strong", 10*time.Second) {
			if sb := e.Object.(*v1alpha1.Sandbox); sb.Status.Phase == v1alpha1.PhaseBound {
				bound = sb
				break
			}
		}
		// Give a create that would not wait for Bound time to show up.
		time.Sleep(300 * time.Millisecond)
		if got := revisions(t, p.cd, p.cns, bound.Status.SandboxID); len(got) != 0 {
			t.Fatalf("containerd holds %v of %s before the agent could act", got, bound.Status.SandboxID)
		}
		select {
		case out := <-created:
			t.Fatalf("the STRONG create answered while its agent was stopped: %s", out)
		default:
		}
		resume()
		select {
		case out := <-created:
			if !strings.HasPrefix(out, "exit 0") {
				t.Fatalf("fsb ctl run --mode strong: %s", out)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the STRONG create did not answer after the agent resumed")
		}
		if got := revisions(t, p.cd, p.cns, bound.Status.SandboxID); len(got) != 1 {
			t.Errorf("containerd holds %v of %s after the create, want one container", got, bound.Status.SandboxID)
		}
	})

	var fastID string
	t.Run("a FAST object's first ADDED carries its placement", func(t *testing.T) {
		w := p.watchFromNow()
		p.mustCtl("run", "fast", "--image", rig.ImageRef, "--mode", "fast", "--", "sh", "-c", "echo fast; exec sleep 300")
		e := next(t, w, "fast", 10*time.Second)
		sb := e.Object.(*v1alpha1.Sandbox)
		if e.Type != watch.Added {
			t.Fatalf("first event about fast: %s, want ADDED", e.Type)
		}
		for _, a := range []string{v1alpha1.AnnotationID, v1alpha1.AnnotationAgent, v1alpha1.AnnotationRevision} {
			if sb.Annotations[a] == "" {
				t.Errorf("the first ADDED of a FAST object has no %s: %v", a, sb.Annotations)
			}
		}
		fastID = sb.Annotations[v1alpha1.AnnotationID]
	})

	t.Run("after a controller restart the agent holds one container per sandbox", func(t *testing.T) {
		// Killed right after a FAST create was acknowledged: its object may
		// or may not be written; the recovery makes sure it is, once.
		p.mustCtl("run", "fast-kill", "--image", rig.ImageRef, "--mode", "fast", "--", "sh", "-c", "exec sleep 300")
		p.ctrl.kill()
		p.ctrl.start()
		killed := p.waitObject("fast-kill", 20*time.Second, "Running", phase(v1alpha1.PhaseRunning))
		p.waitObject("fast", 10*time.Second, "Running", phase(v1alpha1.PhaseRunning))
		p.waitObject("strong", 10*time.Second, "Running", phase(v1alpha1.PhaseRunning))
		for _, id := range []string{fastID, killed.Status.SandboxID} {
			if got := revisions(t, p.cd, p.cns, id); len(got) != 1 {
				t.Errorf("containerd holds %d containers of %s after the restart, want 1: %v", len(got), id, got)
			}
		}
		list, err := p.store.List(ctx, p.ns, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 3 {
			t.Errorf("%d objects after the restart, want 3 (strong, fast, fast-kill)", len(list.Items))
		}
	})

	t.Run("kubectl shows the Events", func(t *testing.T) {
		want := []string{
			"Placed", "placed on agent agent-1", // kubectl's and STRONG: the controller placed them
			"placed by the fast path on agent agent-1", // FAST
			"Removed", // kubectl delete
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			out := p.kubectl("get", "events", "-o", "custom-columns=REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message")
			missing := ""
			for _, w := range want {
				if !strings.Contains(out, w) {
					missing = w
					break
				}
			}
			if missing == "" {
				t.Logf("kubectl get events:\n%s", out)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("kubectl get events shows no %q:\n%s", missing, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}
