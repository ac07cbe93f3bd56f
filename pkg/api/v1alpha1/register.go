package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// SchemeBuilder registers this group's types with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds Sandbox, SandboxPool and their lists to a scheme, so
	// codecs, typed REST clients and informers can handle them.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Resource returns the group-qualified resource, such as
// "sandboxes.sandbox.fast.io", that API errors name.
func Resource(resource string) schema.GroupResource {
	return GroupVersion.WithResource(resource).GroupResource()
}

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion,
		&Sandbox{}, &SandboxList{},
		&SandboxPool{}, &SandboxPoolList{},
	)
	// ListOptions, WatchEvent, Status and friends for this group version.
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}
