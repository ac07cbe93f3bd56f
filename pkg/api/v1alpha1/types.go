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

// ConsistencyMode says when a create answers: "fast" or "strong"; empty
// takes the controller's default (--fastpath-consistency-mode).
//
// +kubebuilder:validation:Enum="";fast;strong
type ConsistencyMode string

// Consistency modes.
const (
	// ConsistencyFast starts the container, answers, then writes the object.
	ConsistencyFast ConsistencyMode = "fast"
	// ConsistencyStrong writes the object first and answers once it runs.
	ConsistencyStrong ConsistencyMode = "strong"
)

// FailurePolicy says what happens when a sandbox fails or its agent is lost:
// "Manual" (it stays failed) or "AutoRecreate"; empty is Manual.
//
// +kubebuilder:validation:Enum="";Manual;AutoRecreate
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
	// Name is what POSIX shells accept as a variable name.
	//
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	// +kubebuilder:validation:MaxLength=131072
	Name string `json:"name"`
	// Value holds no NUL byte, which no environment can.
	//
	// +kubebuilder:validation:Pattern=`^[^\x00]*$`
	// +kubebuilder:validation:MaxLength=131072
	Value string `json:"value,omitempty"`
}

// Resources limit what a sandbox may use. CPU and memory are Kubernetes
// quantities, written as a string ("500m", "256Mi") or an integer (2, as
// in a Pod's resources); either is kept as its text.
type Resources struct {
	// CPU is the most cores the sandbox may use, such as "500m" or 2.
	//
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self > 0 && self <= 256 : isQuantity(self) && quantity(self).compareTo(quantity('0')) > 0 && quantity(self).compareTo(quantity('256')) <= 0",message="want a positive quantity such as 500m or 2, at most 256 cores"
	CPU string `json:"cpu,omitempty"`
	// Memory is the most memory the sandbox may use, such as "256Mi".
	//
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 8388608 && self <= 1099511627776 : isQuantity(self) && quantity(self).compareTo(quantity('8Mi')) >= 0 && quantity(self).compareTo(quantity('1Ti')) <= 0",message="want a positive quantity such as 256Mi, at least 8Mi and at most 1Ti"
	Memory string `json:"memory,omitempty"`
	// Pids is the most processes (threads, fsb init's too) the sandbox may
	// hold; 0 takes the agent's default.
	//
	// +kubebuilder:validation:XValidation:rule="self == 0 || (self >= 16 && self <= 4194304)",message="want 0 (the agent's default) or 16 to 4194304 (its threads count, fsb init's too)"
	Pids int64 `json:"pids,omitempty"`
}

