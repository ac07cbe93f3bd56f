package v1alpha1

import (
	"google.golang.org/protobuf/types/known/timestamppb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// SpecToProto converts a spec to its wire form.
func SpecToProto(s SandboxSpec) *fsbv1.SandboxSpec {
	out := &fsbv1.SandboxSpec{
		Image:                  s.Image,
		Command:                s.Command,
		Args:                   s.Args,
		WorkingDir:             s.WorkingDir,
		ExposedPorts:           s.ExposedPorts,
		PoolRef:                s.PoolRef,
		RecoveryTimeoutSeconds: s.RecoveryTimeoutSeconds,
		Runtime:                s.Runtime,
		NoInit:                 s.NoInit,
	}
	for _, e := range s.Envs {
		out.Envs = append(out.Envs, &fsbv1.EnvVar{Name: e.Name, Value: e.Value})
	}
	switch s.ConsistencyMode {
	case ConsistencyFast:
		out.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST
	case ConsistencyStrong:
		out.ConsistencyMode = fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG
	}
	switch s.FailurePolicy {
	case FailurePolicyManual:
		out.FailurePolicy = fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL
	case FailurePolicyAutoRecreate:
		out.FailurePolicy = fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE
	}
	if s.ResetRevision != nil {
		out.ResetRevision = timestamppb.New(s.ResetRevision.Time)
	}
	if s.ExpireTime != nil {
		out.ExpireTime = timestamppb.New(s.ExpireTime.Time)
	}
	if s.Resources != nil {
		out.Resources = &fsbv1.Resources{Cpu: s.Resources.CPU, Memory: s.Resources.Memory, Pids: s.Resources.Pids}
	}
	return out
}

// SpecFromProto converts a spec from its wire form. Unset enums stay empty
// (the controller's defaults apply).
func SpecFromProto(s *fsbv1.SandboxSpec) SandboxSpec {
	out := SandboxSpec{
		Image:                  s.GetImage(),
		Command:                s.GetCommand(),
		Args:                   s.GetArgs(),
		WorkingDir:             s.GetWorkingDir(),
		ExposedPorts:           s.GetExposedPorts(),
		PoolRef:                s.GetPoolRef(),
		RecoveryTimeoutSeconds: s.GetRecoveryTimeoutSeconds(),
		Runtime:                s.GetRuntime(),
		NoInit:                 s.GetNoInit(),
	}
	for _, e := range s.GetEnvs() {
		out.Envs = append(out.Envs, EnvVar{Name: e.GetName(), Value: e.GetValue()})
	}
	switch s.GetConsistencyMode() {
	case fsbv1.ConsistencyMode_CONSISTENCY_MODE_FAST:
		out.ConsistencyMode = ConsistencyFast
	case fsbv1.ConsistencyMode_CONSISTENCY_MODE_STRONG:
		out.ConsistencyMode = ConsistencyStrong
	}
	switch s.GetFailurePolicy() {
	case fsbv1.FailurePolicy_FAILURE_POLICY_MANUAL:
		out.FailurePolicy = FailurePolicyManual
	case fsbv1.FailurePolicy_FAILURE_POLICY_AUTO_RECREATE:
		out.FailurePolicy = FailurePolicyAutoRecreate
	}
	if s.GetResetRevision() != nil {
		t := metav1.NewTime(s.GetResetRevision().AsTime())
		out.ResetRevision = &t
	}
	if s.GetExpireTime() != nil {
		t := metav1.NewTime(s.GetExpireTime().AsTime())
		out.ExpireTime = &t
	}
	if r := s.GetResources(); r != nil {
		out.Resources = &Resources{CPU: r.GetCpu(), Memory: r.GetMemory(), Pids: r.GetPids()}
	}
	return out
}

var phaseToProto = map[Phase]fsbv1.Phase{
	PhasePending:     fsbv1.Phase_PHASE_PENDING,
	PhaseBound:       fsbv1.Phase_PHASE_BOUND,
	PhaseRunning:     fsbv1.Phase_PHASE_RUNNING,
	PhaseSucceeded:   fsbv1.Phase_PHASE_SUCCEEDED,
	PhaseFailed:      fsbv1.Phase_PHASE_FAILED,
	PhaseTerminating: fsbv1.Phase_PHASE_TERMINATING,
	PhaseExpired:     fsbv1.Phase_PHASE_EXPIRED,
	PhaseLost:        fsbv1.Phase_PHASE_LOST,
}

// ToProto converts a Sandbox to its wire form.
func ToProto(sb *Sandbox) *fsbv1.Sandbox {
	out := &fsbv1.Sandbox{
		Name:      sb.Name,
		Namespace: sb.Namespace,
		Labels:    sb.Labels,
		Spec:      SpecToProto(sb.Spec),
		Status: &fsbv1.SandboxStatus{
			Phase:       phaseToProto[sb.Status.Phase],
			SandboxId:   sb.Status.SandboxID,
			AssignedPod: sb.Status.AssignedPod,
			NodeName:    sb.Status.NodeName,
			Endpoints:   sb.Status.Endpoints,
			Revision:    sb.Status.Revision,
			ExitCode:    sb.Status.ExitCode,
			Message:     sb.Status.Message,
			Warm:        sb.Status.Warm,
		},
	}
	// A FAST sandbox's object carries its placement in annotations until
	// the controller has written the status.
	if sb.Status.SandboxID == "" && sb.Annotations[AnnotationWarm] == "true" {
		out.Status.Warm = true
	}
	out.Status.AssignedPod, out.Status.SandboxId, out.Status.Revision = Placement(sb)
	if !sb.CreationTimestamp.IsZero() {
		out.CreateTime = timestamppb.New(sb.CreationTimestamp.Time)
	}
	if sb.Status.AcceptedResetRevision != nil {
		out.Status.AcceptedResetRevision = timestamppb.New(sb.Status.AcceptedResetRevision.Time)
	}
	for _, c := range sb.Status.Conditions {
		out.Status.Conditions = append(out.Status.Conditions, &fsbv1.Condition{
			Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message,
			LastTransitionTime: timestamppb.New(c.LastTransitionTime.Time),
		})
	}
	return out
}
