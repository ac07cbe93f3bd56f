package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// The fake's pool RPCs behave as the controller's: ApplyPool creates or
// replaces labels and spec (validated with v1alpha1.ValidatePool), in the
// pool namespace fsb-system.

func (f *fakeFastPath) ApplyPool(_ context.Context, req *connect.Request[fsbv1.ApplyPoolRequest]) (*connect.Response[fsbv1.ApplyPoolResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	in := req.Msg.GetPool()
	obj, err := v1alpha1.PoolFromProto(in, "fsb-system")
	if err == nil {
		err = v1alpha1.ValidatePool(obj)
	}
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if f.pools == nil {
		f.pools = map[string]*fsbv1.SandboxPool{}
	}
	cur, ok := f.pools[in.GetName()]
	if ok && proto.Equal(cur.GetSpec(), in.GetSpec()) && fmt.Sprint(cur.GetLabels()) == fmt.Sprint(in.GetLabels()) {
		return connect.NewResponse(&fsbv1.ApplyPoolResponse{Pool: cur}), nil
	}
	p := &fsbv1.SandboxPool{Name: in.GetName(), Namespace: "fsb-system", Labels: in.GetLabels(), Spec: in.GetSpec(),
		CreatedAt: timestamppb.New(time.Now().Add(-time.Hour)), ConnectedAgents: 1, Status: &fsbv1.SandboxPoolStatus{}}
	f.pools[in.GetName()] = p
	return connect.NewResponse(&fsbv1.ApplyPoolResponse{Pool: p, Created: !ok, Changed: true}), nil
}

func (f *fakeFastPath) GetPool(_ context.Context, req *connect.Request[fsbv1.GetPoolRequest]) (*connect.Response[fsbv1.GetPoolResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pools[req.Msg.GetName()]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox pool %s not found in namespace fsb-system", req.Msg.GetName()))
	}
	return connect.NewResponse(&fsbv1.GetPoolResponse{Pool: p}), nil
}

func (f *fakeFastPath) ListPools(context.Context, *connect.Request[fsbv1.ListPoolsRequest]) (*connect.Response[fsbv1.ListPoolsResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &fsbv1.ListPoolsResponse{}
	for _, name := range []string{"default", "gpu"} {
		if p, ok := f.pools[name]; ok {
			out.Pools = append(out.Pools, p)
		}
	}
	return connect.NewResponse(out), nil
}

func (f *fakeFastPath) DeletePool(_ context.Context, req *connect.Request[fsbv1.DeletePoolRequest]) (*connect.Response[fsbv1.DeletePoolResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.pools[req.Msg.GetName()]; !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox pool %s not found in namespace fsb-system", req.Msg.GetName()))
	}
	delete(f.pools, req.Msg.GetName())
	return connect.NewResponse(&fsbv1.DeletePoolResponse{}), nil
}

const applyDocs = `# a pool and a sandbox
apiVersion: sandbox.fast.io/v1alpha1
kind: SandboxPool
metadata:
  name: gpu
  namespace: elsewhere
spec:
  warm:
  - {image: localhost/fsb/busybox:latest, runtime: crun, count: 1}
---
---
apiVersion: sandbox.fast.io/v1alpha1
kind: Sandbox
metadata:
  name: web
  labels: {app: demo}
spec:
  image: localhost/fsb/busybox:latest
  command: [sleep, "300"]
  poolRef: gpu
`

func TestApply(t *testing.T) {
	f := newFake()
	url := serve(t, f)
	file := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(file, []byte(applyDocs), 0o600); err != nil {
		t.Fatal(err)
	}
	c, out, errw := client(t, url, testToken, "team")
	if err := c.Apply(context.Background(), file); err != nil {
		t.Fatalf("apply: %v\n%s", err, errw)
	}
	if got := out.String(); got != "sandboxpool/gpu created\nsandbox/web created\n" {
		t.Errorf("apply printed %q", got)
	}
	if !strings.Contains(errw.String(), "metadata.namespace elsewhere ignored") {
		t.Errorf("apply stderr %q: want the ignored namespace said", errw.String())
	}
	cr := f.lastCreate(t)
	if cr.GetNamespace() != "team" || cr.GetSpec().GetPoolRef() != "gpu" || cr.GetLabels()["app"] != "demo" {
		t.Errorf("the sandbox's create: %v", cr)
	}
	if w := f.pools["gpu"].GetSpec().GetWarm(); len(w) != 1 || w[0].GetRuntime() != "crun" || w[0].GetCount() != 1 {
		t.Errorf("the pool's warm entries: %v", w)
	}

	// Again from stdin: nothing changes. Then a changed label and count.
	c, out, _ = clientWithInput(t, url, "team", applyDocs)
	if err := c.Apply(context.Background(), "-"); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "sandboxpool/gpu unchanged\nsandbox/web unchanged\n" {
		t.Errorf("apply again printed %q", got)
	}
	changed := strings.NewReplacer("count: 1", "count: 4", "app: demo", "app: other").Replace(applyDocs)
	c, out, _ = clientWithInput(t, url, "team", changed)
	if err := c.Apply(context.Background(), "-"); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "sandboxpool/gpu configured\nsandbox/web configured\n" {
		t.Errorf("apply of changes printed %q", got)
	}
	if len(f.updates) != 1 || f.updates[0].GetLabels()["app"] != "other" || f.updates[0].GetFailurePolicy() != fsbv1.FailurePolicy_FAILURE_POLICY_UNSPECIFIED {
		t.Errorf("the sandbox's update: %v, want only its labels", f.updates)
	}

	// get pools, in each format.
	c, out, _ = client(t, url, testToken, "team")
	if err := c.Pools(context.Background(), "", OutputTable); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME AGENTS WARM AGE" ||
		strings.Join(strings.Fields(lines[1]), " ") != "gpu 1 4×localhost/fsb/busybox:latest/crun 60m" {
		t.Errorf("get pools:\n%s", out)
	}
	c, out, _ = client(t, url, testToken, "team")
	if err := c.Pools(context.Background(), "gpu", OutputWide); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "CAPACITY") || !strings.Contains(out.String(), "<none>") {
		t.Errorf("get pool gpu -o wide:\n%s", out)
	}
	c, out, _ = client(t, url, testToken, "team")
	if err := c.Pools(context.Background(), "gpu", OutputJSON); err != nil {
		t.Fatal(err)
	}
	var obj v1alpha1.SandboxPool
	if err := json.Unmarshal([]byte(out.String()), &obj); err != nil {
		t.Fatal(err)
	}
	if obj.Kind != "SandboxPool" || obj.Namespace != "fsb-system" || obj.Spec.Capacity != nil || len(obj.Spec.Warm) != 1 || obj.Spec.Warm[0].Count != 4 {
		t.Errorf("get pool gpu -o json: %+v", obj)
	}
	c, out, _ = client(t, url, testToken, "team")
	if err := c.Pools(context.Background(), "", OutputYAML); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "items:\n- apiVersion: sandbox.fast.io/v1alpha1\n") {
		t.Errorf("get pools -o yaml:\n%s", out)
	}

	// delete pool.
	c, out, _ = client(t, url, testToken, "team")
	if err := c.DeletePool(context.Background(), "gpu", false); err != nil || out.String() != "sandboxpool/gpu deleted\n" {
		t.Errorf("delete pool gpu: %v, %q", err, out)
	}
	if err := c.DeletePool(context.Background(), "gpu", false); err == nil || !strings.Contains(err.Error(), "gpu not found") {
		t.Errorf("delete pool gpu again: %v, want not found", err)
	}
	if err := c.DeletePool(context.Background(), "gpu", true); err != nil {
		t.Errorf("delete pool gpu --ignore-not-found: %v", err)
	}
}

