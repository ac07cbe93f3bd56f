package testimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// bashStatic returns the static bash the E2B image is built from; like
// busybox, the rig installs it, so its absence fails the test.
func bashStatic(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(DefaultBash); err != nil {
		t.Fatalf("%v: install Debian's bash-static (`apt-get install bash-static`, or run `make test`)", err)
	}
	return DefaultBash
}

// e2bImage returns the image E2BBase builds, built once for the package:
// a build is seconds under the race detector.
func e2bImage(t *testing.T) v1.Image {
	t.Helper()
	busybox(t)
	bashStatic(t)
	img, err := builtE2B()
	if err != nil {
		t.Fatal(err)
	}
	return img
}

var builtE2B = sync.OnceValues(func() (v1.Image, error) {
	img, err := E2BBase(DefaultBusybox, DefaultBash)
	if err != nil {
		return nil, err
	}
	if err := validate.Image(img); err != nil {
		return nil, fmt.Errorf("validate: %w", err)
	}
	return img, nil
})

// unpack extracts img's single layer into dir as a runtime would (owners
// and modes included), and returns its headers by name.
func unpack(t *testing.T, img v1.Image, dir string) map[string]*tar.Header {
	t.Helper()
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
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(p, b, 0o644)
			}
		}
		if err == nil && h.Typeflag != tar.TypeSymlink {
			if err = os.Chmod(p, os.FileMode(h.Mode&0o777)|modeBits(h.Mode)); err == nil {
				err = os.Lchown(p, h.Uid, h.Gid)
			}
		}
		if err != nil {
			t.Fatalf("unpack %s: %v", h.Name, err)
		}
	}
	return headers
}

func modeBits(m int64) os.FileMode {
	var f os.FileMode
	if m&0o1000 != 0 {
		f |= os.ModeSticky
	}
	return f
}

// TestE2BBaseLayout checks what E2B's SDK relies on in the image: bash at
// /bin/bash, root and user 1000 with an existing home of its own, /tmp
// world-writable and sticky, the usual commands where scripts look for them.
func TestE2BBaseLayout(t *testing.T) {
	img := e2bImage(t)
	h := unpack(t, img, t.TempDir())

	bash, err := os.ReadFile(DefaultBash)
	if err != nil {
		t.Fatal(err)
	}
	if b := h["bin/bash"]; b == nil || b.Typeflag != tar.TypeReg || b.Mode&0o111 == 0 || b.Size != int64(len(bash)) {
		t.Errorf("bin/bash: got %+v, want bash-static as an executable regular file", b)
	}
	for _, name := range []string{"bin/sh", "bin/ls", "bin/sleep", "usr/bin/env"} {
		if l := h[name]; l == nil || l.Typeflag != tar.TypeSymlink || l.Linkname != "/bin/busybox" {
			t.Errorf("%s: got %+v, want a symlink to /bin/busybox", name, l)
		}
	}
	if d := h["home/user/"]; d == nil || d.Typeflag != tar.TypeDir || d.Uid != 1000 || d.Gid != 1000 {
		t.Errorf("home/user/: got %+v, want a directory owned by 1000:1000", d)
	}
	for _, name := range []string{"tmp/", "var/tmp/"} {
		if d := h[name]; d == nil || d.Typeflag != tar.TypeDir || d.Mode != 0o1777 {
			t.Errorf("%s: got %+v, want a directory with mode 1777", name, d)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cf.Config.Cmd, " "); got != "/bin/sleep "+pauseSleep {
		t.Errorf("Cmd = %q, want a sleep that never ends", got)
	}
}

// TestE2BBaseLoginShell runs the SDK's shell as the SDK runs it, a login
// bash, in the unpacked image (chroot), as root and as user: /etc/profile
// must say nothing and fail nowhere, and the user must be known by name.
func TestE2BBaseLoginShell(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test chroots into the image: run it as root (`make test` does)")
	}
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	unpack(t, e2bImage(t), root)
	for _, tc := range []struct {
		uid      uint32
		wantUser string
		wantHome string
	}{
		{0, "root", "/root"},
		{1000, "user", "/home/user"},
	} {
		cmd := exec.Command("/bin/bash", "-l", "-c", `set -e; id -un; cd ~ && pwd; echo x > ~/f && cat ~/f; echo y > /tmp/f.$$ && rm /tmp/f.$$; echo "$PATH"`)
		cmd.Env = []string{"PATH=" + e2bPath, "HOME=" + tc.wantHome, "USER=" + tc.wantUser}
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: tc.uid, Gid: tc.uid}}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Errorf("uid %d: bash -l -c: %v\nstdout: %s\nstderr: %s", tc.uid, err, stdout.String(), stderr.String())
			continue
		}
		want := tc.wantUser + "\n" + tc.wantHome + "\nx\n" + e2bPath + "\n"
		if stdout.String() != want || stderr.Len() != 0 {
			t.Errorf("uid %d: bash -l -c printed\nstdout: %q\nstderr: %q\nwant stdout %q and no stderr", tc.uid, stdout.String(), stderr.String(), want)
		}
	}
}

func TestE2BBaseDeterministic(t *testing.T) {
	var digests [2]v1.Hash
	for i, build := range []func() (v1.Image, error){
		func() (v1.Image, error) { return e2bImage(t), nil },
		func() (v1.Image, error) { return E2BBase(DefaultBusybox, DefaultBash) },
	} {
		img, err := build()
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
