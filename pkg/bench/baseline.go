package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/runtime/v2/runc/options"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// Baseline is a containerd equivalent of a sandbox: the same image,
// command and OCI runtime, one container and one task whose output the
// shim writes straight to a file (cio.LogFile), no init, no log driver, no
// RPC hops, no store. Its zero Features and Namespace make the plain
// baseline: containerd's default spec from the image config, in the
// client's namespace. EquivalentOf gives the equivalent one, which adds
// what an fsb sandbox's container does besides (see Feature).
type Baseline struct {
	// Client's default namespace holds Image (the agent's namespace).
	Client *containerd.Client
	Image  string
	// Snapshotter unpacks Image for the baseline's root filesystems.
	Snapshotter string
	// BinaryName is the OCI runtime the runc shim runs ("runc", "crun", or
	// a runsc wrapper for gVisor); RuntimeName is fsb's name for it.
	BinaryName, RuntimeName string
	Command                 []string
	// Resources are the sandboxes' (FeatureSpec applies them as the agent
	// does); nil is none.
	Resources *fsbv1.Resources
	// Dir receives one output file per run.
	Dir string
	// Namespace is the containerd namespace the containers are made in;
	// empty means the client's. The image is copied there from the
	// client's namespace when missing.
	Namespace string
	// Features are the parts of fsb's container the baseline has, with
	// the agent's settings they take from Agent.
	Features Feature
	Agent    Agent
}

// Run creates, starts and waits for the first output of one container named
// id, then deletes it. It returns request-to-first-output and delete times.
func (b Baseline) Run(ctx context.Context, id string) (create, del time.Duration, err error) {
	ctx = b.context(ctx)
	out := filepath.Join(b.Dir, id+".log")
	start := time.Now()
	img, err := b.Client.GetImage(ctx, b.Image)
	if err != nil {
		return 0, 0, fmt.Errorf("baseline image: %w", err)
	}
	spec, err := b.specOpt(ctx, id, img)
	if err != nil {
		return 0, 0, err
	}
	c, err := b.Client.NewContainer(ctx, id,
		containerd.WithSnapshotter(b.Snapshotter),
		containerd.WithNewSnapshot(id, img),
		containerd.WithRuntime("io.containerd.runc.v2", &options.Options{BinaryName: b.BinaryName}),
		spec,
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
	var status containerd.ProcessStatus
	if b.Features&FeatureStop != 0 {
		status, err = b.stop(ctx, task)
	} else {
		err = killPlain(ctx, task)
		status = containerd.Stopped
	}
	if err != nil {
		return 0, 0, err
	}
	var opts []containerd.ProcessDeleteOpts
	if status != containerd.Stopped {
		// As the agent: a task that never ran to an exit is killed.
		opts = append(opts, containerd.WithProcessKill)
	}
	if _, err := task.Delete(ctx, opts...); err != nil && !errdefs.IsNotFound(err) {
		return 0, 0, fmt.Errorf("baseline delete task: %w", err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		return 0, 0, fmt.Errorf("baseline delete container: %w", err)
	}
	return create, time.Since(start), nil
}

// killPlain is the plain baseline's stop: kill whatever still runs (the
// kill may lose the race with the exit: that is fine) and wait for the
// exit; the task is then deleted as it is (gVisor refuses to kill an
// exited sandbox).
func killPlain(ctx context.Context, task containerd.Task) error {
	exited, err := task.Wait(ctx)
	if err != nil {
		return fmt.Errorf("baseline wait: %w", err)
	}
	_ = task.Kill(ctx, syscall.SIGKILL)
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
