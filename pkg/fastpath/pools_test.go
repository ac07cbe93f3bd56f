package fastpath

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/controller"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// allocations counts the controller's placement attempts (its "allocate"
// phase), so that a test can tell waiting from looping.
type allocations struct{ n atomic.Int64 }

func (a *allocations) Phase(_, phase string) func() {
	if phase == "allocate" {
		a.n.Add(1)
	}
	return func() {}
}

// TestSandboxPools runs the pool rules end to end on the rig: agent-1 in
// the default pool, agent-2 in pool gpu. A sandbox naming a pool the
// registry has not declared is NotFound, one being deleted
// FailedPrecondition, in both modes, and nothing of it stays; a
// kubectl-made one waits Pending, without a hot loop, and runs once the
// pool opens. Sandboxes without a poolRef go only to the default pool's
// agent, those of gpu only to gpu's. ListAgents shows each agent's pool
// and a cordoned agent, which takes no create.
func TestSandboxPools(t *testing.T) {
	attempts := &allocations{}
	p := newAgentsOnly(t, 1)
	p.agents = append(p.agents, startPoolAgent(t, p.cd, "agent-2", "gpu"))
	for _, a := range p.agents {
		a.serve(t)
	}
	p.control = p.startControl(withControllerConfig(func(c *controller.Config) {
		c.PoolNamespace = "fsb-system"
		// Long enough a back-off that only PoolChanged places a waiting
		// sandbox within the seconds this test gives it.
		c.RecreateBackoff, c.RecreateBackoffMax = 200*time.Millisecond, 20*time.Second
		c.Phases = attempts
	}))
	ctx := context.Background()
	zero := int32(0)
	modes := map[string]fsbv1.ConsistencyMode{"fast": fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST, "strong": fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG}
	create := func(name, pool string, mode fsbv1.ConsistencyMode) (*fsbv1.Sandbox, error) {
		spec := busybox(mode, "sleep", "300")
		spec.PoolRef = pool
		resp, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: name, Spec: spec}))
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetSandbox(), nil
	}
	remove := func(name string) {
		t.Helper()
		if _, err := p.fp.DeleteSandbox(ctx, connect.NewRequest(&fsbv1.DeleteSandboxRequest{Name: name, GracePeriodSeconds: &zero})); err != nil {
			t.Fatalf("delete %s: %v", name, err)
		}
	}
	refused := func(pool string, code connect.Code, says ...string) {
		t.Helper()
		for mode, m := range modes {
			name := "refused-" + mode
			_, err := create(name, pool, m)
			if connect.CodeOf(err) != code {
				t.Fatalf("%s create naming pool %q: %v, want %v", mode, pool, err, code)
			}
			for _, s := range says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%s create naming pool %q: %q does not say %q", mode, pool, err, s)
				}
			}
			if _, ok := p.listed()[name]; ok {
				t.Errorf("%s create naming pool %q was refused, but the sandbox is listed", mode, pool)
			}
		}
		if ids := p.containerIDs(); len(ids) != 0 {
			t.Errorf("refused creates left containers: %v", ids)
		}
	}

	// gpu's agent reports in, but nothing declared the pool.
	refused("gpu", connect.CodeNotFound, `sandbox pool "gpu" not found`, "create it in namespace fsb-system", "fsb ctl get pools, or kubectl get sandboxpools -n fsb-system")

	// A sandbox made in the store (kubectl) waits for its pool.
	if _, err := p.store.Create(ctx, &v1alpha1.Sandbox{
		ObjectMeta: metav1.ObjectMeta{Name: "waiter", Namespace: "default"},
		Spec:       v1alpha1.SandboxSpec{Image: rig.ImageRef, Command: []string{"sleep", "300"}, PoolRef: "gpu"},
	}); err != nil {
		t.Fatal(err)
	}
	waiting := func(reason string) func() bool {
		return func() bool {
			sb, ok := p.ctrl.Get("default", "waiter")
			if !ok {
				return false
			}
			cond := meta.FindStatusCondition(sb.Status.Conditions, controller.ConditionCreated)
			return sb.Status.Phase == v1alpha1.PhasePending && cond != nil && cond.Status == metav1.ConditionFalse &&
				cond.Reason == reason && strings.Contains(sb.Status.Message, `sandbox pool "gpu"`)
		}
	}
	eventually(t, 10*time.Second, "the kubectl-made sandbox Pending with reason PoolNotFound", waiting(controller.ReasonPoolNotFound))
	before, _ := p.ctrl.Get("default", "waiter")
	tried := attempts.n.Load()
	time.Sleep(3 * time.Second)
	after, _ := p.ctrl.Get("default", "waiter")
	// 200 ms doubling: about 4 attempts in 3 s.
	if n := attempts.n.Load() - tried; n > 10 || n < 2 {
		t.Errorf("%d placement attempts in 3s while the pool is missing: want a few, spaced by the back-off", n)
	}
	if after.ResourceVersion != before.ResourceVersion {
		t.Errorf("the waiting sandbox was rewritten (resourceVersion %s, then %s): its status should stay as it is", before.ResourceVersion, after.ResourceVersion)
	}
	if after.Status.Phase == v1alpha1.PhaseFailed {
		t.Errorf("the waiting sandbox failed: %s", after.Status.Message)
	}

	// The pool is being deleted.
	p.reg.DeclarePool("gpu", false)
	refused("gpu", connect.CodeFailedPrecondition, `sandbox pool "gpu" is being deleted`)
	p.ctrl.PoolChanged("gpu")
	eventually(t, 2*time.Second, "the waiting sandbox's reason PoolClosed once its pool changed", waiting(controller.ReasonPoolClosed))

	// The pool opens: the waiter runs on gpu's agent.
	p.reg.DeclarePool("gpu", true)
	p.ctrl.PoolChanged("gpu")
	eventually(t, 5*time.Second, "the waiting sandbox Running once its pool opened", func() bool {
		sb, ok := p.ctrl.Get("default", "waiter")
		return ok && sb.Status.Phase == v1alpha1.PhaseRunning && sb.Status.AssignedPod == "agent-2"
	})
	for mode, m := range modes {
		sb, err := create("gpu-"+mode, "gpu", m)
		if err != nil {
			t.Fatalf("%s create in pool gpu: %v", mode, err)
		}
		if got := sb.GetStatus().GetAssignedPod(); got != "agent-2" {
			t.Errorf("%s create in pool gpu went to %s, want agent-2", mode, got)
		}
	}
	// The default pool: agent-1 only, though agent-2 has more free slots.
	for i := range 4 {
		mode := []string{"fast", "strong"}[i%2]
		name := fmt.Sprintf("plain-%d", i)
		sb, err := create(name, "", modes[mode])
		if err != nil {
			t.Fatalf("%s create without a pool: %v", mode, err)
		}
		if got := sb.GetStatus().GetAssignedPod(); got != "agent-1" {
			t.Errorf("%s create without a pool went to %s, want agent-1 (the default pool)", mode, got)
		}
		remove(name)
	}

	// ListAgents shows the pools; a busy agent cannot be cordoned.
	pools := map[string]string{}
	resp, err := p.fp.ListAgents(ctx, connect.NewRequest(&fsbv1.ListAgentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range resp.Msg.GetAgents() {
		pools[a.GetAgentId()] = a.GetPool()
		if a.GetCordoned() {
			t.Errorf("agent %s listed cordoned before anything cordoned it", a.GetAgentId())
		}
	}
	if pools["agent-1"] != "" || pools["agent-2"] != "gpu" {
		t.Errorf("ListAgents pools %v: want agent-1 in the default pool, agent-2 in gpu", pools)
	}
	if err := p.reg.Cordon("agent-2"); !errors.Is(err, registry.ErrAgentBusy) {
		t.Fatalf("cordon a busy agent: %v, want ErrAgentBusy", err)
	}
	for _, name := range []string{"waiter", "gpu-fast", "gpu-strong"} {
		remove(name)
	}
	eventually(t, 10*time.Second, "agent-2 cordoned once empty", func() bool { return p.reg.Cordon("agent-2") == nil })
	resp, err = p.fp.ListAgents(ctx, connect.NewRequest(&fsbv1.ListAgentsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range resp.Msg.GetAgents() {
		if want := a.GetAgentId() == "agent-2"; a.GetCordoned() != want {
			t.Errorf("agent %s listed cordoned=%v, want %v", a.GetAgentId(), a.GetCordoned(), want)
		}
	}
	_, err = create("gpu-cordoned", "gpu", modes["fast"])
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("a create in a pool whose only agent is cordoned: %v, want ResourceExhausted", err)
	}
}
