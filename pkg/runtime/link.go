package runtime

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// DefaultLinkDir holds the sandboxes' link directories when Config.LinkDir
// is empty.
const DefaultLinkDir = "/run/fsb/link"

// maxSocketPath is the longest path a unix socket may have (sun_path less
// its terminating NUL).
const maxSocketPath = 107

// linkHashLen is how many hex digits of sha256(container ID) name a
// sandbox's link directory: short, so that the socket path fits.
const linkHashLen = 16

// linkSpec is what a new container's link needs from its spec: the token
// given to init, and init's user, who owns the directory and socket.
type linkSpec struct {
	token    string
	uid, gid int
}

// checkLinkDir fails when a socket in dir's link directories would not fit
// a unix socket's path.
func checkLinkDir(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("runtime: link dir %q must be an absolute path", dir)
	}
	p := filepath.Join(dir, strings.Repeat("0", linkHashLen), initlink.SocketName)
	if len(p) > maxSocketPath {
		return fmt.Errorf("runtime: link dir %q is too long: its sockets' paths (%d bytes) pass the %d a unix socket allows; pick a shorter --link-dir",
			dir, len(p), maxSocketPath)
	}
	return nil
}

// linkDir is the host directory of container id's link.
func (r *Runtime) linkDir(id string) string {
	return filepath.Join(r.cfg.LinkDir, LinkDirName(id))
}

// LinkDirName names container id's link directory under Config.LinkDir.
func LinkDirName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])[:linkHashLen]
}

// linkOpts returns the spec options of a sandbox with init: a fresh token
// in init's environment, the link directory bind-mounted read-only, and,
// last, one that notes init's user once the image has decided it.
func (r *Runtime) linkOpts(id string, ls *linkSpec) ([]oci.SpecOpts, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("link token: %w", err)
	}
	ls.token = hex.EncodeToString(b[:])
	return []oci.SpecOpts{
		oci.WithEnv([]string{initlink.TokenEnv + "=" + ls.token}),
		oci.WithMounts([]specs.Mount{{
			Destination: initlink.MountPath,
			Type:        "bind",
			Source:      r.linkDir(id),
			Options:     []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
		}}),
		func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			ls.uid, ls.gid = int(s.Process.User.UID), int(s.Process.User.GID)
			return nil
		},
	}, nil
}

// openLink makes container id's link directory (init's user, 0700) and
// listens in it, unless its link is open already.
func (r *Runtime) openLink(id string, ls linkSpec) error {
	r.linkMu.Lock()
	defer r.linkMu.Unlock()
	if _, ok := r.links[id]; ok {
		return nil
	}
	dir := r.linkDir(id)
	if err := os.MkdirAll(r.cfg.LinkDir, 0o700); err != nil {
		return fmt.Errorf("link dir: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("link dir of %s: %w", id, err)
	}
	// An existing directory (an agent restart) keeps its inode: a running
	// sandbox's mount holds that one.
	if err := os.Lchown(dir, ls.uid, ls.gid); err != nil {
		return fmt.Errorf("link dir of %s: %w", id, err)
	}
	l, err := initlink.Listen(initlink.Config{
		Path: filepath.Join(dir, initlink.SocketName), Token: ls.token, UID: ls.uid, GID: ls.gid,
		Sandbox: id, Logger: r.cfg.Logger,
	})
	if err != nil {
		return fmt.Errorf("link of %s: %w", id, err)
	}
	r.links[id] = l
	return nil
}

// reopenLink opens the link of an existing container with init, with the
// token and user its OCI spec holds: after an agent restart, init dials the
// new listener.
func (r *Runtime) reopenLink(ctx context.Context, c containerd.Container) error {
	r.linkMu.Lock()
	_, ok := r.links[c.ID()]
	r.linkMu.Unlock()
	if ok {
		return nil
	}
	s, err := c.Spec(ctx)
	if err != nil {
		return fmt.Errorf("spec of %s: %w", c.ID(), err)
	}
	ls := linkSpec{uid: int(s.Process.User.UID), gid: int(s.Process.User.GID)}
	for _, e := range s.Process.Env {
		if v, ok := strings.CutPrefix(e, initlink.TokenEnv+"="); ok {
			ls.token = v
		}
	}
	if ls.token == "" {
		// Made before sandboxes had links: exec is unavailable to it.
		return nil
	}
	return r.openLink(c.ID(), ls)
}

// Link returns the open link to the init of container id.
func (r *Runtime) Link(containerID string) (*initlink.Link, bool) {
	r.linkMu.Lock()
	defer r.linkMu.Unlock()
	l, ok := r.links[containerID]
	return l, ok
}

// closeLink closes container id's link and removes its directory.
func (r *Runtime) closeLink(id string) {
	r.linkMu.Lock()
	l := r.links[id]
	delete(r.links, id)
	r.linkMu.Unlock()
	if l != nil {
		l.Close()
	}
	if err := os.RemoveAll(r.linkDir(id)); err != nil {
		r.cfg.Logger.Warn("link dir not removed", slog.String("container", id), slog.Any("err", err))
	}
}

// CloseLinks closes every link, leaving their directories: a stopping
// agent's successor listens there again.
func (r *Runtime) CloseLinks() {
	r.linkMu.Lock()
	links := r.links
	r.links = make(map[string]*initlink.Link)
	r.linkMu.Unlock()
	for _, l := range links {
		l.Close()
	}
}

// reopenLinks opens the links of this agent's running sandboxes with init,
// and removes the link directories that no container on this containerd
// owns (of any agent or namespace) and whose socket no one listens on (an
// agent of another containerd sharing the link dir keeps its own).
func (r *Runtime) reopenLinks(ctx context.Context, infos []Info) (removed int, err error) {
	for _, info := range infos {
		if info.Phase != PhaseRunning || info.Spec.GetNoInit() {
			continue
		}
		c, err := r.cfg.Client.LoadContainer(ctx, info.ContainerID)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err == nil {
			err = r.reopenLink(ctx, c)
		}
		if err != nil {
			return 0, err
		}
	}
	entries, err := os.ReadDir(r.cfg.LinkDir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("link dir: %w", err)
	}
	owned, err := r.allLinkDirs(ctx)
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		if len(e.Name()) != linkHashLen || owned[e.Name()] || listening(filepath.Join(r.cfg.LinkDir, e.Name(), initlink.SocketName)) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(r.cfg.LinkDir, e.Name())); err != nil {
			return removed, fmt.Errorf("remove leftover link dir: %w", err)
		}
		removed++
	}
	return removed, nil
}

// listening reports whether something listens on the socket at path: an
// agent of another containerd that shares the link dir, whose sandboxes
// this agent's containerd does not know.
func listening(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// allLinkDirs names the link directories of every container on this
// containerd, in every namespace.
func (r *Runtime) allLinkDirs(ctx context.Context) (map[string]bool, error) {
	nss, err := r.cfg.Client.NamespaceService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containerd namespaces: %w", err)
	}
	owned := make(map[string]bool)
	for _, ns := range nss {
		cs, err := r.cfg.Client.ContainerService().List(namespaces.WithNamespace(ctx, ns))
		if err != nil {
			return nil, fmt.Errorf("list containers of namespace %s: %w", ns, err)
		}
		for _, c := range cs {
			owned[filepath.Base(r.linkDir(c.ID))] = true
		}
	}
	return owned, nil
}
