// Package cluster holds the end-to-end tests of Kubernetes mode on a real
// node: TestMain brings up one single-node cluster through scripts/cluster.sh
// (pkg/rig's UpCluster) with deploy/overlays/test applied — the controller
// Deployment, the agent and janitor DaemonSets — runs the tests against it
// and takes it down whatever happens.
//
// The tests talk only to the cluster's forwarders on 127.0.0.1 (the API
// server, the fsb-controller Service) and, through `ip netns exec`, to
// addresses inside the cluster's own network namespace.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/auth"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

const (
	// systemNamespace is where deploy/ installs Fast Sandbox.
	systemNamespace = "fsb-system"
	// testImage is the busybox image the rig imports into the node.
	testImage = "localhost/fsb/busybox:latest"

	labelName      = "app.kubernetes.io/name"
	labelComponent = "app.kubernetes.io/component"
	labelLeader    = "sandbox.fast.io/leader"
	labelPool      = "sandbox.fast.io/pool"

	// readyTimeout bounds the wait for the installation to be whole
	// again (every pod Ready, a leader serving) at the start of a test.
	readyTimeout = 3 * time.Minute
	// callTimeout bounds one fast-path call.
	callTimeout = 30 * time.Second
)

const clusterAdvice = "this package needs a real single-node cluster, which it starts itself through " +
	"scripts/cluster.sh (as root, with `make build` done and the rig's packages installed); " +
	"run `make build && scripts/test.sh -count=1 -timeout 15m ./test/cluster/`, " +
	"or bring one up by hand with `scripts/cluster.sh up DIR --overlay deploy/overlays/test` and see why it fails"

// env is the cluster TestMain started, as scripts/cluster.sh describes it
// in DIR/env.
type env struct {
	Kubeconfig string // KUBECONFIG: the admin kubeconfig, through the host forwarder
	Kubectl    string // FSB_KUBECTL: the pinned kubectl
	Server     string // FSB_SERVER: https://127.0.0.1:PORT, the fsb-controller Service's forwarder
	Token      string // FSB_TOKEN: a user token of the controller
	CAFile     string // FSB_CA_FILE: the CA of the controller's certificate
	Dir        string // FSB_CLUSTER_DIR
	Netns      string // FSB_CLUSTER_NETNS: the cluster's network namespace
	Containerd string // FSB_CLUSTER_CONTAINERD: the CRI containerd's socket
	Namespace  string // FSB_CLUSTER_NAMESPACE: fsb-system

	root   string // the repository
	config *rest.Config
	cs     kubernetes.Interface
	store  *store.Kube
}

// cl is the package's cluster; TestMain sets it or the run fails.
var cl *env

// upErr is why the cluster did not come up; every test then fails with it.
var upErr error

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

// envReuse names the directory of a cluster already up (scripts/cluster.sh
// up DIR --overlay deploy/overlays/test) for the tests to use and leave
// running: quicker when working on them by hand.
const envReuse = "FSB_TEST_CLUSTER"

func run(m *testing.M) int {
	start := time.Now()
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster: %v\n", err)
		return 1
	}
	if dir := os.Getenv(envReuse); dir != "" {
		cl, upErr = loadEnv(root, filepath.Join(dir, "env"))
		if upErr != nil {
			upErr = fmt.Errorf("%s=%s: %w", envReuse, dir, upErr)
		}
		code := m.Run()
		fmt.Fprintf(os.Stderr, "cluster: tests on the cluster in %s took %s\n", dir, time.Since(start).Round(100*time.Millisecond))
		return code
	}
	// Short: the rig keeps sockets under it.
	dir, err := os.MkdirTemp("/tmp", "fsbc.")
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster: %v\n", err)
		return 1
	}
	c, err := rig.UpCluster(dir, filepath.Join(root, "deploy", "overlays", "test"))
	up := time.Since(start)
	if err != nil {
		upErr = fmt.Errorf("the cluster did not come up (%s): %w; %s", up.Round(time.Second), err, clusterAdvice)
		fmt.Fprintf(os.Stderr, "cluster: %v\n", upErr)
		if c == nil {
			os.RemoveAll(dir)
		}
	} else {
		fmt.Fprintf(os.Stderr, "cluster: up in %s (%s)\n", up.Round(100*time.Millisecond), dir)
		cl, upErr = loadEnv(root, filepath.Join(dir, "env"))
	}
	testsStart := time.Now()
	code := m.Run()
	tests := time.Since(testsStart)
	downStart := time.Now()
	if c != nil {
		if err := c.Down(); err != nil {
			fmt.Fprintf(os.Stderr, "cluster: down: %v\n", err)
			code = 1
		}
	}
	fmt.Fprintf(os.Stderr, "cluster: up %s, tests %s, down %s, in all %s\n", up.Round(100*time.Millisecond),
		tests.Round(100*time.Millisecond), time.Since(downStart).Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	return code
}

