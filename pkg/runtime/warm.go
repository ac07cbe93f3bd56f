package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/typeurl/v2"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
)

// WarmIDPrefix starts the container ID of every warm sandbox. A claimed
// sandbox keeps it: containers are found by their labels, not by an ID
// derived from the sandbox's.
const WarmIDPrefix = "warm-"

// pid1WarmFlag is pid1.WarmFlag: the runtime does not import init's code.
const pid1WarmFlag = "--warm"

// warmHostname is a warm sandbox's hostname: the container's UTS namespace
// is made before any claim names the sandbox.
const warmHostname = "sandbox"

// warmRemoveGrace is how long the removal of a warm sandbox waits for its
// init, which ends at once on SIGTERM while warm.
const warmRemoveGrace = 2 * time.Second

// claimTimeout bounds each step of a claim that waits for the sandbox: the
// log driver's switch and init's start of the main process.
const claimTimeout = 10 * time.Second

// proceedError is a claim stopped by Sandbox.Proceed: the caller may not go
// on, so there is no cold create to fall back to.
type proceedError struct{ err error }

func (e proceedError) Error() string { return e.err.Error() }

// mainStartedError is a claim that failed after init started the main
// process: the container is the sandbox's and must not be removed for a
// cold create, which would start the main process a second time. A retry
// finishes it (Ensure finds it by its labels).
type mainStartedError struct{ err error }

func (e mainStartedError) Error() string { return e.err.Error() }
func (e mainStartedError) Unwrap() error { return e.err }

// NewWarmID returns a fresh container ID for a warm sandbox.
func NewWarmID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("warm sandbox ID: %w", err)
	}
	return WarmIDPrefix + hex.EncodeToString(b[:]), nil
}

// NewWarm makes and starts warm sandbox id (NewWarmID) of the kind key,
// from spec (a warm entry's: image, runtime, resources): a container whose
// fsb init runs without a main process, linked to the agent, and whose log
// driver drops its output until a claim. It carries this agent's label and
// LabelWarm, and no sandbox identity. What a failed NewWarm made it removes.
func (r *Runtime) NewWarm(ctx context.Context, id, key string, spec *fsbv1.SandboxSpec) (Info, error) {
	if key == "" || !strings.HasPrefix(id, WarmIDPrefix) {
		return Info{}, fmt.Errorf("%w: warm sandbox %q of kind %q", ErrInvalid, id, key)
	}
	if spec.GetNoInit() {
		return Info{}, fmt.Errorf("%w: a warm sandbox runs fsb init", ErrInvalid)
	}
	return r.ensure(ctx, Sandbox{Spec: spec, warm: key}, id)
}

// RemoveWarm stops and removes a warm sandbox (or what a claim of it left
// that did not get as far as starting a main process). A container that is
// gone, or that is a started sandbox now, is left alone.
func (r *Runtime) RemoveWarm(ctx context.Context, containerID string) error {
	c, err := r.cfg.Client.LoadContainer(ctx, containerID)
	if err != nil {
		return ignoreNotFound(err)
	}
	labels, err := c.Labels(ctx)
	if err != nil {
		return ignoreNotFound(err)
	}
	if labels[LabelWarm] == "" && labels[LabelMainStarted] == "true" {
		return nil
	}
	if _, err := r.deleteOne(ctx, c, warmRemoveGrace); err != nil {
		return fmt.Errorf("remove warm sandbox %s: %w", containerID, err)
	}
	return nil
}

// warmControl is the log driver's control socket of a warm container:
// beside its link directory, root's alone (the link dir is 0700), and no
// longer than its link socket's path, which checkLinkDir bounds.
func (r *Runtime) warmControl(id string) string {
	return filepath.Join(r.cfg.LinkDir, LinkDirName(id)+".l")
}

// sandboxLabels are the container labels of sandbox sb.
func (r *Runtime) sandboxLabels(sb Sandbox) map[string]string {
	labels := map[string]string{
		LabelID:        sb.ID,
		LabelRevision:  strconv.FormatInt(sb.Revision, 10),
		LabelNamespace: sb.Namespace,
		LabelName:      sb.Name,
		LabelAgent:     r.cfg.AgentID,
		LabelLogPath:   r.LogPath(sb),
	}
	if sb.Persisted {
		labels[LabelPersisted] = "true"
	}
	for k, v := range sb.Labels {
		labels[LabelUserPrefix+k] = v
	}
	return labels
}

