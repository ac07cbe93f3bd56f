package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images/archive"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/platforms"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// Feature is one part of what an fsb sandbox's container does that the
// plain baseline leaves out. The equivalent baseline has them all; each
// step of the attribution adds one (see Steps).
type Feature uint

// The features, in the order Steps adds them.
const (
	// FeatureSpec builds the OCI spec as the agent does
	// (runtime.BuildSpec: hostname, env, working dir, OOM score, the
	// agent's capabilities; no-new-privileges, which containerd's default
	// sets too) instead of containerd's default from the image config, but
	// with the features below taken out again, and
	// without fsb's own parts: no init (neither as PID 1 nor mounted) and
	// the cgroup containerd would give the task (fsb's sandbox cgroup
	// exists to hold the log driver beside the task).
	FeatureSpec Feature = 1 << iota
	// FeatureNetNS joins the agent's network namespace (Agent.NetNSPath),
	// as sandboxes do; without it the container gets a new one.
	FeatureNetNS
	// FeatureSeccomp applies the agent's seccomp profile.
	FeatureSeccomp
	// FeaturePids sets the pids limit (the spec's, else the agent's
	// default).
	FeaturePids
	// FeatureStop deletes as the agent does: the task's status, then for
	// a running task SIGTERM once PID 1 catches it, up to the grace
	// period, then SIGKILL to every process; then task, container and
	// snapshot. Without it the delete waits for the exit after one
	// SIGKILL, as the plain baseline does.
	FeatureStop

	// Equivalent is every feature: the equivalent baseline.
	Equivalent = FeatureSpec | FeatureNetNS | FeatureSeccomp | FeaturePids | FeatureStop
)

// Agent holds the agent's settings the equivalent baseline copies: its
// flags of the same names.
type Agent struct {
	// NetNSPath is the network namespace sandboxes join: the agent's own
	// (/proc/<agent pid>/ns/net) unless it was given one.
	NetNSPath string
	// Snapshotter is the agent's --snapshotter.
	Snapshotter string
	// DefaultPidsLimit is the agent's --default-pids-limit.
	DefaultPidsLimit int64
	// SeccompCompatArches is the agent's --seccomp-compat-arches.
	SeccompCompatArches bool
	// Grace is the grace period of the deletes: the one the bench gives
	// fsb's deletes too.
	Grace time.Duration
}

// Step is one baseline of the attribution, with the name the table
// prints.
type Step struct {
	Name     string
	Baseline Baseline
}

// Steps returns the baselines from the plain one to the equivalent one,
// each adding one difference to the one before: the plain baseline as
// given; then its own containerd namespace ns and the agent's snapshotter;
// then each Feature in turn. The last is the equivalent baseline.
func Steps(plain Baseline, agent Agent, ns string) []Step {
	steps := []Step{{Name: "plain", Baseline: plain}}
	b := plain
	b.Namespace, b.Snapshotter, b.Agent = ns, agent.Snapshotter, agent
	steps = append(steps, Step{Name: "+own namespace, agent's snapshotter", Baseline: b})
	for _, f := range []struct {
		name string
		f    Feature
	}{
		{"+fsb's spec (no init)", FeatureSpec},
		{"+agent's netns", FeatureNetNS},
		{"+seccomp", FeatureSeccomp},
		{"+pids limit", FeaturePids},
		{"+fsb's delete", FeatureStop},
	} {
		b.Features |= f.f
		steps = append(steps, Step{Name: f.name, Baseline: b})
	}
	return steps
}

// EquivalentOf returns the equivalent baseline of plain: the last of Steps.
func EquivalentOf(plain Baseline, agent Agent, ns string) Baseline {
	s := Steps(plain, agent, ns)
	return s[len(s)-1].Baseline
}

// context returns ctx in the baseline's containerd namespace, when it has
// one of its own.
func (b Baseline) context(ctx context.Context) context.Context {
	if b.Namespace == "" {
		return ctx
	}
	return namespaces.WithNamespace(ctx, b.Namespace)
}

// specOpt returns the option that sets a container's OCI spec: the
// agent's (runtime.BuildSpec) minus init and minus the features b lacks,
// or, without FeatureSpec, containerd's default from the image config.
func (b Baseline) specOpt(ctx context.Context, id string, img containerd.Image) (containerd.NewContainerOpts, error) {
	if b.Features&FeatureSpec == 0 {
		return containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(b.Command...)), nil
	}
	ic, err := img.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("baseline image config: %w", err)
	}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	s, err := b.spec(id, ns, img.Name(), ic.Config)
	if err != nil {
		return nil, err
	}
	var opts []oci.SpecOpts
	if u := ic.Config.User; u != "" {
		// The agent resolves a named user once per image; the plain way
		// reads the rootfs' /etc/passwd every time.
		opts = append(opts, oci.WithUser(u))
	}
	return containerd.WithSpec(s, opts...), nil
}

