package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path"
	"runtime"
	"sort"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The images a real node of the rig runs besides the test image (see
// scripts/cluster.sh): Fast Sandbox itself and the pod sandbox's pause
// image. Both are imported under the tag the rig builds.
const (
	// FsbRepo is the repository of the image holding the static fsb and
	// fsb-helper.
	FsbRepo = "localhost/fsb/fsb"
	// PauseRepo is the repository of the pause image the CRI runs as every
	// pod's sandbox container.
	PauseRepo = "localhost/fsb/pause"
)

// pauseSleep is how long the pause image's sleeper sleeps, in seconds: the
// longest busybox's sleep takes on every architecture, 68 years.
const pauseSleep = "2147483647"

// layerFile is a file of a layer: Path in the image, its content read from
// Source on the host.
type layerFile struct {
	Path   string
	Source string
	Mode   int64
}

// Fsb returns the image of the fsb binary: the static fsb at /fsb and the
// static fsb-helper at /fsb-helper on an empty base, entrypoint /fsb. It
// also holds an empty /tmp, the only directory a Go program may expect.
func Fsb(fsbPath, helperPath string) (v1.Image, error) {
	for _, p := range []string{fsbPath, helperPath} {
		if err := checkStaticFsb(p); err != nil {
			return nil, err
		}
	}
	layer, err := filesLayer([]layerFile{
		{Path: "fsb", Source: fsbPath, Mode: 0o755},
		{Path: "fsb-helper", Source: helperPath, Mode: 0o755},
	})
	if err != nil {
		return nil, err
	}
	return withLayer(empty.Image, layer, "fast-sandbox testimage: fsb and fsb-helper", []string{"/fsb"}, nil, nil)
}

// Pause returns the pause image: the busybox image with the static
// fsb-helper at /fsb-helper, whose init role runs as PID 1 over busybox's
// sleep. A pod's sandbox container only has to hold the pod's namespaces
// until it is signalled and to reap the zombies of a shared PID namespace;
// fsb init already forwards the signal to its child and reaps, so the
// project needs no pause program of its own, and the busybox layer is the
// test image's, stored once.
func Pause(busyboxPath, helperPath string) (v1.Image, error) {
	if err := checkStaticFsb(helperPath); err != nil {
		return nil, err
	}
	base, err := Build(busyboxPath)
	if err != nil {
		return nil, err
	}
	layer, err := filesLayer([]layerFile{{Path: "fsb-helper", Source: helperPath, Mode: 0o755}})
	if err != nil {
		return nil, err
	}
	return withLayer(base, layer, "fast-sandbox testimage: pause (fsb-helper init over busybox sleep)",
		[]string{"/fsb-helper", "init", "--", "/bin/sleep", pauseSleep}, nil, nil)
}

// checkStaticFsb refuses a dynamically linked fsb binary: the images hold no
// libc.
func checkStaticFsb(p string) error {
	if err := checkStatic(p); err != nil {
		return fmt.Errorf("%w (fsb binaries: build them static with `make build`)", err)
	}
	return nil
}

// filesLayer returns a deterministic layer holding files (and /tmp).
func filesLayer(files []layerFile) (*gzipLayer, error) {
	sorted := append([]layerFile(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdrs := []tar.Header{}
	data := [][]byte{}
	for _, f := range sorted {
		b, err := os.ReadFile(f.Source)
		if err != nil {
			return nil, fmt.Errorf("read %s for the image's /%s: %w", f.Source, f.Path, err)
		}
		hdrs = append(hdrs, tar.Header{Typeflag: tar.TypeReg, Name: path.Clean(f.Path), Mode: f.Mode, Size: int64(len(b))})
		data = append(data, b)
	}
	hdrs = append(hdrs, tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777})
	data = append(data, nil)
	for i := range hdrs {
		h := hdrs[i]
		h.ModTime = epoch
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", h.Name, err)
		}
		if _, err := tw.Write(data[i]); err != nil {
			return nil, fmt.Errorf("tar %s: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	// The fastest level: the fsb binaries are tens of megabytes, built
	// and imported on every start of a cluster, never sent anywhere.
	layer, err := newLayerLevel(buf.Bytes(), gzip.BestSpeed)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return layer, nil
}

// withLayer appends layer to base and sets the entrypoint; cmd replaces the
// base's command (nil: none). configure, when set, changes the rest of
// the config last.
func withLayer(base v1.Image, layer v1.Layer, createdBy string, entrypoint, cmd []string, configure func(*v1.Config)) (v1.Image, error) {
	img := mutate.MediaType(base, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: createdBy},
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
	cf.Config.Entrypoint = entrypoint
	cf.Config.Cmd = cmd
	if len(cf.Config.Env) == 0 {
		cf.Config.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	if configure != nil {
		configure(&cf.Config)
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}
