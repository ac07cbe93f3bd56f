package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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
type imageCache struct {
	client      *containerd.Client
	snapshotter string

	mu     sync.Mutex
	byName map[string]*image
	pulls  keyedMutex
}

func newImageCache(client *containerd.Client, snapshotter string) *imageCache {
	return &imageCache{client: client, snapshotter: snapshotter, byName: make(map[string]*image)}
}

// NormalizeImage turns a user's image reference into containerd's full name
// ("busybox" becomes "docker.io/library/busybox:latest").
func NormalizeImage(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("%w: image %q: %v", ErrInvalid, ref, err)
	}
	return named.String(), nil
}

// get returns the image named ref, pulling it when it is not present.
func (c *imageCache) get(ctx context.Context, ref string) (*image, error) {
	name, err := NormalizeImage(ref)
	if err != nil {
		return nil, err
	}
	rec, err := c.client.ImageService().Get(ctx, name)
	if errdefs.IsNotFound(err) {
		return c.pull(ctx, name)
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
	return c.resolve(ctx, containerd.NewImageWithPlatform(c.client, rec, nil))
}

// forget drops name from the cache, after its snapshot chain went missing.
func (c *imageCache) forget(name string) {
	c.mu.Lock()
	delete(c.byName, name)
	c.mu.Unlock()
}

func (c *imageCache) pull(ctx context.Context, name string) (*image, error) {
	unlock := c.pulls.lock(name)
	defer unlock()
	// Another create may have pulled it while we waited for the lock.
	if rec, err := c.client.ImageService().Get(ctx, name); err == nil {
		return c.resolve(ctx, containerd.NewImageWithPlatform(c.client, rec, nil))
	}
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost)),
	})
	opts := []containerd.RemoteOpt{containerd.WithPullUnpack, containerd.WithResolver(resolver)}
	if c.snapshotter != "" {
		opts = append(opts, containerd.WithPullSnapshotter(c.snapshotter))
	}
	img, err := c.client.Pull(ctx, name, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not on this node and could not be pulled: %v", ErrImageNotFound, name, err)
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
