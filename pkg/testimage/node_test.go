package testimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// layerFiles returns the tar headers of layer by name.
func layerFiles(t *testing.T, l v1.Layer) map[string]*tar.Header {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = h
	}
}

// TestNodeImages checks what the CRI runs of the fsb and pause images: the
// entrypoint and the executables it names. Busybox stands in for the static
// fsb binaries: only their being static matters here.
func TestNodeImages(t *testing.T) {
	bb := busybox(t)
	fsb, err := Fsb(bb, bb)
	if err != nil {
		t.Fatal(err)
	}
	pause, err := Pause(bb, bb)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		img        v1.Image
		layers     int
		entrypoint []string
		files      []string // executables in the last layer
	}{
		{"fsb", fsb, 1, []string{"/fsb"}, []string{"fsb", "fsb-helper"}},
		{"pause", pause, 2, []string{"/fsb-helper", "init", "--", "/bin/sleep", pauseSleep}, []string{"fsb-helper"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := validate.Image(tc.img); err != nil {
				t.Fatalf("validate: %v", err)
			}
			cf, err := tc.img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cf.Config.Entrypoint, tc.entrypoint) || len(cf.Config.Cmd) != 0 {
				t.Errorf("entrypoint %q cmd %q, want %q and no cmd", cf.Config.Entrypoint, cf.Config.Cmd, tc.entrypoint)
			}
			layers, err := tc.img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			if len(layers) != tc.layers {
				t.Fatalf("%d layers, want %d", len(layers), tc.layers)
			}
			files := layerFiles(t, layers[len(layers)-1])
			for _, f := range tc.files {
				if h := files[f]; h == nil || h.Typeflag != tar.TypeReg || h.Mode != 0o755 || h.Size == 0 {
					t.Errorf("/%s: got %+v, want an executable regular file", f, h)
				}
			}
			if h := files["tmp/"]; h == nil || h.Mode != 0o1777 {
				t.Errorf("/tmp: got %+v, want a directory with mode 1777", h)
			}
		})
	}
	// The pause image's first layer is the test image's busybox rootfs,
	// so a node stores it once. (Compared uncompressed: building the test
	// image again costs seconds under -race.)
	bin, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	applets, err := listApplets(bb)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rootfsTar(bin, applets)
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	pauseLayers, _ := pause.Layers()
	if got, _ := pauseLayers[0].DiffID(); got != want {
		t.Errorf("pause's first layer %s, want the test image's %s", got, want)
	}
	// The sleeper the pause image names exists in busybox.
	if out, err := exec.Command(bb, "--list").Output(); err != nil || !strings.Contains("\n"+string(out), "\nsleep\n") {
		t.Errorf("busybox has no sleep applet (%v)", err)
	}
}

// TestNodeImagesRefuseDynamicBinaries: a dynamically linked fsb could not
// run on an empty base.
func TestNodeImagesRefuseDynamicBinaries(t *testing.T) {
	sh, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	bb := busybox(t)
	if _, err := Fsb(sh, bb); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("Fsb with a dynamic fsb: %v, want a refusal", err)
	}
	if _, err := Pause(bb, sh); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("Pause with a dynamic helper: %v, want a refusal", err)
	}
}
