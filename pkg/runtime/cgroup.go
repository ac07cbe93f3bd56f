package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"path"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fast-sandbox/fast-sandbox/pkg/cgroup"
)

// A sandbox's cgroup is <parent>/<containerd namespace>/<container ID>: the
// parent is Config.CgroupParent (in Kubernetes the agent pod's cgroup, so
// that the node accounts for its sandboxes), by default the root, where
// containerd would put the task. The task runs in its cgroup.TaskLeaf and
// the log driver in its cgroup.HelperLeaf, both under the sandbox's limits
// (see package cgroup). withSandboxCgroup puts the task there; the driver's
// config names the parent. Whatever removes a sandbox later (its agent
// with another parent, after a restart with other flags, or the node
// janitor, which has none) reads the path from the container's spec
// rather than computing it again.

// TaskOOMScoreAdj is a sandbox task's oom_score_adj. The task shares its
// memory limit with its log driver, which inherits the shim's score and
// lowers it where it may: the task's raised score makes it, not the driver,
// the OOM killer's pick when the sandbox runs out of memory (a driver
// killed loses the task's output from then on). Raising a score needs no
// privilege. On the node as a whole a sandbox is then killed before the
// agent, containerd and the node's own services, as kubelet ranks
// best-effort pods.
const TaskOOMScoreAdj = 500

// withSandboxCgroup sets the task's cgroup to the task leaf of the
// sandbox's cgroup, and its OOM score to TaskOOMScoreAdj.
func (r *Runtime) withSandboxCgroup(ctx context.Context, _ oci.Client, c *containers.Container, s *oci.Spec) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	s.Linux.CgroupsPath = path.Join("/", r.cfg.CgroupParent, ns, c.ID, cgroup.TaskLeaf)
	if s.Process == nil {
		s.Process = &specs.Process{}
	}
	adj := TaskOOMScoreAdj
	s.Process.OOMScoreAdj = &adj
	return nil
}

// ociSpec returns a container's OCI spec, or nil when it has none that
// can be read.
func ociSpec(c containers.Container) *specs.Spec {
	if c.Spec == nil {
		return nil
	}
	v, err := typeurl.UnmarshalAny(c.Spec)
	if err != nil {
		return nil
	}
	s, _ := v.(*specs.Spec)
	return s
}

// sandboxCgroup returns the cgroup of a sandbox container in namespace ns
// from its spec: the parent of its task's leaf, or for a container made
// before sandboxes had their own cgroup its task's cgroup; when the spec
// names none (or not as a path), the default /<ns>/<id>.
func sandboxCgroup(ns string, c containers.Container) string {
	if s := ociSpec(c); s != nil && s.Linux != nil && path.IsAbs(s.Linux.CgroupsPath) && path.Clean(s.Linux.CgroupsPath) != "/" {
		p := path.Clean(s.Linux.CgroupsPath)
		if path.Base(p) == cgroup.TaskLeaf {
			return path.Dir(p)
		}
		return p
	}
	return path.Join("/", ns, c.ID)
}

// sandboxCgroupOf is sandboxCgroup for a loaded container; one whose
// record cannot be read gets the default.
func sandboxCgroupOf(ctx context.Context, ns string, c containerd.Container) string {
	info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return path.Join("/", ns, c.ID())
	}
	return sandboxCgroup(ns, info)
}

// helperCgroup returns the sandbox cgroup a container's helpers join, and
// the limits to make it with, from the container's spec (its pids limit
// stays the task's own). A container made
// before sandboxes had their own cgroup (its task sits straight in
// /<namespace>/<id>) gets none: a helper in a child of the task's cgroup
// would keep the runtime from removing it.
func helperCgroup(c containers.Container) (string, cgroup.Limits) {
	s := ociSpec(c)
	if s == nil || s.Linux == nil || path.Base(s.Linux.CgroupsPath) != cgroup.TaskLeaf {
		return "", cgroup.Limits{}
	}
	var l cgroup.Limits
	if r := s.Linux.Resources; r != nil {
		if r.CPU != nil && r.CPU.Quota != nil && r.CPU.Period != nil {
			l.CPUQuota, l.CPUPeriod = *r.CPU.Quota, int64(*r.CPU.Period)
		}
		if r.Memory != nil && r.Memory.Limit != nil {
			l.Memory = *r.Memory.Limit
		}
	}
	return path.Dir(s.Linux.CgroupsPath), l
}

// cgroupRemoveWait bounds how long a delete waits for the log driver to
// leave the sandbox's cgroup. The shim stops the driver as it deletes the
// task, so it is normally gone; one still there after this is left to
// remove itself, or to the agent's next start.
const cgroupRemoveWait = 2 * time.Second

// removeSandboxCgroup removes a container's sandbox cgroup dir, after its
// task's delete, from every hierarchy: the OCI runtime removes only its
// task's leaf, the log driver only what it joined, and a driver killed
// (the shim's SIGKILL to one slow to stop, the OOM killer) nothing. What is
// left is logged, not returned: the sandbox itself is gone.
func removeSandboxCgroup(ctx context.Context, dir, containerID string, log *slog.Logger) {
	if _, err := cgroup.Remove(ctx, dir, cgroupRemoveWait); err != nil {
		log.Warn("a deleted sandbox's cgroup is left; the agent's next start removes it",
			slog.String("container", containerID), slog.Any("err", err))
	}
}

// removeLeftoverCgroups removes the cgroups <parent>/<namespace>/<name> that no
// container of the agent's containerd namespace owns, as a delete cut
// short leaves them, and returns how many it removed. Only empty cgroups
// can be removed, so one in use by something else is never touched; one
// that still holds a process is logged and kept.
func (r *Runtime) removeLeftoverCgroups(ctx context.Context) (int, error) {
	ns, err := r.namespace(ctx)
	if err != nil {
		return 0, err
	}
	// Cgroups are listed before containers: a container is made before its
	// cgroup, so a cgroup listed first whose container is not listed next
	// has none.
	// Leftovers cost a little memory each, and the next delete or start
	// may remove them: failing to list them never keeps the agent from
	// starting.
	names, err := cgroup.Children(path.Join("/", r.cfg.CgroupParent, ns))
	if err != nil {
		r.cfg.Logger.Warn("cannot list sandbox cgroups; leftovers kept", slog.Any("err", err))
		return 0, nil
	}
	if len(names) == 0 {
		return 0, nil
	}
	cs, err := r.cfg.Client.Containers(ctx)
	if err != nil {
		return 0, fmt.Errorf("list containers: %w", err)
	}
	owned := make(map[string]bool, len(cs))
	for _, c := range cs {
		owned[c.ID()] = true
	}
	removed := 0
	for _, name := range names {
		if owned[name] {
			continue
		}
		dir := path.Join("/", r.cfg.CgroupParent, ns, name)
		if found, err := cgroup.Remove(ctx, dir, 0); err != nil {
			r.cfg.Logger.Warn("a cgroup left without its container is in use; kept", slog.String("cgroup", dir), slog.Any("err", err))
		} else if found {
			r.cfg.Logger.Info("removed a cgroup left without its container", slog.String("cgroup", dir))
			removed++
		}
	}
	return removed, nil
}
