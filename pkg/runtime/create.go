package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	goruntime "runtime"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/defaults"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/containerd/runtime/v2/runc/options"
	"github.com/containerd/containerd/snapshots"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/api/resource"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
)

const runcShim = "io.containerd.runc.v2"

// Ensure makes sure the sandbox revision runs and returns its state. It is
// idempotent: a container or task that already exists is reused, and a
// half-made one (container without task, task never started) is finished.
// When Ensure fails, it removes only what this call made (its container, or
// the task it added to an existing container), so that a retry starts clean
// and a retry after a transient error never stops a sandbox an earlier call
// started.
//
// With sb.Claim set and no container of the sandbox yet, Ensure makes the
// sandbox from that warm container (warm.go); a claimed container found
// with its main process not yet started (a claim cut short) is finished.
func (r *Runtime) Ensure(ctx context.Context, sb Sandbox) (Info, error) {
	// One sandbox revision, one container: a claim and a retried create
	// of the same revision never both make one.
	unlockSandbox := r.locks.lock("sandbox " + ContainerID(sb.ID, sb.Revision))
	defer unlockSandbox()
	if id, ok := r.SandboxContainer(sb.ID, sb.Revision); ok {
		return r.ensure(ctx, sb, id)
	}
	if sb.Claim != "" {
		info, err := r.claim(ctx, sb)
		if err == nil {
			return info, nil
		}
		var pe proceedError
		if errors.As(err, &pe) {
			// The caller may not go on: nothing was taken from the warm
			// sandbox, which the caller gives back.
			return Info{}, pe.err
		}
		var ms mainStartedError
		if errors.As(err, &ms) {
			return Info{}, err
		}
		r.cfg.Logger.Warn("warm claim failed; the sandbox is made cold", slog.String("sandbox", sb.ID),
			slog.String("warm", sb.Claim), slog.Any("err", err))
		if cerr := r.RemoveWarm(context.WithoutCancel(ctx), sb.Claim); cerr != nil {
			// It may carry the sandbox's labels by now: a cold container
			// beside it would make two of one revision. The retry finds
			// it (and finishes it) or makes the sandbox cold.
			return Info{}, errors.Join(err, cerr)
		}
		// A claim that got as far as the relabel held the sandbox's
		// identity: what it left is gone now, so the cold path starts clean.
	}
	return r.ensure(ctx, sb, ContainerID(sb.ID, sb.Revision))
}

// ensure is Ensure of container id: the sandbox's, or a warm one.
func (r *Runtime) ensure(ctx context.Context, sb Sandbox, id string) (Info, error) {
	unlock := r.locks.lock(id)
	defer unlock()

	binary, ok := r.cfg.Runtimes[runtimeName(sb.Spec.GetRuntime())]
	if !ok {
		return Info{}, fmt.Errorf("%w: runtime %q", ErrUnavailable, sb.Spec.GetRuntime())
	}
	// A claim cut short is finished first: the container is the
	// sandbox's, with its main process started. Every journal is in
	// Runtime.claims (written there, or read back by Repair before any
	// create), so a cold create reads no file for it.
	if r.claimedBefore(id) {
		if err := r.settleClaim(ctx, id); err != nil {
			return Info{}, err
		}
	}
	c, err := r.cfg.Client.LoadContainer(ctx, id)
	made := errdefs.IsNotFound(err)
	var ls linkSpec
	switch {
	case made:
		c, made, err = r.newContainer(ctx, sb, id, binary, &ls)
		if err != nil && !errors.Is(err, ErrExists) {
			// containerd may have made the container all the same (it went
			// away mid-call): Watch removes it if so.
			r.rollBackLater(id, runtimeName(sb.Spec.GetRuntime()))
		}
	case err == nil:
		err = r.checkExisting(ctx, c, sb)
	default:
		err = fmt.Errorf("load container %s: %w", id, err)
	}
	if err != nil {
		return Info{}, err
	}
	info, err := r.linkAndTask(ctx, c, sb, made, ls)
	if err != nil {
		if !made {
			// Not this call's: an earlier create made it, and it may run.
			return Info{}, err
		}
		// Roll back, so that the retry the caller makes starts clean.
		cleanupCtx := context.WithoutCancel(ctx)
		if derr := r.remove(cleanupCtx, c, nil, "", runtimeName(sb.Spec.GetRuntime())); derr != nil {
			// The container stays in the state, holding its slot, until a
			// retry finishes it, a delete removes it, or Watch rolls it
			// back once containerd answers again.
			r.rollBackLater(id, runtimeName(sb.Spec.GetRuntime()))
			return Info{}, errors.Join(err, fmt.Errorf("roll back %s: %w", id, derr))
		}
		r.forget(id)
		return Info{}, err
	}
	r.rolledForward(id)
	r.record(info)
	if made && sb.warm == "" {
		// The new revision has landed: older revisions' logs beyond the
		// last MaxRevisionLogs go. Nothing to do for the first revisions.
		if err := r.pruneLogs(sb); err != nil {
			r.cfg.Logger.Warn("old revisions' logs not removed", slog.String("sandbox", sb.ID), slog.Any("err", err))
		}
	}
	return info, nil
}

