package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

func TestImageRegistryHostsLoopbackIsPlainHTTP(t *testing.T) {
	// A configuration directory that says nothing about these hosts, beside
	// none at all, must leave loopback on plain HTTP and the rest on HTTPS;
	// _default applies to the rest only.
	dir := t.TempDir()
	writeHostsToml(t, dir, "_default", `server = "https://default-mirror.invalid"`)
	for _, cfg := range []string{"", dir} {
		hosts := registryHosts(cfg)
		for _, host := range []string{"localhost", "localhost:5000", "127.0.0.1:5000", "127.3.2.1", "[::1]:5000", "::1"} {
			got := resolveHosts(t, hosts, host)
			if len(got) != 1 || got[0].Scheme != "http" || got[0].Host != host {
				t.Errorf("config %q: %s resolves to %s, want http://%s only", cfg, host, describeHosts(got), host)
			}
		}
		want := "https://registry.invalid"
		if cfg != "" {
			want = "https://default-mirror.invalid"
		}
		if got := resolveHosts(t, hosts, "registry.invalid"); len(got) != 1 || got[0].Scheme+"://"+got[0].Host != want {
			t.Errorf("config %q: registry.invalid resolves to %s, want %s", cfg, describeHosts(got), want)
		}
	}
}

func TestImageRegistryHostsReadsHostsToml(t *testing.T) {
	dir := t.TempDir()
	writeHostsToml(t, dir, "registry.invalid", `
server = "https://registry.invalid"

[host."http://127.0.0.1:5999"]
  capabilities = ["pull", "resolve"]
`)
	// A loopback registry with a directory of its own follows it.
	writeHostsToml(t, dir, "127.0.0.1_5001_", `
server = "https://127.0.0.1:5001"
skip_verify = true
`)
	hosts := registryHosts(dir)

	got := resolveHosts(t, hosts, "registry.invalid")
	if len(got) != 2 {
		t.Fatalf("registry.invalid resolves to %s, want the mirror then the server", describeHosts(got))
	}
	if got[0].Scheme != "http" || got[0].Host != "127.0.0.1:5999" ||
		got[0].Capabilities != docker.HostCapabilityPull|docker.HostCapabilityResolve {
		t.Errorf("mirror: %s caps %b, want http://127.0.0.1:5999 with pull and resolve", describeHosts(got[:1]), got[0].Capabilities)
	}
	if got[1].Scheme != "https" || got[1].Host != "registry.invalid" {
		t.Errorf("server: %s, want https://registry.invalid", describeHosts(got[1:]))
	}

	if got := resolveHosts(t, hosts, "127.0.0.1:5001"); len(got) != 1 || got[0].Scheme != "https" {
		t.Errorf("127.0.0.1:5001 with its own hosts.toml resolves to %s, want https", describeHosts(got))
	}
	if got := resolveHosts(t, hosts, "127.0.0.1:5002"); len(got) != 1 || got[0].Scheme != "http" {
		t.Errorf("127.0.0.1:5002 resolves to %s, want http", describeHosts(got))
	}
}

func writeHostsToml(t *testing.T, root, host, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, host), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, host, "hosts.toml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func resolveHosts(t *testing.T, hosts docker.RegistryHosts, host string) []docker.RegistryHost {
	t.Helper()
	got, err := hosts(host)
	if err != nil {
		t.Fatalf("hosts for %s: %v", host, err)
	}
	return got
}

func describeHosts(hosts []docker.RegistryHost) string {
	var s []string
	for _, h := range hosts {
		s = append(s, h.Scheme+"://"+h.Host+h.Path)
	}
	return "[" + strings.Join(s, " ") + "]"
}

