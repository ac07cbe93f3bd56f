package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/remotes/docker/config"
	remoteerrors "github.com/containerd/containerd/remotes/errors"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/api/v1alpha1"
)

// image is a resolved, unpacked image and the config a sandbox starts from.
type image struct {
	img    containerd.Image
	target digest.Digest
	config ocispec.ImageConfig
}

// imageCache remembers resolved images by name. Every lookup still asks
// containerd for the name's current target (one cheap call), so a retagged
// image is never served stale; what it saves on the create path is reading
// the manifest and config and checking the unpacked snapshot chain.
//
// An image missing from the agent's namespace is taken, without any
// registry, from the first of the other namespaces (sources) that has it,
// and pulled only when none has.
type imageCache struct {
	client      *containerd.Client
	snapshotter string
	platform    platforms.MatchComparer
	sources     []string
	resolver    remotes.Resolver
	pullTimeout time.Duration

	mu     sync.Mutex
	byName map[string]*image
	pulls  keyedMutex
}

// newImageCache returns the cache for cfg: its client and snapshotter,
// the namespaces to take images from (ImageNamespaces) and the registry
// hosts configuration for pulls (RegistryConfigPath).
func newImageCache(cfg Config) *imageCache {
	var sources []string
	for _, ns := range cfg.ImageNamespaces {
		if ns = strings.TrimSpace(ns); ns != "" && !slices.Contains(sources, ns) {
			sources = append(sources, ns)
		}
	}
	return &imageCache{
		client:      cfg.Client,
		snapshotter: cfg.Snapshotter,
		platform:    platforms.Default(),
		sources:     sources,
		resolver:    docker.NewResolver(docker.ResolverOptions{Hosts: registryHosts(cfg.RegistryConfigPath)}),
		pullTimeout: cfg.PullTimeout,
		byName:      make(map[string]*image),
	}
}

// registryHosts tells the resolver how to reach a registry. Without a
// configuration directory every registry is reached over HTTPS except those
// on loopback (localhost, 127.0.0.0/8, ::1), which are reached over plain
// HTTP. With one, <dir>/<host>/hosts.toml (containerd's format: mirrors,
// TLS, plain HTTP, headers) decides, and <dir>/_default/hosts.toml applies
// to every registry without its own directory except those on loopback,
// which keep plain HTTP unless they have a directory of their own.
func registryHosts(dir string) docker.RegistryHosts {
	plain := docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost))
	if dir == "" {
		return plain
	}
	hostDir := config.HostDirFromRoot(dir)
	configured := config.ConfigureHosts(context.Background(), config.HostOptions{HostDir: hostDir})
	return func(host string) ([]docker.RegistryHost, error) {
		if docker.IsLocalhost(host) {
			d, err := hostDir(host)
			if err != nil && !errdefs.IsNotFound(err) {
				return nil, fmt.Errorf("registry configuration for %s: %w", host, err)
			}
			if d == "" || filepath.Base(d) == "_default" {
				return plain(host)
			}
		}
		hosts, err := configured(host)
		if err != nil {
			return nil, fmt.Errorf("registry configuration for %s in %s: %w", host, dir, err)
		}
		return hosts, nil
	}
}

// NormalizeImage turns a user's image reference into containerd's full name
// ("busybox" becomes "docker.io/library/busybox:latest").
func NormalizeImage(ref string) (string, error) {
	name, err := v1alpha1.NormalizeImage(ref)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return name, nil
}

// get returns the image named ref, taking it from another namespace or
// pulling it when it is not present.
func (c *imageCache) get(ctx context.Context, ref string) (*image, error) {
	name, err := NormalizeImage(ref)
	if err != nil {
		return nil, err
	}
	rec, err := c.client.ImageService().Get(ctx, name)
	if errdefs.IsNotFound(err) {
		return c.fetch(ctx, name)
	}
	if err != nil {
		return nil, fmt.Errorf("look up image %s: %w", name, err)
	}
	c.mu.Lock()
	cached := c.byName[name]
	c.mu.Unlock()
	if cached != nil && cached.target == rec.Target.Digest {
		return cached, nil
	}
	return c.resolve(ctx, c.newImage(rec))
}

