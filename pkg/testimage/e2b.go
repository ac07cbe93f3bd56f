package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
)

// E2BRef is the name the template image of E2B's default template
// (`base`) is imported under.
const E2BRef = "localhost/fsb/e2b-base:latest"

// DefaultBash is where Debian's bash-static installs its binary.
const DefaultBash = "/bin/bash-static"

// The user E2B's SDK runs commands as unless told otherwise, and its home:
// the SDK's documentation promises relative paths and the default working
// directory resolve there.
const (
	e2bUser = "user"
	e2bUID  = 1000
	e2bHome = "home/user"
)

// e2bPath is the PATH of the image's processes: Debian's, so that what a
// user of E2B's own base image finds where it expects it is found here.
const e2bPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

const (
	e2bPasswd = "root:x:0:0:root:/root:/bin/bash\n" +
		"user:x:1000:1000::/home/user:/bin/bash\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
	e2bGroup = "root:x:0:\n" +
		"user:x:1000:\n" +
		"nogroup:x:65534:\n"
	// The SDK runs every command as `/bin/bash -l -c CMD`, so a login
	// shell reads this first: it must succeed and print nothing, and it
	// keeps the PATH the process was given (envd's callers set their own).
	e2bProfile = "# /etc/profile: read by every login shell; E2B's SDK runs commands with /bin/bash -l -c.\n" +
		": \"${PATH:=" + e2bPath + "}\"\n" +
		"export PATH\n" +
		"umask 022\n"
	e2bHosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
)

// E2BBase returns the template image of E2B's `base` template: bash from
// the static bash at bashPath as /bin/bash (the SDK's shell), the static
// busybox at busyboxPath for the rest of the userland (every applet linked
// where busybox installs it), root and `user` (uid and gid 1000, home
// /home/user owned by it), /tmp with mode 1777 and an /etc/profile that
// does nothing a login shell could trip on. Its command sleeps forever: a
// template's sandbox is a place to run commands in, not a program. Equal
// inputs give equal digests.
func E2BBase(busyboxPath, bashPath string) (v1.Image, error) {
	for _, p := range []string{busyboxPath, bashPath} {
		if err := checkStatic(p); err != nil {
			return nil, err
		}
	}
	busybox, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	bash, err := os.ReadFile(bashPath)
	if err != nil {
		return nil, fmt.Errorf("read bash: %w", err)
	}
	applets, err := listAppletPaths(busyboxPath)
	if err != nil {
		return nil, err
	}
	raw, err := e2bRootfsTar(busybox, bash, applets)
	if err != nil {
		return nil, err
	}
	// The fastest level: the rig builds the image on every start and
	// imports it on this machine; it is never sent anywhere.
	layer, err := newLayerLevel(raw, gzip.BestSpeed)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}

	return withLayer(empty.Image, layer, "fast-sandbox testimage: e2b-base (bash-static, busybox-static)",
		nil, []string{"/bin/sleep", pauseSleep}, func(c *v1.Config) {
			c.Env = []string{"PATH=" + e2bPath}
			c.WorkingDir = "/"
		})
}

// listAppletPaths asks busybox where each applet belongs (bin/ls,
// usr/bin/env, ...), leaving out the ones the image has a program of its
// own for.
func listAppletPaths(p string) ([]string, error) {
	applets, err := busyboxList(p, "--list-full")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range applets {
		a = path.Clean(strings.TrimPrefix(a, "/"))
		if a == "." || strings.HasPrefix(a, "..") || path.Base(a) == "busybox" || path.Base(a) == "bash" {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// e2bRootfsTar returns the uncompressed layer of E2BBase: entries sorted by
// name, stamped with the epoch, owned by root except the user's home.
func e2bRootfsTar(busybox, bash []byte, applets []string) ([]byte, error) {
	dir := func(name string, mode int64, uid int) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid}}
	}
	file := func(name string, mode int64, data []byte) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data: data}
	}
	entries := []tarEntry{
		dir("bin", 0o755, 0),
		dir("etc", 0o755, 0),
		dir("home", 0o755, 0),
		dir(e2bHome, 0o755, e2bUID),
		dir("root", 0o700, 0),
		dir("sbin", 0o755, 0),
		dir("tmp", 0o1777, 0),
		dir("usr", 0o755, 0),
		dir("usr/bin", 0o755, 0),
		dir("usr/local", 0o755, 0),
		dir("usr/local/bin", 0o755, 0),
		dir("usr/sbin", 0o755, 0),
		dir("var", 0o755, 0),
		dir("var/tmp", 0o1777, 0),
		file("bin/bash", 0o755, bash),
		file("bin/busybox", 0o755, busybox),
		file("etc/group", 0o644, []byte(e2bGroup)),
		file("etc/hosts", 0o644, []byte(e2bHosts)),
		file("etc/passwd", 0o644, []byte(e2bPasswd)),
		file("etc/profile", 0o644, []byte(e2bProfile)),
	}
	dirs := map[string]bool{}
	for _, e := range entries {
		if e.hdr.Typeflag == tar.TypeDir {
			dirs[strings.TrimSuffix(e.hdr.Name, "/")] = true
		}
	}
	for _, a := range applets {
		if !dirs[path.Dir(a)] {
			// An applet busybox puts somewhere the image has no
			// directory for: /bin has it, on every PATH.
			a = path.Join("bin", path.Base(a))
		}
		entries = append(entries, tarEntry{hdr: tar.Header{
			Typeflag: tar.TypeSymlink, Name: a, Linkname: "/bin/busybox", Mode: 0o777,
		}})
	}
	return writeTar(entries)
}

// tarEntry is one entry of a layer tar.
type tarEntry struct {
	hdr  tar.Header
	data []byte
}

// writeTar writes entries sorted by name, each name once (the first given
// wins), stamped with the epoch.
func writeTar(entries []tarEntry) ([]byte, error) {
	sorted := make([]tarEntry, 0, len(entries))
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		if !seen[e.hdr.Name] {
			seen[e.hdr.Name] = true
			sorted = append(sorted, e)
		}
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].hdr.Name < sorted[j].hdr.Name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range sorted {
		h := e.hdr
		h.ModTime = epoch
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
