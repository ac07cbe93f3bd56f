package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/containers"
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
// is made before any claim names the sandbox, and the claim renames it
// (nameClaimed).
const warmHostname = "sandbox"

// warmRemoveGrace is how long the removal of a warm sandbox waits for its
// init, which ends at once on SIGTERM while warm.
const warmRemoveGrace = 2 * time.Second

// claimTimeout bounds each step of a claim that waits for the sandbox: the
// log driver's switch and init's start of the main process.
const claimTimeout = 10 * time.Second

// relabelDelay is how long a claim's update of the container in containerd
// waits after the main process started. The journal holds the claim
// meanwhile, and the container's lock keeps anything else off it: a delete
// or an exec right after a claim waits that much longer.
const relabelDelay = 3 * time.Millisecond

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
	labels = r.throughClaims(containers.Container{ID: containerID, Labels: labels}).Labels
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

// claim makes sandbox sb from the warm container sb.Claim. It first keeps
// what the container is to become in a claim journal (claimjournal.go),
// read through by whatever reads the container from containerd. Then the
// log is switched to sb's file and init starts the main process
// (startClaimed); the claim answers once the main process runs. Then, in
// the background and after relabelDelay, containerd gets the container's
// new labels and stored spec (one update, which also marks the main
// process started). The container's lock goes with the update, so
// anything else that touches the container waits until containerd holds
// the claim; the journal goes once containerd holds it and the main
// process runs with its log switched. A journal left by an agent killed on
// the way, by a failed update or by a failed switch is finished by
// settleClaim: the main process starts exactly once, and the container
// never serves a second claim (Runtime.claims remembers it). The caller
// holds the sandbox's lock.
func (r *Runtime) claim(ctx context.Context, sb Sandbox) (Info, error) {
	id := sb.Claim
	unlock := r.locks.lock(id)
	known, proc, rec, err := r.beginClaim(ctx, sb)
	if err != nil {
		unlock()
		return Info{}, err
	}
	info := infoFromContainer(r.throughClaims(containers.Container{ID: id, CreatedAt: known.Created}))
	info.Phase, info.pid, info.started, info.specBytes = known.Phase, known.pid, true, known.specBytes
	r.record(info)
	// Owned by this claim, which tells it how the start went; it ends
	// within claimTimeout of that.
	relabelled := make(chan error, 1)
	outcome := make(chan claimOutcome, 1)
	go func() {
		defer unlock()
		o := <-outcome
		if o == claimDone {
			// The claim's answer is on its way to the caller now:
			// containerd's update, and the events it sends, wait until it
			// is out rather than take the cores it needs.
			time.Sleep(relabelDelay)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimTimeout)
		err := r.relabel(rctx, rec)
		cancel()
		relabelled <- err
		if o == claimDone && err == nil {
			r.claimHeld(id)
		}
		// Else the journal stays: settleClaim finishes the claim, or the
		// claim is undone (dropClaimed, once this goroutine unlocked).
	}()
	mainRuns, err := r.startClaimed(ctx, id, r.LogPath(sb), sb.Name, proc)
	switch {
	case err == nil:
		outcome <- claimDone
	case mainRuns:
		// The main process runs, its log not switched: the journal
		// stays, and a retry, a delete or the next reload switches it.
		outcome <- claimKept
		return Info{}, mainStartedError{err}
	default:
		// No main process: the container goes, and the sandbox is made
		// cold.
		outcome <- claimUndone
		rerr := <-relabelled
		if cerr := r.dropClaimed(context.WithoutCancel(ctx), id); cerr != nil {
			return Info{}, mainStartedError{errors.Join(err, rerr, cerr)}
		}
		return Info{}, errors.Join(err, rerr)
	}
	if err := r.pruneLogs(sb); err != nil {
		r.cfg.Logger.Warn("old revisions' logs not removed", slog.String("sandbox", sb.ID), slog.Any("err", err))
	}
	return info, nil
}

// claimOutcome is what became of a claim's start, for its relabel.
type claimOutcome int

const (
	claimDone   claimOutcome = iota // the main process runs, its log switched
	claimKept                       // the main process runs; the journal stays
	claimUndone                     // no main process: the claim is undone
)

