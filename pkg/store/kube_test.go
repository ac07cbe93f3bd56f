package store_test

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/store"
)

// TestKubeWatchFromACompactedVersion: the API server answers a watch from a
// resourceVersion its watch cache no longer holds with a stream whose first
// event is an ERROR carrying 410 Gone (the embedded store returns the
// ResourceExpired error from Watch itself). Either way client-go's reflector
// relists; this pins the API server's form.
func TestKubeWatchFromACompactedVersion(t *testing.T) {
	env := rig.Kube(t)
	s, err := store.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := s.Watch(ctx, env.Namespace, "1")
	if err != nil {
		if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
			t.Fatalf("Watch from resourceVersion 1: %v, want 410", err)
		}
		return
	}
	defer w.Stop()
	select {
	case e, ok := <-w.ResultChan():
		if !ok {
			t.Fatal("the watch ended without an event")
		}
		status, isStatus := e.Object.(*metav1.Status)
		if e.Type != watch.Error || !isStatus || status.Code != 410 {
			t.Fatalf("first event %s %+v, want ERROR with code 410", e.Type, e.Object)
		}
		if err := apierrors.FromObject(status); !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
			t.Errorf("the ERROR event reads as %v, want ResourceExpired or Gone", err)
		}
	case <-ctx.Done():
		t.Fatal("no event from a watch at resourceVersion 1")
	}
}

// TestNewKubeLeavesTheConfig: the store sets its own rate limits and codec
// on a copy; the caller's config (shared with other clients) is unchanged.
func TestNewKubeLeavesTheConfig(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	if _, err := store.NewKube(cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.QPS != 0 || cfg.Burst != 0 || cfg.GroupVersion != nil || cfg.NegotiatedSerializer != nil || cfg.ContentType != "" {
		t.Errorf("NewKube changed the caller's config: %+v", cfg)
	}
	if _, err := store.NewKube(nil); err == nil {
		t.Error("NewKube(nil) succeeded")
	}
}
