//go:build !fsbhelper

package main

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// testCtlCpMaliciousTar: `fsb ctl cp NAME:/dir DEST` copies a directory
// both ways, and a sandbox that answers with a crafted tar (every way out
// of DEST a tar can try) gets nothing written outside DEST.
func testCtlCpMaliciousTar(t *testing.T, p *execPlane) {
	const name = "cp-tar"
	p.sandbox(t, name, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctl := func(args ...string) (string, string, int) {
		t.Helper()
		return runCtl(t, p.server, "user-token-1", args...)
	}

	// A directory there and back with the sandbox's real tar.
	src := t.TempDir()
	for rel, content := range map[string]string{"top.txt": "top\n", "a/b/deep.txt": "deep\n"} {
		if err := os.MkdirAll(filepath.Join(src, filepath.Dir(rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, rel), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, errOut, code := ctl("cp", src, name+":/up"); code != 0 {
		t.Fatalf("cp DIR %s:/up: exit %d\n%s%s", name, code, out, errOut)
	}
	back := filepath.Join(t.TempDir(), "back")
	if out, errOut, code := ctl("cp", name+":/up", back); code != 0 {
		t.Fatalf("cp %s:/up DIR: exit %d\n%s%s", name, code, out, errOut)
	}
	for rel, want := range map[string]string{"top.txt": "top\n", "a/b/deep.txt": "deep\n"} {
		if got, err := os.ReadFile(filepath.Join(back, rel)); err != nil || string(got) != want {
			t.Errorf("%s after cp there and back: %q, %v; want %q", rel, got, err, want)
		}
	}

	// Now the sandbox's tar is a fake that answers any directory with the
	// crafted archive. DEST sits in a directory of its own; the archive
	// aims at that directory and at a file in it.
	outer := t.TempDir()
	dest := filepath.Join(outer, "dest")
	victim := filepath.Join(outer, "victim.txt")
	if err := os.WriteFile(victim, []byte("original\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	evil := craftedTar(t, outer, victim)
	for _, f := range []struct {
		path string
		mode uint32
		data []byte
	}{
		{"/evil.tar", 0o644, evil},
		{"/bin/tar", 0o755, []byte("#!/bin/sh\nexec cat /evil.tar\n")},
	} {
		if _, err := p.writeFile(ctx, name, f.path, f.mode, bytes.NewReader(f.data)); err != nil {
			t.Fatalf("write %s into the sandbox: %v", f.path, err)
		}
	}
	if _, err := p.api.MakeDir(ctx, connect.NewRequest(&fsbv1.MakeDirRequest{Name: name, Path: "/dir"})); err != nil {
		t.Fatalf("MakeDir /dir: %v", err)
	}
	out, errOut, code := ctl("cp", name+":/dir", dest)
	t.Logf("cp of the crafted tar: exit %d\n%s%s", code, out, errOut)

	var outside []string
	filepath.WalkDir(outer, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			t.Errorf("walk %s: %v", path, err)
		case path == dest:
			return fs.SkipDir
		case path != outer && path != victim:
			outside = append(outside, path)
		}
		return nil
	})
	if len(outside) > 0 {
		t.Errorf("cp of the crafted tar wrote outside DEST: %v", outside)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "original\n" {
		t.Errorf("the file beside DEST now holds %q (%v): cp wrote through a link", b, err)
	}
	if fi, err := os.Lstat(victim); err != nil || fi.Mode() != 0o644 {
		t.Errorf("the file beside DEST: %v, %v; want an unchanged 0644 file", fi, err)
	}
	if code == 0 {
		if b, err := os.ReadFile(filepath.Join(dest, "ok.txt")); err != nil || string(b) != "fine\n" {
			t.Errorf("cp succeeded but the harmless entry is missing: %q, %v", b, err)
		}
	} else if errOut == "" {
		t.Errorf("cp failed (exit %d) without saying why", code)
	}
}

// craftedTar is an archive that tries every way out of the directory it is
// extracted into: .. in paths, absolute paths, symlinks and hard links
// pointing out and files written through them, and a regular file over a
// symlink to victim.
func craftedTar(t *testing.T, outer, victim string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h tar.Header, content string) {
		h.Size = int64(len(content))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(content)); err != nil {
				t.Fatal(err)
			}
		}
	}
	file := func(name, content string) { add(tar.Header{Typeflag: tar.TypeReg, Name: name}, content) }
	add(tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755}, "")
	file("./ok.txt", "fine\n")
	file("../escape-dotdot.txt", "escaped\n")
	file("./sub/../../escape-nested.txt", "escaped\n")
	file(filepath.Join(outer, "escape-absolute.txt"), "escaped\n")
	add(tar.Header{Typeflag: tar.TypeSymlink, Name: "./link-abs", Linkname: outer}, "")
	file("./link-abs/escape-through-absolute-link.txt", "escaped\n")
	add(tar.Header{Typeflag: tar.TypeSymlink, Name: "./link-up", Linkname: ".."}, "")
	file("./link-up/escape-through-relative-link.txt", "escaped\n")
	add(tar.Header{Typeflag: tar.TypeDir, Name: "./d/", Mode: 0o755}, "")
	add(tar.Header{Typeflag: tar.TypeSymlink, Name: "./d/deeper", Linkname: "../../"}, "")
	file("./d/deeper/escape-through-nested-link.txt", "escaped\n")
	add(tar.Header{Typeflag: tar.TypeLink, Name: "./hard-abs", Linkname: victim}, "")
	file("./hard-abs", "pwned through an absolute hard link\n")
	add(tar.Header{Typeflag: tar.TypeLink, Name: "./hard-up", Linkname: "../" + filepath.Base(victim)}, "")
	file("./hard-up", "pwned through a relative hard link\n")
	add(tar.Header{Typeflag: tar.TypeSymlink, Name: "./victim-link", Linkname: victim}, "")
	file("./victim-link", "pwned through a symlink\n")
	add(tar.Header{Typeflag: tar.TypeSymlink, Name: "./dir-link", Linkname: outer}, "")
	add(tar.Header{Typeflag: tar.TypeDir, Name: "./dir-link/made-through-a-link/", Mode: 0o755}, "")
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "escape-dotdot") {
		t.Fatal("the crafted tar lacks its entries")
	}
	return buf.Bytes()
}