// linkAndTask opens the link to the sandbox's init (unless it runs without
// one) before its task may start, then ensures the task.
func (r *Runtime) linkAndTask(ctx context.Context, c containerd.Container, sb Sandbox, made bool, ls linkSpec) (Info, error) {
	if !sb.Spec.GetNoInit() {
		var err error
		if made {
			err = r.openLink(c.ID(), ls)
		} else {
			err = r.reopenLink(ctx, c)
		}
		if err != nil {
			return Info{}, err
		}
	}
	return r.ensureTask(ctx, c, sb, made)
}

// checkExisting fails unless c, found for sb, is this agent's and holds
// sb's spec: a create retried with another spec under the same ID and
// revision is refused, never answered with the sandbox that runs the old one.
func (r *Runtime) checkExisting(ctx context.Context, c containerd.Container, sb Sandbox) error {
	// The record came with the container: no call to containerd.
	cinfo, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", c.ID(), err)
	}
	if owner := cinfo.Labels[LabelAgent]; owner != r.cfg.AgentID {
		return fmt.Errorf("%w: container %s belongs to agent %q", ErrExists, c.ID(), owner)
	}
	if !sameContainer(specOf(cinfo), sb.Spec) {
		return fmt.Errorf("%w: sandbox %s revision %d already exists on agent %s with another spec; a changed spec needs a new revision",
			ErrExists, sb.ID, sb.Revision, r.cfg.AgentID)
	}
	return nil
}

// sameContainer reports whether two specs make the same container. The
// fields the control plane acts on — the failure policy, its recovery
// timeout, resetRevision, expiry, the consistency mode and the pool — may
// change on a running sandbox (fsb ctl update) and do not count: a create
// retried after such an update is the same create.
func sameContainer(a, b *fsbv1.SandboxSpec) bool {
	strip := func(s *fsbv1.SandboxSpec) *fsbv1.SandboxSpec {
		if s == nil {
			return nil
		}
		s = proto.CloneOf(s)
		s.ConsistencyMode, s.FailurePolicy, s.RecoveryTimeoutSeconds = 0, 0, 0
		s.ResetRevision, s.ExpireTime, s.PoolRef = nil, nil, ""
		return s
	}
	return proto.Equal(strip(a), strip(b))
}

// RepairReport says what Repair did.
type RepairReport struct {
	// Finished and RolledBack count half-made creates.
	Finished, RolledBack int
	// Lost counts sandboxes that had started and whose task is gone.
	Lost int
	// Snapshots counts the leftover snapshots removed.
	Snapshots int
	// Cgroups counts the leftover sandbox cgroups removed.
	Cgroups int
	// LinkDirs counts the leftover link directories removed.
	LinkDirs int
}

// markStarted labels a container as having started.
func (r *Runtime) markStarted(ctx context.Context, containerID string) error {
	c, err := r.cfg.Client.LoadContainer(ctx, containerID)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err == nil {
		_, err = c.SetLabels(ctx, map[string]string{LabelStarted: "true"})
	}
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("mark %s started: %w", containerID, err)
	}
	return nil
}

