package controller

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// TestFirstStatusAcceptsOnlyTheResetOfTheCreate: the first status a FAST
// create writes accepts a reset the create carried, and not one the user
// asked for before that status was written (a CI run swallowed such a
// reset: the sandbox stayed on revision 1).
func TestFirstStatusAcceptsOnlyTheResetOfTheCreate(t *testing.T) {
	reset := metav1.NewTime(time.Unix(1796214399, 0))
	running := &fsbv1.AgentSandbox{Phase: fsbv1.Phase_PHASE_RUNNING}
	for _, tc := range []struct {
		name       string
		generation int64
		wantReset  bool
	}{
		{"reset carried by the create", 1, false},
		{"reset asked for after the create", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb := &v1alpha1.Sandbox{}
			sb.Name, sb.Generation = "s", tc.generation
			sb.Spec.ResetRevision = reset.DeepCopy()
			sb.Status = *statusFrom(sb, "agent-1", "sb-1", 1, running)
			if sb.Status.Phase != v1alpha1.PhaseRunning {
				t.Fatalf("phase %q, want Running", sb.Status.Phase)
			}
			if got := resetRequested(sb); got != tc.wantReset {
				t.Errorf("resetRequested = %v, want %v (accepted %v)", got, tc.wantReset, sb.Status.AcceptedResetRevision)
			}
		})
	}
}
