package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/containerd/containerd"
	"github.com/containerd/containerd/defaults"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/snapshots"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
	"github.com/fast-sandbox/fast-sandbox/pkg/testimage"
)

// withImageNamespaces lets the agent take images from these containerd
// namespaces without a pull (--image-namespaces).
func withImageNamespaces(ns ...string) harnessOption {
	return func(s *harnessSetup) { s.runtime.ImageNamespaces = ns }
}

// withRegistryConfig points pulls at a directory of hosts.toml files
// (--registry-config-path).
func withRegistryConfig(dir string) harnessOption {
	return func(s *harnessSetup) { s.runtime.RegistryConfigPath = dir }
}

// markerPath is where markedImage puts its marker, in a layer of its own.
const markerPath = "/fsb-marker"

// TestImageFromOtherNamespaceNeedsNoPull: an image that only another
// containerd namespace holds, under a name whose registry refuses every
// connection, runs when the agent may take images from that namespace, and
// fails Unavailable (the pull cannot connect) when it may not.
func TestImageFromOtherNamespaceNeedsNoPull(t *testing.T) {
	const ref = "127.0.0.1:1/fsb/offline:latest" // port 1: a pull cannot connect
	marker := randomHex(t)
	img := markedImage(t, marker)
	src := "fsbtest-src-" + randomHex(t)
	h := newHarness(t, withImageNamespaces("fsbtest-absent-"+randomHex(t), src))
	srcCtx := newNamespace(t, h.cd, src)
	imported := importImage(t, h.cd, srcCtx, img, ref)

	// The agent's namespace starts with nothing of the image: not the
	// rig's busybox either, whose layer it shares, nor its snapshots.
	ctx := context.Background()
	if err := h.cd.ImageService().Delete(ctx, rig.ImageRef, images.SynchronousDelete()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.cd.ImageService().Get(ctx, ref); !errdefs.IsNotFound(err) {
		t.Fatalf("the agent's namespace has %s before the test: %v", ref, err)
	}
	for _, d := range imageBlobs(t, h.cd, srcCtx, imported.Target) {
		if _, err := h.cd.ContentStore().Info(ctx, d); !errdefs.IsNotFound(err) {
			t.Fatalf("the agent's namespace has blob %s of the image before the test: %v", d, err)
		}
	}
	if n := countSnapshots(t, h.cd, ctx); n != 0 {
		t.Fatalf("the agent's namespace has %d snapshots before the test", n)
	}

	start := time.Now()
	sb := h.create(&fsbv1.SandboxSpec{Image: ref, Command: []string{"sh", "-c", "cat " + markerPath}})
	first := time.Since(start)
	h.waitLog(sb, marker)

	rec, err := h.cd.ImageService().Get(ctx, ref)
	if err != nil {
		t.Fatalf("image record in the agent's namespace: %v", err)
	}
	if rec.Target.Digest != imported.Target.Digest {
		t.Errorf("image record targets %s, the source's %s", rec.Target.Digest, imported.Target.Digest)
	}
	if n := len(imageBlobs(t, h.cd, ctx, rec.Target)); n < 4 {
		t.Errorf("the agent's namespace holds %d blobs of the image, want a manifest, a config and two layers", n)
	}

	// The same image again, now present, for comparison.
	start = time.Now()
	h.create(&fsbv1.SandboxSpec{Image: ref, Command: []string{"true"}})
	again := time.Since(start)
	t.Logf("create latency: first use from another namespace %v, the same image once present %v",
		first.Round(time.Millisecond), again.Round(time.Millisecond))

	// Without the source namespace the agent has to pull, and cannot.
	h2 := newHarness(t)
	_, err = h2.tryCreate(&fsbv1.SandboxSpec{Image: ref, Command: []string{"true"}})
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("create without --image-namespaces: %v, want Unavailable", err)
	}
	if !strings.Contains(err.Error(), ref) {
		t.Errorf("error %q does not name the image", err)
	}
	if _, err := h2.cd.ImageService().Get(ctx, ref); !errdefs.IsNotFound(err) {
		t.Errorf("a failed create left an image record: %v", err)
	}
}