// Repair finishes every half-made sandbox of this agent (a container
// without a task, or a task never started), as a create cut short by a
// crash leaves it; one that cannot be finished is rolled back. A container
// that started once and has no task now is not half made but lost (a host
// reboot, a lost shim): it is left as it is, reported ended. Then it
// removes this agent's snapshots that no container uses: an agent killed
// between preparing a sandbox's snapshot and creating its container leaves
// one. Last it removes the sandbox cgroups no container owns, which a
// delete cut short leaves. Repair runs before the agent takes creates, so
// no create is under way.
func (r *Runtime) Repair(ctx context.Context) (RepairReport, error) {
	var rep RepairReport
	// Claims cut short first: their containers are sandboxes, not warm.
	settled, err := r.settleClaims(ctx, true)
	rep.Finished += settled
	if err != nil {
		return rep, err
	}
	infos, err := r.List(ctx)
	if err != nil {
		return rep, err
	}
	for _, info := range infos {
		switch {
		case info.Warm != "":
			// A warm sandbox that does not run serves no claim.
			if info.Phase != PhaseRunning {
				if err := r.RemoveWarm(ctx, info.ContainerID); err != nil {
					return rep, err
				}
				rep.RolledBack++
			}
			continue
		case info.lost:
			rep.Lost++
			continue
		case info.Phase != PhaseCreated && !info.started:
			// Started before containers were marked: marked now, so that
			// it is known to have run if its task goes.
			if err := r.markStarted(ctx, info.ContainerID); err != nil {
				return rep, err
			}
			continue
		case info.Phase != PhaseCreated && !info.Claimed:
			continue
		case info.Phase != PhaseCreated && info.mainStarted:
			continue
		}
		sb := Sandbox{ID: info.ID, Revision: info.Revision, Namespace: info.Namespace, Name: info.Name, Spec: info.Spec, Labels: info.Labels}
		if sb.Spec != nil {
			if _, err := r.Ensure(ctx, sb); err == nil {
				rep.Finished++
				continue
			}
		}
		// Ensure rolls back what it cannot finish; a container without its
		// spec cannot be finished at all.
		if _, err := r.Delete(ctx, info.ID, info.Revision, 0); err != nil {
			return rep, fmt.Errorf("roll back %s: %w", info.ContainerID, err)
		}
		rep.RolledBack++
	}
	// The links of running sandboxes, which init dials again, after the
	// half-made ones were finished (Ensure opened theirs).
	if rep.LinkDirs, err = r.reopenLinks(ctx, infos); err != nil {
		return rep, err
	}
	if rep.Snapshots, err = r.removeLeftoverSnapshots(ctx); err != nil {
		return rep, err
	}
	rep.Cgroups, err = r.removeLeftoverCgroups(ctx)
	return rep, err
}

// removeLeftoverSnapshots removes the snapshots labelled with this agent's
// ID that no container uses, and returns how many it removed. Snapshots of
// other agents, or without the label, are not this agent's to judge.
func (r *Runtime) removeLeftoverSnapshots(ctx context.Context) (int, error) {
	name, err := r.snapshotter(ctx)
	if err != nil {
		return 0, err
	}
	sn := r.cfg.Client.SnapshotService(name)
	var keys []string
	err = sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		keys = append(keys, info.Name)
		return nil
	}, fmt.Sprintf("labels.%q==%s", LabelAgent, r.cfg.AgentID))
	if err != nil {
		return 0, fmt.Errorf("list snapshots: %w", err)
	}
	if len(keys) == 0 {
		return 0, nil
	}
	// Every container of the namespace, whoever made it: a snapshot in use
	// is never a leftover.
	cs, err := r.cfg.Client.Containers(ctx)
	if err != nil {
		return 0, fmt.Errorf("list containers: %w", err)
	}
	used := make(map[string]bool, len(cs))
	for _, c := range cs {
		if cinfo, err := c.Info(ctx, containerd.WithoutRefreshedMetadata); err == nil && cinfo.Snapshotter == name {
			used[cinfo.SnapshotKey] = true
		}
	}
	removed := 0
	for _, key := range keys {
		if used[key] {
			continue
		}
		if err := sn.Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
			return removed, fmt.Errorf("remove leftover snapshot %s: %w", key, err)
		}
		r.cfg.Logger.Info("removed a snapshot left without its container", slog.String("snapshot", key))
		removed++
	}
	return removed, nil
}

