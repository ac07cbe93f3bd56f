package janitor

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/snapshots"
	"github.com/opencontainers/image-spec/identity"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// prepareSnapshot prepares an active snapshot of the test image under key,
// with labels, and no container: what an agent killed between preparing a
// sandbox's snapshot and making its container leaves. As containerd's
// NewContainer does, it holds the snapshot under a lease, which a killed
// agent never ends; without one the garbage collector would take it.
func prepareSnapshot(t *testing.T, client *containerd.Client, ns, key string, labels map[string]string) {
	t.Helper()
	ctx, _, err := client.WithLease(namespaces.WithNamespace(context.Background(), ns))
	if err != nil {
		t.Fatal(err)
	}
	img, err := client.GetImage(ctx, rig.ImageRef)
	if err != nil {
		t.Fatal(err)
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.SnapshotService(rig.Snapshotter).Prepare(ctx, key, identity.ChainID(diffIDs).String(), snapshots.WithLabels(labels)); err != nil {
		t.Fatalf("prepare snapshot %s: %v", key, err)
	}
}

// runSandbox makes a container as an agent would (agent label on the
// container and on its snapshot) and, when start is set, a running task
// sleeping in it. The rig removes both when the test ends.
func runSandbox(t *testing.T, client *containerd.Client, ns, id, agent string, start bool) containerd.Container {
	t.Helper()
	ctx := namespaces.WithNamespace(t.Context(), ns)
	img, err := client.GetImage(ctx, rig.ImageRef)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.NewContainer(ctx, id,
		containerd.WithContainerLabels(map[string]string{runtime.LabelAgent: agent}),
		containerd.WithSnapshotter(rig.Snapshotter),
		containerd.WithNewSnapshot(id, img, snapshots.WithLabels(map[string]string{runtime.LabelAgent: agent})),
		containerd.WithRuntime(rig.Runtime, nil),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sleep", "600")),
	)
	if err != nil {
		t.Fatalf("container %s: %v", id, err)
	}
	if !start {
		return c
	}
	task, err := c.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	return c
}

// byName indexes leftovers by Name.
func byName(ls []Leftover) map[string]Leftover {
	m := make(map[string]Leftover, len(ls))
	for _, l := range ls {
		m[l.Name] = l
	}
	return m
}

// recent fails the test unless tm lies within the last minute: a Created
// read from the wrong clock or field is far off.
func recent(t *testing.T, what string, tm time.Time) {
	t.Helper()
	if age := time.Since(tm); age < -time.Second || age > time.Minute {
		t.Errorf("%s: Created %v is %v ago, want just now", what, tm, age)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
