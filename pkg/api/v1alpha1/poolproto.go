package v1alpha1

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// PoolToProto converts a SandboxPool for the API. connected is the number of
// agents serving it that the controller is connected to now.
func PoolToProto(p *SandboxPool, connected int) *fsbv1.SandboxPool {
	out := &fsbv1.SandboxPool{
		Name: p.Name, Namespace: p.Namespace, Labels: p.Labels, Spec: PoolSpecToProto(p.Spec),
		Uid: string(p.UID), ResourceVersion: p.ResourceVersion, Generation: p.Generation,
		ConnectedAgents: int32(connected),
		Status: &fsbv1.SandboxPoolStatus{
			ObservedGeneration: p.Status.ObservedGeneration, CurrentPods: p.Status.CurrentPods, ReadyPods: p.Status.ReadyPods,
			TotalAgents: p.Status.TotalAgents, IdleAgents: p.Status.IdleAgents, BusyAgents: p.Status.BusyAgents,
		},
	}
	if !p.CreationTimestamp.IsZero() {
		out.CreatedAt = timestamppb.New(p.CreationTimestamp.Time)
	}
	if p.DeletionTimestamp != nil {
		out.DeletedAt = timestamppb.New(p.DeletionTimestamp.Time)
	}
	for _, c := range p.Status.Conditions {
		out.Status.Conditions = append(out.Status.Conditions, &fsbv1.PoolCondition{
			Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message,
			LastTransitionTime: timestamppb.New(c.LastTransitionTime.Time),
		})
	}
	return out
}

// PoolSpecToProto converts a pool's spec for the API.
func PoolSpecToProto(s SandboxPoolSpec) *fsbv1.SandboxPoolSpec {
	out := &fsbv1.SandboxPoolSpec{MaxSandboxesPerPod: s.MaxSandboxesPerPod, RuntimeType: s.RuntimeType}
	if c := s.Capacity; c != nil {
		out.Capacity = &fsbv1.PoolCapacity{PoolMin: c.PoolMin, PoolMax: c.PoolMax, BufferMin: c.BufferMin, BufferMax: c.BufferMax}
	}
	if !isZeroTemplate(s.AgentTemplate) {
		// A PodTemplateSpec always encodes.
		data, _ := json.Marshal(&s.AgentTemplate)
		out.AgentTemplateJson = string(data)
	}
	for _, e := range s.Warm {
		out.Warm = append(out.Warm, WarmEntryToProto(e))
	}
	return out
}

// PoolFromProto converts an API pool's name, labels and spec (what
// ApplyPool reads) into a SandboxPool in namespace.
func PoolFromProto(p *fsbv1.SandboxPool, namespace string) (*SandboxPool, error) {
	out := &SandboxPool{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: p.GetName(), Labels: p.GetLabels()}}
	s := p.GetSpec()
	if c := s.GetCapacity(); c != nil {
		out.Spec.Capacity = &PoolCapacity{PoolMin: c.GetPoolMin(), PoolMax: c.GetPoolMax(), BufferMin: c.GetBufferMin(), BufferMax: c.GetBufferMax()}
	}
	if s != nil && s.MaxSandboxesPerPod != nil {
		n := *s.MaxSandboxesPerPod
		out.Spec.MaxSandboxesPerPod = &n
	}
	out.Spec.RuntimeType = s.GetRuntimeType()
	if t := s.GetAgentTemplateJson(); t != "" {
		if err := json.Unmarshal([]byte(t), &out.Spec.AgentTemplate); err != nil {
			return nil, fmt.Errorf("spec.agentTemplate: not a pod template: %v", err)
		}
	}
	for _, e := range s.GetWarm() {
		out.Spec.Warm = append(out.Spec.Warm, WarmEntryFromProto(e))
	}
	return out, nil
}

func isZeroTemplate(t corev1.PodTemplateSpec) bool {
	return equality.Semantic.DeepEqual(t, corev1.PodTemplateSpec{})
}