// snapshotter names the snapshotter sandboxes use: the configured one, else
// the namespace's default, else containerd's.
func (r *Runtime) snapshotter(ctx context.Context) (string, error) {
	if r.cfg.Snapshotter != "" {
		return r.cfg.Snapshotter, nil
	}
	ns, err := r.namespace(ctx)
	if err != nil {
		return "", err
	}
	labels, err := r.cfg.Client.NamespaceService().Labels(ctx, ns)
	if err != nil {
		return "", fmt.Errorf("labels of containerd namespace %s: %w", ns, err)
	}
	if name := labels[defaults.DefaultSnapshotterNSLabel]; name != "" {
		return name, nil
	}
	return containerd.DefaultSnapshotter, nil
}

func runtimeName(name string) string {
	if name == "" {
		return RuntimeRunc
	}
	return name
}

// newContainer creates the sandbox's container and reports whether it made
// it. A container that already exists (a create before this one, or racing
// it, got there first) counts as progress: it is returned, not made. A
// snapshot left under the container's key by a create cut short before its
// container was made is removed, and the container is created once more.
func (r *Runtime) newContainer(ctx context.Context, sb Sandbox, id, binary string, ls *linkSpec) (containerd.Container, bool, error) {
	img, err := r.images.get(ctx, sb.Spec.GetImage())
	if err != nil {
		return nil, false, err
	}
	if sb.Proceed != nil {
		if err := sb.Proceed(); err != nil {
			return nil, false, err
		}
	}
	specOpts, err := r.specOpts(sb, img.img.Name(), img.config)
	if err != nil {
		return nil, false, err
	}
	specOpts = append(specOpts, r.imageUserOpt(img.target, img.config.User))
	if !sb.Spec.GetNoInit() {
		// After the user: the last option notes init's user.
		lopts, err := r.linkOpts(id, ls)
		if err != nil {
			return nil, false, err
		}
		specOpts = append(specOpts, lopts...)
	}
	labels := r.sandboxLabels(sb)
	if sb.warm != "" {
		labels = map[string]string{LabelAgent: r.cfg.AgentID, LabelWarm: sb.warm}
	}
	opts := []containerd.NewContainerOpts{
		containerd.WithContainerLabels(labels),
		containerd.WithContainerExtension(ExtensionSpec, sb.Spec),
		containerd.WithRuntime(runcShim, &options.Options{BinaryName: binary}),
	}
	if r.cfg.Snapshotter != "" {
		opts = append(opts, containerd.WithSnapshotter(r.cfg.Snapshotter))
	}
	opts = append(opts,
		// Labelled with the agent, so that a snapshot whose container was
		// never made (the agent killed in between) is found at restart.
		containerd.WithNewSnapshot(id, img.img, snapshots.WithLabels(map[string]string{LabelAgent: r.cfg.AgentID})),
		containerd.WithNewSpec(specOpts...),
		// Last: what containerd would be sent is complete.
		checkRecordSize,
	)
	c, err := r.cfg.Client.NewContainer(ctx, id, opts...)
	if errdefs.IsAlreadyExists(err) {
		// containerd prepares the snapshot, under the container's ID, before
		// it records the container: either can be what exists.
		existing, lerr := r.cfg.Client.LoadContainer(ctx, id)
		switch {
		case lerr == nil:
			return existing, false, r.checkExisting(ctx, existing, sb)
		case !errdefs.IsNotFound(lerr):
			return nil, false, fmt.Errorf("create container %s: %w; load it: %w", id, err, lerr)
		}
		if rerr := r.removeLeftoverSnapshot(ctx, id); rerr != nil {
			return nil, false, fmt.Errorf("create container %s: %w", id, rerr)
		}
		c, err = r.cfg.Client.NewContainer(ctx, id, opts...)
	}
	if errdefs.IsNotFound(err) {
		// The image's snapshot chain went away under the cache; resolve it
		// afresh once.
		r.images.forget(img.img.Name())
		return nil, false, fmt.Errorf("create container %s: %w", id, err)
	}
	if err != nil {
		// containerd prepares the snapshot before the options that may
		// refuse (the spec, the record's size) run, and leaves it when
		// they do. Only a snapshot without its container is removed: a
		// create whose answer was lost may have made both.
		cctx := context.WithoutCancel(ctx)
		if _, lerr := r.cfg.Client.LoadContainer(cctx, id); errdefs.IsNotFound(lerr) {
			if rerr := r.removeLeftoverSnapshot(cctx, id); rerr != nil {
				err = fmt.Errorf("%w; %w", err, rerr)
			}
		}
		return nil, false, fmt.Errorf("create container %s: %w", id, err)
	}
	// Known before containerd's event about it arrives, so the event
	// costs no look-up.
	r.record(Info{ContainerID: id, ID: sb.ID, Revision: sb.Revision, Namespace: sb.Namespace, Name: sb.Name,
		Spec: sb.Spec, Labels: sb.Labels, LogPath: labels[LabelLogPath], Phase: PhaseCreated, Persisted: sb.Persisted,
		Warm: sb.warm, agent: r.cfg.AgentID})
	return c, true, nil
}

