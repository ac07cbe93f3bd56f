package ctl

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// Pools prints the controller's SandboxPools, or only the one named. With
// OutputJSON or OutputYAML each is the SandboxPool object (apiVersion,
// kind, metadata, spec, status), which fsb ctl apply -f takes back; a list
// is {"items": [...]}.
func (c *Client) Pools(ctx context.Context, name, output string) error {
	if err := checkSandboxOutput(output); err != nil {
		return err
	}
	var pools []*fsbv1.SandboxPool
	if name != "" {
		resp, err := c.api.GetPool(ctx, connect.NewRequest(&fsbv1.GetPoolRequest{Name: name}))
		if err != nil {
			return c.describe(err, target{})
		}
		pools = []*fsbv1.SandboxPool{resp.Msg.GetPool()}
	} else {
		resp, err := c.api.ListPools(ctx, connect.NewRequest(&fsbv1.ListPoolsRequest{}))
		if err != nil {
			return c.describe(err, target{})
		}
		pools = resp.Msg.GetPools()
	}
	switch output {
	case OutputJSON, OutputYAML:
		if name != "" {
			return c.writeDocument(output, poolObject(pools[0]))
		}
		items := make([]*v1alpha1.SandboxPool, 0, len(pools))
		for _, p := range pools {
			items = append(items, poolObject(p))
		}
		return c.writeDocument(output, struct {
			Items []*v1alpha1.SandboxPool `json:"items"`
		}{items})
	}
	if len(pools) == 0 {
		fmt.Fprintln(c.err, "No sandbox pools: fsb ctl apply -f FILE makes one.")
		return nil
	}
	return c.writePoolTable(pools, output == OutputWide)
}

func (c *Client) writePoolTable(pools []*fsbv1.SandboxPool, wide bool) error {
	tw := tabwriter.NewWriter(c.out, 0, 8, 3, ' ', 0)
	fmt.Fprint(tw, "NAME\tAGENTS\tWARM\tAGE")
	if wide {
		fmt.Fprint(tw, "\tCAPACITY\tPODS\tRUNTIME-TYPE\tSTATUS\tLABELS")
	}
	fmt.Fprintln(tw)
	now := time.Now()
	for _, p := range pools {
		age := "<unknown>"
		if p.GetCreatedAt() != nil {
			age = duration.HumanDuration(now.Sub(p.GetCreatedAt().AsTime()))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s", p.GetName(), p.GetConnectedAgents(), warmString(p.GetSpec().GetWarm()), age)
		if wide {
			capacity := "<none>"
			if cp := p.GetSpec().GetCapacity(); cp != nil {
				capacity = fmt.Sprintf("%d-%d (buffer %d-%d)", cp.GetPoolMin(), cp.GetPoolMax(), cp.GetBufferMin(), cp.GetBufferMax())
			}
			st := p.GetStatus()
			fmt.Fprintf(tw, "\t%s\t%d/%d\t%s\t%s\t%s", capacity, st.GetReadyPods(), st.GetCurrentPods(),
				orDefault(p.GetSpec().GetRuntimeType()), poolState(p), orNone(labelString(p.GetLabels())))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// warmString sums up a pool's warm entries: "<none>", or each entry's
// count and image ("2×localhost/fsb/busybox:latest", runtime when not runc).
func warmString(entries []*fsbv1.WarmEntry) string {
	if len(entries) == 0 {
		return "<none>"
	}
	parts := make([]string, 0, len(entries))
	for _, e := range entries {
		s := fmt.Sprintf("%d×%s", e.GetCount(), e.GetImage())
		if rt := e.GetRuntime(); rt != "" && rt != v1alpha1.RuntimeRunc {
			s += "/" + rt
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}

// poolState is "Deleting" for a pool being deleted, else its Ready
// condition's reason ("-" when no pool controller wrote one).
func poolState(p *fsbv1.SandboxPool) string {
	if p.GetDeletedAt() != nil {
		return "Deleting"
	}
	for _, c := range p.GetStatus().GetConditions() {
		if c.GetType() == "Ready" {
			return c.GetReason()
		}
	}
	return "-"
}

// poolObject is a pool as its SandboxPool object.
func poolObject(p *fsbv1.SandboxPool) *v1alpha1.SandboxPool {
	out, err := v1alpha1.PoolFromProto(p, p.GetNamespace())
	if err != nil {
		// The controller sent a template it could not have stored: show
		// the rest.
		cp := proto.CloneOf(p)
		cp.Spec.AgentTemplateJson = ""
		out, _ = v1alpha1.PoolFromProto(cp, p.GetNamespace())
	}
	out.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "SandboxPool"}
	out.UID = types.UID(p.GetUid())
	out.ResourceVersion = p.GetResourceVersion()
	out.Generation = p.GetGeneration()
	if t := p.GetCreatedAt(); t != nil {
		out.CreationTimestamp = metav1.NewTime(t.AsTime())
	}
	if t := p.GetDeletedAt(); t != nil {
		d := metav1.NewTime(t.AsTime())
		out.DeletionTimestamp = &d
	}
	st := p.GetStatus()
	out.Status = v1alpha1.SandboxPoolStatus{
		ObservedGeneration: st.GetObservedGeneration(), CurrentPods: st.GetCurrentPods(), ReadyPods: st.GetReadyPods(),
		TotalAgents: st.GetTotalAgents(), IdleAgents: st.GetIdleAgents(), BusyAgents: st.GetBusyAgents(),
	}
	for _, c := range st.GetConditions() {
		meta.SetStatusCondition(&out.Status.Conditions, metav1.Condition{
			Type: c.GetType(), Status: metav1.ConditionStatus(c.GetStatus()), Reason: c.GetReason(), Message: c.GetMessage(),
			LastTransitionTime: metav1.NewTime(c.GetLastTransitionTime().AsTime()),
		})
	}
	return out
}

// DeletePool deletes the SandboxPool name.
func (c *Client) DeletePool(ctx context.Context, name string, ignoreNotFound bool) error {
	if name == "" {
		return usagef("delete pool needs a pool name: fsb ctl delete pool NAME")
	}
	_, err := c.api.DeletePool(ctx, connect.NewRequest(&fsbv1.DeletePoolRequest{Name: name}))
	if ignoreNotFound && connect.CodeOf(err) == connect.CodeNotFound {
		return nil
	}
	if err != nil {
		return c.describe(err, target{})
	}
	fmt.Fprintf(c.out, "sandboxpool/%s deleted\n", name)
	return nil
}
