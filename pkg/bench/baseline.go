package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/runtime/v2/runc/options"
)

// Baseline is the plainest containerd equivalent of a sandbox: the same
// image, command, OCI runtime and snapshotter, one container and one task
// whose output the shim writes straight to a file (cio.LogFile), no init,
// no log driver, no RPC hops.
type Baseline struct {
	// Client's default namespace holds Image, unpacked for Snapshotter.
	Client      *containerd.Client
	Image       string
	Snapshotter string
	// BinaryName is the OCI runtime the runc shim runs ("runc", "crun", or
	// a runsc wrapper for gVisor).
	BinaryName string
	Command    []string
	// Dir receives one output file per run.
	Dir string
}

// Run creates, starts and waits for the first output of one container named
// id, then deletes it. It returns request-to-first-output and delete times.
func (b Baseline) Run(ctx context.Context, id string) (create, del time.Duration, err error) {
	out := filepath.Join(b.Dir, id+".log")
	start := time.Now()
	img, err := b.Client.GetImage(ctx, b.Image)
	if err != nil {
		return 0, 0, fmt.Errorf("baseline image: %w", err)
	}
	c, err := b.Client.NewContainer(ctx, id,
		containerd.WithSnapshotter(b.Snapshotter),
		containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime("io.containerd.runc.v2", &options.Options{BinaryName: b.BinaryName}),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(b.Command...)),
	)
	if err != nil {
		return 0, 0, fmt.Errorf("baseline container: %w", err)
	}
	defer func() {
		if err != nil {
			_ = c.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
		}
	}()
	task, err := c.NewTask(ctx, cio.LogFile(out))
	if err != nil {
		return 0, 0, fmt.Errorf("baseline task: %w", err)
	}
	if err := task.Start(ctx); err != nil {
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
		return 0, 0, fmt.Errorf("baseline start: %w", err)
	}
	seen, err := WaitForOutput(ctx, out)
	if err != nil {
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
		return 0, 0, err
	}
	create = seen.Sub(start)

	start = time.Now()
	// Kill whatever still runs (the kill may lose the race with the exit:
	// that is fine), wait for the exit, then delete the task as it is
	// (gVisor refuses to kill an exited sandbox).
	exited, err := task.Wait(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("baseline wait: %w", err)
	}
	_ = task.Kill(ctx, syscall.SIGKILL)
	select {
	case <-exited:
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	if _, err := task.Delete(ctx); err != nil {
		return 0, 0, fmt.Errorf("baseline delete task: %w", err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		return 0, 0, fmt.Errorf("baseline delete container: %w", err)
	}
	return create, time.Since(start), nil
}