// removeLeftoverSnapshot removes the snapshot under key that no container
// uses (the caller found none under that ID), unless another agent's label
// says it is that agent's.
func (r *Runtime) removeLeftoverSnapshot(ctx context.Context, key string) error {
	name, err := r.snapshotter(ctx)
	if err != nil {
		return err
	}
	sn := r.cfg.Client.SnapshotService(name)
	info, err := sn.Stat(ctx, key)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect snapshot %s: %w", key, err)
	}
	if owner, ok := info.Labels[LabelAgent]; ok && owner != r.cfg.AgentID {
		return fmt.Errorf("%w: snapshot %s belongs to agent %q", ErrExists, key, owner)
	}
	if err := sn.Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove leftover snapshot %s: %w", key, err)
	}
	r.cfg.Logger.Info("removed a snapshot left without its container", slog.String("snapshot", key))
	return nil
}

// MaxRecordBytes bounds the container record the agent sends containerd:
// the OCI spec, the sandbox's spec kept as an extension, and the labels.
// containerd 1.6's ttrpc limits a message to 4 MiB and its client panicked
// on a larger one, which took the daemon down: a sandbox is refused well
// before that. Validated specs (v1alpha1.ValidateSpec) stay far below it;
// this is the last fence for whatever reaches the runtime.
const MaxRecordBytes = 1 << 20

// checkRecordSize refuses, before containerd is sent it, a container
// record larger than MaxRecordBytes.
func checkRecordSize(_ context.Context, _ *containerd.Client, c *containers.Container) error {
	if n := recordSize(c); n > MaxRecordBytes {
		return fmt.Errorf("%w: container %s: its spec, labels and extensions take %d bytes, at most %d (1 MiB)", ErrInvalid, c.ID, n, MaxRecordBytes)
	}
	return nil
}

// recordSize is about what a container record takes on the wire.
func recordSize(c *containers.Container) int {
	n := len(c.ID) + len(c.Image)
	if c.Spec != nil {
		n += len(c.Spec.GetTypeUrl()) + len(c.Spec.GetValue())
	}
	for k, v := range c.Extensions {
		n += len(k)
		if v != nil {
			n += len(v.GetTypeUrl()) + len(v.GetValue())
		}
	}
	for k, v := range c.Labels {
		n += len(k) + len(v)
	}
	return n
}

// BuildSpec returns the OCI spec the runtime configured by cfg gives sb
// when made from an image named imageName with config img, without asking
// containerd. The process's user, which the image's /etc/passwd decides,
// is left as the default: a create sets it from the image's rootfs. The
// fuzz tests build the spec a request leads to with it.
func BuildSpec(cfg Config, sb Sandbox, imageName string, img ocispec.ImageConfig) (*oci.Spec, error) {
	r := &Runtime{cfg: cfg}
	opts, err := r.specOpts(sb, imageName, img)
	if err != nil {
		return nil, err
	}
	ctx := namespaces.WithNamespace(context.Background(), "fsb")
	return oci.GenerateSpec(ctx, nil, &containers.Container{ID: ContainerID(sb.ID, sb.Revision)}, opts...)
}

