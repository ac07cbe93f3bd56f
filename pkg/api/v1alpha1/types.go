package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of these types.
var GroupVersion = schema.GroupVersion{Group: "sandbox.fast.io", Version: "v1alpha1"}

// Annotations and the finalizer the control plane writes on Sandboxes.
const (
	// AnnotationID carries the sandbox's machine identity. It is set before
	// the first agent call, so a create through the API (which drops status)
	// still tells the controller the sandbox is placed.
	AnnotationID = "sandbox.fast.io/id"
	// AnnotationAgent names the agent a FAST create placed the sandbox on.
	AnnotationAgent = "sandbox.fast.io/agent"
	// AnnotationRevision is the revision a FAST create started.
	AnnotationRevision = "sandbox.fast.io/revision"
	// Finalizer keeps a Sandbox until its container is gone.
	Finalizer = "sandbox.fast.io/cleanup"
)

// ConsistencyMode says when a create answers.
type ConsistencyMode string

// Consistency modes.
const (
	// ConsistencyFast starts the container, answers, then writes the object.
	ConsistencyFast ConsistencyMode = "fast"
	// ConsistencyStrong writes the object first and answers once it runs.
	ConsistencyStrong ConsistencyMode = "strong"
)

// FailurePolicy says what happens when a sandbox fails or its agent is lost.
type FailurePolicy string

// Failure policies.
const (
	FailurePolicyManual       FailurePolicy = "Manual"
	FailurePolicyAutoRecreate FailurePolicy = "AutoRecreate"
)

// Phase is where a sandbox is in its life.
type Phase string

// Phases.
const (
	PhasePending     Phase = "Pending"
	PhaseBound       Phase = "Bound"
	PhaseRunning     Phase = "Running"
	PhaseSucceeded   Phase = "Succeeded"
	PhaseFailed      Phase = "Failed"
	PhaseTerminating Phase = "Terminating"
	PhaseExpired     Phase = "Expired"
	PhaseLost        Phase = "Lost"
)

// EnvVar is one environment variable of the sandbox's main process.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}

// Resources limit what a sandbox may use.
type Resources struct {
	// CPU as a Kubernetes quantity, such as "500m".
	CPU string `json:"cpu,omitempty"`
	// Memory as a Kubernetes quantity, such as "256Mi".
	Memory string `json:"memory,omitempty"`
	// Pids is the most processes the sandbox may hold.
	Pids int64 `json:"pids,omitempty"`
}

// SandboxSpec is what the user asks for.
type SandboxSpec struct {
	Image           string          `json:"image"`
	Command         []string        `json:"command,omitempty"`
	Args            []string        `json:"args,omitempty"`
	Envs            []EnvVar        `json:"envs,omitempty"`
	WorkingDir      string          `json:"workingDir,omitempty"`
	ExposedPorts    []int32         `json:"exposedPorts,omitempty"`
	PoolRef         string          `json:"poolRef,omitempty"`
	ConsistencyMode ConsistencyMode `json:"consistencyMode,omitempty"`
	FailurePolicy   FailurePolicy   `json:"failurePolicy,omitempty"`
	// RecoveryTimeoutSeconds bounds how long AutoRecreate keeps trying.
	RecoveryTimeoutSeconds int32 `json:"recoveryTimeoutSeconds,omitempty"`
	// ResetRevision, set to a new time, forces a re-create.
	ResetRevision *metav1.Time `json:"resetRevision,omitempty"`
	// ExpireTime is when the sandbox is stopped and marked Expired.
	ExpireTime *metav1.Time `json:"expireTime,omitempty"`
	Resources  *Resources   `json:"resources,omitempty"`
	// Runtime is "runc" (the default), "crun" or "gvisor".
	Runtime string `json:"runtime,omitempty"`
	// NoInit runs the command as PID 1 instead of under fsb init.
	NoInit bool `json:"noInit,omitempty"`
}

// SandboxStatus is what the control plane observed.
type SandboxStatus struct {
	Phase Phase `json:"phase,omitempty"`
	// SandboxID is the sandbox's machine identity, stable across revisions.
	SandboxID string `json:"sandboxID,omitempty"`
	// AssignedPod is the agent running the sandbox.
	AssignedPod string `json:"assignedPod,omitempty"`
	NodeName    string `json:"nodeName,omitempty"`
	// Endpoints are "ip:port" for each exposed port.
	Endpoints             []string           `json:"endpoints,omitempty"`
	Revision              int64              `json:"revision,omitempty"`
	ExitCode              int32              `json:"exitCode,omitempty"`
	AcceptedResetRevision *metav1.Time       `json:"acceptedResetRevision,omitempty"`
	Conditions            []metav1.Condition `json:"conditions,omitempty"`
	Message               string             `json:"message,omitempty"`
}

// Sandbox is one isolated container run on behalf of a user.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
type Sandbox struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   SandboxSpec   `json:"spec"`
	Status SandboxStatus `json:"status,omitempty"`
}

// SandboxList is a list of Sandboxes.
//
// +kubebuilder:object:root=true
type SandboxList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Sandbox `json:"items"`
}

// PoolCapacity bounds a pool's agent pods.
type PoolCapacity struct {
	// PoolMin and PoolMax bound the agent pods in all.
	PoolMin int32 `json:"poolMin"`
	PoolMax int32 `json:"poolMax"`
	// BufferMin and BufferMax bound the idle agent pods kept.
	BufferMin int32 `json:"bufferMin"`
	BufferMax int32 `json:"bufferMax"`
}

// SandboxPoolSpec describes a pool of agent pods.
type SandboxPoolSpec struct {
	Capacity PoolCapacity `json:"capacity"`
	// MaxSandboxesPerPod becomes each agent's AGENT_CAPACITY.
	MaxSandboxesPerPod int32 `json:"maxSandboxesPerPod,omitempty"`
	// RuntimeType is "container" or "gvisor".
	RuntimeType string `json:"runtimeType,omitempty"`
	// AgentTemplate is the pod template of the pool's agents.
	AgentTemplate corev1.PodTemplateSpec `json:"agentTemplate,omitempty"`
}

// SandboxPoolStatus is what the pool controller observed.
type SandboxPoolStatus struct {
	CurrentPods int32              `json:"currentPods,omitempty"`
	ReadyPods   int32              `json:"readyPods,omitempty"`
	TotalAgents int32              `json:"totalAgents,omitempty"`
	IdleAgents  int32              `json:"idleAgents,omitempty"`
	BusyAgents  int32              `json:"busyAgents,omitempty"`
	Conditions  []metav1.Condition `json:"conditions,omitempty"`
}

// SandboxPool keeps a pool of agent pods.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
type SandboxPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   SandboxPoolSpec   `json:"spec"`
	Status SandboxPoolStatus `json:"status,omitempty"`
}

// SandboxPoolList is a list of SandboxPools.
//
// +kubebuilder:object:root=true
type SandboxPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SandboxPool `json:"items"`
}
