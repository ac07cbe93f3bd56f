package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// TestPodsReady: the controller Deployment's two pods, the agent's and the
// janitor's DaemonSet pods are Ready; exactly one controller pod carries
// the leader label, and the fsb-controller Service's endpoints are that
// pod alone, which serves the fast path through the host's forwarder.
func TestPodsReady(t *testing.T) {
	e := cluster(t)
	start := time.Now()
	leader, agent := e.whole(t)
	t.Logf("whole after %s: leader %s (%s), agent %s (%s)", time.Since(start).Round(time.Millisecond),
		leader.Name, leader.Status.PodIP, agent.Name, agent.Status.PodIP)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Who owns the pods: the Deployment's ReplicaSet, the DaemonSets.
	for _, c := range []struct{ component, kind, owner string }{
		{"controller", "ReplicaSet", "fsb-controller-"},
		{"agent", "DaemonSet", "fsb-agent"},
		{"janitor", "DaemonSet", "fsb-janitor"},
	} {
		pods, err := e.pods(ctx, c.component)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods {
			ref := metav1.GetControllerOf(&p)
			if ref == nil || ref.Kind != c.kind || !strings.HasPrefix(ref.Name, c.owner) {
				t.Errorf("pod %s is owned by %v, want a %s named %s…", p.Name, ref, c.kind, c.owner)
			}
		}
	}
	dep, err := e.cs.AppsV1().Deployments(e.Namespace).Get(ctx, "fsb-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dep.Status.ReadyReplicas != 2 {
		t.Errorf("deployment fsb-controller has %d ready replicas, want 2", dep.Status.ReadyReplicas)
	}
	for _, name := range []string{"fsb-agent", "fsb-janitor"} {
		ds, err := e.cs.AppsV1().DaemonSets(e.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ds.Status.DesiredNumberScheduled != 1 || ds.Status.NumberReady != 1 {
			t.Errorf("daemonset %s: %d desired, %d ready, want 1 of 1 (one node)", name, ds.Status.DesiredNumberScheduled, ds.Status.NumberReady)
		}
	}

	// The Service targets the leader alone. Endpoints follow the label
	// through the endpoint-slice controller: poll briefly.
	var got []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		got = serviceEndpoints(ctx, t, e.cs, e.Namespace, "fsb-controller")
		if slices.Equal(got, []string{leader.Name}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service fsb-controller has ready endpoints %v, want only the leader %s", got, leader.Name)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// And the leader answers through the forwarder.
	callStart := time.Now()
	if _, err := e.fastPath(t).ListSandboxes(ctx, connect.NewRequest(&fsbv1.ListSandboxesRequest{Namespace: "default"})); err != nil {
		t.Fatalf("ListSandboxes through %s: %v", e.Server, err)
	}
	t.Logf("ListSandboxes through the Service's forwarder answered in %s", time.Since(callStart).Round(time.Millisecond))
}

// serviceEndpoints returns the names of the pods behind a Service's ready
// endpoints, sorted.
func serviceEndpoints(ctx context.Context, t testing.TB, cs kubernetes.Interface, ns, service string) []string {
	t.Helper()
	list, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		t.Fatal(err)
	}
	var pods []string
	for _, s := range list.Items {
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			name := strings.Join(ep.Addresses, ",")
			if ep.TargetRef != nil {
				name = ep.TargetRef.Name
			}
			pods = append(pods, name)
		}
	}
	slices.Sort(pods)
	return pods
}

