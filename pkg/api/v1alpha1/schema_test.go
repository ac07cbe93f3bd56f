package v1alpha1_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// restClient is a typed REST client for sandbox.fast.io/v1alpha1 on env's
// API server, built from our scheme.
func restClient(t *testing.T, env *rig.KubeEnv) *rest.RESTClient {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.GroupVersion = &v1alpha1.GroupVersion
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	c, err := rest.RESTClientFor(cfg)
	if err != nil {
		t.Fatalf("REST client: %v", err)
	}
	return c
}

// dryRunCreate sends obj (JSON) to resource in namespace as a server-side
// dry-run create: the API server validates it as it would a real create
// and stores nothing.
func dryRunCreate(t *testing.T, c *rest.RESTClient, namespace, resource string, obj []byte) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.Post().Namespace(namespace).Resource(resource).Param("dryRun", "All").
		SetHeader("Content-Type", "application/json").Body(obj).Do(ctx).Error()
}

// TestSchemaAgreesWithGo: one table of Sandboxes and SandboxPools, each
// judged by v1alpha1's Go validation and by the real API server (a
// server-side dry-run create through the CRD's schema). Both accept or both
// refuse; a refusal names the field on both sides, and a CEL rule's message
// is Go's word for word.
func TestSchemaAgreesWithGo(t *testing.T) {
	env := rig.Kube(t)
	c := restClient(t, env)
	for i, tc := range schemaCases() {
		t.Run(tc.name, func(t *testing.T) {
			resource := "sandboxes"
			if tc.pool {
				resource = "sandboxpools"
			}
			data := caseJSON(t, i, tc)
			goErr := goValidate(env.Namespace, tc.pool, data)
			apiErr := dryRunCreate(t, c, env.Namespace, resource, data)
			if apiErr != nil && !apierrors.IsInvalid(apiErr) && !apierrors.IsBadRequest(apiErr) {
				t.Fatalf("API server: %v, want Invalid or accepted", apiErr)
			}
			if tc.field == "" {
				if goErr != nil || apiErr != nil {
					t.Fatalf("want both to accept: Go %.300v; API server %.600v", goErr, apiErr)
				}
				return
			}
			if goErr == nil || apiErr == nil {
				t.Fatalf("want both to refuse: Go %.300v; API server %.600v", goErr, apiErr)
			}
			for side, err := range map[string]error{"Go": goErr, "API server": apiErr} {
				if !strings.Contains(err.Error(), tc.field) {
					t.Errorf("%s: %.600v, does not name %s", side, err, tc.field)
				}
				if tc.rule != "" && !strings.Contains(err.Error(), tc.rule) {
					t.Errorf("%s: %.600v, does not say %q", side, err, tc.rule)
				}
			}
			t.Logf("Go: %.200v", goErr)
			t.Logf("API server: %.300v", apiErr)
		})
	}
}