// repoRoot finds the repository from the package's directory.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

// loadEnv reads the `export NAME=VALUE` lines scripts/cluster.sh writes.
func loadEnv(root, path string) (*env, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("the cluster's env: %w", err)
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export "))
		name, value, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		vars[name] = strings.Trim(value, `'"`)
	}
	e := &env{
		Kubeconfig: vars["KUBECONFIG"], Kubectl: vars["FSB_KUBECTL"], Server: vars["FSB_SERVER"],
		Token: vars["FSB_TOKEN"], CAFile: vars["FSB_CA_FILE"], Dir: vars["FSB_CLUSTER_DIR"],
		Netns: vars["FSB_CLUSTER_NETNS"], Containerd: vars["FSB_CLUSTER_CONTAINERD"],
		Namespace: vars["FSB_CLUSTER_NAMESPACE"], root: root,
	}
	for name, v := range map[string]string{"KUBECONFIG": e.Kubeconfig, "FSB_KUBECTL": e.Kubectl, "FSB_SERVER": e.Server,
		"FSB_TOKEN": e.Token, "FSB_CA_FILE": e.CAFile, "FSB_CLUSTER_NETNS": e.Netns, "FSB_CLUSTER_CONTAINERD": e.Containerd} {
		if v == "" {
			return nil, fmt.Errorf("%s does not set %s", path, name)
		}
	}
	if e.Namespace == "" {
		e.Namespace = systemNamespace
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", e.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("the cluster's kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = -1, 0 // a private server: no client-side limit
	if e.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if e.store, err = store.NewKube(cfg); err != nil {
		return nil, err
	}
	e.config = cfg
	return e, nil
}

// cluster returns the package's cluster, failing t with the way to get
// one when it did not come up.
func cluster(t testing.TB) *env {
	t.Helper()
	if cl == nil {
		if upErr == nil {
			upErr = errors.New("TestMain did not run")
		}
		t.Fatal(upErr)
	}
	return cl
}

// kubectl runs the pinned kubectl on the cluster and returns its standard
// output; the error carries standard error.
func (e *env) kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.Kubectl, append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// mustKubectl is kubectl that fails t on an error.
func (e *env) mustKubectl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := e.kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// inNetns returns a command run inside the cluster's network namespace.
func (e *env) inNetns(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", e.Netns, name}, args...)...)
}

// fastPath returns a FastPathService client through the fsb-controller
// Service's forwarder, trusting the cluster's CA, with a user token.
func (e *env) fastPath(t testing.TB) fsbv1connect.FastPathServiceClient {
	t.Helper()
	pem, err := os.ReadFile(e.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", e.CAFile)
	}
	// Bounded like fsb ctl's: a connection the forwarder cannot complete
	// (the Service's backend went away mid-connect) must fail, not hold
	// up every call queued on it.
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 5 * time.Second,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return fsbv1connect.NewFastPathServiceClient(&http.Client{Transport: tr}, e.Server, connect.WithInterceptors(auth.Bearer(e.Token)))
}

// namespace makes a namespace for t and, when t ends, deletes every
// sandbox in it (waiting until they are gone: the controller removes their
// containers first) and then the namespace.
func (e *env) namespace(t testing.TB) string {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	ns := "e2e-" + strings.ToLower(strings.TrimPrefix(t.Name(), "Test"))
	if len(ns) > 50 {
		ns = ns[:50]
	}
	ns = strings.Trim(strings.ReplaceAll(ns, "/", "-"), "-") + "-" + hex.EncodeToString(b)
	e.mustKubectl(t, "create", "namespace", ns)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		start := time.Now()
		if _, err := e.kubectl(ctx, "delete", "sandboxes.sandbox.fast.io", "--all", "-n", ns, "--wait", "--timeout=2m"); err != nil {
			t.Errorf("delete the sandboxes of %s: %v", ns, err)
		}
		if _, err := e.kubectl(ctx, "delete", "namespace", ns, "--wait=false"); err != nil {
			t.Errorf("delete namespace %s: %v", ns, err)
		}
		t.Logf("cleanup: the sandboxes of %s deleted in %s", ns, time.Since(start).Round(time.Millisecond))
	})
	return ns
}

