package rig

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Environment variables for the Kubernetes API server of the rig (see
// scripts/kube.sh and scripts/test.sh).
const (
	// EnvKubeconfig is the admin kubeconfig of the run's shared API server.
	EnvKubeconfig = "FSB_KUBECONFIG"
	// EnvKubeBin is the directory holding the pinned kube-apiserver and
	// kubectl.
	EnvKubeBin = "FSB_KUBE_BIN"
	// EnvKubeRunDir is where StartKube puts private API servers, so that
	// scripts/test.sh stops any a crashed test leaves behind. Optional.
	EnvKubeRunDir = "FSB_KUBE_RUN_DIR"
)

// CRDGroup is the API group of the Fast Sandbox CRDs.
const CRDGroup = "sandbox.fast.io"

const (
	// maxKubeNamespace is a DNS-1123 label's limit.
	maxKubeNamespace = 63
	kubectlTimeout   = time.Minute
	kubeReadyTimeout = 2 * time.Minute
	fieldManager     = "fsb-rig"
)

const kubeAdvice = "this test needs the rig's Kubernetes API server; run `make test`, or build and start one by hand with " +
	"`scripts/kube.sh build && scripts/kube.sh start DIR` (e.g. DIR from `mktemp -d /tmp/fsb-kube.XXXX`) " +
	"and then `source DIR/env`"

// KubeEnv is a test's view of the run's shared API server: an admin
// kubeconfig and a namespace of the test's own.
type KubeEnv struct {
	// Kubeconfig is the path of the admin kubeconfig (group system:masters).
	Kubeconfig string
	// Config is Kubeconfig loaded, with client-side rate limits lifted: the
	// server is local and private to the run.
	Config *rest.Config
	// Namespace is made for the test and deleted, with every Fast Sandbox
	// object in it, when the test ends.
	Namespace string
	// KubectlPath is the pinned kubectl, matching the server's version.
	KubectlPath string
}

// Kube returns the run's shared API server (FSB_KUBECONFIG) with the CRDs
// from deploy/crds applied and Established, and a fresh namespace for t.
// When t ends, the Fast Sandbox objects in that namespace are removed
// (finalizers dropped: the controller that set them is gone by then) and
// the namespace is deleted. Without FSB_KUBECONFIG the test fails with the
// command to run.
func Kube(t testing.TB) *KubeEnv {
	t.Helper()
	kubeconfig := os.Getenv(EnvKubeconfig)
	if kubeconfig == "" {
		t.Fatalf("%s is not set: %s", EnvKubeconfig, kubeAdvice)
	}
	kubectl := kubectlPath(t)
	cfg := loadKubeconfig(t, kubeconfig)
	if err := sharedCRDs.apply(kubeconfig, kubectl, cfg); err != nil {
		t.Fatalf("apply the CRDs to the API server of %s: %v", kubeconfig, err)
	}
	ns := kubeNamespace(t, cfg, true)
	return &KubeEnv{Kubeconfig: kubeconfig, Config: cfg, Namespace: ns, KubectlPath: kubectl}
}

// Kubectl runs the pinned kubectl with --kubeconfig and args (pass -n to
// pick a namespace) and returns its standard output; a failure's error
// carries the standard error.
func (k *KubeEnv) Kubectl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return runKubectl(k.KubectlPath, k.Kubeconfig, args...)
}

// KubeServer is an etcd and API server private to one test, for tests that
// stop the API server (outages, leader election). It is started and stopped
// by scripts/kube.sh, like the shared one.
type KubeServer struct {
	t      testing.TB
	script string
	// Dir holds the servers' certificates, logs and PID files.
	Dir string
	// Kubeconfig is the path of the admin kubeconfig.
	Kubeconfig string
	// Config is Kubeconfig loaded, rate limits lifted.
	Config *rest.Config
	// KubectlPath is the pinned kubectl.
	KubectlPath string
}