// warmed returns the image named ref as the cache holds it, without asking
// containerd whether the name still points there: a claim needs the config
// of the image its warm sandbox was made from, which the cache has unless
// the agent restarted since (then it is get).
func (c *imageCache) warmed(ctx context.Context, ref string) (*image, error) {
	name, err := NormalizeImage(ref)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	cached := c.byName[name]
	c.mu.Unlock()
	if cached != nil {
		return cached, nil
	}
	return c.get(ctx, ref)
}

// forget drops name from the cache, after its snapshot chain went missing.
func (c *imageCache) forget(name string) {
	c.mu.Lock()
	delete(c.byName, name)
	c.mu.Unlock()
}

func (c *imageCache) newImage(rec images.Image) containerd.Image {
	return containerd.NewImageWithPlatform(c.client, rec, c.platform)
}

// namespace is the agent's namespace: ctx's, else the client's default.
func (c *imageCache) namespace(ctx context.Context) string {
	if ns, ok := namespaces.Namespace(ctx); ok {
		return ns
	}
	return c.client.DefaultNamespace()
}

// fetch makes the image named name present in the agent's namespace: from
// another namespace when one has it, else from its registry.
func (c *imageCache) fetch(ctx context.Context, name string) (*image, error) {
	unlock := c.pulls.lock(name)
	defer unlock()
	// Another create may have made it present while we waited for the lock.
	if rec, err := c.client.ImageService().Get(ctx, name); err == nil {
		return c.resolve(ctx, c.newImage(rec))
	}
	own := c.namespace(ctx)
	var errs []error
	for _, ns := range c.sources {
		if ns == own {
			continue
		}
		img, err := c.adopt(ctx, ns, name)
		if err == nil {
			return img, nil
		}
		if !errors.Is(err, errNotInNamespace) {
			// Present there but unusable (content missing, say): a pull
			// may still succeed.
			errs = append(errs, err)
		}
	}
	img, err := c.pull(ctx, name)
	if err == nil {
		return img, nil
	}
	if ctx.Err() != nil {
		// The create's own deadline, not the registry's doing.
		return nil, fmt.Errorf("pull %s: %w", name, err)
	}
	where := "on this node"
	if len(c.sources) > 0 {
		where = "in any of the containerd namespaces " + strings.Join(append([]string{own}, c.sources...), ", ")
	}
	msgs := make([]string, 0, len(errs)+1)
	for _, e := range append(errs, err) {
		msgs = append(msgs, e.Error())
	}
	cause := strings.Join(msgs, "; ")
	switch kind := pullError(err); kind {
	case ErrImageNotFound:
		return nil, fmt.Errorf("%w: %s is not %s and its registry does not have it: %s", kind, name, where, cause)
	case ErrRegistryUnavailable:
		return nil, fmt.Errorf("%w: %s is not %s and its registry cannot be reached: %s", kind, name, where, cause)
	case ErrRegistryDenied:
		return nil, fmt.Errorf("%w: %s is not %s and its registry refused access to it (credentials missing or refused): %s", kind, name, where, cause)
	}
	return nil, fmt.Errorf("%s is not %s and could not be pulled: %s", name, where, cause)
}

// pullError says what a failed pull means for the caller: ErrImageNotFound
// (the registry answered that it does not have the image),
// ErrRegistryUnavailable (it could not be reached or failed to answer),
// ErrRegistryDenied (it refused access), or nil when it is none of these.
func pullError(err error) error {
	var status remoteerrors.ErrUnexpectedStatus
	if errors.As(err, &status) {
		switch code := status.StatusCode; {
		case code == http.StatusUnauthorized, code == http.StatusForbidden:
			return ErrRegistryDenied
		case code == http.StatusNotFound:
			return ErrImageNotFound
		case code >= 500, code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
			return ErrRegistryUnavailable
		}
		return nil
	}
	var (
		urlErr *url.Error
		opErr  *net.OpError
		dnsErr *net.DNSError
	)
	switch {
	case errors.Is(err, docker.ErrInvalidAuthorization):
		return ErrRegistryDenied
	case errors.Is(err, errPullTimeout), errors.As(err, &urlErr), errors.As(err, &opErr), errors.As(err, &dnsErr),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF):
		return ErrRegistryUnavailable
	case errdefs.IsNotFound(err):
		return ErrImageNotFound
	}
	return nil
}

// errPullTimeout marks a pull that took longer than the pull timeout.
var errPullTimeout = errors.New("no answer within the pull timeout")

