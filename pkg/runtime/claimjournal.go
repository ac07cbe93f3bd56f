package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// A claim journal is a file beside a warm container's link directory
// (<LinkDir>/<link dir name>.claim) that holds what a claim makes of the
// container: its labels and stored spec. The claim writes it before it
// asks containerd for anything and removes it once containerd holds both
// and init has started the main process. So the containerd update and the
// start run side by side, and an agent killed between them leaves a
// journal that settleClaim finishes: the container becomes the sandbox it
// was claimed for, never a warm one again. The file needs no fsync: it
// matters only while the container's task runs, and no task outlives the
// host. After a host crash a journal that was lost leaves the container
// as containerd holds it, warm (removed as any stopped warm sandbox is) or
// already relabelled, with its task gone either way; one left empty or
// torn cannot be read and is removed (settleClaims). The link directory is
// under /run, a tmpfs on most hosts, which a reboot empties.
const claimSuffix = ".claim"

// claimRecord is a journal's content: the container update a claim makes.
type claimRecord struct {
	agent     string
	container containers.Container
}

// claimFile is a journal's encoding.
type claimFile struct {
	Agent       string            `json:"agent"`
	ContainerID string            `json:"containerID"`
	Labels      map[string]string `json:"labels"`
	Spec        []byte            `json:"spec"` // the SandboxSpec, protobuf
}

func newClaimRecord(agent, id string, labels map[string]string, spec *fsbv1.SandboxSpec) (claimRecord, error) {
	ext, err := typeurl.MarshalAnyToProto(spec)
	if err != nil {
		return claimRecord{}, fmt.Errorf("claim %s: encode spec: %w", id, err)
	}
	return claimRecord{agent: agent, container: containers.Container{
		ID: id, Labels: labels, Extensions: map[string]typeurl.Any{ExtensionSpec: ext},
	}}, nil
}

func (r *Runtime) claimPath(id string) string {
	return filepath.Join(r.cfg.LinkDir, LinkDirName(id)+claimSuffix)
}

// writeClaim keeps rec in its container's journal, whole or not at all,
// and in memory (Runtime.claims, until the container is gone).
func (r *Runtime) writeClaim(rec claimRecord) error {
	id := rec.container.ID
	spec, err := proto.Marshal(specOf(rec.container))
	if err != nil {
		return fmt.Errorf("claim %s: encode spec: %w", id, err)
	}
	b, err := json.Marshal(claimFile{Agent: rec.agent, ContainerID: id, Labels: rec.container.Labels, Spec: spec})
	if err != nil {
		return fmt.Errorf("claim %s: encode journal: %w", id, err)
	}
	path := r.claimPath(id)
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		return fmt.Errorf("claim %s: write journal: %w", id, err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		_ = os.Remove(path + ".tmp")
		return fmt.Errorf("claim %s: write journal: %w", id, err)
	}
	r.stateMu.Lock()
	r.claims[id] = rec
	r.stateMu.Unlock()
	return nil
}

// claimHeld removes the journal of container id once containerd holds its
// claim and init has started its main process, or once the container is
// gone.
func (r *Runtime) claimHeld(id string) {
	if err := os.Remove(r.claimPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		r.cfg.Logger.Warn("claim journal not removed", slog.String("container", id), slog.Any("err", err))
	}
}

// claimedBefore reports whether container id was claimed (Runtime.claims).
func (r *Runtime) claimedBefore(id string) bool {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	_, ok := r.claims[id]
	return ok
}