// specOpts builds the OCI spec but for the process's user: the image's
// config, the sandbox's command, env and limits, fsb init as PID 1, and
// hardened defaults (containerd's default seccomp profile, Docker's default
// capabilities, no new privileges, a pids limit).
func (r *Runtime) specOpts(sb Sandbox, imageName string, config ocispec.ImageConfig) ([]oci.SpecOpts, error) {
	spec := sb.Spec
	argv := processArgs(config.Entrypoint, config.Cmd, spec.GetCommand(), spec.GetArgs())
	switch {
	case sb.warm != "":
		// No main process: the claim hands init the create's.
		argv = []string{InitPath, "init", pid1WarmFlag}
	case len(argv) == 0:
		return nil, fmt.Errorf("%w: image %s has no entrypoint or cmd, so the sandbox needs a command", ErrInvalid, imageName)
	case !spec.GetNoInit():
		argv = append([]string{InitPath, "init", "--"}, argv...)
	}
	env := config.Env
	if len(env) == 0 {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	env = append(env, specEnv(spec)...)
	cwd := workingDir(spec, config)
	hostname := hostnameOf(sb.Name)
	if sb.warm != "" {
		// Set when the container is made, before any claim names it.
		hostname = warmHostname
	}
	pids := r.cfg.DefaultPidsLimit
	if p := spec.GetResources().GetPids(); p > 0 {
		pids = p
	}
	opts := []oci.SpecOpts{
		oci.WithProcessArgs(argv...),
		oci.WithEnv(env),
		oci.WithProcessCwd(cwd),
		oci.WithHostname(hostname),
		oci.WithNoNewPrivileges,
		r.seccompOpt(),
		r.precompiledSeccomp(spec.GetRuntime()),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: r.cfg.NetNSPath}),
		r.withSandboxCgroup,
		oci.WithMounts([]specs.Mount{{
			Destination: InitPath,
			Type:        "bind",
			Source:      r.cfg.InitBinary,
			Options:     []string{"rbind", "ro", "nosuid", "nodev"},
		}}),
	}
	if pids > 0 {
		opts = append(opts, oci.WithPidsLimit(pids))
	}
	if m := spec.GetResources().GetMemory(); m != "" {
		q, err := resource.ParseQuantity(m)
		if err != nil || q.Sign() <= 0 {
			return nil, fmt.Errorf("%w: memory %q: want a positive quantity such as 256Mi", ErrInvalid, m)
		}
		opts = append(opts, oci.WithMemoryLimit(uint64(q.Value())))
	}
	if c := spec.GetResources().GetCpu(); c != "" {
		q, err := resource.ParseQuantity(c)
		if err != nil || q.Sign() <= 0 {
			return nil, fmt.Errorf("%w: cpu %q: want a positive quantity such as 500m", ErrInvalid, c)
		}
		const period = 100_000 // microseconds
		quota := max(q.MilliValue()*period/1000, 1000)
		opts = append(opts, oci.WithCPUCFS(quota, period))
	}
	return opts, nil
}

// seccompOpt applies containerd's default seccomp profile. Unless
// Config.SeccompCompatArches is set, the filter admits only the native
// system call ABI: 32-bit compat calls (an old attack surface few sandboxed
// programs need) are refused, and the filter runc compiles for every create
// shrinks to a third, which takes about 20 ms off a cold start here.
func (r *Runtime) seccompOpt() oci.SpecOpts {
	if r.cfg.SeccompCompatArches {
		return seccomp.WithDefaultProfile()
	}
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		profile := seccomp.DefaultProfile(s)
		if native, ok := nativeArch[goruntime.GOARCH]; ok {
			profile.Architectures = []specs.Arch{native}
		}
		s.Linux.Seccomp = profile
		return nil
	}
}