// pods lists the pods of one component in fsb-system.
func (e *env) pods(ctx context.Context, component string) ([]corev1.Pod, error) {
	list, err := e.cs.CoreV1().Pods(e.Namespace).List(ctx, metav1ListOptions(component))
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// ready reports whether a pod is Running, Ready and not being deleted.
func ready(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// whole waits until the installation is whole — two Ready controller
// pods, one of them labelled leader, Ready agent and janitor pods — and
// returns the leader pod and the agent pod.
func (e *env) whole(t testing.TB) (leader, agent *corev1.Pod) {
	t.Helper()
	start := time.Now()
	var why string
	for deadline := time.Now().Add(readyTimeout); ; {
		leader, agent, why = e.wholeOnce()
		if why == "" {
			if d := time.Since(start); d > time.Second {
				t.Logf("the installation was whole again after %s", d.Round(time.Millisecond))
			}
			return leader, agent
		}
		if time.Now().After(deadline) {
			t.Fatalf("the installation is not whole after %s: %s", readyTimeout, why)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (e *env) wholeOnce() (leader, agent *corev1.Pod, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	count := func(component string) ([]*corev1.Pod, string) {
		pods, err := e.pods(ctx, component)
		if err != nil {
			return nil, err.Error()
		}
		var out []*corev1.Pod
		var not []string
		for i := range pods {
			if ready(&pods[i]) {
				out = append(out, &pods[i])
			} else {
				not = append(not, fmt.Sprintf("%s (%s)", pods[i].Name, pods[i].Status.Phase))
			}
		}
		if len(not) > 0 {
			return out, fmt.Sprintf("%s pods not Ready: %s", component, strings.Join(not, ", "))
		}
		return out, ""
	}
	controllers, why := count("controller")
	if why != "" {
		return nil, nil, why
	}
	if len(controllers) != 2 {
		return nil, nil, fmt.Sprintf("%d Ready controller pods, want 2", len(controllers))
	}
	var leaders []*corev1.Pod
	for _, p := range controllers {
		if p.Labels[labelLeader] == "true" {
			leaders = append(leaders, p)
		}
	}
	if len(leaders) != 1 {
		return nil, nil, fmt.Sprintf("%d controller pods labelled %s=true, want 1", len(leaders), labelLeader)
	}
	agents, why := count("agent")
	if why != "" {
		return nil, nil, why
	}
	if len(agents) != 1 {
		return nil, nil, fmt.Sprintf("%d Ready agent pods, want 1 (one node)", len(agents))
	}
	janitors, why := count("janitor")
	if why != "" {
		return nil, nil, why
	}
	if len(janitors) != 1 {
		return nil, nil, fmt.Sprintf("%d Ready janitor pods, want 1 (one node)", len(janitors))
	}
	return leaders[0], agents[0], ""
}

// sandbox reads a Sandbox through the API server.
func (e *env) sandbox(ctx context.Context, ns, name string) (*v1alpha1.Sandbox, error) {
	return e.store.Get(ctx, ns, name)
}

// waitSandbox polls a Sandbox until ok accepts it, failing t after within
// with the last state seen.
func (e *env) waitSandbox(t testing.TB, ns, name string, within time.Duration, what string, ok func(*v1alpha1.Sandbox) bool) *v1alpha1.Sandbox {
	t.Helper()
	var last string
	for deadline := time.Now().Add(within); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		sb, err := e.sandbox(ctx, ns, name)
		cancel()
		if err == nil && ok(sb) {
			return sb
		}
		if err != nil {
			last = err.Error()
		} else {
			last = describe(sb)
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s/%s is not %s after %s; last: %s", ns, name, what, within, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// describe says what matters of a Sandbox's status in one line.
func describe(sb *v1alpha1.Sandbox) string {
	b, _ := json.Marshal(sb.Status)
	return fmt.Sprintf("phase %s revision %d agent %s: %s", sb.Status.Phase, sb.Status.Revision, sb.Status.AssignedPod, b)
}

// metav1ListOptions selects the pods of one Fast Sandbox component; for
// the agents, the DaemonSet's only (a SandboxPool's agent pods carry the
// pool label).
func metav1ListOptions(component string) metav1.ListOptions {
	selector := labelName + "=fsb," + labelComponent + "=" + component
	if component == "agent" {
		selector += ",!" + labelPool
	}
	return metav1.ListOptions{LabelSelector: selector}
}

// kubectlIn is kubectl with stdin.
func (e *env) kubectlIn(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.Kubectl, append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	var out, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}
