package fastpath

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/strictjson"
)

// FuzzUpdateRequest follows an UpdateSandboxRequest's JSON the way an
// update goes: strict decoding, the fast path's checks, then the change to
// a valid sandbox. Nothing may panic, and what an accepted update leaves
// must still pass the rules a create is held to.
func FuzzUpdateRequest(f *testing.F) {
	for _, seed := range []string{
		`{"name":"web","labels":{"app":"web"}}`,
		`{"name":"web","namespace":"team","failurePolicy":"FAILURE_POLICY_AUTO_RECREATE","resetRevision":true,"recoveryTimeoutSeconds":60}`,
		`{"name":"web","expireTime":"2100-01-02T15:04:05Z"}`,
		`{"name":"web","clearExpireTime":true}`,
		`{"name":"web","failurePolicy":99}`,
		`{"name":"web","expireTime":"2100-01-02T15:04:05Z","clearExpireTime":true}`,
		`{"name":"web","recoveryTimeoutSeconds":-1,"labels":{"bad key":"v"}}`,
		`{"name":"","nmespace":"x"}`,
		`{}`, `null`, ``,
	} {
		f.Add([]byte(seed))
	}
	codec := strictjson.New(strictjson.Name)
	now := time.Now()
	reset := metav1.NewTime(now.Add(-time.Hour).Truncate(time.Second))
	base := v1alpha1.Sandbox{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", Labels: map[string]string{"app": "web"}},
		Spec: v1alpha1.SandboxSpec{
			Image: "localhost/fsb/busybox:latest", Command: []string{"sh"}, ConsistencyMode: v1alpha1.ConsistencyFast,
			FailurePolicy: v1alpha1.FailurePolicyManual, ResetRevision: &reset,
		},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req fsbv1.UpdateSandboxRequest
		if err := codec.Unmarshal(data, &req); err != nil {
			return
		}
		if err := validateUpdate(or(req.GetNamespace(), DefaultNamespace), &req, now); err != nil {
			return
		}
		sb := base.DeepCopy()
		applyUpdate(sb, &req, now)
		if err := v1alpha1.ValidateSpec(v1alpha1.SpecToProto(sb.Spec)); err != nil {
			t.Fatalf("an accepted update left an invalid spec: %v", err)
		}
		if err := v1alpha1.ValidateLabels(sb.Labels); err != nil {
			t.Fatalf("an accepted update left invalid labels: %v", err)
		}
		if req.GetResetRevision() && !sb.Spec.ResetRevision.After(reset.Time) {
			t.Fatalf("reset revision %v is not after the last one %v", sb.Spec.ResetRevision, reset)
		}
	})
}
