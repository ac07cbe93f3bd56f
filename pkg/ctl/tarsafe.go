package ctl

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ExtractStats counts what an extraction wrote and what it refused.
type ExtractStats struct {
	Files, Dirs, Links int
	Bytes              int64
	// Skipped counts the entries refused: each was reported through the
	// warn function.
	Skipped int
}

// extractTar writes the tar stream r into the existing directory dest and
// writes nothing outside it, whatever the archive holds: the archive comes
// from inside a sandbox and is untrusted. An entry is skipped, with a
// warning, when
//   - its name is absolute or climbs out with "..";
//   - it is a symlink whose target is absolute or leads out of dest, read
//     from where the link stands (and, once every entry is written, when
//     the link resolves out of dest through other links: it is removed);
//   - it is a hardlink to a path outside dest (or to anything but an
//     entry already written);
//   - it is a device, a FIFO or another special file.
//
// Symlinks are made last, so no entry is ever written through a link the
// archive made; and every file operation goes through an os.Root at dest,
// which refuses to follow any path out of it, so a symlink that was in
// dest before the extraction cannot lead a write out either.
//
// Regular files get their permission bits (without setuid, setgid and
// sticky), owned by the user running fsb ctl. An existing file of the same
// name is replaced, not written into, so a hardlink already in dest to a
// file elsewhere is not written through.
func extractTar(r io.Reader, dest string, warn func(string)) (ExtractStats, error) {
	var st ExtractStats
	root, err := os.OpenRoot(dest)
	if err != nil {
		return st, fmt.Errorf("open destination: %w", err)
	}
	defer root.Close()
	skip := func(name, why string) {
		st.Skipped++
		warn(fmt.Sprintf("skipped %q: %s", name, why))
	}
	type symlink struct{ name, target string }
	var links []symlink
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("read the archive: %w", err)
		}
		name, ok := entryName(hdr.Name)
		if !ok {
			skip(hdr.Name, "its path leads out of the destination")
			continue
		}
		if name == "." {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return st, fmt.Errorf("make directory %s: %w", name, err)
			}
			if err := root.Chmod(name, fs.FileMode(hdr.Mode)&fs.ModePerm|0o700); err != nil {
				return st, fmt.Errorf("chmod %s: %w", name, err)
			}
			st.Dirs++
		case tar.TypeReg, tar.TypeRegA:
			n, err := writeEntry(root, name, fs.FileMode(hdr.Mode)&fs.ModePerm, tr)
			st.Bytes += n
			if err != nil {
				return st, err
			}
			st.Files++
		case tar.TypeSymlink:
			if !linkInside(name, hdr.Linkname) {
				skip(hdr.Name, fmt.Sprintf("a symlink to %q, out of the destination", hdr.Linkname))
				continue
			}
			links = append(links, symlink{name, hdr.Linkname})
		case tar.TypeLink:
			target, ok := entryName(hdr.Linkname)
			if !ok || target == "." {
				skip(hdr.Name, fmt.Sprintf("a hardlink to %q, out of the destination", hdr.Linkname))
				continue
			}
			if err := mkParent(root, name); err != nil {
				return st, err
			}
			_ = removeFile(root, name)
			if err := root.Link(target, name); err != nil {
				skip(hdr.Name, fmt.Sprintf("a hardlink to %q, which is not a file the archive wrote: %v", hdr.Linkname, err))
				continue
			}
			st.Links++
		default:
			skip(hdr.Name, fmt.Sprintf("a special file (type %q) is not copied", hdr.Typeflag))
		}
	}
	for _, l := range links {
		if err := mkParent(root, l.name); err != nil {
			return st, err
		}
		_ = removeFile(root, l.name)
		if err := root.Symlink(l.target, l.name); err != nil {
			skip(l.name, fmt.Sprintf("symlink: %v", err))
			continue
		}
		st.Links++
	}
	// A link that stays inside where it stands may still lead out through
	// another link ("s" -> ".", then "a/l" -> "../s/.."). The os.Root
	// refuses to resolve such a path: whatever it refuses, other than a
	// target that does not exist, goes.
	for _, l := range links {
		if _, err := root.Stat(l.name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			if rerr := root.Remove(l.name); rerr == nil {
				st.Links--
				skip(l.name, fmt.Sprintf("a symlink to %q, which resolves out of the destination", l.target))
			}
		}
	}
	return st, nil
}

// entryName returns an archive entry's name relative to the destination,
// cleaned, and false when it is absolute or climbs out of it.
func entryName(name string) (string, bool) {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) {
		return "", false
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", false
	}
	return filepath.FromSlash(clean), true
}

// linkInside reports whether a symlink at name (relative to the
// destination) pointing at target stays inside the destination, read
// lexically from where the link stands.
func linkInside(name, target string) bool {
	if target == "" || strings.HasPrefix(target, "/") || strings.ContainsRune(target, 0) {
		return false
	}
	_, ok := entryName(path.Join(path.Dir(filepath.ToSlash(name)), target))
	return ok
}

func mkParent(root *os.Root, name string) error {
	if dir := filepath.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("make directory %s: %w", dir, err)
		}
	}
	return nil
}

// removeFile removes name unless it is a directory.
func removeFile(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if err != nil || fi.IsDir() {
		return err
	}
	return root.Remove(name)
}

// writeEntry writes r into a new file name under root.
func writeEntry(root *os.Root, name string, mode fs.FileMode, r io.Reader) (int64, error) {
	if err := mkParent(root, name); err != nil {
		return 0, err
	}
	if err := removeFile(root, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("replace %s: %w", name, err)
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", name, err)
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("write %s: %w", name, err)
	}
	// The umask may have taken bits the archive gave.
	if err := root.Chmod(name, mode); err != nil {
		return n, fmt.Errorf("chmod %s: %w", name, err)
	}
	return n, nil
}