func TestImageAdoptedLabelsRebuildChildReferences(t *testing.T) {
	src := map[string]string{
		"containerd.io/gc.ref.content.m.0":              "sha256:old0",
		"containerd.io/gc.ref.content.m.1":              "sha256:old1",
		"containerd.io/distribution.source.example":     "fsb/busybox",
		"containerd.io/gc.ref.snapshot.overlayfs":       "sha256:chain",
		"containerd.io/uncompressed":                    "sha256:diff",
		"containerd.io/gc.ref.content.config.unrelated": "sha256:x",
	}
	children := []ocispec.Descriptor{
		{MediaType: ocispec.MediaTypeImageConfig, Digest: "sha256:c"},
		{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: "sha256:l0"},
		{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: "sha256:l1"},
		{MediaType: ocispec.MediaTypeImageManifest, Digest: "sha256:m"},
	}
	want := map[string]string{
		"containerd.io/distribution.source.example": "fsb/busybox",
		"containerd.io/gc.ref.snapshot.overlayfs":   "sha256:chain",
		"containerd.io/uncompressed":                "sha256:diff",
		"containerd.io/gc.ref.content.config":       "sha256:c",
		"containerd.io/gc.ref.content.l.0":          "sha256:l0",
		"containerd.io/gc.ref.content.l.1":          "sha256:l1",
		"containerd.io/gc.ref.content.m.0":          "sha256:m",
	}
	if got := adoptedLabels(src, children); !maps.Equal(got, want) {
		t.Errorf("adoptedLabels:\n got %v\nwant %v", got, want)
	}
	if got := adoptedLabels(nil, nil); got != nil {
		t.Errorf("adoptedLabels of nothing = %v, want nil", got)
	}
}

// TestImageCopyContentTakesWhatThePlatformNeeds runs copyContent against an
// in-memory content store that behaves as containerd's metadata store does
// under each sharing policy.
func TestImageCopyContentTakesWhatThePlatformNeeds(t *testing.T) {
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			cs := newFakeStore(shared)
			img := newFakeImage(t, cs, "src")
			// One layer is already in the destination: it is left alone.
			cs.commit("dst", img.layers[0], map[string]string{"keep": "me"})

			src := namespaces.WithNamespace(context.Background(), "src")
			dst := namespaces.WithNamespace(context.Background(), "dst")
			copied, err := copyContent(dst, src, cs, img.index, img.platform)
			if err != nil {
				t.Fatalf("copyContent: %v", err)
			}
			// index, amd64 manifest, config, the second layer
			wantCopied := 4
			if shared {
				wantCopied = 0
			}
			if copied != wantCopied || cs.bytesWritten("dst") != 0 && shared {
				t.Errorf("copied %d blobs (%d bytes written), want %d", copied, cs.bytesWritten("dst"), wantCopied)
			}
			for _, d := range []ocispec.Descriptor{img.index, img.manifest, img.config, img.layers[0], img.layers[1]} {
				if _, err := cs.Info(dst, d.Digest); err != nil {
					t.Errorf("%s (%s) not in the destination: %v", d.Digest, d.MediaType, err)
				}
			}
			if _, err := cs.Info(dst, img.other.Digest); !errdefs.IsNotFound(err) {
				t.Errorf("the other platform's manifest: %v, want NotFound", err)
			}
			info, _ := cs.Info(dst, img.manifest.Digest)
			want := map[string]string{
				"containerd.io/gc.ref.content.config": img.config.Digest.String(),
				"containerd.io/gc.ref.content.l.0":    img.layers[0].Digest.String(),
				"containerd.io/gc.ref.content.l.1":    img.layers[1].Digest.String(),
				"source-label":                        "kept",
			}
			if !maps.Equal(info.Labels, want) {
				t.Errorf("manifest labels %v, want %v", info.Labels, want)
			}
			info, _ = cs.Info(dst, img.index.Digest)
			if info.Labels["containerd.io/gc.ref.content.m.0"] != img.manifest.Digest.String() || len(info.Labels) != 1 {
				t.Errorf("index labels %v, want only m.0 = the amd64 manifest", info.Labels)
			}
			if info, _ := cs.Info(dst, img.layers[0].Digest); !maps.Equal(info.Labels, map[string]string{"keep": "me"}) {
				t.Errorf("a blob already there was relabelled: %v", info.Labels)
			}

			// Again: everything is there, nothing is written.
			before := cs.bytesWritten("dst")
			if copied, err := copyContent(dst, src, cs, img.index, img.platform); err != nil || copied != 0 {
				t.Errorf("second copyContent: %d copied, %v", copied, err)
			}
			if cs.bytesWritten("dst") != before {
				t.Error("second copyContent wrote bytes")
			}
		})
	}
}

func TestImageCopyContentFailsOnMissingBlob(t *testing.T) {
	cs := newFakeStore(true)
	img := newFakeImage(t, cs, "src")
	cs.drop("src", img.layers[1].Digest)
	src := namespaces.WithNamespace(context.Background(), "src")
	dst := namespaces.WithNamespace(context.Background(), "dst")
	_, err := copyContent(dst, src, cs, img.index, img.platform)
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), img.layers[1].Digest.String()) {
		t.Errorf("copyContent with a layer missing: %v, want NotFound naming it", err)
	}
}

