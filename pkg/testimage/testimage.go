// Package testimage builds the small OCI image the tests run: a busybox
// userland made from Debian's busybox-static, with no registry involved.
package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"runtime"
	"strings"
	"time"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Ref is the name the test image is imported under.
const Ref = "localhost/fsb/busybox:latest"

// DefaultBusybox is where Debian's busybox-static installs its binary.
const DefaultBusybox = "/bin/busybox"

// Annotation keys containerd reads when it names images from an OCI layout.
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

const (
	passwd = "root:x:0:0:root:/root:/bin/sh\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	group = "root:x:0:\n" +
		"nogroup:x:65534:\n"
)

// ociLayout is the content of the oci-layout file of an image layout.
const ociLayout = `{"imageLayoutVersion":"1.0.0"}`

// epoch is the timestamp of every file and of the image itself, so that
// builds are reproducible.
var epoch = time.Unix(0, 0).UTC()

// Build returns the busybox image made from the static busybox binary at
// busyboxPath. The image has a single deterministic layer: equal inputs give
// equal digests.
func Build(busyboxPath string) (v1.Image, error) {
	bin, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	if err := checkStatic(busyboxPath); err != nil {
		return nil, err
	}
	applets, err := listApplets(busyboxPath)
	if err != nil {
		return nil, err
	}
	layerTar, err := rootfsTar(bin, applets)
	if err != nil {
		return nil, err
	}
	layer, err := newLayer(layerTar)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "fast-sandbox testimage: busybox-static",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: epoch}
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Config.Cmd = []string{"sh"}
	cf.Config.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}

// checkStatic refuses a dynamically linked busybox: it could not run in a
// rootfs that holds no libc.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: not an ELF binary: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; install busybox-static", p)
		}
	}
	return nil
}

// listApplets asks busybox for the applets it was built with.
func listApplets(p string) ([]string, error) {
	names, err := busyboxList(p, "--list")
	if err != nil {
		return nil, err
	}
	var applets []string
	for _, a := range names {
		if a == "busybox" || strings.Contains(a, "/") || a == "." || a == ".." {
			continue
		}
		applets = append(applets, a)
	}
	if len(applets) == 0 {
		return nil, fmt.Errorf("%s --list: no applets", p)
	}
	return applets, nil
}

// busyboxList runs `busybox FLAG` (--list or --list-full) and returns the
// names it prints.
func busyboxList(p, flag string) ([]string, error) {
	out, err := exec.Command(p, flag).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return nil, fmt.Errorf("%s %s: %w", p, flag, err)
	}
	names := strings.Fields(string(out))
	if len(names) == 0 {
		return nil, fmt.Errorf("%s %s: no applets", p, flag)
	}
	return names, nil
}

// rootfsTar returns the uncompressed layer: entries sorted by name, all owned
// by root and stamped with the epoch.
func rootfsTar(busybox []byte, applets []string) ([]byte, error) {
	dir := func(name string, mode int64) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}}
	}
	file := func(name string, mode int64, data []byte) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data: data}
	}
	entries := []tarEntry{
		dir("bin", 0o755),
		dir("etc", 0o755),
		dir("root", 0o700),
		dir("tmp", 0o1777),
		file("bin/busybox", 0o755, busybox),
		file("etc/passwd", 0o644, []byte(passwd)),
		file("etc/group", 0o644, []byte(group)),
	}
	for _, a := range applets {
		entries = append(entries, tarEntry{hdr: tar.Header{
			Typeflag: tar.TypeSymlink, Name: path.Join("bin", a), Linkname: "busybox", Mode: 0o777,
		}})
	}
	return writeTar(entries)
}

// gzipBytes compresses b at level with a header that carries no name and no
// time.
func gzipBytes(b []byte, level int) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// gzipLayer is an in-memory gzip layer with precomputed digests.
type gzipLayer struct {
	raw, gz        []byte
	digest, diffID v1.Hash
}

var _ v1.Layer = (*gzipLayer)(nil)

// newLayer compresses the layer tar raw as tightly as gzip can and hashes
// both forms.
func newLayer(raw []byte) (*gzipLayer, error) { return newLayerLevel(raw, gzip.BestCompression) }

// newLayerLevel is newLayer at a gzip level of the caller's choice.
func newLayerLevel(raw []byte, level int) (*gzipLayer, error) {
	gz, err := gzipBytes(raw, level)
	if err != nil {
		return nil, err
	}
	l := &gzipLayer{raw: raw, gz: gz}
	if l.digest, _, err = v1.SHA256(bytes.NewReader(gz)); err != nil {
		return nil, err
	}
	if l.diffID, _, err = v1.SHA256(bytes.NewReader(raw)); err != nil {
		return nil, err
	}
	return l, nil
}

// Digest returns the digest of the compressed layer.
func (l *gzipLayer) Digest() (v1.Hash, error) { return l.digest, nil }

// DiffID returns the digest of the uncompressed layer.
func (l *gzipLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }

// Compressed returns the gzip stream of the layer.
func (l *gzipLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.gz)), nil
}

// Uncompressed returns the layer tar.
func (l *gzipLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.raw)), nil
}

// Size returns the size of the compressed layer.
func (l *gzipLayer) Size() (int64, error) { return int64(len(l.gz)), nil }

// MediaType returns the OCI gzip layer media type.
func (l *gzipLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }

// WriteOCIArchive writes img as a tar of an OCI image layout (oci-layout,
// index.json, blobs/sha256/...). The manifest descriptor in index.json is
// annotated with the normalized ref and its tag, so that containerd's Import
// and `ctr images import` name the image ref.
func WriteOCIArchive(w io.Writer, img v1.Image, ref string) error {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return fmt.Errorf("image ref %q: %w", ref, err)
	}
	tagged, ok := named.(reference.NamedTagged)
	if !ok {
		return fmt.Errorf("image ref %q: want a tag, not a digest", ref)
	}

	manifest, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	mediaType, err := img.MediaType()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	configName, err := img.ConfigName()
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}

	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mediaType,
			Digest:    digest,
			Size:      int64(len(manifest)),
			Platform:  &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
			Annotations: map[string]string{
				annotationImageName: tagged.String(),
				annotationRefName:   tagged.Tag(),
			},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	write := func(name string, size int64, r io.Reader) error {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if _, err := io.Copy(tw, r); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return nil
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	if err := write("oci-layout", int64(len(ociLayout)), strings.NewReader(ociLayout)); err != nil {
		return err
	}
	written := map[v1.Hash]bool{}
	blob := func(h v1.Hash, size int64, r io.Reader) error {
		if written[h] {
			return nil
		}
		written[h] = true
		return write("blobs/"+h.Algorithm+"/"+h.Hex, size, r)
	}
	if err := blob(configName, int64(len(config)), bytes.NewReader(config)); err != nil {
		return err
	}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		if written[h] {
			continue
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("layer %s: %w", h, err)
		}
		err = blob(h, size, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	if err := blob(digest, int64(len(manifest)), bytes.NewReader(manifest)); err != nil {
		return err
	}
	if err := write("index.json", int64(len(indexJSON)), bytes.NewReader(indexJSON)); err != nil {
		return err
	}
	return tw.Close()
}