// TestImagePullFromLoopbackRegistry: an image missing from every namespace
// is pulled from a registry on loopback over plain HTTP, with no
// configuration.
func TestImagePullFromLoopbackRegistry(t *testing.T) {
	reg := startRegistry(t)
	marker := randomHex(t)
	img := markedImage(t, marker)
	ref := reg.host + "/fsb/busybox:latest"
	pushImage(t, ref, img)

	h := newHarness(t)
	ctx := context.Background()
	if _, err := h.cd.ImageService().Get(ctx, ref); !errdefs.IsNotFound(err) {
		t.Fatalf("the agent's namespace has %s before the test: %v", ref, err)
	}
	sb := h.create(&fsbv1.SandboxSpec{Image: ref, Command: []string{"sh", "-c", "cat " + markerPath}})
	h.waitLog(sb, marker)

	checkPulled(t, h, ref, img)
	if n := reg.count("GET", "/v2/fsb/busybox/blobs/", ""); n == 0 {
		t.Errorf("no blob was fetched from the registry; it saw:\n%s", reg.log())
	}
}

// TestImagePullThroughMirror: a registry whose name does not resolve is
// reached through the mirror its hosts.toml names.
func TestImagePullThroughMirror(t *testing.T) {
	const upstream = "registry.invalid" // the .invalid TLD never resolves
	reg := startRegistry(t)
	marker := randomHex(t)
	img := markedImage(t, marker)
	pushImage(t, reg.host+"/fsb/busybox:latest", img)

	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, upstream), 0o755); err != nil {
		t.Fatal(err)
	}
	hostsToml := fmt.Sprintf("server = \"https://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", upstream, reg.host)
	if err := os.WriteFile(filepath.Join(dir, upstream, "hosts.toml"), []byte(hostsToml), 0o644); err != nil {
		t.Fatal(err)
	}

	h := newHarness(t, withRegistryConfig(dir))
	ref := upstream + "/fsb/busybox:latest"
	sb := h.create(&fsbv1.SandboxSpec{Image: ref, Command: []string{"sh", "-c", "cat " + markerPath}})
	h.waitLog(sb, marker)

	checkPulled(t, h, ref, img)
	// containerd names the upstream registry to a mirror with ?ns=.
	if n := reg.count("GET", "/v2/fsb/busybox/blobs/", "ns="+upstream); n == 0 {
		t.Errorf("the mirror served no blob for %s; it saw:\n%s", upstream, reg.log())
	}
}

// TestImageErrorsSayWhatFailed: a create whose image cannot be had fails
// with the code that tells the caller what to do, names the image and the
// cause, leaves no container, and gives its slot back: an image its registry
// does not have is NotFound; a registry that cannot be reached, does not
// answer within the pull timeout or fails is Unavailable (worth a retry); a
// registry that refuses access is PermissionDenied.
func TestImageErrorsSayWhatFailed(t *testing.T) {
	reg := startRegistry(t)
	closed := closedPort(t)
	h := newHarness(t, withCapacity(1), withPullTimeout(time.Second))
	for _, tc := range []struct {
		name  string
		ref   string
		code  connect.Code
		cause string
	}{
		{"missing from its registry", reg.host + "/fsb/missing:latest", connect.CodeNotFound, "does not have it"},
		{"nothing listens", closed + "/fsb/busybox:latest", connect.CodeUnavailable, "connection refused"},
		{"no answer", answering(t, hang) + "/fsb/busybox:latest", connect.CodeUnavailable, "no answer within the pull timeout"},
		{"server error", answering(t, status(http.StatusInternalServerError)) + "/fsb/busybox:latest", connect.CodeUnavailable, "500"},
		{"unauthorized", answering(t, status(http.StatusUnauthorized)) + "/fsb/busybox:latest", connect.CodePermissionDenied, "401"},
		{"forbidden", answering(t, status(http.StatusForbidden)) + "/fsb/busybox:latest", connect.CodePermissionDenied, "403"},
		{"token refused", answering(t, bearerRefused) + "/fsb/busybox:latest", connect.CodePermissionDenied, "401"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.tryCreate(&fsbv1.SandboxSpec{Image: tc.ref, Command: []string{"true"}})
			if connect.CodeOf(err) != tc.code {
				t.Fatalf("create with %s: %v, want %v", tc.ref, err, tc.code)
			}
			if !strings.Contains(err.Error(), tc.ref) || !strings.Contains(err.Error(), tc.cause) {
				t.Errorf("error %q does not name the image %s and the cause %q", err, tc.ref, tc.cause)
			}
			if cs, err := h.cd.Containers(context.Background()); err != nil || len(cs) != 0 {
				t.Errorf("%d containers left behind (%v)", len(cs), err)
			}
			// The failed create gave its slot back: the only slot is free.
			sb := h.create(spec("exit 0"))
			h.delete(sb.GetSandboxId(), 0)
		})
	}
}