// TestRBAC: what each role's ServiceAccount may do, as the API server
// answers `kubectl auth can-i --list`, is exactly the committed
// expectation deploy/rbac/expected/<role>.txt; and a verb outside it is
// refused for real to a token of that ServiceAccount.
func TestRBAC(t *testing.T) {
	e := cluster(t)
	for _, role := range []string{"controller", "agent", "janitor"} {
		t.Run(role, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(e.root, "deploy", "rbac", "expected", role+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			got := e.mustKubectl(t, "auth", "can-i", "--list", "-n", e.Namespace,
				"--as=system:serviceaccount:"+e.Namespace+":fsb-"+role)
			if got != string(want) {
				t.Errorf("kubectl auth can-i --list for fsb-%s differs from deploy/rbac/expected/%s.txt (-want +got):\n%s",
					role, role, lineDiff(string(want), got))
			}
		})
	}

	// Real requests with a real token of each ServiceAccount. Refusals are
	// tried as dry runs: authorization is checked all the same, and a
	// wrongly allowed delete would not take the node down with it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nodes, err := e.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v (%d), want one", err, len(nodes.Items))
	}
	node := nodes.Items[0].Name
	dryRun := []string{metav1.DryRunAll}
	for _, c := range []struct {
		account string
		what    string
		do      func(context.Context, kubernetes.Interface, *store.Kube) error
		allowed bool
	}{
		{"fsb-controller", "list sandboxes in every namespace", func(ctx context.Context, _ kubernetes.Interface, st *store.Kube) error {
			_, err := st.List(ctx, "", nil)
			return err
		}, true},
		{"fsb-controller", "list pods in fsb-system", func(ctx context.Context, cs kubernetes.Interface, _ *store.Kube) error {
			_, err := cs.CoreV1().Pods(e.Namespace).List(ctx, metav1.ListOptions{})
			return err
		}, true},
		{"fsb-controller", "get secret fsb-controller", func(ctx context.Context, cs kubernetes.Interface, _ *store.Kube) error {
			_, err := cs.CoreV1().Secrets(e.Namespace).Get(ctx, "fsb-controller", metav1.GetOptions{})
			return err
		}, false},
		{"fsb-controller", "delete node " + node, func(ctx context.Context, cs kubernetes.Interface, _ *store.Kube) error {
			return cs.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{DryRun: dryRun})
		}, false},
		{"fsb-controller", "delete pods in fsb-system", func(ctx context.Context, cs kubernetes.Interface, _ *store.Kube) error {
			return cs.CoreV1().Pods(e.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{DryRun: dryRun}, metav1.ListOptions{})
		}, false},
		{"fsb-agent", "list sandboxes in fsb-system", func(ctx context.Context, _ kubernetes.Interface, st *store.Kube) error {
			_, err := st.List(ctx, e.Namespace, nil)
			return err
		}, false},
		{"fsb-janitor", "list pods in fsb-system", func(ctx context.Context, cs kubernetes.Interface, _ *store.Kube) error {
			_, err := cs.CoreV1().Pods(e.Namespace).List(ctx, metav1.ListOptions{})
			return err
		}, false},
	} {
		t.Run(c.account+": "+c.what, func(t *testing.T) {
			token := strings.TrimSpace(e.mustKubectl(t, "create", "token", c.account, "-n", e.Namespace, "--duration=10m"))
			cfg := &rest.Config{Host: e.config.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{
				CAFile: e.config.CAFile, CAData: e.config.CAData, ServerName: e.config.ServerName}, QPS: -1}
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			st, err := store.NewKube(cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = c.do(ctx, cs, st)
			switch {
			case c.allowed && err != nil:
				t.Errorf("%s as %s: %v, want it allowed", c.what, c.account, err)
			case !c.allowed && !apierrors.IsForbidden(err):
				t.Errorf("%s as %s: %v, want Forbidden", c.what, c.account, err)
			default:
				t.Logf("%s as %s: %v", c.what, c.account, errOrOK(err))
			}
		})
	}
}

func errOrOK(err error) string {
	if err == nil {
		return "allowed"
	}
	return err.Error()
}

// lineDiff is a minimal line diff of want and got: "-" lines only in want,
// "+" lines only in got, "  " lines in both (longest common subsequence).
func lineDiff(want, got string) string {
	a, b := strings.Split(want, "\n"), strings.Split(got, "\n")
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			fmt.Fprintf(&out, "  %q\n", a[i])
			i, j = i+1, j+1
		case j < len(b) && (i == len(a) || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(&out, "+ %q\n", b[j])
			j++
		default:
			fmt.Fprintf(&out, "- %q\n", a[i])
			i++
		}
	}
	return out.String()
}