// TestImageCopyContentSharesOnContainerd checks on the real rig that containerd
// (its default "shared" policy) makes a blob of another namespace ours
// without a byte written, and that the result is an image containerd can
// read whole.
func TestImageCopyContentSharesOnContainerd(t *testing.T) {
	client, own := rig.Containerd(t)
	ctx := namespaces.WithNamespace(context.Background(), own)
	// A second namespace that holds the test image; ours loses it.
	_, src := rig.Containerd(t)
	srcCtx := namespaces.WithNamespace(context.Background(), src)
	rec, err := client.ImageService().Get(srcCtx, rig.ImageRef)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.ImageService().Delete(ctx, rig.ImageRef, images.SynchronousDelete()); err != nil {
		t.Fatal(err)
	}
	cs := client.ContentStore()
	if _, err := cs.Info(ctx, rec.Target.Digest); !errdefs.IsNotFound(err) {
		t.Fatalf("our namespace still has the image's blobs: %v", err)
	}

	// As the runtime does, hold a lease until the blobs are referenced:
	// here, to the end of the test.
	ctx, done, err := client.WithLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = done(context.Background()) }()
	copied, err := copyContent(ctx, srcCtx, cs, rec.Target, platforms.Default())
	if err != nil {
		t.Fatalf("copyContent: %v", err)
	}
	if copied != 0 {
		t.Errorf("%d blobs were copied byte by byte; containerd's shared policy should have taken them as they are", copied)
	}
	// Every blob is ours now, with the labels it has in the source (the
	// references to children rebuilt come out the same).
	n := 0
	err = images.Walk(ctx, images.HandlerFunc(func(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		n++
		theirs, err := cs.Info(srcCtx, d.Digest)
		if err != nil {
			return nil, fmt.Errorf("source %s (%s): %w", d.Digest, d.MediaType, err)
		}
		ours, err := cs.Info(ctx, d.Digest)
		if err != nil {
			return nil, fmt.Errorf("ours %s (%s): %w", d.Digest, d.MediaType, err)
		}
		for k, v := range theirs.Labels {
			if ours.Labels[k] != v {
				t.Errorf("%s: label %s = %q, source has %q", d.Digest, k, ours.Labels[k], v)
			}
		}
		return images.Children(ctx, cs, d)
	}), rec.Target)
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Errorf("walked %d blobs, want at least a manifest, a config and a layer", n)
	}
	// No ingest is left behind.
	if st, err := cs.ListStatuses(ctx); err != nil || len(st) != 0 {
		t.Errorf("ingests left: %v %v", st, err)
	}
}

// fakeStore is a content store with per-namespace visibility over shared
// bytes, as containerd's metadata store: under the shared policy a writer
// opened with the digest of bytes on disk starts complete; under the
// isolated one it starts empty.
type fakeStore struct {
	content.Store // not used: panics if called

	shared bool

	mu      sync.Mutex
	disk    map[digest.Digest][]byte
	ns      map[string]map[digest.Digest]content.Info
	written map[string]int
}

func newFakeStore(shared bool) *fakeStore {
	return &fakeStore{shared: shared, disk: map[digest.Digest][]byte{}, ns: map[string]map[digest.Digest]content.Info{}, written: map[string]int{}}
}

func (s *fakeStore) put(ns string, mediaType string, b []byte, labels map[string]string) ocispec.Descriptor {
	d := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
	s.mu.Lock()
	s.disk[d.Digest] = b
	s.mu.Unlock()
	s.commit(ns, d, labels)
	return d
}

func (s *fakeStore) commit(ns string, d ocispec.Descriptor, labels map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ns[ns] == nil {
		s.ns[ns] = map[digest.Digest]content.Info{}
	}
	s.ns[ns][d.Digest] = content.Info{Digest: d.Digest, Size: d.Size, Labels: labels}
}

func (s *fakeStore) drop(ns string, d digest.Digest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ns[ns], d)
}

func (s *fakeStore) bytesWritten(ns string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written[ns]
}

func (s *fakeStore) Info(ctx context.Context, d digest.Digest) (content.Info, error) {
	ns, _ := namespaces.Namespace(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	info, ok := s.ns[ns][d]
	if !ok {
		return content.Info{}, fmt.Errorf("content %s in %s: %w", d, ns, errdefs.ErrNotFound)
	}
	return info, nil
}

func (s *fakeStore) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	if _, err := s.Info(ctx, desc.Digest); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return fakeReaderAt{bytes.NewReader(s.disk[desc.Digest])}, nil
}

