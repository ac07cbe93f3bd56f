package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/runc/options"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// RemoveSandboxContainer stops and removes the sandbox container id in the
// containerd namespace of ctx, whichever agent made it, as that agent's
// delete would: SIGTERM to its init, up to grace, SIGKILL to every process,
// then its task, its sandbox cgroup, the container and its snapshot. The
// node janitor reaps orphans with it; no agent's state is involved, so it
// takes none of an agent's locks (the janitor only removes what the
// controller says no agent holds). Removing what is gone succeeds.
func RemoveSandboxContainer(ctx context.Context, client *containerd.Client, id string, grace time.Duration, log *slog.Logger) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load container %s: %w", id, err)
	}
	cinfo, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect %s: %w", id, err)
	}
	task, status, err := stopTask(ctx, c, grace, nil)
	if err != nil {
		return err
	}
	if err := removeSandbox(ctx, ns, c, task, status.Status, runtimeName(specOf(cinfo).GetRuntime()), ociBinary(cinfo), log); err != nil {
		return err
	}
	if dir := reapedLinkDir(cinfo); dir != "" {
		// Its agent would have removed it with the container.
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove link dir of %s: %w", id, err)
		}
	}
	return nil
}

// reapedLinkDir returns the host directory of c's link to its init, as the
// container's spec mounts it at initlink.MountPath, or "" when it has
// none. Only a directory named as its agent names c's is returned: the
// janitor removes nothing else.
func reapedLinkDir(c containers.Container) string {
	if c.Spec == nil {
		return ""
	}
	var s specs.Spec
	if err := json.Unmarshal(c.Spec.GetValue(), &s); err != nil {
		return ""
	}
	for _, m := range s.Mounts {
		if m.Destination == initlink.MountPath && filepath.IsAbs(m.Source) && filepath.Base(m.Source) == LinkDirName(c.ID) {
			return m.Source
		}
	}
	return ""
}

// ociBinary returns the OCI runtime binary the runc shim runs for c (for a
// gVisor sandbox, the agent's runsc wrapper), or "runsc" when c names none.
func ociBinary(c containers.Container) string {
	if c.Runtime.Options != nil {
		if v, err := typeurl.UnmarshalAny(c.Runtime.Options); err == nil {
			if o, ok := v.(*options.Options); ok && o.BinaryName != "" {
				return o.BinaryName
			}
		}
	}
	return "runsc"
}