// beginClaim checks that sb.Claim is a running warm sandbox of this agent,
// resolves sb's main process, and writes the claim's journal. The caller
// holds the container's lock.
func (r *Runtime) beginClaim(ctx context.Context, sb Sandbox) (Info, *initlink.Process, claimRecord, error) {
	id := sb.Claim
	known, ok := r.Sandbox(id)
	if !ok || known.Warm == "" || known.agent != r.cfg.AgentID {
		return Info{}, nil, claimRecord{}, fmt.Errorf("container %s is not a warm sandbox of agent %s", id, r.cfg.AgentID)
	}
	if known.Phase != PhaseRunning {
		return Info{}, nil, claimRecord{}, fmt.Errorf("warm sandbox %s does not run", id)
	}
	if r.claimedBefore(id) {
		// A read that raced an earlier claim's relabel: it serves none.
		return Info{}, nil, claimRecord{}, fmt.Errorf("warm sandbox %s was claimed already", id)
	}
	img, err := r.images.warmed(ctx, sb.Spec.GetImage())
	if err != nil {
		return Info{}, nil, claimRecord{}, err
	}
	proc, err := mainProcess(sb, img.img.Name(), img.config)
	if err != nil {
		return Info{}, nil, claimRecord{}, err
	}
	if sb.Proceed != nil {
		if err := sb.Proceed(); err != nil {
			return Info{}, nil, claimRecord{}, proceedError{err}
		}
	}
	labels := r.sandboxLabels(sb)
	labels[LabelClaimed] = "true"
	labels[LabelMainStarted] = "true"
	if known.started {
		// What the warm sandbox's start recorded stays: it has started.
		labels[LabelStarted] = "true"
	}
	rec, err := newClaimRecord(r.cfg.AgentID, id, labels, sb.Spec)
	if err != nil {
		return Info{}, nil, claimRecord{}, err
	}
	if n := recordSize(&rec.container) + known.specBytes; n > MaxRecordBytes {
		return Info{}, nil, claimRecord{}, fmt.Errorf("%w: container %s: its spec, labels and extensions take %d bytes, at most %d (1 MiB)", ErrInvalid, id, n, MaxRecordBytes)
	}
	if err := r.writeClaim(rec); err != nil {
		return Info{}, nil, claimRecord{}, err
	}
	return known, proc, rec, nil
}

// relabel has containerd hold the container a claim makes: its labels and
// stored spec. It may be repeated.
func (r *Runtime) relabel(ctx context.Context, rec claimRecord) error {
	if _, err := r.cfg.Client.ContainerService().Update(ctx, rec.container, "labels", "extensions."+ExtensionSpec); err != nil {
		return fmt.Errorf("claim %s: relabel: %w", rec.container.ID, err)
	}
	return nil
}

// dropClaimed removes a claimed container whose main process did not
// start, and its journal.
func (r *Runtime) dropClaimed(ctx context.Context, id string) error {
	c, err := r.cfg.Client.LoadContainer(ctx, id)
	if err == nil {
		_, err = r.deleteOne(ctx, c, warmRemoveGrace)
	}
	if err = ignoreNotFound(err); err != nil {
		return fmt.Errorf("remove the claimed container %s: %w", id, err)
	}
	r.claimHeld(id)
	return nil
}

// startClaimed switches a claimed container's log to logPath and has init
// start its main process, side by side: until the switch, the log driver
// holds what the main process writes (logfile.Pending). Before the start
// the container gets the sandbox's hostname, as a cold create gives it
// (name, hostnameOf). mainRuns says whether init started the main process.
// Every step may be repeated: the log driver ignores a switch to the file
// it writes, the hostname is set again, and init answers a second start
// with the process it started first; so a claim cut short at any point is
// finished by running this again, and the main process starts once.
func (r *Runtime) startClaimed(ctx context.Context, id, logPath, name string, proc *initlink.Process) (mainRuns bool, err error) {
	switched := make(chan error, 1)
	// Owned by this call, which waits for it.
	go func() {
		sctx, cancel := context.WithTimeout(ctx, claimTimeout)
		defer cancel()
		err := logfile.SwitchLog(sctx, r.warmControl(id), logfile.DriverConfig{Path: logPath, MaxSize: r.cfg.LogMaxSize, MaxFiles: r.cfg.LogMaxFiles})
		if err != nil {
			err = fmt.Errorf("claim %s: %w", id, err)
		}
		switched <- err
	}()
	if err = r.nameClaimed(id, name); err == nil {
		err = r.startMain(ctx, id, proc)
	}
	return err == nil, errors.Join(err, <-switched)
}

// nameClaimed gives claimed container id the hostname of sandbox name.
// Under gVisor the hostname lives in the sandbox's own kernel, out of the
// host's reach: it stays warmHostname.
func (r *Runtime) nameClaimed(id, name string) error {
	known, ok := r.Sandbox(id)
	if !ok {
		return fmt.Errorf("claim %s: the container is not known", id)
	}
	if runtimeName(known.Spec.GetRuntime()) == RuntimeGVisor {
		return nil
	}
	if err := setHostname(known.pid, hostnameOf(name)); err != nil {
		return fmt.Errorf("claim %s: %w", id, err)
	}
	return nil
}

// startMain has init of claimed container id start its main process.
func (r *Runtime) startMain(ctx context.Context, id string, proc *initlink.Process) error {
	link, ok := r.Link(id)
	if !ok {
		c, err := r.cfg.Client.LoadContainer(ctx, id)
		if err != nil {
			return fmt.Errorf("claim %s: load: %w", id, err)
		}
		if err := r.reopenLink(ctx, c); err != nil {
			return err
		}
		if link, ok = r.Link(id); !ok {
			return fmt.Errorf("claim %s: no link to its init", id)
		}
	}
	lctx, cancel := context.WithTimeout(ctx, claimTimeout)
	_, err := link.Call(lctx, initlink.Request{Op: initlink.OpStartMain, Process: proc})
	cancel()
	if err != nil {
		return fmt.Errorf("claim %s: start the main process: %w", id, err)
	}
	return nil
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