// StartKube starts an etcd and API server private to t on free loopback
// ports, from the cached binaries (FSB_KUBE_BIN) and Debian's etcd, applies
// the CRDs, and stops both when t ends.
func StartKube(t testing.TB) *KubeServer {
	t.Helper()
	kubectl := kubectlPath(t)
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("find scripts/kube.sh: %v", err)
	}
	base := os.Getenv(EnvKubeRunDir)
	if base == "" {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "private-")
	if err != nil {
		t.Fatal(err)
	}
	s := &KubeServer{
		t:           t,
		script:      filepath.Join(root, "scripts", "kube.sh"),
		Dir:         dir,
		Kubeconfig:  filepath.Join(dir, "kubeconfig"),
		KubectlPath: kubectl,
	}
	t.Cleanup(func() {
		if out, err := exec.Command(s.script, "stop", dir).CombinedOutput(); err != nil {
			t.Errorf("stop private API server: %v\n%s", err, out)
		}
	})
	s.run("start", dir)
	s.Config = loadKubeconfig(t, s.Kubeconfig)
	if err := applyCRDs(s.Kubeconfig, kubectl, s.Config); err != nil {
		t.Fatalf("apply the CRDs to the private API server: %v", err)
	}
	return s
}

// Stop stops the API server; etcd keeps running with the data.
func (s *KubeServer) Stop() {
	s.t.Helper()
	s.run("stop-apiserver", s.Dir)
}

// Start starts the API server again on the same address and data, and
// returns once it answers /readyz.
func (s *KubeServer) Start() {
	s.t.Helper()
	s.run("start-apiserver", s.Dir)
}

// Namespace makes a fresh namespace on the server for t. The namespace goes
// with the server when StartKube's test ends; if t ends first, it is deleted
// then, when the server answers.
func (s *KubeServer) Namespace(t testing.TB) string {
	t.Helper()
	return kubeNamespace(t, s.Config, false)
}

// Kubectl runs the pinned kubectl against the server, like KubeEnv.Kubectl.
func (s *KubeServer) Kubectl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return runKubectl(s.KubectlPath, s.Kubeconfig, args...)
}

func (s *KubeServer) run(args ...string) {
	s.t.Helper()
	cmd := exec.Command(s.script, args...)
	cmd.Env = append(os.Environ(), EnvKubeBin+"="+filepath.Dir(s.KubectlPath))
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("scripts/kube.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// kubectlPath returns the pinned kubectl in FSB_KUBE_BIN, failing the test
// when it is missing.
func kubectlPath(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(EnvKubeBin)
	if bin == "" {
		t.Fatalf("%s is not set: %s", EnvKubeBin, kubeAdvice)
	}
	p := filepath.Join(bin, "kubectl")
	if err := checkExecutable(p); err != nil {
		t.Fatalf("%s: %v: %s", EnvKubeBin, err, kubeAdvice)
	}
	return p
}

func loadKubeconfig(t testing.TB, path string) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("load kubeconfig %s: %v; %s", path, err, kubeAdvice)
	}
	cfg.QPS = -1 // no client-side rate limit
	return cfg
}

func runKubectl(kubectl, kubeconfig string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), kubectlTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// crdOnce applies the CRDs once per API server and test binary: every test
// of a package shares the server, and packages share it with each other.
type crdOnce struct {
	mu   sync.Mutex
	done map[string]bool
}

// sharedCRDs remembers which servers (by kubeconfig) have the CRDs in this
// test binary.
var sharedCRDs = crdOnce{done: map[string]bool{}}

func (c *crdOnce) apply(kubeconfig, kubectl string, cfg *rest.Config) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done[kubeconfig] {
		return nil
	}
	if err := applyCRDs(kubeconfig, kubectl, cfg); err != nil {
		return err
	}
	c.done[kubeconfig] = true
	return nil
}

// applyCRDs applies deploy/crds with server-side apply, which is idempotent
// and safe when several test binaries apply the same files at once, and
// waits until every CRD is Established.
func applyCRDs(kubeconfig, kubectl string, cfg *rest.Config) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	out, err := runKubectl(kubectl, kubeconfig, "apply", "--server-side", "--force-conflicts",
		"--field-manager", fieldManager, "-o", "name", "-f", filepath.Join(root, "deploy", "crds"))
	if err != nil {
		return err
	}
	// Not `kubectl wait`: it fails on a CRD whose status has no conditions
	// yet, which is how a fresh one starts.
	ctx, cancel := context.WithTimeout(context.Background(), kubeReadyTimeout)
	defer cancel()
	for _, name := range strings.Fields(out) {
		if err := waitEstablished(ctx, cfg, name[strings.LastIndex(name, "/")+1:]); err != nil {
			return err
		}
	}
	return nil
}

