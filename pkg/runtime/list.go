package runtime

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/typeurl/v2"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// List returns every sandbox container of this agent with its task's state.
func (r *Runtime) List(ctx context.Context) ([]Info, error) {
	cs, err := r.cfg.Client.Containers(ctx, fmt.Sprintf("labels.%q==%s", LabelAgent, r.cfg.AgentID))
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	out := make([]Info, 0, len(cs))
	for _, c := range cs {
		info, err := r.inspect(ctx, c)
		if errdefs.IsNotFound(err) {
			continue // deleted while we listed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// inspect reads a container's sandbox identity and its task's state.
func (r *Runtime) inspect(ctx context.Context, c containerd.Container) (Info, error) {
	cinfo, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil {
		return Info{}, fmt.Errorf("inspect %s: %w", c.ID(), err)
	}
	info := infoFromContainer(r.throughClaims(cinfo))
	task, err := c.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		setNoTask(&info)
		return info, nil
	}
	if err != nil {
		return Info{}, fmt.Errorf("load task %s: %w", c.ID(), err)
	}
	status, err := task.Status(ctx)
	if errdefs.IsNotFound(err) {
		setNoTask(&info)
		return info, nil
	}
	if err != nil {
		return Info{}, fmt.Errorf("task %s status: %w", c.ID(), err)
	}
	setPhase(&info, status)
	info.pid = task.Pid()
	return info, nil
}

// infoFromContainer reads a sandbox's identity and spec from its container.
func infoFromContainer(c containers.Container) Info {
	rev, _ := strconv.ParseInt(c.Labels[LabelRevision], 10, 64)
	info := Info{
		ContainerID: c.ID,
		ID:          c.Labels[LabelID],
		Revision:    rev,
		Namespace:   c.Labels[LabelNamespace],
		Name:        c.Labels[LabelName],
		LogPath:     c.Labels[LabelLogPath],
		Created:     c.CreatedAt,
		Persisted:   c.Labels[LabelPersisted] == "true",
		started:     c.Labels[LabelStarted] == "true",
		agent:       c.Labels[LabelAgent],
		Warm:        c.Labels[LabelWarm],
		Claimed:     c.Labels[LabelClaimed] == "true",
		mainStarted: c.Labels[LabelMainStarted] == "true",
	}
	for k, v := range c.Labels {
		if user, ok := strings.CutPrefix(k, LabelUserPrefix); ok {
			if info.Labels == nil {
				info.Labels = map[string]string{}
			}
			info.Labels[user] = v
		}
	}
	info.Spec = specOf(c)
	if c.Spec != nil {
		info.specBytes = len(c.Spec.GetTypeUrl()) + len(c.Spec.GetValue())
	}
	return info
}

// specOf reads the sandbox spec stored with a container; nil when it holds
// none.
func specOf(c containers.Container) *fsbv1.SandboxSpec {
	ext, ok := c.Extensions[ExtensionSpec]
	if !ok {
		return nil
	}
	v, err := typeurl.UnmarshalAny(ext)
	if err != nil {
		return nil
	}
	spec, _ := v.(*fsbv1.SandboxSpec)
	return spec
}

// MarkPersisted labels the containers of a sandbox (one revision, or all
// when revision is 0) as having their object in the store. Marking what is
// gone, or already marked, succeeds.
func (r *Runtime) MarkPersisted(ctx context.Context, sandboxID string, revision int64) error {
	if err := r.settleClaimsOf(ctx, sandboxID); err != nil {
		return err
	}
	filter := fmt.Sprintf("labels.%q==%s,labels.%q==%s", LabelAgent, r.cfg.AgentID, LabelID, sandboxID)
	if revision > 0 {
		filter += fmt.Sprintf(",labels.%q==%d", LabelRevision, revision)
	}
	cs, err := r.cfg.Client.Containers(ctx, filter)
	if err != nil {
		return fmt.Errorf("find sandbox %s: %w", sandboxID, err)
	}
	for _, c := range cs {
		labels, err := c.Labels(ctx)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read labels of %s: %w", c.ID(), err)
		}
		if labels[LabelPersisted] != "true" {
			if _, err := c.SetLabels(ctx, map[string]string{LabelPersisted: "true"}); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("mark %s persisted: %w", c.ID(), err)
			}
		}
		r.update(c.ID(), func(info *Info) bool {
			if info.Persisted {
				return false
			}
			info.Persisted = true
			return true
		})
	}
	return nil
}