func TestApplyMistakes(t *testing.T) {
	f := newFake()
	url := serve(t, f)
	for _, tc := range []struct {
		name, docs string
		want       []string // in the error and stderr together
		created    int      // sandboxes made all the same
	}{
		{"not YAML", "kind: [Sandbox\n", []string{"document 1: not YAML"}, 0},
		{"empty", "# nothing\n---\n", []string{"no objects"}, 0},
		{"unknown kind", "apiVersion: sandbox.fast.io/v1alpha1\nkind: Widget\n", []string{`document 1: kind "Widget": want Sandbox or SandboxPool`}, 0},
		{"other apiVersion", "apiVersion: v1\nkind: Pod\n", []string{`document 1: apiVersion "v1": want sandbox.fast.io/v1alpha1`}, 0},
		{"unknown field", "apiVersion: sandbox.fast.io/v1alpha1\nkind: Sandbox\nmetadata: {name: a}\nspec: {image: busybox, colour: red}\n",
			[]string{"document 1 (sandbox/a): not a Sandbox", "colour"}, 0},
		{"invalid pool, then a good sandbox", "apiVersion: sandbox.fast.io/v1alpha1\nkind: SandboxPool\nmetadata: {name: p}\nspec: {capacity: {poolMin: 3, poolMax: 1, bufferMin: 0, bufferMax: 0}}\n---\n" +
			"apiVersion: sandbox.fast.io/v1alpha1\nkind: Sandbox\nmetadata: {name: good}\nspec: {image: busybox, command: [sleep, '1']}\n",
			[]string{"document 1 (sandboxpool/p)", "poolMin", "1 of 2 objects failed"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.creates)
			c, _, errw := clientWithInput(t, url, "team", tc.docs)
			err := c.Apply(context.Background(), "-")
			if err == nil {
				t.Fatal("apply succeeded")
			}
			all := err.Error() + "\n" + errw.String()
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("apply: %s\nwant %q in it", all, w)
				}
			}
			if got := len(f.creates) - before; got != tc.created {
				t.Errorf("%d sandboxes created, want %d", got, tc.created)
			}
		})
	}
}

func clientWithInput(t *testing.T, url, ns, input string) (*Client, *syncBuffer, *syncBuffer) {
	t.Helper()
	var out, errw syncBuffer
	c, err := New(Config{Server: url, Token: testToken, Namespace: ns, Out: &out, Err: &errw, In: strings.NewReader(input)})
	if err != nil {
		t.Fatal(err)
	}
	return c, &out, &errw
}