// TestSampleSandbox: deploy/samples/sandbox.yaml, applied with kubectl
// into a namespace of the test's, reaches Running, and its endpoint
// answers from inside the cluster's network.
func TestSampleSandbox(t *testing.T) {
	e := cluster(t)
	_, agent := e.whole(t)
	ns := e.namespace(t)

	raw, err := os.ReadFile(filepath.Join(e.root, "deploy", "samples", "sandbox.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var obj unstructured.Unstructured
	if err := yaml.Unmarshal(raw, &obj.Object); err != nil {
		t.Fatalf("deploy/samples/sandbox.yaml: %v", err)
	}
	if obj.GetKind() != "Sandbox" {
		t.Fatalf("deploy/samples/sandbox.yaml holds a %s, want a Sandbox", obj.GetKind())
	}
	obj.SetNamespace(ns)
	manifest, err := yaml.Marshal(obj.Object)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	if _, err := e.kubectlIn(ctx, manifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	name := obj.GetName()
	sb := e.waitSandbox(t, ns, name, 2*time.Minute, "Running with an endpoint", func(sb *v1alpha1.Sandbox) bool {
		return sb.Status.Phase == v1alpha1.PhaseRunning && len(sb.Status.Endpoints) > 0
	})
	running := time.Since(start)
	t.Logf("kubectl apply -> Running in %s: %s", running.Round(time.Millisecond), describe(sb))
	if sb.Status.AssignedPod != string(agent.UID) {
		t.Errorf("the sample runs on agent %q, want the agent pod's UID %s", sb.Status.AssignedPod, agent.UID)
	}
	for _, ep := range sb.Status.Endpoints {
		if !strings.HasPrefix(ep, agent.Status.PodIP+":") {
			t.Errorf("endpoint %s is not on the agent pod's IP %s", ep, agent.Status.PodIP)
		}
	}

	ep := sb.Status.Endpoints[0]
	reply := e.answer(t, ep, time.Minute)
	t.Logf("endpoint %s answered from inside the cluster network %s after Running (first line %q)",
		ep, time.Since(start.Add(running)).Round(time.Millisecond), firstLine(reply))
}

// answer sends an HTTP request to endpoint from inside the cluster's
// network namespace (busybox nc, run there by `ip netns exec`) until it
// answers, and returns the answer.
func (e *env) answer(t testing.TB, endpoint string, within time.Duration) string {
	t.Helper()
	host, port, ok := strings.Cut(endpoint, ":")
	if !ok {
		t.Fatalf("endpoint %q is not host:port", endpoint)
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox: %v (install busybox-static, as the rig does)", err)
	}
	var last string
	for deadline := time.Now().Add(within); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := e.inNetns(ctx, busybox, "nc", "-w", "3", host, port)
		cmd.Stdin = strings.NewReader("GET / HTTP/1.0\r\nHost: " + endpoint + "\r\n\r\n")
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		err := cmd.Run()
		cancel()
		if out.Len() > 0 {
			return out.String()
		}
		last = fmt.Sprintf("%v: %s", err, strings.TrimSpace(stderr.String()))
		if time.Now().After(deadline) {
			t.Fatalf("endpoint %s did not answer from inside the cluster network within %s; last: %s", endpoint, within, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

// TestCtl: bin/fsb ctl, pointed at the cluster's controller through the
// Service's forwarder (FSB_SERVER, FSB_TOKEN, FSB_CA_FILE), runs a
// sandbox, lists it, shows its output and deletes it.
func TestCtl(t *testing.T) {
	e := cluster(t)
	e.whole(t)
	ns := e.namespace(t)
	fsb := filepath.Join(e.root, "bin", "fsb")
	if p := os.Getenv("FSB_BINARY"); p != "" {
		fsb = p
	}
	if _, err := os.Stat(fsb); err != nil {
		t.Fatalf("%v: run `make build`", err)
	}
	config := t.TempDir()
	ctl := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, fsb, append([]string{"ctl"}, args...)...)
		cmd.Env = append(os.Environ(), "FSB_SERVER="+e.Server, "FSB_TOKEN="+e.Token, "FSB_CA_FILE="+e.CAFile,
			"FSB_NAMESPACE="+ns, "XDG_CONFIG_HOME="+config)
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			return out.String(), fmt.Errorf("fsb ctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return out.String(), nil
	}
	const name, line = "ctl-hello", "hello from the cluster"

	start := time.Now()
	out, err := ctl("run", name, "--image", testImage, "--", "sh", "-c", "echo '"+line+"'; exec sleep 3600")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fsb ctl run answered in %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))

	list, err := ctl("list")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list, name) {
		t.Errorf("fsb ctl list does not show %s:\n%s", name, list)
	}

	var logs string
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs, line); {
		if logs, err = ctl("logs", name); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("fsb ctl logs %s does not show %q after 30s:\n%s", name, line, logs)
		}
		if !strings.Contains(logs, line) {
			time.Sleep(250 * time.Millisecond)
		}
	}

	t.Logf("fsb ctl logs: %q", strings.TrimSpace(logs))

	// The object exists for kubectl too, then goes with the delete.
	e.waitSandbox(t, ns, name, time.Minute, "recorded", func(*v1alpha1.Sandbox) bool { return true })
	delStart := time.Now()
	if _, err := ctl("delete", name); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := e.sandbox(ctx, ns, name)
		cancel()
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s/%s is still there a minute after fsb ctl delete: %v", ns, name, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if out, err := e.kubectl(context.Background(), "get", "sandboxes.sandbox.fast.io", "-n", ns, "-o", "name"); err != nil || strings.Contains(out, name) {
		t.Errorf("kubectl get sandboxes after the delete: %q, %v", out, err)
	}
	t.Logf("fsb ctl delete -> gone from the API server in %s", time.Since(delStart).Round(time.Millisecond))
}