var nativeArch = map[string]specs.Arch{
	"amd64":   specs.ArchX86_64,
	"arm64":   specs.ArchAARCH64,
	"ppc64le": specs.ArchPPC64LE,
	"s390x":   specs.ArchS390X,
	"riscv64": specs.ArchRISCV64,
}

// specEnv is the spec's environment as NAME=VALUE, to go over the image's.
func specEnv(spec *fsbv1.SandboxSpec) []string {
	env := make([]string, 0, len(spec.GetEnvs()))
	for _, e := range spec.GetEnvs() {
		env = append(env, e.GetName()+"="+e.GetValue())
	}
	return env
}

// workingDir is the main process's directory: the spec's, else the
// image's, else /.
func workingDir(spec *fsbv1.SandboxSpec, config ocispec.ImageConfig) string {
	if wd := spec.GetWorkingDir(); wd != "" {
		return wd
	}
	if config.WorkingDir != "" {
		return config.WorkingDir
	}
	return "/"
}

// processArgs applies Kubernetes' rules: command replaces the entrypoint
// (and drops the image's cmd), args replace the cmd.
func processArgs(entrypoint, cmd, command, args []string) []string {
	if len(command) > 0 {
		return append(append([]string{}, command...), args...)
	}
	if len(args) > 0 {
		cmd = args
	}
	return append(append([]string{}, entrypoint...), cmd...)
}

// userOpt sets the image's user. A numeric user is set directly; a name
// needs the image's /etc/passwd, which oci.WithUser reads from the rootfs.
func userOpt(user string) oci.SpecOpts {
	if user == "" {
		return oci.WithUserID(0)
	}
	return oci.WithUser(user)
}

// ensureTask makes sure c has a started task, creating it when missing. A
// fresh container has no task, so the look-ups are skipped for it: the
// create path is the product. A task it creates and cannot start it deletes
// again; one it found it leaves as it is. A container that started once and
// has no task now (a host reboot, a lost shim) is reported lost, never
// started again: what follows an unexpected end is the controller's choice.
func (r *Runtime) ensureTask(ctx context.Context, c containerd.Container, sb Sandbox, fresh bool) (Info, error) {
	// The container's record came with it from containerd: no extra call.
	cinfo, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return Info{}, fmt.Errorf("inspect %s: %w", c.ID(), err)
	}
	info := infoFromContainer(cinfo)
	info.Spec = sb.Spec

	var task containerd.Task
	var status containerd.Status
	err = errdefs.ErrNotFound
	if !fresh {
		task, err = c.Task(ctx, nil)
	}
	made := false
	switch {
	case errdefs.IsNotFound(err) && info.started:
		setNoTask(&info)
		return info, nil
	case errdefs.IsNotFound(err):
		ioCfg := logfile.DriverConfig{Path: r.LogPath(sb), MaxSize: r.cfg.LogMaxSize, MaxFiles: r.cfg.LogMaxFiles}
		if sb.warm != "" {
			// No sandbox's log until the claim switches it there.
			ioCfg = logfile.DriverConfig{Control: r.warmControl(c.ID())}
		}
		ioCfg.Cgroup, ioCfg.Limits = helperCgroup(cinfo)
		newTask := func() (containerd.Task, error) {
			return c.NewTask(ctx, cio.BinaryIO(r.cfg.LogDriverBinary, map[string]string{"log-driver": ioCfg.Encode()}))
		}
		err = r.newTaskClearing(ctx, c.ID(), func() (err error) {
			task, err = newTask()
			return err
		})
		made = err == nil
		if errdefs.IsAlreadyExists(err) {
			task, made, err = r.existingTask(ctx, c, newTask)
		}
		if err != nil {
			return Info{}, fmt.Errorf("create task %s: %w", c.ID(), err)
		}
		if made {
			r.learnSeccomp(ctx, c.ID())
			status.Status = containerd.Created
		} else if status, err = task.Status(ctx); err != nil {
			return Info{}, fmt.Errorf("task %s status: %w", c.ID(), err)
		}
	case err != nil:
		return Info{}, fmt.Errorf("load task %s: %w", c.ID(), err)
	default:
		if status, err = task.Status(ctx); err != nil {
			return Info{}, fmt.Errorf("task %s status: %w", c.ID(), err)
		}
	}
	if status.Status == containerd.Created {
		if err := r.start(ctx, c, task, !info.started); err != nil {
			if made {
				if derr := r.removeTask(context.WithoutCancel(ctx), c, task, containerd.Created, runtimeName(sb.Spec.GetRuntime())); derr != nil {
					err = errors.Join(err, derr)
				}
			}
			return Info{}, err
		}
		status.Status = containerd.Running
	} else if !info.started {
		// Started before containers were marked.
		if _, err := c.SetLabels(ctx, map[string]string{LabelStarted: "true"}); err != nil {
			return Info{}, fmt.Errorf("mark %s started: %w", c.ID(), err)
		}
	}
	info.started = true
	setPhase(&info, status)
	info.pid = task.Pid()
	return info, nil
}