// waitEstablished polls the CRD called name until its Established
// condition is True.
func waitEstablished(ctx context.Context, cfg *rest.Config, name string) error {
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	url := strings.TrimSuffix(cfg.Host, "/") + "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/" + name
	for {
		body, err := kubeRequest(ctx, client, http.MethodGet, url, "", nil)
		if err == nil {
			var crd struct {
				Status struct {
					Conditions []struct {
						Type   string `json:"type"`
						Status string `json:"status"`
					} `json:"conditions"`
				} `json:"status"`
			}
			if err := json.Unmarshal(body, &crd); err != nil {
				return fmt.Errorf("CRD %s: %w", name, err)
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == "Established" && c.Status == "True" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRD %s not Established: %w (last error: %v)", name, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kubeNamespace makes a namespace named after t. At cleanup the Fast
// Sandbox objects in it are removed and the namespace deleted; strict makes
// a failure there fail t (on a private server that may be stopped, it is
// only logged).
func kubeNamespace(t testing.TB, cfg *rest.Config, strict bool) string {
	t.Helper()
	client, err := corev1client.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("client for %s: %v", cfg.Host, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), kubectlTimeout)
	defer cancel()
	name := uniqueName(t.Name(), maxKubeNamespace)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := client.Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s on %s: %v", name, cfg.Host, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), kubectlTimeout)
		defer cancel()
		err := removeFastSandboxObjects(ctx, cfg, name)
		if derr := client.Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); derr != nil && !apierrors.IsNotFound(derr) {
			err = errors.Join(err, fmt.Errorf("delete namespace %s: %w", name, derr))
		}
		if err == nil {
			return
		}
		if strict {
			t.Errorf("clean up Kubernetes namespace %s: %v", name, err)
		} else {
			t.Logf("clean up Kubernetes namespace %s (the server may be stopped): %v", name, err)
		}
	})
	return name
}

// removeFastSandboxObjects deletes every Sandbox and SandboxPool in
// namespace ns and drops their finalizers. There is no
// kube-controller-manager on the rig, so a deleted namespace never empties
// itself, and a controller watching every namespace would otherwise keep
// seeing a finished test's objects.
func removeFastSandboxObjects(ctx context.Context, cfg *rest.Config, ns string) error {
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	var errs []error
	for _, resource := range []string{"sandboxes", "sandboxpools"} {
		base := strings.TrimSuffix(cfg.Host, "/") + "/apis/" + CRDGroup + "/v1alpha1/namespaces/" + ns + "/" + resource
		// The collection delete removes what has no finalizer and marks the
		// rest; dropping the finalizers of the marked ones removes them.
		if _, err := kubeRequest(ctx, httpClient, http.MethodDelete, base, "", nil); err != nil {
			if !errors.Is(err, errNotFound) {
				errs = append(errs, err)
			}
			continue
		}
		body, err := kubeRequest(ctx, httpClient, http.MethodGet, base, "", nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var list struct {
			Items []struct {
				Metadata struct {
					Name       string   `json:"name"`
					Finalizers []string `json:"finalizers"`
				} `json:"metadata"`
			} `json:"items"`
		}
		if err := json.Unmarshal(body, &list); err != nil {
			errs = append(errs, fmt.Errorf("list %s in %s: %w", resource, ns, err))
			continue
		}
		for _, item := range list.Items {
			if len(item.Metadata.Finalizers) == 0 {
				continue
			}
			patch := []byte(`{"metadata":{"finalizers":null}}`)
			_, err := kubeRequest(ctx, httpClient, http.MethodPatch, base+"/"+item.Metadata.Name, "application/merge-patch+json", patch)
			if err != nil && !errors.Is(err, errNotFound) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

var errNotFound = errors.New("not found")

// kubeRequest sends one request to the API server and returns the body of
// a 2xx answer; a 404 on a resource that does not exist (CRD gone) or an
// object that went meanwhile wraps errNotFound.
func kubeRequest(ctx context.Context, client *http.Client, method, url, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%s %s: %w", method, url, errNotFound)
	case resp.StatusCode/100 != 2:
		return nil, fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}