// claim makes sandbox sb from the warm container sb.Claim: it rewrites the
// container's labels and stored spec to sb's in one update (the container
// is the sandbox's from then on, found by its labels), then finishes the
// claim (finishClaim). The caller holds the sandbox's lock.
func (r *Runtime) claim(ctx context.Context, sb Sandbox) (Info, error) {
	id := sb.Claim
	unlock := r.locks.lock(id)
	defer unlock()
	c, err := r.cfg.Client.LoadContainer(ctx, id)
	if err != nil {
		return Info{}, fmt.Errorf("load warm sandbox %s: %w", id, err)
	}
	cinfo, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return Info{}, fmt.Errorf("inspect warm sandbox %s: %w", id, err)
	}
	if cinfo.Labels[LabelWarm] == "" || cinfo.Labels[LabelAgent] != r.cfg.AgentID {
		return Info{}, fmt.Errorf("container %s is not a warm sandbox of agent %s", id, r.cfg.AgentID)
	}
	if known, ok := r.Sandbox(id); !ok || known.Phase != PhaseRunning {
		return Info{}, fmt.Errorf("warm sandbox %s does not run", id)
	}
	img, err := r.images.get(ctx, sb.Spec.GetImage())
	if err != nil {
		return Info{}, err
	}
	if _, err := mainProcess(sb, img.img.Name(), img.config); err != nil {
		return Info{}, err
	}
	if sb.Proceed != nil {
		if err := sb.Proceed(); err != nil {
			return Info{}, proceedError{err}
		}
	}
	labels := r.sandboxLabels(sb)
	labels[LabelClaimed] = "true"
	// What the warm sandbox's start recorded stays: it has started.
	for _, k := range []string{LabelStarted} {
		if v, ok := cinfo.Labels[k]; ok {
			labels[k] = v
		}
	}
	ext, err := typeurl.MarshalAnyToProto(sb.Spec)
	if err != nil {
		return Info{}, fmt.Errorf("claim %s: encode spec: %w", id, err)
	}
	exts := maps.Clone(cinfo.Extensions)
	if exts == nil {
		exts = map[string]typeurl.Any{}
	}
	exts[ExtensionSpec] = ext
	next := containers.Container{ID: id, Labels: labels, Extensions: exts}
	if err := checkRecordSize(ctx, nil, &containers.Container{ID: id, Labels: labels, Extensions: exts, Spec: cinfo.Spec}); err != nil {
		return Info{}, err
	}
	// One update: the container is either the warm one or the sandbox.
	updated, err := r.cfg.Client.ContainerService().Update(ctx, next, "labels", "extensions")
	if err != nil {
		return Info{}, fmt.Errorf("claim %s: relabel: %w", id, err)
	}
	info := infoFromContainer(updated)
	info.Spec = sb.Spec
	if known, ok := r.Sandbox(id); ok {
		info.Phase, info.pid, info.started = known.Phase, known.pid, true
	}
	r.record(info)
	info, err = r.finishClaim(ctx, c, sb, info)
	if err != nil {
		return Info{}, err
	}
	r.record(info)
	if err := r.pruneLogs(sb); err != nil {
		r.cfg.Logger.Warn("old revisions' logs not removed", slog.String("sandbox", sb.ID), slog.Any("err", err))
	}
	return info, nil
}

// finishClaim switches a claimed container's log to the sandbox's file,
// then has init start its main process, then marks it started
// (LabelMainStarted). Every step may be repeated: the log driver ignores a
// switch to the file it writes, and init answers a second start with the
// process it started first; so a claim cut short at any point is finished
// by running this again, and the main process starts exactly once.
func (r *Runtime) finishClaim(ctx context.Context, c containerd.Container, sb Sandbox, info Info) (Info, error) {
	img, err := r.images.get(ctx, sb.Spec.GetImage())
	if err != nil {
		return Info{}, err
	}
	proc, err := mainProcess(sb, img.img.Name(), img.config)
	if err != nil {
		return Info{}, err
	}
	sctx, cancel := context.WithTimeout(ctx, claimTimeout)
	err = logfile.SwitchLog(sctx, r.warmControl(c.ID()), logfile.DriverConfig{Path: r.LogPath(sb), MaxSize: r.cfg.LogMaxSize, MaxFiles: r.cfg.LogMaxFiles})
	cancel()
	if err != nil {
		return Info{}, fmt.Errorf("claim %s: %w", c.ID(), err)
	}
	link, ok := r.Link(c.ID())
	if !ok {
		if err := r.reopenLink(ctx, c); err != nil {
			return Info{}, err
		}
		if link, ok = r.Link(c.ID()); !ok {
			return Info{}, fmt.Errorf("claim %s: no link to its init", c.ID())
		}
	}
	lctx, cancel := context.WithTimeout(ctx, claimTimeout)
	_, err = link.Call(lctx, initlink.Request{Op: initlink.OpStartMain, Process: proc})
	cancel()
	if err != nil {
		return Info{}, fmt.Errorf("claim %s: start the main process: %w", c.ID(), err)
	}
	if _, err := c.SetLabels(ctx, map[string]string{LabelMainStarted: "true"}); err != nil {
		return Info{}, mainStartedError{fmt.Errorf("claim %s: mark the main process started: %w", c.ID(), err)}
	}
	info.mainStarted = true
	return info, nil
}

// mainProcess is the main process a cold create of sb gives its init
// (specOpts), as init started warm is to start it: the command, the
// spec's environment over the image's (init's own), and the directory.
func mainProcess(sb Sandbox, imageName string, config ocispec.ImageConfig) (*initlink.Process, error) {
	spec := sb.Spec
	argv := processArgs(config.Entrypoint, config.Cmd, spec.GetCommand(), spec.GetArgs())
	if len(argv) == 0 {
		return nil, fmt.Errorf("%w: image %s has no entrypoint or cmd, so the sandbox needs a command", ErrInvalid, imageName)
	}
	// Init's own environment is the image's: the spec's goes over it.
	return &initlink.Process{Args: argv, Env: specEnv(spec), Dir: workingDir(spec, config)}, nil
}
