package runtime

import (
	"context"
	"slices"
	"sync"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// An image's user (its config's User, or root) is resolved against the
// image's /etc/passwd: containerd's spec options mount the new container's
// snapshot read-only to read it and unmount it again, which costs each
// create a snapshot look-up, two changes to the host's mount table and
// about a millisecond. The answer depends on nothing but the image's
// layers, which every fresh snapshot of the image holds unchanged, so the
// agent resolves it once per image and user and sets it directly for
// every later sandbox of that image.

// maxImageUsers bounds imageUsers: past it the cache starts again, which
// costs only the look-ups to fill it.
const maxImageUsers = 1024

// imageUsers holds resolved process users by image and user.
type imageUsers struct {
	mu    sync.Mutex
	byKey map[imageUserKey]specs.User
}

type imageUserKey struct {
	image digest.Digest
	user  string
}

func (u *imageUsers) get(k imageUserKey) (specs.User, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	v, ok := u.byKey[k]
	return cloneUser(v), ok
}

func (u *imageUsers) put(k imageUserKey, v specs.User) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.byKey == nil || len(u.byKey) >= maxImageUsers {
		u.byKey = make(map[imageUserKey]specs.User)
	}
	u.byKey[k] = cloneUser(v)
}

func cloneUser(v specs.User) specs.User {
	v.AdditionalGids = slices.Clone(v.AdditionalGids)
	if v.Umask != nil {
		umask := *v.Umask
		v.Umask = &umask
	}
	return v
}

// imageUserOpt sets the process user of a sandbox of the image whose
// target (manifest or index) digest is image, as userOpt(user) would:
// from what an earlier sandbox of the same image resolved, else by
// resolving it from the snapshot and keeping the answer.
func (r *Runtime) imageUserOpt(image digest.Digest, user string) oci.SpecOpts {
	k := imageUserKey{image: image, user: user}
	if v, ok := r.users.get(k); ok {
		return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			if s.Process == nil {
				s.Process = &specs.Process{}
			}
			s.Process.User = v
			return nil
		}
	}
	resolve := userOpt(user)
	return func(ctx context.Context, client oci.Client, c *containers.Container, s *oci.Spec) error {
		if err := resolve(ctx, client, c, s); err != nil {
			return err
		}
		r.users.put(k, s.Process.User)
		return nil
	}
}
