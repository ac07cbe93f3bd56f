package install

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeBinaries(t *testing.T, dir, content string) {
	t.Helper()
	for _, name := range binaries {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content+" "+name), 0o700); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBinariesReplacesWithoutTouchingTheOldFile: a second install (an agent
// upgrade) puts the new binaries in place, executable by all, while a
// sandbox that holds the old fsb-helper (a bind mount, here an open file)
// still reads the old one whole.
func TestBinariesReplacesWithoutTouchingTheOldFile(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "var", "lib", "fsb", "bin")
	writeBinaries(t, src, "v1")
	if err := Binaries(src, dst, io.Discard); err != nil {
		t.Fatal(err)
	}
	held, err := os.Open(filepath.Join(dst, "fsb-helper"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	writeBinaries(t, src, "v2")
	var out strings.Builder
	if err := Binaries(src, dst, &out); err != nil {
		t.Fatal(err)
	}
	for _, name := range binaries {
		p := filepath.Join(dst, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(b), "v2 "+name; got != want {
			t.Errorf("%s holds %q, want %q", name, got, want)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s has mode %v, want 0755", name, fi.Mode().Perm())
		}
		if !strings.Contains(out.String(), "installed "+p) {
			t.Errorf("output %q does not name %s", out.String(), p)
		}
	}
	old, err := io.ReadAll(held)
	if err != nil {
		t.Fatal(err)
	}
	if string(old) != "v1 fsb-helper" {
		t.Errorf("the running sandbox's fsb-helper now reads %q, want the old v1 binary", old)
	}
	entries, err := os.ReadDir(dst)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(binaries) {
		t.Errorf("%s holds %d files, want only %v (a temporary file left behind?)", dst, len(entries), binaries)
	}
}

// TestBinariesNamesWhatIsMissing: an image without fsb-helper fails the
// init container with the file's name, and leaves no temporary file.
func TestBinariesNamesWhatIsMissing(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "fsb"), []byte("fsb"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := Binaries(src, dst, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "fsb-helper") {
		t.Fatalf("install without fsb-helper: %v, want an error naming fsb-helper", err)
	}
	entries, _ := os.ReadDir(dst)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
