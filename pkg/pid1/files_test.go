package pid1

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// writeFile sends data in chunks and returns the answer or the error.
func (a *fakeAgent) writeFile(req initlink.Request, data []byte) (*initlink.Response, *initlink.Error) {
	a.t.Helper()
	req.Op = initlink.OpWriteFile
	c := a.open(req)
	for len(data) > 0 {
		n := min(len(data), initlink.ChunkSize)
		if err := initlink.WriteFrame(c.c, initlink.FrameData, data[:n]); err != nil {
			break // init ended the request: its error follows
		}
		data = data[n:]
	}
	_ = initlink.WriteFrame(c.c, initlink.FrameEnd, nil)
	t, b := c.next()
	switch t {
	case initlink.FrameResponse:
		var r initlink.Response
		c.decode(b, &r)
		return &r, nil
	case initlink.FrameError:
		var e initlink.Error
		c.decode(b, &e)
		return nil, &e
	}
	a.t.Fatalf("write_file answered frame type %d", t)
	return nil, nil
}

// readFile returns a file's info and bytes, or the error.
func (a *fakeAgent) readFile(path string) (*initlink.FileInfo, []byte, *initlink.Error) {
	a.t.Helper()
	c := a.open(initlink.Request{Op: initlink.OpReadFile, Path: path})
	t, b := c.next()
	if t == initlink.FrameError {
		var e initlink.Error
		c.decode(b, &e)
		return nil, nil, &e
	}
	if t != initlink.FrameResponse {
		a.t.Fatalf("read_file answered frame type %d", t)
	}
	var r initlink.Response
	c.decode(b, &r)
	var data bytes.Buffer
	for {
		t, b := c.next()
		switch t {
		case initlink.FrameData:
			data.Write(b)
		case initlink.FrameEnd:
			return r.File, data.Bytes(), nil
		default:
			a.t.Fatalf("read_file sent frame type %d", t)
		}
	}
}