// errNotInNamespace marks a source namespace without the image.
var errNotInNamespace = fmt.Errorf("image not in namespace: %w", errdefs.ErrNotFound)

// adopt makes the image named name, found in namespace src, present in the
// agent's namespace without a registry: every blob this platform needs is
// committed into the agent's namespace (containerd's default "shared"
// content policy then takes the bytes already on disk, copying none), the
// image record is created with the same name and target, and the image is
// unpacked for the agent's snapshotter.
func (c *imageCache) adopt(ctx context.Context, src, name string) (*image, error) {
	srcCtx := namespaces.WithNamespace(ctx, src)
	is := c.client.ImageService()
	rec, err := is.Get(srcCtx, name)
	if errdefs.IsNotFound(err) {
		return nil, errNotInNamespace
	}
	if err != nil {
		return nil, fmt.Errorf("look up image %s in containerd namespace %s: %w", name, src, err)
	}

	// Everything is written under a lease, so that the garbage collector
	// leaves it alone until the image record references it; the lease
	// also covers the snapshots Unpack makes.
	ctx, done, err := c.client.WithLease(ctx)
	if err != nil {
		return nil, fmt.Errorf("take image %s from containerd namespace %s: lease: %w", name, src, err)
	}
	// A lease left behind expires by itself (24 h).
	defer func() { _ = done(context.WithoutCancel(ctx)) }()
	if _, err := copyContent(ctx, srcCtx, c.client.ContentStore(), rec.Target, c.platform); err != nil {
		return nil, fmt.Errorf("take image %s from containerd namespace %s: %w", name, src, err)
	}
	own := images.Image{Name: rec.Name, Target: rec.Target, Labels: rec.Labels}
	created, err := is.Create(ctx, own)
	if errdefs.IsAlreadyExists(err) {
		created, err = is.Update(ctx, own)
	}
	if err != nil {
		return nil, fmt.Errorf("take image %s from containerd namespace %s: record: %w", name, src, err)
	}
	return c.resolve(ctx, c.newImage(created))
}

// gcContentPrefix starts the labels by which a blob keeps its children from
// the garbage collector.
const gcContentPrefix = "containerd.io/gc.ref.content."

// copyContent commits every blob of the image target that platform needs
// (index, the best manifest for platform, config, layers), read in the
// namespace of srcCtx, into the namespace of ctx, with their labels. A blob
// already there is left as it is. Under containerd's "shared" content
// policy (its default), a writer opened with the descriptor of a blob on
// disk starts complete and the commit copies nothing; under "isolated" the
// bytes are copied. It returns how many blobs were copied byte by byte.
func copyContent(ctx, srcCtx context.Context, cs content.Store, target ocispec.Descriptor, platform platforms.MatchComparer) (int, error) {
	children := images.LimitManifests(images.FilterPlatforms(images.ChildrenHandler(cs), platform), platform, 1)
	copied := 0
	err := images.Walk(srcCtx, images.HandlerFunc(func(srcCtx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		info, err := cs.Info(srcCtx, desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("blob %s (%s): %w", desc.Digest, desc.MediaType, err)
		}
		subs, err := children(srcCtx, desc)
		if err != nil {
			return nil, fmt.Errorf("blob %s (%s): %w", desc.Digest, desc.MediaType, err)
		}
		n, err := adoptBlob(ctx, srcCtx, cs, desc, adoptedLabels(info.Labels, subs))
		if err != nil {
			return nil, fmt.Errorf("blob %s (%s): %w", desc.Digest, desc.MediaType, err)
		}
		copied += n
		return subs, nil
	}), target)
	return copied, err
}

// adoptedLabels are the labels of a blob in its new namespace: its labels
// in the source, with the references to its children rebuilt for the
// children that are adopted with it (as a pull labels them).
func adoptedLabels(src map[string]string, children []ocispec.Descriptor) map[string]string {
	labels := make(map[string]string, len(src)+len(children))
	for k, v := range src {
		if !strings.HasPrefix(k, gcContentPrefix) {
			labels[k] = v
		}
	}
	seen := map[string]int{}
	for _, ch := range children {
		for _, key := range images.ChildGCLabels(ch) {
			i := seen[key]
			seen[key] = i + 1
			if i > 0 || strings.HasSuffix(key, ".") {
				key += strconv.Itoa(i)
			}
			labels[key] = ch.Digest.String()
		}
	}
	if len(labels) == 0 {
		return nil
	}
	return labels
}

