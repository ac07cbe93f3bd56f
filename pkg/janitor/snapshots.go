package janitor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/plugin"
	"github.com/containerd/containerd/snapshots"

	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// findSnapshots returns the snapshots in containerd namespace ns that an fsb
// agent prepared (they carry runtime.LabelAgent, whichever agent's) and that
// no container of ns uses. An agent killed between preparing a sandbox's
// snapshot and making its container leaves one; the agent removes its own
// at its next start, but an agent that never comes back under the same ID
// (a new pod has a new UID) never does.
//
// A create in flight has its snapshot without a container for a few
// milliseconds: the orphan timeout, counted from Created, covers it, and
// Remove looks at the containers once more right before it removes.
func findSnapshots(ctx context.Context, client *containerd.Client, ns string) ([]Leftover, error) {
	ctx = namespaces.WithNamespace(ctx, ns)
	names, err := snapshotters(ctx, client)
	if err != nil {
		return nil, err
	}
	type candidate struct {
		snapshotter string
		info        snapshots.Info
	}
	var found []candidate
	for _, name := range names {
		err := client.SnapshotService(name).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			found = append(found, candidate{name, info})
			return nil
		}, fmt.Sprintf("labels.%q", runtime.LabelAgent))
		if err != nil {
			return nil, fmt.Errorf("list %s snapshots of containerd namespace %s: %w", name, ns, err)
		}
	}
	if len(found) == 0 {
		return nil, nil
	}
	// Listed after the snapshots: a container made in between shows here,
	// so its snapshot is never taken for a leftover.
	used, err := usedSnapshots(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("containerd namespace %s: %w", ns, err)
	}
	var out []Leftover
	for _, c := range found {
		if used[snapshotRef{c.snapshotter, c.info.Name}] {
			continue
		}
		sandboxID, revision, _ := parseContainerID(c.info.Name)
		out = append(out, Leftover{
			Kind:      KindSnapshot,
			Namespace: ns,
			Name:      c.info.Name,
			AgentID:   c.info.Labels[runtime.LabelAgent],
			SandboxID: sandboxID,
			Revision:  revision,
			Created:   c.info.Created,
			Reason: fmt.Sprintf("%s snapshot %s prepared by agent %s, used by no container",
				c.snapshotter, c.info.Name, c.info.Labels[runtime.LabelAgent]),
			Remove: removeSnapshot(client, ns, c.snapshotter, c.info.Name),
		})
	}
	return out, nil
}

// snapshotRef names a snapshot across snapshotters.
type snapshotRef struct{ snapshotter, key string }

// usedSnapshots returns the snapshots that the containers of the context's
// namespace use, whoever made them.
func usedSnapshots(ctx context.Context, client *containerd.Client) (map[snapshotRef]bool, error) {
	cs, err := client.ContainerService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	used := make(map[snapshotRef]bool, len(cs))
	for _, c := range cs {
		if c.SnapshotKey != "" {
			used[snapshotRef{c.Snapshotter, c.SnapshotKey}] = true
		}
	}
	return used, nil
}

// removeSnapshot removes a leftover snapshot unless a container has taken
// it up since it was found.
func removeSnapshot(client *containerd.Client, ns, snapshotter, key string) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx = namespaces.WithNamespace(ctx, ns)
		used, err := usedSnapshots(ctx, client)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", key, err)
		}
		if used[snapshotRef{snapshotter, key}] {
			return fmt.Errorf("snapshot %s: %w", key, errInUse)
		}
		if err := client.SnapshotService(snapshotter).Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove %s snapshot %s: %w", snapshotter, key, err)
		}
		return nil
	}
}

// errInUse is what a Remove returns when what it was to remove turned out
// to be in use after all: it is kept, and the next pass looks again.
var errInUse = errors.New("in use again, kept")

// snapshotters names the snapshotters that containerd runs (loaded without
// an error).
func snapshotters(ctx context.Context, client *containerd.Client) ([]string, error) {
	resp, err := client.IntrospectionService().Plugins(ctx, []string{"type==" + plugin.SnapshotPlugin.String()})
	if err != nil {
		return nil, fmt.Errorf("list snapshotters: %w", err)
	}
	var names []string
	for _, p := range resp.Plugins {
		if p.InitErr == nil {
			names = append(names, p.ID)
		}
	}
	return names, nil
}

// parseContainerID splits a container ID made by runtime.ContainerID,
// <sandboxID>-<revision>, into its parts.
// A warm sandbox's ID (runtime.WarmIDPrefix), which a claimed sandbox
// keeps, names no sandbox.
func parseContainerID(id string) (sandboxID string, revision int64, ok bool) {
	if strings.HasPrefix(id, runtime.WarmIDPrefix) {
		return "", 0, false
	}
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return "", 0, false
	}
	rev, err := strconv.ParseInt(id[i+1:], 10, 64)
	if err != nil || rev <= 0 || strings.ContainsAny(id[i+1:], "+-") {
		return "", 0, false
	}
	return id[:i], rev, true
}