func TestFiles(t *testing.T) {
	a := startInit(t, testToken)
	dir := t.TempDir()
	big := make([]byte, 3*initlink.ChunkSize+17)
	_, _ = rand.Read(big)

	t.Run("write and read", func(t *testing.T) {
		p := filepath.Join(dir, "new", "deep", "f")
		r, e := a.writeFile(initlink.Request{Path: p, Mode: 0o600, Parents: true}, big)
		if e != nil {
			t.Fatal(e)
		}
		if r.File.Size != int64(len(big)) || r.File.Mode != 0o600 || r.File.Type != initlink.TypeFile || r.File.Path != p {
			t.Errorf("wrote %+v", r.File)
		}
		info, data, e := a.readFile(p)
		if e != nil || !bytes.Equal(data, big) || info.Size != int64(len(big)) {
			t.Errorf("read back %d bytes, %+v, %+v", len(data), info, e)
		}
		// Overwrite: atomic, with the default mode, leaving no temporary file.
		if _, e := a.writeFile(initlink.Request{Path: p}, []byte("small")); e != nil {
			t.Fatal(e)
		}
		if b, _ := os.ReadFile(p); string(b) != "small" {
			t.Errorf("after overwrite %q", b)
		}
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
			t.Errorf("mode %v, want 0644", st.Mode())
		}
		if names, _ := readNames(filepath.Dir(p)); len(names) != 1 {
			t.Errorf("directory holds %v, want just f", names)
		}
		// An empty file.
		if _, e := a.writeFile(initlink.Request{Path: p + "-empty"}, nil); e != nil {
			t.Fatal(e)
		}
		if _, data, e := a.readFile(p + "-empty"); e != nil || len(data) != 0 {
			t.Errorf("empty file: %q %+v", data, e)
		}
	})

	t.Run("stat, list, mkdir", func(t *testing.T) {
		root := filepath.Join(dir, "tree")
		if r, e := a.call(initlink.Request{Op: initlink.OpMkdir, Path: filepath.Join(root, "a", "b"), Mode: 0o700}); e != nil || !r.Created {
			t.Fatalf("mkdir: %+v %+v", r, e)
		}
		if r, e := a.call(initlink.Request{Op: initlink.OpMkdir, Path: filepath.Join(root, "a", "b")}); e != nil || r.Created {
			t.Errorf("mkdir of an existing directory: %+v %+v, want not created", r, e)
		}
		if st, _ := os.Stat(filepath.Join(root, "a", "b")); st.Mode().Perm() != 0o700 {
			t.Errorf("mode %v, want 0700", st.Mode())
		}
		if err := os.WriteFile(filepath.Join(root, "a", "b", "f"), []byte("xyz"), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/etc", filepath.Join(root, "link")); err != nil {
			t.Fatal(err)
		}
		r, e := a.call(initlink.Request{Op: initlink.OpStat, Path: filepath.Join(root, "link")})
		if e != nil || r.File.Type != initlink.TypeSymlink || r.File.Target != "/etc" || r.File.Name != "link" {
			t.Errorf("stat of a symlink: %+v %+v", r, e)
		}
		for _, tc := range []struct {
			depth int
			want  []string
		}{
			{0, []string{"a", "link"}},
			{1, []string{"a", "link"}},
			{2, []string{"a", "a/b", "link"}},
			{5, []string{"a", "a/b", "a/b/f", "link"}},
		} {
			r, e := a.call(initlink.Request{Op: initlink.OpListDir, Path: root, Depth: tc.depth})
			if e != nil {
				t.Fatal(e)
			}
			var got []string
			for _, en := range r.Entries {
				got = append(got, strings.TrimPrefix(en.Path, root+"/"))
				if en.Path == filepath.Join(root, "a/b/f") && (en.Size != 3 || en.Mode != 0o640) {
					t.Errorf("entry %+v", en)
				}
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("depth %d listed %v, want %v (the symlink is not followed)", tc.depth, got, tc.want)
			}
		}
	})

	t.Run("move and remove", func(t *testing.T) {
		src := filepath.Join(dir, "m1")
		if err := os.WriteFile(src, []byte("move me"), 0o600); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, "m2")
		if _, e := a.call(initlink.Request{Op: initlink.OpMove, Path: src, Dest: dst}); e != nil {
			t.Fatal(e)
		}
		if b, _ := os.ReadFile(dst); string(b) != "move me" {
			t.Errorf("moved file holds %q", b)
		}
		if _, err := os.Stat(src); !os.IsNotExist(err) {
			t.Errorf("source still there: %v", err)
		}
		full := filepath.Join(dir, "full")
		if err := os.MkdirAll(filepath.Join(full, "x"), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, e := a.call(initlink.Request{Op: initlink.OpRemove, Path: full}); e == nil || e.Code != initlink.CodeFailedPrecondition {
			t.Errorf("remove of a full directory: %+v, want failed_precondition", e)
		}
		if _, e := a.call(initlink.Request{Op: initlink.OpRemove, Path: full, Recursive: true}); e != nil {
			t.Error(e)
		}
		if _, e := a.call(initlink.Request{Op: initlink.OpRemove, Path: dst}); e != nil {
			t.Error(e)
		}
		if _, err := os.Lstat(full); !os.IsNotExist(err) {
			t.Errorf("removed directory still there: %v", err)
		}
	})

	t.Run("errors", func(t *testing.T) {
		file := filepath.Join(dir, "plain")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		missing := filepath.Join(dir, "missing")
		for _, tc := range []struct {
			name string
			req  initlink.Request
			code string
		}{
			{"relative path", initlink.Request{Op: initlink.OpStat, Path: "etc/passwd"}, initlink.CodeInvalidArgument},
			{"unclean path", initlink.Request{Op: initlink.OpStat, Path: dir + "/../x"}, initlink.CodeInvalidArgument},
			{"trailing slash", initlink.Request{Op: initlink.OpListDir, Path: dir + "/"}, initlink.CodeInvalidArgument},
			{"NUL", initlink.Request{Op: initlink.OpStat, Path: dir + "/a\x00b"}, initlink.CodeInvalidArgument},
			{"empty path", initlink.Request{Op: initlink.OpMkdir}, initlink.CodeInvalidArgument},
			{"relative move target", initlink.Request{Op: initlink.OpMove, Path: file, Dest: "x"}, initlink.CodeInvalidArgument},
			{"stat missing", initlink.Request{Op: initlink.OpStat, Path: missing}, initlink.CodeNotFound},
			{"list missing", initlink.Request{Op: initlink.OpListDir, Path: missing}, initlink.CodeNotFound},
			{"list a file", initlink.Request{Op: initlink.OpListDir, Path: file}, initlink.CodeFailedPrecondition},
			{"remove missing", initlink.Request{Op: initlink.OpRemove, Path: missing}, initlink.CodeNotFound},
			{"move missing", initlink.Request{Op: initlink.OpMove, Path: missing, Dest: file}, initlink.CodeNotFound},
			{"mkdir over a file", initlink.Request{Op: initlink.OpMkdir, Path: file}, initlink.CodeAlreadyExists},
			{"mkdir under a file", initlink.Request{Op: initlink.OpMkdir, Path: file + "/sub"}, initlink.CodeFailedPrecondition},
			{"unknown op", initlink.Request{Op: "frobnicate"}, initlink.CodeInvalidArgument},
		} {
			if _, e := a.call(tc.req); e == nil || e.Code != tc.code {
				t.Errorf("%s: %+v, want %s", tc.name, e, tc.code)
			}
		}
		if _, _, e := a.readFile(missing); e == nil || e.Code != initlink.CodeNotFound {
			t.Errorf("read of a missing file: %+v", e)
		}
		if _, _, e := a.readFile(dir); e == nil || e.Code != initlink.CodeFailedPrecondition {
			t.Errorf("read of a directory: %+v", e)
		}
		if _, e := a.writeFile(initlink.Request{Path: dir}, []byte("x")); e == nil || e.Code != initlink.CodeFailedPrecondition {
			t.Errorf("write over a directory: %+v", e)
		}
		if _, e := a.writeFile(initlink.Request{Path: filepath.Join(missing, "f")}, []byte("x")); e == nil || e.Code != initlink.CodeNotFound {
			t.Errorf("write without parents: %+v", e)
		}
		// A non-root user inside may not write where root's files are.
		r := a.exec(initlink.Process{Args: []string{"sh", "-c", "echo x > " + file}, User: "65534"})
		if r.exit == nil || r.exit.Code == 0 {
			t.Errorf("a non-root process wrote a root file: %+v", r)
		}
	})
}