// SandboxSpec is what the user asks for. The rules of a valid spec are
// ValidateSandbox's; the markers below make the CRD's schema hold the same
// ones, and TestSchemaAgreesWithGo checks the two on one table of cases.
//
// +kubebuilder:validation:XValidation:rule="(has(self.command) ? size(self.command) : 0) + (has(self.args) ? size(self.args) : 0) <= 1024",message="spec.command and spec.args: at most 1024 entries together"
// +kubebuilder:validation:XValidation:rule="(has(self.command) ? self.command.map(c, size(c)).sum() : 0) + (has(self.args) ? self.args.map(a, size(a)).sum() : 0) <= 131072",message="spec.command and spec.args: at most 131072 characters together (128 KiB)"
// +kubebuilder:validation:XValidation:rule="!has(self.envs) || self.envs.map(e, size(e.name) + (has(e.value) ? size(e.value) : 0)).sum() <= 131072",message="spec.envs: at most 131072 characters of names and values together (128 KiB)"
// +kubebuilder:validation:XValidation:rule="!has(self.runtime) || self.runtime != 'gvisor' || !has(self.resources) || !has(self.resources.memory) || (type(self.resources.memory) == int ? self.resources.memory >= 33554432 : !isQuantity(self.resources.memory) || quantity(self.resources.memory).compareTo(quantity('32Mi')) >= 0)",message="at least 32Mi with runtime gvisor, whose kernel runs inside the limit",fieldPath=".resources.memory"
type SandboxSpec struct {
	// Image is the image reference, such as alpine:latest or
	// registry/repository:tag@digest.
	//
	// It is held to the grammar of github.com/distribution/reference: the
	// pattern is its regular expression, and the rule adds what its parser
	// checks past it (the length of the repository path, the digest).
	//
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="!self.matches('^[a-f0-9]{64}$') && (!self.contains('@') || self.split('@')[1].matches('^(sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})$')) && (!self.split('@')[0].contains('/') ? size(self.find('^[^:@]+')) <= 247 : self.matches('^(localhost|[^/]*[.:A-Z][^/]*)/') ? size(self.find('^(?:[^/@]+/)*[^:@/]+')) - size(self.find('^[^/]+/')) + (self.matches('^(docker[.]io|index[.]docker[.]io)/[^/]*$') ? 8 : 0) <= 255 : size(self.find('^(?:[^/@]+/)*[^:@/]+')) <= 255)",message="want an image reference such as alpine:latest: a repository path of at most 255 characters (library/ added to a name without one), a sha256, sha384 or sha512 digest, not a bare 64-character hex ID"
	// +kubebuilder:validation:Pattern=`^((?:(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[(?:[a-fA-F0-9:]+)\])(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*)(?::([\w][\w.-]{0,127}))?(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}))?$`
	Image string `json:"image"`
	// Command replaces the image's entrypoint.
	//
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=131072
	// +kubebuilder:validation:items:Pattern=`^[^\x00]*$`
	Command []string `json:"command,omitempty"`
	// Args replaces the image's command.
	//
	// +kubebuilder:validation:MaxItems=1024
	// +kubebuilder:validation:items:MaxLength=131072
	// +kubebuilder:validation:items:Pattern=`^[^\x00]*$`
	Args []string `json:"args,omitempty"`
	// Envs are added to the image's environment.
	//
	// +kubebuilder:validation:MaxItems=1024
	Envs []EnvVar `json:"envs,omitempty"`
	// WorkingDir is an absolute path, at most 4096 bytes (PATH_MAX).
	//
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:Pattern=`^/[^\x00]*$`
	// +kubebuilder:validation:XValidation:rule="size(bytes(self)) <= 4096",message="at most 4096 bytes"
	WorkingDir string `json:"workingDir,omitempty"`
	// ExposedPorts are the container ports the sandbox serves on, each
	// once.
	//
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	ExposedPorts []int32 `json:"exposedPorts,omitempty"`
	// PoolRef names the SandboxPool whose agents run the sandbox.
	//
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	PoolRef         string          `json:"poolRef,omitempty"`
	ConsistencyMode ConsistencyMode `json:"consistencyMode,omitempty"`
	FailurePolicy   FailurePolicy   `json:"failurePolicy,omitempty"`
	// RecoveryTimeoutSeconds bounds how long AutoRecreate keeps trying; 0
	// takes the default (300).
	//
	// +kubebuilder:validation:Minimum=0
	RecoveryTimeoutSeconds int32 `json:"recoveryTimeoutSeconds,omitempty"`
	// ResetRevision, set to a new time, forces a re-create.
	ResetRevision *metav1.Time `json:"resetRevision,omitempty"`
	// ExpireTime is when the sandbox is stopped and marked Expired.
	ExpireTime *metav1.Time `json:"expireTime,omitempty"`
	Resources  *Resources   `json:"resources,omitempty"`
	// Runtime is "runc" (the default), "crun" or "gvisor".
	//
	// +kubebuilder:validation:Enum="";runc;crun;gvisor
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
	// Warm says the sandbox was claimed from a warm pool.
	Warm bool `json:"warm,omitempty"`
}