// throughClaims returns c as containerd holds it once the claim of it, if
// any, landed: the claim's labels over c's, without the warm label.
func (r *Runtime) throughClaims(c containers.Container) containers.Container {
	r.stateMu.Lock()
	rec, ok := r.claims[c.ID]
	r.stateMu.Unlock()
	if !ok {
		return c
	}
	labels := maps.Clone(c.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	delete(labels, LabelWarm)
	maps.Copy(labels, rec.container.Labels)
	c.Labels = labels
	exts := maps.Clone(c.Extensions)
	if exts == nil {
		exts = map[string]typeurl.Any{}
	}
	maps.Copy(exts, rec.container.Extensions)
	c.Extensions = exts
	return c
}

// settleClaimsOf settles the claims under way or left of sandbox
// sandboxID's containers (settleClaim): a caller that reads containerd by
// the sandbox's labels then finds them.
func (r *Runtime) settleClaimsOf(ctx context.Context, sandboxID string) error {
	r.stateMu.Lock()
	var ids []string
	for id, rec := range r.claims {
		if rec.container.Labels[LabelID] == sandboxID {
			ids = append(ids, id)
		}
	}
	r.stateMu.Unlock()
	for _, id := range ids {
		if _, err := os.Stat(r.claimPath(id)); errors.Is(err, os.ErrNotExist) {
			continue // settled
		}
		unlock := r.locks.lock(id)
		err := r.settleClaim(ctx, id)
		unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// readClaim reads the journal at path; os.ErrNotExist when there is none.
func readClaim(path string) (claimRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return claimRecord{}, err
	}
	var f claimFile
	if err := json.Unmarshal(b, &f); err != nil {
		return claimRecord{}, fmt.Errorf("claim journal %s: %w", path, err)
	}
	var spec fsbv1.SandboxSpec
	if err := proto.Unmarshal(f.Spec, &spec); err != nil {
		return claimRecord{}, fmt.Errorf("claim journal %s: spec: %w", path, err)
	}
	if f.ContainerID == "" || f.Labels[LabelID] == "" {
		return claimRecord{}, fmt.Errorf("claim journal %s: no container or sandbox", path)
	}
	return newClaimRecord(f.Agent, f.ContainerID, f.Labels, &spec)
}

// settleClaims finishes the claims this agent's journals hold (settleClaim).
// A journal that cannot be read is removed: the rename that wrote it makes
// it whole, so it is not one of ours. Unless wait is set, a container whose
// lock is held (a claim or a delete under way) is left for the next call.
func (r *Runtime) settleClaims(ctx context.Context, wait bool) (settled int, err error) {
	paths, err := filepath.Glob(filepath.Join(r.cfg.LinkDir, "*"+claimSuffix))
	if err != nil {
		return 0, fmt.Errorf("claim journals: %w", err)
	}
	var errs []error
	for _, path := range paths {
		ok := false
		rec, err := readClaim(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // settled meanwhile
		}
		if err != nil {
			r.cfg.Logger.Warn("unreadable claim journal removed", slog.String("path", path), slog.Any("err", err))
			_ = os.Remove(path)
			continue
		}
		if rec.agent != r.cfg.AgentID || path != r.claimPath(rec.container.ID) {
			continue // another agent's, sharing the link dir
		}
		// Read through from now on, also by a reload that comes first.
		r.stateMu.Lock()
		if _, ok := r.claims[rec.container.ID]; !ok {
			r.claims[rec.container.ID] = rec
		}
		r.stateMu.Unlock()
		var unlock func()
		if wait {
			unlock = r.locks.lock(rec.container.ID)
		} else if unlock, ok = r.locks.tryLock(rec.container.ID); !ok {
			continue
		}
		err = r.settleClaim(ctx, rec.container.ID)
		unlock()
		if err == nil {
			settled++
		}
		errs = append(errs, err)
	}
	return settled, errors.Join(errs...)
}

// settleClaim finishes the claim of container id that its journal holds,
// if any: containerd gets the labels and spec, and, while init runs, the
// log is switched and init asked to start the main process (which it does
// once). Then the journal goes. The caller holds the container's lock.
func (r *Runtime) settleClaim(ctx context.Context, id string) error {
	rec, err := readClaim(r.claimPath(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	r.stateMu.Lock()
	if _, ok := r.claims[id]; !ok {
		r.claims[id] = rec
	}
	r.stateMu.Unlock()
	if err := r.relabel(ctx, rec); err != nil {
		if errdefs.IsNotFound(err) {
			r.claimHeld(id) // the container is gone
			return nil
		}
		return err
	}
	c, err := r.cfg.Client.LoadContainer(ctx, id)
	if err == nil {
		var info Info
		if info, err = r.inspect(ctx, c); err == nil {
			r.record(info)
			if info.Phase == PhaseRunning {
				_, err = r.startClaimedSandbox(ctx, info)
			}
		}
	}
	if errdefs.IsNotFound(err) {
		r.claimHeld(id)
		return nil
	}
	if err != nil {
		return fmt.Errorf("settle the claim of %s: %w", id, err)
	}
	r.claimHeld(id)
	r.cfg.Logger.Info("claim cut short finished", slog.String("container", id), slog.String("sandbox", rec.container.Labels[LabelID]))
	return nil
}

// startClaimedSandbox starts the main process of claimed sandbox info
// (startClaimed), as its stored spec says.
func (r *Runtime) startClaimedSandbox(ctx context.Context, info Info) (mainRuns bool, err error) {
	sb := Sandbox{ID: info.ID, Revision: info.Revision, Namespace: info.Namespace, Name: info.Name, Spec: info.Spec}
	img, err := r.images.warmed(ctx, sb.Spec.GetImage())
	if err != nil {
		return false, err
	}
	proc, err := mainProcess(sb, img.img.Name(), img.config)
	if err != nil {
		return false, err
	}
	return r.startClaimed(ctx, info.ContainerID, info.LogPath, info.Name, proc)
}
