package fastpath

import (
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// TestGetSandboxUsage: the agent's answer is relayed as it is, for a
// sandbox without fsb init too (usage needs none); a sandbox that is
// missing or does not run is refused as exec refuses it, and a starting
// one is waited for.
func TestGetSandboxUsage(t *testing.T) {
	p := newFakePlane(t)
	p.seed("web", v1alpha1.PhaseRunning, false)
	p.seed("bare", v1alpha1.PhaseRunning, true)
	p.seed("failed", v1alpha1.PhaseFailed, false)
	p.seed("pending", v1alpha1.PhasePending, false)
	p.seed("starting", v1alpha1.PhaseBound, false)
	c := p.client()
	ctx := context.Background()
	go func() {
		time.Sleep(150 * time.Millisecond)
		p.fp.mu.Lock()
		pc := p.fp.pending[key(DefaultNamespace, "starting")]
		p.fp.mu.Unlock()
		pc.mu.Lock()
		pc.obj.Status.Phase = v1alpha1.PhaseRunning
		pc.mu.Unlock()
	}()
	for _, name := range []string{"web", "bare", "starting"} {
		resp, err := c.GetSandboxUsage(ctx, connect.NewRequest(&fsbv1.GetSandboxUsageRequest{Name: name}))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if u := resp.Msg.GetUsage(); u.GetRevision() != 7 || u.GetCpuPercent() != 12.5 || u.GetMemoryUsedBytes() != 4096 {
			t.Errorf("%s: usage %v, want the agent's", name, u)
		}
	}
	for _, tc := range []struct {
		name string
		code connect.Code
		want string
	}{
		{"missing", connect.CodeNotFound, "sandbox missing not found in namespace default"},
		{"failed", connect.CodeFailedPrecondition, "sandbox default/failed is Failed, not Running"},
		{"pending", connect.CodeFailedPrecondition, "sandbox default/pending is Pending, not Running"},
		{"", connect.CodeInvalidArgument, "name is required"},
	} {
		_, err := c.GetSandboxUsage(ctx, connect.NewRequest(&fsbv1.GetSandboxUsageRequest{Name: tc.name}))
		if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %v saying %q", tc.name, err, tc.code, tc.want)
		}
	}
}
