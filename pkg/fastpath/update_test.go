package fastpath

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// TestCreateTakesLifecycleFields: a create accepts the lifecycle fields,
// and refuses with InvalidArgument what cannot be right.
func TestCreateTakesLifecycleFields(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		set  func(*fsbv1.SandboxSpec)
		want connect.Code // 0: accepted
	}{
		{"AutoRecreate", func(s *fsbv1.SandboxSpec) { s.FailurePolicy = fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE }, 0},
		{"Manual", func(s *fsbv1.SandboxSpec) { s.FailurePolicy = fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL }, 0},
		{"unknown failure policy", func(s *fsbv1.SandboxSpec) { s.FailurePolicy = 7 }, connect.CodeInvalidArgument},
		{"recovery timeout", func(s *fsbv1.SandboxSpec) { s.RecoveryTimeoutSeconds = 60 }, 0},
		{"recovery timeout 0, the default", func(s *fsbv1.SandboxSpec) { s.RecoveryTimeoutSeconds = 0 }, 0},
		{"negative recovery timeout", func(s *fsbv1.SandboxSpec) { s.RecoveryTimeoutSeconds = -1 }, connect.CodeInvalidArgument},
		{"expiry in the future", func(s *fsbv1.SandboxSpec) { s.ExpireTime = timestamppb.New(now.Add(10 * time.Minute)) }, 0},
		{"expiry in the past", func(s *fsbv1.SandboxSpec) { s.ExpireTime = timestamppb.New(now.Add(-time.Second)) }, connect.CodeInvalidArgument},
		{"reset revision", func(s *fsbv1.SandboxSpec) { s.ResetRevision = timestamppb.New(now) }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := &fsbv1.SandboxSpec{Image: rig.ImageRef, Command: []string{"true"}}
			tc.set(spec)
			err := validateCreate("default", &fsbv1.CreateSandboxRequest{Name: "life", Spec: spec})
			switch {
			case tc.want == 0 && err != nil:
				t.Errorf("validateCreate: %v, want it accepted", err)
			case tc.want != 0 && connect.CodeOf(err) != tc.want:
				t.Errorf("validateCreate: %v, want code %v", err, tc.want)
			}
		})
	}
}