// mountTmpfs mounts a small tmpfs for a test.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount a tmpfs (the tests run as root): %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// A full filesystem fails a write with resource_exhausted, and leaves no
// temporary file.
func TestWriteFileNoSpace(t *testing.T) {
	a := startInit(t, testToken)
	dir := mountTmpfs(t, "256k")
	_, e := a.writeFile(initlink.Request{Path: filepath.Join(dir, "big")}, make([]byte, 1<<20))
	if e == nil || e.Code != initlink.CodeResourceExhausted || !strings.Contains(e.Message, "no space left on device") {
		t.Fatalf("write of 1 MiB into 256 KiB: %+v, want resource_exhausted", e)
	}
	if names, _ := readNames(dir); len(names) != 0 {
		t.Errorf("left behind %v", names)
	}
	// The link goes on.
	if _, e := a.writeFile(initlink.Request{Path: filepath.Join(dir, "small")}, []byte("ok")); e != nil {
		t.Errorf("small write after: %+v", e)
	}
}

// A regular file moves across filesystems (copied, then removed); a
// directory does not.
func TestMoveAcrossDevices(t *testing.T) {
	a := startInit(t, testToken)
	other := mountTmpfs(t, "1m")
	dir := t.TempDir()
	src := filepath.Join(dir, "f")
	if err := os.WriteFile(src, []byte("across"), 0o751); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(other, "g")
	if _, e := a.call(initlink.Request{Op: initlink.OpMove, Path: src, Dest: dst}); e != nil {
		t.Fatal(e)
	}
	if b, _ := os.ReadFile(dst); string(b) != "across" {
		t.Errorf("moved file holds %q", b)
	}
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o751 {
		t.Errorf("moved file's mode %v, want 0751", st.Mode())
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Errorf("source still there: %v", err)
	}
	sub := filepath.Join(dir, "d")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, e := a.call(initlink.Request{Op: initlink.OpMove, Path: sub, Dest: filepath.Join(other, "d")}); e == nil || e.Code != initlink.CodeFailedPrecondition {
		t.Errorf("directory across devices: %+v, want failed_precondition", e)
	}
}

// ListDir stops at MaxEntries and says so.
func TestListDirBound(t *testing.T) {
	a := startInit(t, testToken)
	dir := t.TempDir()
	for i := range initlink.MaxEntries + 1 {
		if err := os.WriteFile(filepath.Join(dir, "f"+strconv.Itoa(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, e := a.call(initlink.Request{Op: initlink.OpListDir, Path: dir}); e == nil || e.Code != initlink.CodeResourceExhausted || !strings.Contains(e.Message, "more than") {
		t.Errorf("list of %d entries: %+v, want resource_exhausted", initlink.MaxEntries+1, e)
	}
}

// A listing under MaxEntries whose long names pass one frame's bytes is
// refused as too large, saying what to do, not failed as internal.
func TestListDirBytesBound(t *testing.T) {
	a := startInit(t, testToken)
	dir := t.TempDir()
	long := strings.Repeat("n", 100)
	const n = 6000 // about 1.5 MiB of JSON, well under MaxEntries
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, long+strconv.Itoa(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, e := a.call(initlink.Request{Op: initlink.OpListDir, Path: dir}); e == nil || e.Code != initlink.CodeResourceExhausted || !strings.Contains(e.Message, "smaller depth") {
		t.Errorf("list of %d entries with long names: %+v, want resource_exhausted naming the fix", n, e)
	}
	// A part of it still lists.
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, long), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r, e := a.call(initlink.Request{Op: initlink.OpListDir, Path: sub}); e != nil || len(r.Entries) != 1 {
		t.Errorf("list of one entry: %+v, %+v", r, e)
	}
}