type fakeReaderAt struct{ *bytes.Reader }

func (fakeReaderAt) Close() error { return nil }

func (s *fakeStore) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	var wo content.WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return nil, err
		}
	}
	ns, _ := namespaces.Namespace(ctx)
	if _, err := s.Info(ctx, wo.Desc.Digest); err == nil {
		return nil, fmt.Errorf("content %s: %w", wo.Desc.Digest, errdefs.ErrAlreadyExists)
	}
	w := &fakeWriter{s: s, ns: ns, desc: wo.Desc, ref: wo.Ref}
	s.mu.Lock()
	b, onDisk := s.disk[wo.Desc.Digest]
	s.mu.Unlock()
	if s.shared && onDisk && int64(len(b)) == wo.Desc.Size {
		w.complete = true
	}
	return w, nil
}

type fakeWriter struct {
	s        *fakeStore
	ns, ref  string
	desc     ocispec.Descriptor
	complete bool
	buf      bytes.Buffer
}

func (w *fakeWriter) Write(p []byte) (int, error) {
	if w.complete {
		return 0, fmt.Errorf("write to a complete writer: %w", errdefs.ErrFailedPrecondition)
	}
	w.s.mu.Lock()
	w.s.written[w.ns] += len(p)
	w.s.mu.Unlock()
	return w.buf.Write(p)
}

func (w *fakeWriter) Close() error              { return nil }
func (w *fakeWriter) Truncate(size int64) error { w.buf.Truncate(int(size)); return nil }

func (w *fakeWriter) Digest() digest.Digest {
	if w.complete {
		return w.desc.Digest
	}
	return digest.FromBytes(w.buf.Bytes())
}

func (w *fakeWriter) Status() (content.Status, error) {
	off := int64(w.buf.Len())
	if w.complete {
		off = w.desc.Size
	}
	return content.Status{Ref: w.ref, Offset: off, Total: w.desc.Size}, nil
}

func (w *fakeWriter) Commit(_ context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	var info content.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return err
		}
	}
	if st, _ := w.Status(); size != st.Offset {
		return fmt.Errorf("size %d != %d: %w", st.Offset, size, errdefs.ErrFailedPrecondition)
	}
	if w.Digest() != expected {
		return fmt.Errorf("digest %s != %s: %w", w.Digest(), expected, errdefs.ErrFailedPrecondition)
	}
	if !w.complete {
		w.s.mu.Lock()
		w.s.disk[expected] = bytes.Clone(w.buf.Bytes())
		w.s.mu.Unlock()
	}
	w.s.commit(w.ns, w.desc, info.Labels)
	return nil
}

// fakeImage is an index for linux/amd64 and linux/arm64 of which only the
// amd64 manifest is present, as the kubelet leaves a multi-platform image.
type fakeImage struct {
	index, manifest, other, config ocispec.Descriptor
	layers                         []ocispec.Descriptor
	platform                       platforms.MatchComparer
}

func newFakeImage(t *testing.T, cs *fakeStore, ns string) fakeImage {
	t.Helper()
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	amd64 := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := ocispec.Platform{OS: "linux", Architecture: "arm64"}
	var img fakeImage
	img.platform = platforms.OnlyStrict(amd64)
	img.config = cs.put(ns, ocispec.MediaTypeImageConfig, mustJSON(ocispec.Image{Platform: amd64}), nil)
	for i := range 2 {
		img.layers = append(img.layers, cs.put(ns, ocispec.MediaTypeImageLayerGzip, []byte(fmt.Sprintf("layer %d", i)), map[string]string{"containerd.io/uncompressed": "sha256:x"}))
	}
	img.manifest = cs.put(ns, ocispec.MediaTypeImageManifest, mustJSON(ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest, Config: img.config, Layers: img.layers,
	}), map[string]string{"source-label": "kept", "containerd.io/gc.ref.content.l.9": "sha256:stale"})
	img.manifest.Platform = &amd64
	img.other = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("arm64 manifest"), Size: 14, Platform: &arm64}
	img.index = cs.put(ns, ocispec.MediaTypeImageIndex, mustJSON(ocispec.Index{
		MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{img.other, img.manifest},
	}), map[string]string{
		"containerd.io/gc.ref.content.m.0": img.other.Digest.String(),
		"containerd.io/gc.ref.content.m.1": img.manifest.Digest.String(),
	})
	return img
}
