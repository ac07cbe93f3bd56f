package testimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// busybox returns the static busybox the image is built from; it is a hard
// requirement of the test rig, so its absence fails the test.
func busybox(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(DefaultBusybox); err != nil {
		t.Fatalf("%v: install Debian's busybox-static (`apt-get install busybox-static`, or run `make test`)", err)
	}
	return DefaultBusybox
}

func TestBuildLayer(t *testing.T) {
	img, err := Build(busybox(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validate: %v", err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("got %d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()

	headers := map[string]*tar.Header{}
	var names []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		headers[h.Name] = h
		names = append(names, h.Name)
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, epoch)
		}
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("entries not sorted: %q before %q", names[i-1], names[i])
		}
	}
	if h := headers["bin/busybox"]; h == nil || h.Typeflag != tar.TypeReg || h.Mode&0o111 == 0 || h.Size == 0 {
		t.Errorf("bin/busybox: got %+v, want an executable regular file", h)
	}
	if h := headers["bin/sh"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
		t.Errorf("bin/sh: got %+v, want a symlink to busybox", h)
	}
	if h := headers["tmp/"]; h == nil || h.Typeflag != tar.TypeDir || h.Mode != 0o1777 {
		t.Errorf("tmp/: got %+v, want a directory with mode 1777", h)
	}
	for _, n := range []string{"etc/passwd", "etc/group", "root/"} {
		if headers[n] == nil {
			t.Errorf("%s missing", n)
		}
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.Config.Cmd) != 1 || cf.Config.Cmd[0] != "sh" {
		t.Errorf("Cmd = %q, want [sh]", cf.Config.Cmd)
	}
}

func TestBuildDeterministic(t *testing.T) {
	bb := busybox(t)
	var digests [2]v1.Hash
	for i := range digests {
		img, err := Build(bb)
		if err != nil {
			t.Fatal(err)
		}
		if digests[i], err = img.Digest(); err != nil {
			t.Fatal(err)
		}
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds differ: %s != %s", digests[0], digests[1])
	}
}

func TestWriteOCIArchive(t *testing.T) {
	img, err := Build(busybox(t))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteOCIArchive(&buf, img, Ref); err != nil {
		t.Fatal(err)
	}

	// Unpack the archive and read it back as an OCI image layout.
	dir := t.TempDir()
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(idx); err != nil {
		t.Fatalf("validate: %v", err)
	}

	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(raw, &im); err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(im.Manifests))
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d := im.Manifests[0]
	if d.Digest != want {
		t.Errorf("manifest digest %s, want %s", d.Digest, want)
	}
	if got := d.Annotations[annotationImageName]; got != Ref {
		t.Errorf("%s = %q, want %q", annotationImageName, got, Ref)
	}
	if got := d.Annotations[annotationRefName]; got != "latest" {
		t.Errorf("%s = %q, want %q", annotationRefName, got, "latest")
	}
}

func TestWriteOCIArchiveRejectsDigestRef(t *testing.T) {
	img, err := Build(busybox(t))
	if err != nil {
		t.Fatal(err)
	}
	ref := "localhost/fsb/busybox@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	if err := WriteOCIArchive(io.Discard, img, ref); err == nil {
		t.Fatalf("WriteOCIArchive(%q) succeeded, want an error", ref)
	}
}