// repoFile is a file of the repository, from this package's directory.
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join("..", "..", "..", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSampleSandboxAccepted: the brief's example Sandbox, as the sample in
// deploy/samples spells it (consistencyMode: fast, failurePolicy:
// AutoRecreate), passes kubectl's server-side dry run; its image and pool
// need not exist. An object refused by the schema shows kubectl's user the
// field and the schema's message.
func TestSampleSandboxAccepted(t *testing.T) {
	env := rig.Kube(t)
	out, err := env.Kubectl(t, "apply", "--dry-run=server", "-f", repoFile(t, "deploy/samples/sandbox.yaml"))
	if err != nil || !strings.Contains(out, "sandbox.sandbox.fast.io/my-sandbox") || !strings.Contains(out, "server dry run") {
		t.Fatalf("kubectl apply --dry-run=server -f deploy/samples/sandbox.yaml: %v\n%s", err, out)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte(`apiVersion: sandbox.fast.io/v1alpha1
kind: Sandbox
metadata:
  name: bad
spec:
  exposedPorts: [0, 65536]
  consistencyMode: eventual
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = env.Kubectl(t, "apply", "--dry-run=server", "-n", env.Namespace, "-f", bad)
	if err == nil {
		t.Fatalf("kubectl accepted a Sandbox with no image, port 0 and 65536 and an unknown mode:\n%s", out)
	}
	// kubectl says why on stderr, which the error carries.
	out = err.Error()
	for _, w := range []string{`spec.image: Required value`, `spec.exposedPorts[0]`, `spec.exposedPorts[1]`,
		`spec.consistencyMode: Unsupported value: "eventual"`} {
		if !strings.Contains(out, w) {
			t.Errorf("kubectl's refusal does not say %q:\n%s", w, out)
		}
	}
}

// TestGetSandboxColumns: kubectl get sbx (the short name) shows a Sandbox's
// phase, agent, node, endpoints and revision from its status, and kubectl
// get fsb (the category) lists Sandboxes and SandboxPools, the pools with
// their bounds and counts.
func TestGetSandboxColumns(t *testing.T) {
	env := rig.Kube(t)
	c := restClient(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	sb := &v1alpha1.Sandbox{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: env.Namespace},
		Spec:       v1alpha1.SandboxSpec{Image: "alpine:latest", ExposedPorts: []int32{8080, 9090}},
	}
	got := &v1alpha1.Sandbox{}
	if err := c.Post().Namespace(env.Namespace).Resource("sandboxes").Body(sb).Do(ctx).Into(got); err != nil {
		t.Fatalf("create: %v", err)
	}
	got.Status = v1alpha1.SandboxStatus{
		Phase: v1alpha1.PhaseRunning, AssignedPod: "agent-7", NodeName: "node-a",
		Endpoints: []string{"10.0.0.5:8080", "10.0.0.5:9090"}, Revision: 3,
	}
	if err := c.Put().Namespace(env.Namespace).Resource("sandboxes").Name("web").SubResource("status").
		Body(got).Do(ctx).Error(); err != nil {
		t.Fatalf("update status: %v", err)
	}
	pool := &v1alpha1.SandboxPool{
		ObjectMeta: metav1.ObjectMeta{Name: "default-pool", Namespace: env.Namespace},
		Spec:       v1alpha1.SandboxPoolSpec{Capacity: &v1alpha1.PoolCapacity{PoolMin: 1, PoolMax: 4, BufferMax: 2}},
	}
	gotPool := &v1alpha1.SandboxPool{}
	if err := c.Post().Namespace(env.Namespace).Resource("sandboxpools").Body(pool).Do(ctx).Into(gotPool); err != nil {
		t.Fatalf("create pool: %v", err)
	}
	// A pool controller of another test on the same API server may tell
	// this pool, outside its pool namespace, where pools belong: retry on
	// its write.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		gotPool.Status.CurrentPods, gotPool.Status.ReadyPods = 3, 2
		gotPool.Status.TotalAgents, gotPool.Status.IdleAgents, gotPool.Status.BusyAgents = 2, 1, 1
		err := c.Put().Namespace(env.Namespace).Resource("sandboxpools").Name("default-pool").SubResource("status").
			Body(gotPool).Do(ctx).Error()
		if apierrors.IsConflict(err) {
			gotPool = &v1alpha1.SandboxPool{}
			if gerr := c.Get().Namespace(env.Namespace).Resource("sandboxpools").Name("default-pool").Do(ctx).Into(gotPool); gerr != nil {
				return gerr
			}
		}
		return err
	}); err != nil {
		t.Fatalf("update pool status: %v", err)
	}

	out, err := env.Kubectl(t, "get", "sbx", "-n", env.Namespace)
	if err != nil {
		t.Fatalf("kubectl get sbx: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("kubectl get sbx: want a header and one row:\n%s", out)
	}
	if h := strings.Fields(lines[0]); strings.Join(h, " ") != "NAME PHASE AGENT NODE ENDPOINTS REVISION AGE" {
		t.Errorf("header %q, want NAME PHASE AGENT NODE ENDPOINTS REVISION AGE", lines[0])
	}
	row := strings.Fields(lines[1])
	if len(row) != 7 || strings.Join(row[:6], " ") != `web Running agent-7 node-a ["10.0.0.5:8080","10.0.0.5:9090"] 3` {
		t.Errorf("row %q, want web Running agent-7 node-a, both endpoints, revision 3 and an age", lines[1])
	}

	out, err = env.Kubectl(t, "get", "fsb", "-n", env.Namespace)
	if err != nil {
		t.Fatalf("kubectl get fsb: %v\n%s", err, out)
	}
	for _, w := range []string{"sandbox.sandbox.fast.io/web", "sandboxpool.sandbox.fast.io/default-pool", "MIN", "MAX", "CURRENT", "READY", "BUSY", "IDLE"} {
		if !strings.Contains(out, w) {
			t.Errorf("kubectl get fsb does not show %q:\n%s", w, out)
		}
	}
	out, err = env.Kubectl(t, "get", "sbxpool", "default-pool", "-n", env.Namespace, "--no-headers")
	if f := strings.Fields(out); err != nil || len(f) != 8 || strings.Join(f[:7], " ") != "default-pool 1 4 3 2 1 1" {
		t.Errorf("kubectl get sbxpool: %v, %q: want default-pool 1 4 3 2 1 1 (min, max, current, ready, busy, idle) and an age", err, out)
	}
}

// TestSamplePoolAccepted: deploy/samples/sandboxpool.yaml, the pool
// docs/kubernetes.md shows, passes Go's validation and the API server's
// schema (a server-side dry run, in the test's namespace rather than
// fsb-system).
func TestSamplePoolAccepted(t *testing.T) {
	env := rig.Kube(t)
	data, err := os.ReadFile(repoFile(t, "deploy/samples/sandboxpool.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pool v1alpha1.SandboxPool
	if err := yaml.UnmarshalStrict(data, &pool); err != nil {
		t.Fatalf("the sample: %v", err)
	}
	if c := pool.Spec.Capacity; c == nil || *c != (v1alpha1.PoolCapacity{PoolMin: 1, PoolMax: 3, BufferMin: 1, BufferMax: 1}) ||
		pool.Spec.MaxSandboxesPerPod == nil || *pool.Spec.MaxSandboxesPerPod != 2 {
		t.Errorf("the sample's pool: %+v, want poolMin 1, poolMax 3, bufferMin 1, bufferMax 1, maxSandboxesPerPod 2", pool.Spec)
	}
	if err := v1alpha1.ValidatePool(&pool); err != nil {
		t.Errorf("Go: %v", err)
	}
	pool.Namespace = env.Namespace
	body, err := json.Marshal(&pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := dryRunCreate(t, restClient(t, env), env.Namespace, "sandboxpools", body); err != nil {
		t.Errorf("API server: %v", err)
	}
}