// start starts task and, when mark is set, labels c as started
// (LabelStarted) so that a container whose task is gone later is known to
// have run. The label is written while the task starts: the two calls
// overlap, and the mark costs the create path almost nothing (a label
// update takes ~3 ms here, a start ~6 ms). When the start fails the label
// is taken off again, so that a retry finishes the container rather than
// reporting it lost. A crash between the two leaves a task never started,
// which Repair starts whatever the label says.
func (r *Runtime) start(ctx context.Context, c containerd.Container, task containerd.Task, mark bool) error {
	marked := make(chan error, 1)
	if mark {
		go func() {
			_, err := c.SetLabels(ctx, map[string]string{LabelStarted: "true"})
			marked <- err
		}()
	} else {
		marked <- nil
	}
	serr := task.Start(ctx)
	merr := <-marked
	switch {
	case serr != nil:
		err := fmt.Errorf("start task %s: %w", c.ID(), serr)
		if mark && merr == nil {
			// An empty value removes the label.
			if _, uerr := c.SetLabels(context.WithoutCancel(ctx), map[string]string{LabelStarted: ""}); uerr != nil && !errdefs.IsNotFound(uerr) {
				err = errors.Join(err, fmt.Errorf("unmark %s started: %w", c.ID(), uerr))
			}
		}
		return err
	case merr != nil:
		return fmt.Errorf("mark %s started: %w", c.ID(), merr)
	}
	return nil
}

// existingTask answers a task create that found the task existing, and
// reports whether it made one: the task that exists counts as progress and
// is loaded. When containerd lists a task it cannot load (a shim whose
// create was cut short by a containerd restart: containerd answers every
// create "already exists" and every look-up "not found"), that task runs no
// process; it is deleted and newTask tried once more.
func (r *Runtime) existingTask(ctx context.Context, c containerd.Container, newTask func() (containerd.Task, error)) (containerd.Task, bool, error) {
	task, err := c.Task(ctx, nil)
	if err == nil {
		return task, false, nil
	}
	if !errdefs.IsNotFound(err) {
		return nil, false, fmt.Errorf("task exists; load it: %w", err)
	}
	if _, err := r.cfg.Client.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: c.ID()}); err != nil && !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		return nil, false, fmt.Errorf("task exists but cannot be loaded; delete it: %w", errdefs.FromGRPC(err))
	}
	r.cfg.Logger.Info("deleted a task left without its process", slog.String("container", c.ID()))
	task, err = newTask()
	if err != nil {
		return nil, false, err
	}
	return task, true, nil
}

// setNoTask sets the phase of a container that has no task: created, when
// it never started; else lost.
func setNoTask(info *Info) {
	if !info.started {
		info.Phase = PhaseCreated
		return
	}
	info.Phase, info.lost = PhaseExited, true
	*info = withReason(*info)
}

func setPhase(info *Info, status containerd.Status) {
	switch status.Status {
	case containerd.Created, containerd.Unknown:
		info.Phase = PhaseCreated
	case containerd.Stopped:
		info.Phase = PhaseExited
		info.ExitCode = status.ExitStatus
		info.ExitTime = status.ExitTime
	default:
		info.Phase = PhaseRunning
	}
}
