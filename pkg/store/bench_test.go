package store_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// A full-size object: what the fast path writes for a placed sandbox.
func benchSandbox(name string) *v1alpha1.Sandbox {
	sb := sandbox("default", name)
	sb.Labels = map[string]string{"app": "bench", "team": "a"}
	sb.Annotations = map[string]string{
		v1alpha1.AnnotationID: "sb-0123456789abcdef", v1alpha1.AnnotationAgent: "agent-1", v1alpha1.AnnotationRevision: "1",
	}
	sb.Finalizers = []string{v1alpha1.Finalizer}
	sb.Spec.Envs = []v1alpha1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "2"}}
	sb.Spec.ExposedPorts = []int32{8080}
	sb.Spec.Resources = &v1alpha1.Resources{CPU: "500m", Memory: "256Mi", Pids: 128}
	return sb
}

// eachStoreB runs a benchmark on each store kind: the embedded one (a bbolt
// file) and the kube one (the rig's API server and its etcd, over loopback
// HTTPS/JSON).
func eachStoreB(b *testing.B, f func(b *testing.B, s store.Interface)) {
	for _, k := range storeKinds {
		b.Run(k.name, func(b *testing.B) { f(b, k.open(b)) })
	}
}

// BenchmarkCreate is one create at a time: one bbolt commit (fsync) each, or
// one API request (an etcd write) each.
func BenchmarkCreate(b *testing.B) {
	eachStoreB(b, func(b *testing.B, s store.Interface) {
		ctx := context.Background()
		i := 0
		for b.Loop() {
			if _, err := s.Create(ctx, benchSandbox(fmt.Sprintf("sb-%d", i))); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkCreateParallel has GOMAXPROCS×8 concurrent creators: queued writes
// share commits.
func BenchmarkCreateParallel(b *testing.B) {
	eachStoreB(b, func(b *testing.B, s store.Interface) {
		ctx := context.Background()
		var n atomic.Int64
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Create(ctx, benchSandbox(fmt.Sprintf("sb-%d", n.Add(1)))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkGet(b *testing.B) {
	eachStoreB(b, func(b *testing.B, s store.Interface) {
		ctx := context.Background()
		mustCreate(b, s, benchSandbox("a"))
		for b.Loop() {
			if _, err := s.Get(ctx, "default", "a"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkList100 lists (and copies) 100 objects.
func BenchmarkList100(b *testing.B) {
	eachStoreB(b, func(b *testing.B, s store.Interface) {
		ctx := context.Background()
		for i := range 100 {
			mustCreate(b, s, benchSandbox(fmt.Sprintf("sb-%03d", i)))
		}
		for b.Loop() {
			list, err := s.List(ctx, "default", nil)
			if err != nil || len(list.Items) != 100 {
				b.Fatal(err, len(list.Items))
			}
		}
	})
}

// BenchmarkUpdateStatus writes a changed status each time, as the controller
// does on every phase change.
func BenchmarkUpdateStatus(b *testing.B) {
	eachStoreB(b, func(b *testing.B, s store.Interface) {
		ctx := context.Background()
		sb := mustCreate(b, s, benchSandbox("a"))
		for b.Loop() {
			sb.Status.Revision++
			sb.Status.Phase = v1alpha1.PhaseRunning
			var err error
			if sb, err = s.UpdateStatus(ctx, sb); err != nil {
				b.Fatal(err)
			}
		}
	})
}