// spec is the agent's OCI spec for container id in containerd namespace ns,
// minus init and minus the features b lacks.
func (b Baseline) spec(id, ns, imageName string, config ocispec.ImageConfig) (*oci.Spec, error) {
	cfg := runtime.Config{
		NetNSPath:           b.Agent.NetNSPath,
		DefaultPidsLimit:    b.Agent.DefaultPidsLimit,
		SeccompCompatArches: b.Agent.SeccompCompatArches,
		// Mounted by BuildSpec, taken out below: never read.
		InitBinary: "/fsb-init",
	}
	sb := runtime.Sandbox{ID: id, Revision: 1, Name: id, Spec: &fsbv1.SandboxSpec{
		Image: b.Image, Command: b.Command, Runtime: b.RuntimeName, Resources: b.Resources, NoInit: true,
	}}
	s, err := runtime.BuildSpec(cfg, sb, imageName, config)
	if err != nil {
		return nil, fmt.Errorf("baseline spec: %w", err)
	}
	withoutInit(s, ns, id)
	if b.Features&FeatureNetNS == 0 {
		for i, n := range s.Linux.Namespaces {
			if n.Type == specs.NetworkNamespace {
				s.Linux.Namespaces[i].Path = ""
			}
		}
	}
	if b.Features&FeatureSeccomp == 0 {
		s.Linux.Seccomp = nil
	}
	if b.Features&FeaturePids == 0 && s.Linux.Resources != nil {
		s.Linux.Resources.Pids = nil
	}
	return s, nil
}

// withoutInit takes fsb's own parts out of an agent's spec: the mount of
// init, and the sandbox cgroup made to hold the log driver beside the
// task (the task gets the cgroup containerd gives any task, /<ns>/<id>).
func withoutInit(s *oci.Spec, ns, id string) {
	mounts := s.Mounts[:0]
	for _, m := range s.Mounts {
		if m.Destination != runtime.InitPath {
			mounts = append(mounts, m)
		}
	}
	s.Mounts = mounts
	s.Linux.CgroupsPath = path.Join("/", ns, id)
}

// stop ends task as the agent's delete does (FeatureStop): a task that
// still runs gets SIGTERM once its PID 1 catches it (waiting up to the
// grace period, at most runtime.HandlerWait, as the agent does), then,
// after up to the grace period, SIGKILL to every process. It returns once
// the task has exited, and whether it had to stop it.
func (b Baseline) stop(ctx context.Context, task containerd.Task) (containerd.ProcessStatus, error) {
	st, err := task.Status(ctx)
	if err != nil {
		return "", fmt.Errorf("baseline status: %w", err)
	}
	if st.Status != containerd.Running && st.Status != containerd.Paused && st.Status != containerd.Pausing {
		return st.Status, nil
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		return "", fmt.Errorf("baseline wait: %w", err)
	}
	// A kill that loses the race with the exit fails with NotFound: the
	// exit is the answer.
	kill := func(sig syscall.Signal, opts ...containerd.KillOpts) error {
		if err := task.Kill(ctx, sig, opts...); err != nil && !errdefs.IsNotFound(err) {
			select {
			case <-exited:
				return nil
			case <-time.After(2 * time.Second):
				return fmt.Errorf("baseline send %v: %w", sig, err)
			}
		}
		return nil
	}
	if grace := b.Agent.Grace; grace > 0 {
		start := time.Now()
		runtime.AwaitCatch(ctx, task.Pid(), syscall.SIGTERM, min(grace, runtime.HandlerWait))
		if err := kill(syscall.SIGTERM); err != nil {
			return "", err
		}
		timer := time.NewTimer(max(grace-time.Since(start), 0))
		defer timer.Stop()
		select {
		case <-exited:
			return containerd.Stopped, nil
		case <-timer.C:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if err := kill(syscall.SIGKILL, containerd.WithKillAll); err != nil {
		return "", err
	}
	select {
	case <-exited:
		return containerd.Stopped, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// copyImage makes b.Image present in the baseline's own namespace (ctx's)
// from the client's default namespace, where the agent keeps it: an
// export piped into an import, which under containerd's default "shared"
// content policy writes only the records.
func (b Baseline) copyImage(ctx context.Context) error {
	from := namespaces.WithNamespace(ctx, b.Client.DefaultNamespace())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := b.Client.Export(from, pw, archive.WithImage(b.Client.ImageService(), b.Image), archive.WithPlatform(platforms.Default()))
		pw.CloseWithError(err)
		done <- err
	}()
	_, ierr := b.Client.Import(b.context(ctx), pr, containerd.WithImportPlatform(platforms.Default()))
	// Unblocks the export when the import stopped reading early.
	pr.CloseWithError(io.ErrClosedPipe)
	if err := <-done; err != nil && !errors.Is(err, io.ErrClosedPipe) {
		return fmt.Errorf("baseline: export %s from containerd namespace %s: %w", b.Image, b.Client.DefaultNamespace(), err)
	}
	if ierr != nil {
		return fmt.Errorf("baseline: import %s into containerd namespace %s: %w", b.Image, b.Namespace, ierr)
	}
	return nil
}

// plain reports whether b is the plain baseline: containerd's default
// spec in the client's namespace.
func (b Baseline) plain() bool { return b.Features == 0 && b.Namespace == "" }

// ColdResources returns resources that make the same work as warm but no
// warm key of warm's (v1alpha1.WarmKey takes the pids limit as given): the
// agent's default pids limit spelt out when warm leaves it unset, unset
// when warm spells out the default, else one more process allowed (a limit
// no bench command comes near).
func ColdResources(warm *fsbv1.Resources, defaultPids int64) *fsbv1.Resources {
	cold := &fsbv1.Resources{Cpu: warm.GetCpu(), Memory: warm.GetMemory()}
	switch p := warm.GetPids(); {
	case p == 0 && defaultPids > 0:
		cold.Pids = defaultPids
	case p == defaultPids:
		cold.Pids = 0
	default:
		cold.Pids = p + 1
	}
	return cold
}