// TestUpdateSetsLifecycleFields: update changes each lifecycle field it is
// given, through the store, leaves the others, and refuses with
// InvalidArgument what cannot be right.
func TestUpdateSetsLifecycleFields(t *testing.T) {
	p := newPlane(t)
	ctx := context.Background()
	spec := fastSpec("sleep", "300")
	spec.RecoveryTimeoutSeconds = 30
	createExpiry := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	spec.ExpireTime = timestamppb.New(createExpiry)
	if _, err := p.fp.CreateSandbox(ctx, connect.NewRequest(&fsbv1.CreateSandboxRequest{Name: "life", Spec: spec})); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the object in the cache", func() bool {
		_, ok := p.ctrl.Get("default", "life")
		return ok
	})
	created, err := p.store.Get(ctx, "default", "life")
	if err != nil {
		t.Fatal(err)
	}
	if created.Spec.RecoveryTimeoutSeconds != 30 || created.Spec.ExpireTime == nil || !created.Spec.ExpireTime.Time.Equal(createExpiry) {
		t.Errorf("the created object's lifecycle: recovery timeout %d, expire time %v", created.Spec.RecoveryTimeoutSeconds, created.Spec.ExpireTime)
	}
	expiry := time.Now().Add(time.Hour).Truncate(time.Second)
	var firstReset time.Time
	for _, tc := range []struct {
		name  string
		req   *fsbv1.UpdateSandboxRequest
		want  connect.Code // 0: accepted
		check func(t *testing.T, spec v1alpha1.SandboxSpec)
	}{
		{"failure policy AutoRecreate", &fsbv1.UpdateSandboxRequest{FailurePolicy: fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE}, 0,
			func(t *testing.T, spec v1alpha1.SandboxSpec) {
				if spec.FailurePolicy != v1alpha1.FailurePolicyAutoRecreate {
					t.Errorf("failure policy %q", spec.FailurePolicy)
				}
			}},
		{"recovery timeout", &fsbv1.UpdateSandboxRequest{RecoveryTimeoutSeconds: proto.Int32(120)}, 0,
			func(t *testing.T, spec v1alpha1.SandboxSpec) {
				if spec.RecoveryTimeoutSeconds != 120 || spec.FailurePolicy != v1alpha1.FailurePolicyAutoRecreate {
					t.Errorf("recovery timeout %d, failure policy %q", spec.RecoveryTimeoutSeconds, spec.FailurePolicy)
				}
			}},
		{"expiry", &fsbv1.UpdateSandboxRequest{ExpireTime: timestamppb.New(expiry)}, 0,
			func(t *testing.T, spec v1alpha1.SandboxSpec) {
				if spec.ExpireTime == nil || !spec.ExpireTime.Time.Equal(expiry) {
					t.Errorf("expire time %v, want %v", spec.ExpireTime, expiry)
				}
			}},
		{"reset revision", &fsbv1.UpdateSandboxRequest{ResetRevision: true}, 0,
			func(t *testing.T, spec v1alpha1.SandboxSpec) {
				if spec.ResetRevision == nil || time.Since(spec.ResetRevision.Time) > time.Minute {
					t.Fatalf("reset revision %v, want about now", spec.ResetRevision)
				}
				firstReset = spec.ResetRevision.Time
			}},
		{"reset revision again, within the second", &fsbv1.UpdateSandboxRequest{ResetRevision: true}, 0,
			func(t *testing.T, spec v1alpha1.SandboxSpec) {
				if spec.ResetRevision == nil || !spec.ResetRevision.Time.After(firstReset) {
					t.Errorf("second reset revision %v, want after the first %v", spec.ResetRevision, firstReset)
				}
			}},
		{"clear expiry", &fsbv1.UpdateSandboxRequest{ClearExpireTime: true}, 0,
			func(t *testing.T, spec v1alpha1.SandboxSpec) {
				if spec.ExpireTime != nil || spec.RecoveryTimeoutSeconds != 120 {
					t.Errorf("expire time %v (want none), recovery timeout %d", spec.ExpireTime, spec.RecoveryTimeoutSeconds)
				}
			}},
		{"failure policy Manual", &fsbv1.UpdateSandboxRequest{FailurePolicy: fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL}, 0,
			func(t *testing.T, spec v1alpha1.SandboxSpec) {
				if spec.FailurePolicy != v1alpha1.FailurePolicyManual {
					t.Errorf("failure policy %q", spec.FailurePolicy)
				}
			}},
		{"expiry in the past", &fsbv1.UpdateSandboxRequest{ExpireTime: timestamppb.New(time.Now().Add(-time.Minute))}, connect.CodeInvalidArgument, nil},
		{"expiry set and cleared", &fsbv1.UpdateSandboxRequest{ExpireTime: timestamppb.New(expiry), ClearExpireTime: true}, connect.CodeInvalidArgument, nil},
		{"negative recovery timeout", &fsbv1.UpdateSandboxRequest{RecoveryTimeoutSeconds: proto.Int32(-5)}, connect.CodeInvalidArgument, nil},
		{"unknown failure policy", &fsbv1.UpdateSandboxRequest{FailurePolicy: 9}, connect.CodeInvalidArgument, nil},
		{"no name", &fsbv1.UpdateSandboxRequest{Name: "-", ResetRevision: true}, connect.CodeInvalidArgument, nil},
		{"unknown sandbox", &fsbv1.UpdateSandboxRequest{Name: "nobody", ResetRevision: true}, connect.CodeNotFound, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := proto.Clone(tc.req).(*fsbv1.UpdateSandboxRequest)
			switch req.Name {
			case "":
				req.Name = "life"
			case "-":
				req.Name = ""
			}
			resp, err := p.fp.UpdateSandbox(ctx, connect.NewRequest(req))
			if tc.want != 0 {
				if connect.CodeOf(err) != tc.want {
					t.Errorf("update: %v, want code %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("update: %v", err)
			}
			sb, err := p.store.Get(ctx, "default", "life")
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, sb.Spec)
			if got := v1alpha1.SpecFromProto(resp.Msg.GetSandbox().GetSpec()); !equalLifecycle(got, sb.Spec) {
				t.Errorf("update answered spec %+v, the store has %+v", got, sb.Spec)
			}
		})
	}
}

func equalLifecycle(a, b v1alpha1.SandboxSpec) bool {
	eq := func(x, y *metav1.Time) bool { return (x == nil) == (y == nil) && (x == nil || x.Equal(y)) }
	return a.FailurePolicy == b.FailurePolicy && a.RecoveryTimeoutSeconds == b.RecoveryTimeoutSeconds &&
		eq(a.ExpireTime, b.ExpireTime) && eq(a.ResetRevision, b.ResetRevision)
}