// Sandbox is one isolated container run on behalf of a user.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=sbx,categories=fsb
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Agent",type=string,JSONPath=`.status.assignedPod`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.nodeName`
// +kubebuilder:printcolumn:name="Endpoints",type=string,JSONPath=`.status.endpoints`
// +kubebuilder:printcolumn:name="Revision",type=integer,JSONPath=`.status.revision`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
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
//
// +kubebuilder:validation:XValidation:rule="self.poolMin <= self.poolMax",message="poolMin must be at most poolMax",fieldPath=".poolMin"
// +kubebuilder:validation:XValidation:rule="self.bufferMin <= self.bufferMax",message="bufferMin must be at most bufferMax",fieldPath=".bufferMin"
// +kubebuilder:validation:XValidation:rule="self.bufferMin <= self.poolMax",message="bufferMin must be at most poolMax: a pool cannot keep more idle agents than it may have pods",fieldPath=".bufferMin"
type PoolCapacity struct {
	// PoolMin and PoolMax bound the agent pods in all; PoolMax is at
	// least 1.
	//
	// +kubebuilder:validation:Minimum=0
	PoolMin int32 `json:"poolMin"`
	// +kubebuilder:validation:Minimum=1
	PoolMax int32 `json:"poolMax"`
	// BufferMin and BufferMax bound the idle agent pods kept.
	//
	// +kubebuilder:validation:Minimum=0
	BufferMin int32 `json:"bufferMin"`
	// +kubebuilder:validation:Minimum=0
	BufferMax int32 `json:"bufferMax"`
}

// SandboxPoolSpec describes a pool of agent pods.
type SandboxPoolSpec struct {
	// Capacity bounds the agent pods the pool controller keeps for the
	// pool. Left out, it keeps none: the pool's agents are started by
	// other means, each with --pool naming the pool (on a single machine,
	// the agents of --agents; in Kubernetes, agents deployed apart).
	//
	// +optional
	Capacity *PoolCapacity `json:"capacity,omitempty"`
	// MaxSandboxesPerPod becomes each agent's capacity (--capacity); left
	// out (nil), the agent's own (the DaemonSet's AGENT_CAPACITY, else the
	// agent's default). A pointer, so that 0 written is refused as 0 rather
	// than taken for the field left out.
	//
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxSandboxesPerPod *int32 `json:"maxSandboxesPerPod,omitempty"`
	// RuntimeType is "container" (the default) or "gvisor".
	//
	// +kubebuilder:validation:Enum="";container;gvisor
	RuntimeType string `json:"runtimeType,omitempty"`
	// AgentTemplate is the pod template of the pool's agents. An empty
	// one is left out of the JSON (omitzero; omitempty keeps a struct),
	// or the API server would hold it to a Pod's rules and refuse a pool
	// made without one for having no containers.
	//
	// +optional
	AgentTemplate corev1.PodTemplateSpec `json:"agentTemplate,omitzero"`
	// Warm lists the kinds of sandbox the pool keeps pre-started on its
	// agents, so that a matching create starts in milliseconds.
	//
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	Warm []WarmEntry `json:"warm,omitempty"`
}

// SandboxPoolStatus is what the pool controller observed (pkg/agentpool).
type SandboxPoolStatus struct {
	// ObservedGeneration is the spec generation the counts were taken
	// under.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// CurrentPods counts the pool's agent pods not being deleted.
	// +optional
	CurrentPods int32 `json:"currentPods"`
	// ReadyPods counts those whose Ready condition is True.
	// +optional
	ReadyPods int32 `json:"readyPods"`
	// TotalAgents counts the pool's agents the controller is connected
	// to; IdleAgents those healthy, not cordoned and running no sandbox;
	// BusyAgents those running at least one.
	// +optional
	TotalAgents int32 `json:"totalAgents"`
	// +optional
	IdleAgents int32 `json:"idleAgents"`
	// +optional
	BusyAgents int32 `json:"busyAgents"`
	// Conditions: Ready, Exhausted (at poolMax with no idle agent),
	// Deleting (the finalizer holds the deletion).
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// SandboxPool keeps a pool of agent pods.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=sbxpool,categories=fsb
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="a SandboxPool's name must be a DNS-1123 label: at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit (it becomes a label value and its agents' --pool)"
// +kubebuilder:printcolumn:name="Min",type=integer,JSONPath=`.spec.capacity.poolMin`
// +kubebuilder:printcolumn:name="Max",type=integer,JSONPath=`.spec.capacity.poolMax`
// +kubebuilder:printcolumn:name="Current",type=integer,JSONPath=`.status.currentPods`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyPods`
// +kubebuilder:printcolumn:name="Busy",type=integer,JSONPath=`.status.busyAgents`
// +kubebuilder:printcolumn:name="Idle",type=integer,JSONPath=`.status.idleAgents`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
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
