package runtime

import (
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

func TestSameContainerIgnoresWhatUpdateChanges(t *testing.T) {
	base := func() *fsbv1.SandboxSpec {
		return &fsbv1.SandboxSpec{Image: "busybox", Command: []string{"sleep", "300"}, FailurePolicy: fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL}
	}
	for _, tc := range []struct {
		name   string
		change func(*fsbv1.SandboxSpec)
		same   bool
	}{
		{"nothing", func(*fsbv1.SandboxSpec) {}, true},
		{"failure policy", func(s *fsbv1.SandboxSpec) { s.FailurePolicy = fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE }, true},
		{"expiry", func(s *fsbv1.SandboxSpec) { s.ExpireTime = timestamppb.Now() }, true},
		{"reset", func(s *fsbv1.SandboxSpec) { s.ResetRevision = timestamppb.Now() }, true},
		{"recovery timeout", func(s *fsbv1.SandboxSpec) { s.RecoveryTimeoutSeconds = 60 }, true},
		{"command", func(s *fsbv1.SandboxSpec) { s.Command = []string{"true"} }, false},
		{"image", func(s *fsbv1.SandboxSpec) { s.Image = "other" }, false},
		{"ports", func(s *fsbv1.SandboxSpec) { s.ExposedPorts = []int32{80} }, false},
		{"memory", func(s *fsbv1.SandboxSpec) { s.Resources = &fsbv1.Resources{Memory: "64Mi"} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := base(), base()
			tc.change(b)
			if got := sameContainer(a, b); got != tc.same {
				t.Errorf("sameContainer = %v, want %v", got, tc.same)
			}
			if a.GetFailurePolicy() != fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL {
				t.Error("sameContainer changed its argument")
			}
		})
	}
}
