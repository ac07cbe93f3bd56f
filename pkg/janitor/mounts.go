package janitor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/plugin"

	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// taskPluginDir is the directory the v2 runtime names after itself, under
// containerd's root (work dirs) and under its state (bundles).
const taskPluginDir = "io.containerd.runtime.v2.task"

// maxUnmounts bounds the unmounts of one mount point: a rootfs mounted
// twice over takes two.
const maxUnmounts = 8

// findMounts returns the sandbox root filesystems still mounted in bundles
// of containerd namespace ns (<state>/io.containerd.runtime.v2.task/<ns>/
// <id>/rootfs) whose task containerd no longer has and whose shim no longer
// runs.
//
// Seen on the rig: when a shim dies, containerd unmounts its rootfs at once
// if it runs, else at its next start, before it serves; so this is a
// safety net for what that misses. containerd mounts a rootfs before it
// starts the shim, so a create in flight shows a mount without shim or task
// for a few milliseconds: the orphan timeout counts from Created, the
// bundle's last change, and Remove looks for the task and the shim again
// right before it unmounts.
//
// A bundle is tied to this containerd by its state dir, when containerd
// exports it, else by the bundle's "work" link into containerd's root.
// The mounts read are the janitor's own (/proc/self/mountinfo): it must
// share the mount namespace of containerd, as it must to unmount.
func findMounts(ctx context.Context, client *containerd.Client, ns string) ([]Leftover, error) {
	ctx = namespaces.WithNamespace(ctx, ns)
	dirs, err := containerdDirs(ctx, client)
	if err != nil {
		return nil, err
	}
	points, err := mountPoints(filepath.Join(procRoot, "self", "mountinfo"))
	if err != nil {
		return nil, err
	}
	shims, err := listShims(procRoot)
	if err != nil {
		return nil, err
	}
	var out []Leftover
	seen := map[string]bool{}
	for _, p := range points {
		id, ok := dirs.rootfsOf(p, ns)
		if !ok || seen[p] {
			continue
		}
		seen[p] = true
		bundle := filepath.Dir(p)
		orphan, err := rootfsOrphaned(ctx, client, shims, ns, id, bundle)
		if err != nil {
			return nil, err
		}
		if !orphan {
			continue
		}
		fi, err := os.Stat(bundle)
		if err != nil {
			continue // removed meanwhile
		}
		l := Leftover{
			Kind:      KindMount,
			Namespace: ns,
			Name:      p,
			Created:   fi.ModTime(),
			Reason:    fmt.Sprintf("root filesystem of task %s, mounted with neither its task nor its shim left", id),
			Remove:    removeMount(client, ns, id, p),
		}
		l.SandboxID, l.Revision, _ = parseContainerID(id)
		if c, err := client.ContainerService().Get(ctx, id); err == nil {
			l.AgentID = c.Labels[runtime.LabelAgent]
		}
		out = append(out, l)
	}
	return out, nil
}

// rootfsOrphaned reports whether task id of ns is gone from containerd and
// none of shims runs in its bundle.
func rootfsOrphaned(ctx context.Context, client *containerd.Client, shims []shimProc, ns, id, bundle string) (bool, error) {
	gone, err := taskGone(ctx, client, id)
	if err != nil || !gone {
		return false, err
	}
	for _, s := range shims {
		if s.namespace == ns && s.id == id && s.bundle == bundle {
			return false, nil
		}
	}
	return true, nil
}

// removeMount unmounts a leftover rootfs (lazily when it is busy) and
// removes its directory if it is then empty.
func removeMount(client *containerd.Client, ns, id, point string) func(context.Context) error {
	return func(ctx context.Context) error {
		ctx = namespaces.WithNamespace(ctx, ns)
		shims, err := listShims(procRoot)
		if err != nil {
			return fmt.Errorf("mount %s: %w", point, err)
		}
		orphan, err := rootfsOrphaned(ctx, client, shims, ns, id, filepath.Dir(point))
		if err != nil {
			return fmt.Errorf("mount %s: %w", point, err)
		}
		if !orphan {
			return fmt.Errorf("mount %s: task or shim of %s is back: %w", point, id, errInUse)
		}
		for i := 0; ; i++ {
			err := syscall.Unmount(point, 0)
			if errors.Is(err, syscall.EBUSY) {
				err = syscall.Unmount(point, syscall.MNT_DETACH)
			}
			if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
				break // no longer a mount point
			}
			if err != nil {
				return fmt.Errorf("unmount %s: %w", point, err)
			}
			if i >= maxUnmounts {
				return fmt.Errorf("unmount %s: still mounted after %d unmounts", point, maxUnmounts)
			}
		}
		// Remove takes an empty directory only: what is left in one after the
		// unmount is not a mount's to judge.
		if err := os.Remove(point); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove rootfs dir %s: %w", point, err)
		}
		return nil
	}
}

// taskDirs is where containerd's v2 runtime keeps its bundles: state is
// <state>/io.containerd.runtime.v2.task when containerd says so; root is
// <root>/io.containerd.runtime.v2.task, which every bundle's "work" link
// points into.
type taskDirs struct{ state, root string }

// containerdDirs asks containerd where its task bundles are. containerd
// 1.6 exports no dir for the runtime plugin; its snapshotters export their
// root, <root>/<plugin>, from which containerd's root follows.
func containerdDirs(ctx context.Context, client *containerd.Client) (taskDirs, error) {
	resp, err := client.IntrospectionService().Plugins(ctx, nil)
	if err != nil {
		return taskDirs{}, fmt.Errorf("list containerd plugins: %w", err)
	}
	var d taskDirs
	for _, p := range resp.Plugins {
		switch {
		case p.Type == plugin.RuntimePluginV2.String() && p.ID == "task":
			if s := p.Exports["state"]; s != "" {
				d.state = filepath.Join(s, taskPluginDir)
				if filepath.Base(s) == taskPluginDir {
					d.state = s
				}
			}
		case p.Type == plugin.SnapshotPlugin.String() && p.InitErr == nil && d.root == "":
			if r := p.Exports["root"]; r != "" && filepath.Base(r) == p.Type+"."+p.ID {
				d.root = filepath.Join(filepath.Dir(r), taskPluginDir)
			}
		}
	}
	if d.state == "" && d.root == "" {
		return taskDirs{}, errors.New("containerd names neither its state nor its root dir: cannot tell its bundles")
	}
	return d, nil
}

// rootfsOf returns the task ID whose bundle's rootfs point is, if point is
// <dir>/<ns>/<id>/rootfs of this containerd's bundles.
func (d taskDirs) rootfsOf(point, ns string) (string, bool) {
	if filepath.Base(point) != "rootfs" {
		return "", false
	}
	bundle := filepath.Dir(point)
	id := filepath.Base(bundle)
	nsDir := filepath.Dir(bundle)
	if filepath.Base(nsDir) != ns || filepath.Base(filepath.Dir(nsDir)) != taskPluginDir {
		return "", false
	}
	if d.state != "" {
		return id, filepath.Dir(nsDir) == d.state
	}
	work, err := os.Readlink(filepath.Join(bundle, "work"))
	return id, err == nil && filepath.Clean(work) == filepath.Join(d.root, ns, id)
}

// mountPoints reads the mount points of a mountinfo file.
func mountPoints(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		out = append(out, unescapeMountPath(fields[4]))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	return out, nil
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space,
// \011, \012, \134).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
