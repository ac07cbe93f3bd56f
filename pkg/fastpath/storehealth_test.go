package fastpath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

func TestRefusedForGood(t *testing.T) {
	gr := store.GroupResource
	gk := v1alpha1.GroupVersion.WithKind("Sandbox").GroupKind()
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"invalid", apierrors.NewInvalid(gk, "a", field.ErrorList{field.Required(field.NewPath("spec", "image"), "")}), true},
		{"forbidden", apierrors.NewForbidden(gr, "a", errors.New("exceeded quota")), true},
		{"bad request", apierrors.NewBadRequest("no"), true},
		{"entity too large", apierrors.NewRequestEntityTooLargeError("too big"), true},
		{"method not supported", apierrors.NewMethodNotSupported(gr, "create"), true},
		{"name taken by another sandbox", &nameTakenError{name: "default/a", holder: "sb-b", id: "sb-a"}, true},
		{"wrapped refusal", fmt.Errorf("write: %w", apierrors.NewForbidden(gr, "a", errors.New("no"))), true},
		{"unavailable", apierrors.NewServiceUnavailable("down"), false},
		{"timeout", apierrors.NewTimeoutError("slow", 1), false},
		{"server timeout", apierrors.NewServerTimeout(gr, "create", 1), false},
		{"too many requests", apierrors.NewTooManyRequests("later", 1), false},
		{"internal error", apierrors.NewInternalError(errors.New("etcd")), false},
		{"unauthorized", apierrors.NewUnauthorized("expired token"), false},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, false},
		{"deadline", context.DeadlineExceeded, false},
		{"already exists, holder not read yet", apierrors.NewAlreadyExists(gr, "a"), false},
		{"namespace not found", apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "nope"), true},
		{"resource not served yet", apierrors.NewNotFound(gr, ""), false},
		{"unknown", errors.New("something else"), false},
		{"nil", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := refusedForGood(tc.err); got != tc.want {
				t.Errorf("refusedForGood(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