// withPullTimeout bounds image pulls (--pull-timeout).
func withPullTimeout(d time.Duration) harnessOption {
	return func(s *harnessSetup) { s.runtime.PullTimeout = d }
}

// closedPort returns a loopback host:port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// answering serves handler on loopback for the test and returns its
// host:port. A handler that holds requests is let go before the server
// closes.
func answering(t *testing.T, handler func(done <-chan struct{}) http.HandlerFunc) string {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(handler(done))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) })
	return strings.TrimPrefix(srv.URL, "http://")
}

// hang answers nothing until the caller goes away or the test ends.
func hang(done <-chan struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}
}

// status answers every request with code, as a registry does; 401 comes
// with a Basic challenge, which the agent has no credentials for.
func status(code int) func(<-chan struct{}) http.HandlerFunc {
	return func(<-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if code == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Basic realm="fsb-test"`)
			}
			http.Error(w, http.StatusText(code), code)
		}
	}
}

// bearerRefused is a registry whose token service refuses to hand out a
// token: /v2/ answers 401 with a Bearer challenge pointing at /token, which
// answers 401 too.
func bearerRefused(<-chan struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/token" {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="fsb-test"`, r.Host))
		}
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	}
}

// checkPulled fails the test unless the agent's namespace holds ref, aimed
// at img's manifest, with all of its blobs.
func checkPulled(t *testing.T, h *harness, ref string, img v1.Image) {
	t.Helper()
	ctx := context.Background()
	rec, err := h.cd.ImageService().Get(ctx, ref)
	if err != nil {
		t.Fatalf("image record in the agent's namespace: %v", err)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if rec.Target.Digest.String() != want.String() {
		t.Errorf("%s targets %s, want the pushed manifest %s", ref, rec.Target.Digest, want)
	}
	if n := len(imageBlobs(t, h.cd, ctx, rec.Target)); n < 4 {
		t.Errorf("the agent's namespace holds %d blobs of the image, want a manifest, a config and two layers", n)
	}
}

// imageBlobs walks target in the namespace of ctx and returns its blobs,
// failing the test if one is missing.
func imageBlobs(t *testing.T, client *containerd.Client, ctx context.Context, target ocispec.Descriptor) []digest.Digest {
	t.Helper()
	cs := client.ContentStore()
	var blobs []digest.Digest
	err := images.Walk(ctx, images.HandlerFunc(func(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if _, err := cs.Info(ctx, d.Digest); err != nil {
			return nil, fmt.Errorf("%s (%s): %w", d.Digest, d.MediaType, err)
		}
		blobs = append(blobs, d.Digest)
		return images.Children(ctx, cs, d)
	}), target)
	if err != nil {
		t.Fatalf("image content: %v", err)
	}
	return blobs
}

// countSnapshots counts the snapshots of the rig's snapshotter in the
// namespace of ctx.
func countSnapshots(t *testing.T, client *containerd.Client, ctx context.Context) int {
	t.Helper()
	n := 0
	if err := client.SnapshotService(rig.Snapshotter).Walk(ctx, func(context.Context, snapshots.Info) error {
		n++
		return nil
	}); err != nil {
		t.Fatalf("list snapshots: %v", err)
	}
	return n
}

func randomHex(t *testing.T) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// markedImage is the busybox test image with one more layer holding
// markerPath, whose content is marker: its manifest, config and top layer
// exist nowhere else.
func markedImage(t *testing.T, marker string) v1.Image {
	t.Helper()
	base, err := testimage.Build(testimage.DefaultBusybox)
	if err != nil {
		t.Fatalf("build the test image: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := []byte(marker + "\n")
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(markerPath, "/"), Mode: 0o644, Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// newNamespace makes containerd namespace ns (a name starting with
// "fsbtest-") and removes it with everything in it when the test ends.
func newNamespace(t *testing.T, client *containerd.Client, ns string) context.Context {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	if err := client.NamespaceService().Create(ctx, ns, map[string]string{defaults.DefaultSnapshotterNSLabel: rig.Snapshotter}); err != nil {
		t.Fatalf("create containerd namespace %s: %v", ns, err)
	}
	t.Cleanup(func() {
		if err := rig.Cleanup(client, ns); err != nil {
			t.Errorf("clean up containerd namespace %s: %v", ns, err)
		}
	})
	return ctx
}

// importImage imports img as ref into the namespace of ctx and unpacks it,
// as the kubelet leaves the images it pulled.
func importImage(t *testing.T, client *containerd.Client, ctx context.Context, img v1.Image, ref string) images.Image {
	t.Helper()
	var buf bytes.Buffer
	if err := testimage.WriteOCIArchive(&buf, img, ref); err != nil {
		t.Fatal(err)
	}
	imgs, err := client.Import(ctx, &buf)
	if err != nil {
		t.Fatalf("import %s: %v", ref, err)
	}
	if len(imgs) != 1 || imgs[0].Name != ref {
		t.Fatalf("import %s gave %v", ref, imgs)
	}
	if err := containerd.NewImage(client, imgs[0]).Unpack(ctx, rig.Snapshotter); err != nil {
		t.Fatalf("unpack %s: %v", ref, err)
	}
	return imgs[0]
}

// testRegistry is an in-memory registry on loopback that records the
// requests it serves.
type testRegistry struct {
	host string // 127.0.0.1:PORT

	mu       sync.Mutex
	requests []string // "METHOD path?query"
}

func startRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests = append(r.requests, req.Method+" "+req.URL.RequestURI())
		r.mu.Unlock()
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// count returns how many requests had method, a path starting with prefix
// and a query containing query.
func (r *testRegistry) count(method, prefix, query string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, req := range r.requests {
		m, uri, _ := strings.Cut(req, " ")
		path, q, _ := strings.Cut(uri, "?")
		if m == method && strings.HasPrefix(path, prefix) && strings.Contains(q, query) {
			n++
		}
	}
	return n
}

func (r *testRegistry) log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.requests, "\n")
}

// pushImage pushes img to ref, a registry on loopback, with containerd's
// own pusher over plain HTTP.
func pushImage(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	ctx := context.Background()
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost)),
	})
	pusher, err := resolver.Pusher(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	push := func(mediaType types.MediaType, b []byte) {
		t.Helper()
		desc := ocispec.Descriptor{MediaType: string(mediaType), Digest: digest.FromBytes(b), Size: int64(len(b))}
		w, err := pusher.Push(ctx, desc)
		if errdefs.IsAlreadyExists(err) {
			return
		}
		if err != nil {
			t.Fatalf("push %s: %v", desc.Digest, err)
		}
		defer w.Close()
		if _, err := w.Write(b); err != nil {
			t.Fatalf("push %s: %v", desc.Digest, err)
		}
		if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil && !errdefs.IsAlreadyExists(err) {
			t.Fatalf("push %s: %v", desc.Digest, err)
		}
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		mt, err := l.MediaType()
		if err != nil {
			t.Fatal(err)
		}
		push(mt, b)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	config, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	push(m.Config.MediaType, config)
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	push(mt, raw)
}
