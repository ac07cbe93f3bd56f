package ctl

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// entry is one member of a crafted archive.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func file(name, body string) entry {
	return entry{name: name, body: body, typ: tar.TypeReg, mode: 0o644}
}
func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlinkTo(name, target string) entry {
	return entry{name: name, link: target, typ: tar.TypeSymlink, mode: 0o777}
}
func hardlinkTo(name, target string) entry {
	return entry{name: name, link: target, typ: tar.TypeLink, mode: 0o644}
}

func archive(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body))}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// snapshot lists every path under dir with its kind and content, so that
// a test can tell whether anything there changed.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out = append(out, rel+" -> "+target)
		case d.IsDir():
			out = append(out, rel+"/")
		default:
			b, _ := os.ReadFile(p)
			out = append(out, rel+": "+string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestExtractTarMalicious feeds archives made to write out of the
// destination and checks that nothing outside it changed, that the
// harmless entries beside them landed, and that each refusal was said.
func TestExtractTarMalicious(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
		// want are the paths the destination must hold afterwards (as
		// snapshot lists them).
		want []string
		// skipped is how many entries must be refused.
		skipped int
	}{
		{
			name:    "dot-dot path",
			entries: []entry{file("../outside/pwned", "x"), file("ok", "fine"), file("a/../../outside/pwned2", "x")},
			want:    []string{"./", "ok: fine"},
			skipped: 2,
		},
		{
			name:    "absolute path",
			entries: []entry{file("/OUTSIDE/pwned", "x"), file("ok", "fine")},
			want:    []string{"./", "ok: fine"},
			skipped: 1,
		},
		{
			name: "symlink out, then a file through it",
			entries: []entry{
				symlinkTo("esc", "../outside"), file("esc/pwned", "x"),
				symlinkTo("abs", "/OUTSIDE"), file("abs/pwned", "x"),
			},
			// The files land in directories made where the links would
			// have been; the links themselves are refused.
			want:    []string{"./", "abs/", "abs/pwned: x", "esc/", "esc/pwned: x"},
			skipped: 2,
		},
		{
			name: "symlink inside, then a file through it",
			entries: []entry{
				dir("d"), symlinkTo("l", "d"), file("l/f", "through"),
			},
			// The file lands in a directory "l" made for it: links are
			// made last, so the link "l" cannot be made and is refused.
			want:    []string{"./", "d/", "l/", "l/f: through"},
			skipped: 1,
		},
		{
			name: "symlink chain that leads out",
			entries: []entry{
				symlinkTo("s", "."), dir("a"), symlinkTo("a/l", "../s/.."),
			},
			want:    []string{"./", "a/", "s -> ."},
			skipped: 1,
		},
		{
			name: "hardlink out",
			entries: []entry{
				hardlinkTo("h1", "../outside/secret"), hardlinkTo("h2", "/OUTSIDE/secret"),
				file("ok", "fine"), hardlinkTo("h3", "ok"),
			},
			want:    []string{"./", "h3: fine", "ok: fine"},
			skipped: 2,
		},
		{
			name: "hardlink to a symlink that leads out",
			entries: []entry{
				symlinkTo("l", "../outside/secret"), hardlinkTo("h", "l"), file("h", "x"),
			},
			want:    []string{"./", "h: x"},
			skipped: 2,
		},
		{
			name:    "device",
			entries: []entry{{name: "null", typ: tar.TypeChar, mode: 0o666}, file("ok", "fine")},
			want:    []string{"./", "ok: fine"},
			skipped: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top := t.TempDir()
			dest := filepath.Join(top, "dest")
			outside := filepath.Join(top, "outside")
			for _, d := range []string{dest, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644); err != nil {
				t.Fatal(err)
			}
			// "/OUTSIDE" in an archive stands for an absolute path; the
			// test can only watch one it owns.
			entries := slices.Clone(tt.entries)
			for i := range entries {
				entries[i].name = strings.ReplaceAll(entries[i].name, "/OUTSIDE", outside)
				entries[i].link = strings.ReplaceAll(entries[i].link, "/OUTSIDE", outside)
			}
			before := snapshot(t, outside)
			var warnings []string
			st, err := extractTar(bytes.NewReader(archive(t, entries...)), dest, func(s string) { warnings = append(warnings, s) })
			if err != nil {
				t.Fatalf("extract: %v", err)
			}
			if after := snapshot(t, outside); !slices.Equal(before, after) {
				t.Errorf("outside the destination changed:\nbefore %q\nafter  %q", before, after)
			}
			if got := snapshot(t, top); len(got) != len(before)+len(tt.want)+1 {
				t.Errorf("the temp dir holds more than the destination and outside: %q", got)
			}
			if got := snapshot(t, dest); !slices.Equal(got, tt.want) {
				t.Errorf("destination holds %q, want %q", got, tt.want)
			}
			if st.Skipped != tt.skipped || len(warnings) != tt.skipped {
				t.Errorf("skipped %d with warnings %q, want %d", st.Skipped, warnings, tt.skipped)
			}
		})
	}
}

// TestExtractTarPreexistingLinks: links that were in the destination before
// the copy cannot lead a write out of it either.
func TestExtractTarPreexistingLinks(t *testing.T) {
	top := t.TempDir()
	dest := filepath.Join(top, "dest")
	outside := filepath.Join(top, "outside")
	for _, d := range []string{dest, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dest, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(secret, filepath.Join(dest, "hard")); err != nil {
		t.Fatal(err)
	}
	_, err := extractTar(bytes.NewReader(archive(t, file("out/pwned", "x"), file("hard", "replaced"))), dest, func(string) {})
	if err == nil {
		t.Error("a write through a symlink out of the destination succeeded")
	}
	if b, _ := os.ReadFile(secret); string(b) != "secret" {
		t.Errorf("a file outside was written through a hardlink: %q", b)
	}
	if _, err := os.Stat(filepath.Join(outside, "pwned")); err == nil {
		t.Error("a file was written outside through a symlink")
	}
}

// TestExtractTarModes: files keep their permission bits, less setuid.
func TestExtractTarModes(t *testing.T) {
	dest := t.TempDir()
	run := entry{name: "bin/run", body: "#!/bin/sh\n", typ: tar.TypeReg, mode: 0o4755}
	if _, err := extractTar(bytes.NewReader(archive(t, dir("bin"), run, file("data", "d"))), dest, func(string) {}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{"bin/run": 0o755, "data": 0o644} {
		fi, err := os.Stat(filepath.Join(dest, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
}
