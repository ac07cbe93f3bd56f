// Package v1alpha1 holds the sandbox.fast.io/v1alpha1 API: Sandbox and
// SandboxPool. Both stores (the embedded one and Kubernetes) keep these
// objects; deepcopy is generated (make generate).
//
// +kubebuilder:object:generate=true
// +groupName=sandbox.fast.io
package v1alpha1