// adoptBlob commits desc into the namespace of ctx. It returns 1 when the
// bytes had to be copied from the namespace of srcCtx, 0 when containerd
// shared them or the blob was already there.
func adoptBlob(ctx, srcCtx context.Context, cs content.Store, desc ocispec.Descriptor, labels map[string]string) (int, error) {
	ref := "fsb-adopt-" + desc.Digest.String()
	w, err := content.OpenWriter(ctx, cs, content.WithRef(ref), content.WithDescriptor(desc))
	if errdefs.IsAlreadyExists(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open writer: %w", err)
	}
	defer w.Close()
	st, err := w.Status()
	if err != nil {
		return 0, fmt.Errorf("writer status: %w", err)
	}
	opts := []content.Opt{content.WithLabels(labels)}
	if st.Offset == desc.Size {
		// Shared: the blob is on disk already and nothing is written.
		if err := w.Commit(ctx, desc.Size, desc.Digest, opts...); err != nil && !errdefs.IsAlreadyExists(err) {
			return 0, fmt.Errorf("commit: %w", err)
		}
		return 0, nil
	}
	ra, err := cs.ReaderAt(srcCtx, desc)
	if err != nil {
		return 0, fmt.Errorf("read: %w", err)
	}
	defer ra.Close()
	if err := content.Copy(ctx, w, content.NewReader(ra), desc.Size, desc.Digest, opts...); err != nil {
		return 0, fmt.Errorf("copy: %w", err)
	}
	return 1, nil
}

// pull fetches the image from its registry and unpacks it. The caller holds
// the name's lock.
func (c *imageCache) pull(ctx context.Context, name string) (*image, error) {
	opts := []containerd.RemoteOpt{
		containerd.WithPullUnpack,
		containerd.WithResolver(c.resolver),
		containerd.WithPlatformMatcher(c.platform),
	}
	if c.snapshotter != "" {
		opts = append(opts, containerd.WithPullSnapshotter(c.snapshotter))
	}
	pullCtx, cancel := context.WithTimeoutCause(ctx, c.pullTimeout, errPullTimeout)
	defer cancel()
	img, err := c.client.Pull(pullCtx, name, opts...)
	if err != nil {
		if errors.Is(context.Cause(pullCtx), errPullTimeout) {
			return nil, fmt.Errorf("pull: %w (%v): %w", errPullTimeout, c.pullTimeout, err)
		}
		return nil, fmt.Errorf("pull: %w", err)
	}
	return c.resolve(ctx, img)
}

// resolve reads img's config and makes sure it is unpacked.
func (c *imageCache) resolve(ctx context.Context, img containerd.Image) (*image, error) {
	snapshotter := c.snapshotter
	if snapshotter == "" {
		snapshotter = containerd.DefaultSnapshotter
	}
	unpacked, err := img.IsUnpacked(ctx, snapshotter)
	if err != nil {
		return nil, fmt.Errorf("check image %s: %w", img.Name(), err)
	}
	if !unpacked {
		if err := img.Unpack(ctx, snapshotter); err != nil {
			return nil, fmt.Errorf("unpack image %s: %w", img.Name(), err)
		}
	}
	desc, err := img.Config(ctx)
	if err != nil {
		return nil, fmt.Errorf("image %s config: %w", img.Name(), err)
	}
	switch desc.MediaType {
	case ocispec.MediaTypeImageConfig, images.MediaTypeDockerSchema2Config:
	default:
		return nil, fmt.Errorf("image %s: unknown config media type %s", img.Name(), desc.MediaType)
	}
	blob, err := content.ReadBlob(ctx, img.ContentStore(), desc)
	if err != nil {
		return nil, fmt.Errorf("read image %s config: %w", img.Name(), err)
	}
	var spec ocispec.Image
	if err := json.Unmarshal(blob, &spec); err != nil {
		return nil, fmt.Errorf("parse image %s config: %w", img.Name(), err)
	}
	out := &image{img: img, target: img.Target().Digest, config: spec.Config}
	c.mu.Lock()
	c.byName[img.Name()] = out
	c.mu.Unlock()
	return out, nil
}
