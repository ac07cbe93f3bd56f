package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// fsFake is a controller whose sandboxes' files live in a host directory
// each, and whose tar is the host's: the file calls and the exec of tar
// behave as they do in a real sandbox. Sandbox "notar" has no tar; sandbox
// "evil" answers `tar cf` with a crafted archive.
type fsFake struct {
	*fakeFastPath
	roots map[string]string // by sandbox name
	evil  []byte
}

func newFSFake(t *testing.T, names ...string) *fsFake {
	f := &fsFake{fakeFastPath: newFake(), roots: map[string]string{}}
	for _, n := range names {
		f.add("default", n, "busybox", time.Minute)
		f.roots[n] = t.TempDir()
	}
	return f
}

// resolve maps a sandbox's path to the host, as init's checks would.
func (f *fsFake) resolve(name, p string) (string, error) {
	root, ok := f.roots[name]
	if !ok {
		return "", connect.NewError(connect.CodeNotFound, fmt.Errorf("sandbox default/%s not found", name))
	}
	if !path.IsAbs(p) || path.Clean(p) != p {
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path %q must be absolute and clean", p))
	}
	return filepath.Join(root, p), nil
}

func fsErr(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return connect.NewError(connect.CodeNotFound, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

func fileInfo(p string, fi fs.FileInfo) *fsbv1.FileInfo {
	typ := fsbv1.FileType_FILE_TYPE_FILE
	switch {
	case fi.IsDir():
		typ = fsbv1.FileType_FILE_TYPE_DIRECTORY
	case fi.Mode()&fs.ModeSymlink != 0:
		typ = fsbv1.FileType_FILE_TYPE_SYMLINK
	}
	return &fsbv1.FileInfo{Path: p, Name: path.Base(p), Type: typ, Size: fi.Size(), Mode: uint32(fi.Mode().Perm()), ModifyTime: timestamppb.New(fi.ModTime())}
}

func (f *fsFake) Stat(_ context.Context, req *connect.Request[fsbv1.StatRequest]) (*connect.Response[fsbv1.StatResponse], error) {
	host, err := f.resolve(req.Msg.GetName(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	fi, err := os.Lstat(host)
	if err != nil {
		return nil, fsErr(err)
	}
	return connect.NewResponse(&fsbv1.StatResponse{Info: fileInfo(req.Msg.GetPath(), fi)}), nil
}

func (f *fsFake) MakeDir(_ context.Context, req *connect.Request[fsbv1.MakeDirRequest]) (*connect.Response[fsbv1.MakeDirResponse], error) {
	host, err := f.resolve(req.Msg.GetName(), req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(host); err == nil {
		if !fi.IsDir() {
			return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("%s exists and is not a directory", req.Msg.GetPath()))
		}
		return connect.NewResponse(&fsbv1.MakeDirResponse{}), nil
	}
	if err := os.MkdirAll(host, 0o755); err != nil {
		return nil, fsErr(err)
	}
	return connect.NewResponse(&fsbv1.MakeDirResponse{Created: true}), nil
}

func (f *fsFake) ReadFile(_ context.Context, req *connect.Request[fsbv1.ReadFileRequest], stream *connect.ServerStream[fsbv1.ReadFileResponse]) error {
	host, err := f.resolve(req.Msg.GetName(), req.Msg.GetPath())
	if err != nil {
		return err
	}
	fh, err := os.Open(host)
	if err != nil {
		return fsErr(err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return fsErr(err)
	}
	if err := stream.Send(&fsbv1.ReadFileResponse{Info: fileInfo(req.Msg.GetPath(), fi)}); err != nil {
		return err
	}
	buf := make([]byte, 7000) // an odd size, so chunks do not line up
	for {
		n, err := fh.Read(buf)
		if n > 0 {
			if err := stream.Send(&fsbv1.ReadFileResponse{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fsErr(err)
		}
	}
}

func (f *fsFake) WriteFile(_ context.Context, stream *connect.ClientStream[fsbv1.WriteFileRequest]) (*connect.Response[fsbv1.WriteFileResponse], error) {
	if !stream.Receive() {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("no first message"))
	}
	first := stream.Msg()
	host, err := f.resolve(first.GetName(), first.GetPath())
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(host), ".tmp-*")
	if err != nil {
		return nil, fsErr(err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	data := first.GetData()
	for {
		if _, err := tmp.Write(data); err != nil {
			return nil, fsErr(err)
		}
		if !stream.Receive() {
			break
		}
		data = stream.Msg().GetData()
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	if err := tmp.Chmod(fs.FileMode(first.GetMode())); err != nil {
		return nil, fsErr(err)
	}
	if err := os.Rename(tmp.Name(), host); err != nil {
		return nil, fsErr(err)
	}
	fi, _ := os.Stat(host)
	return connect.NewResponse(&fsbv1.WriteFileResponse{Info: fileInfo(first.GetPath(), fi)}), nil
}

// tar runs the host's tar for a sandbox's `tar cf - -C DIR .` or
// `tar xf - -C DIR`, with stdin as its input.
func (f *fsFake) tar(ctx context.Context, req *fsbv1.ExecRequest, stdin io.Reader, emit func(*fsbv1.ExecEvent) error) error {
	args := req.GetProcess().GetCommand()
	if _, err := f.resolve(req.GetName(), "/"); err != nil {
		return err
	}
	if err := emit(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Started{Started: &fsbv1.ProcessStarted{Pid: 42}}}); err != nil {
		return err
	}
	exit := func(code int32, stderr string) error {
		if stderr != "" {
			if err := emit(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Stderr{Stderr: []byte(stderr)}}); err != nil {
				return err
			}
		}
		return emit(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Exit{Exit: &fsbv1.ProcessExit{ExitCode: code}}})
	}
	switch {
	case req.GetName() == "notar":
		return exit(127, "sh: tar: not found\n")
	case len(args) < 5 || args[0] != "tar" || args[2] != "-" || args[3] != "-C",
		args[1] == "cf" && (len(args) != 6 || args[5] != "."), args[1] == "xf" && len(args) != 5:
		return exit(2, fmt.Sprintf("unexpected command %q\n", args))
	case req.GetName() == "evil" && args[1] == "cf":
		if err := emit(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Stdout{Stdout: f.evil}}); err != nil {
			return err
		}
		return exit(0, "")
	}
	dir, err := f.resolve(req.GetName(), args[4])
	if err != nil {
		return err
	}
	hostArgs := []string{args[1], "-", "-C", dir}
	if args[1] == "cf" {
		hostArgs = append(hostArgs, ".")
	}
	cmd := exec.CommandContext(ctx, "tar", hostArgs...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	code := int32(0)
	if err := cmd.Run(); err != nil {
		code = 2
	}
	if stdout.Len() > 0 {
		if err := emit(&fsbv1.ExecEvent{Event: &fsbv1.ExecEvent_Stdout{Stdout: stdout.Bytes()}}); err != nil {
			return err
		}
	}
	return exit(code, stderr.String())
}

func (f *fsFake) Exec(ctx context.Context, req *connect.Request[fsbv1.ExecRequest], stream *connect.ServerStream[fsbv1.ExecResponse]) error {
	return f.tar(ctx, req.Msg, nil, func(ev *fsbv1.ExecEvent) error { return stream.Send(&fsbv1.ExecResponse{Event: ev}) })
}

func (f *fsFake) ExecInteractive(ctx context.Context, stream *connect.BidiStream[fsbv1.ExecInteractiveRequest, fsbv1.ExecInteractiveResponse]) error {
	first, err := stream.Receive()
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		for {
			msg, err := stream.Receive()
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			if msg.GetCloseStdin() {
				pw.Close()
				return
			}
			if _, err := pw.Write(msg.GetStdin()); err != nil {
				return
			}
		}
	}()
	defer pr.Close()
	return f.tar(ctx, first.GetStart(), pr, func(ev *fsbv1.ExecEvent) error {
		return stream.Send(&fsbv1.ExecInteractiveResponse{Event: ev})
	})
}

// writeTree makes files under dir: "name" -> content, "name/" a
// directory, "name@" -> a symlink to content.
func writeTree(t *testing.T, dir string, tree map[string]string) {
	t.Helper()
	for name, content := range tree {
		p := filepath.Join(dir, strings.TrimRight(name, "/@"))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(name, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasSuffix(name, "@"):
			err = os.Symlink(content, p)
		default:
			err = os.WriteFile(p, []byte(content), 0o640)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func cpClient(t *testing.T, f *fsFake) (*Client, *syncBuffer) {
	t.Helper()
	c, _, errw := execClient(t, f, strings.NewReader(""))
	return c, errw
}

// TestCopyFile: a file goes in and comes back whole with its mode, into an
// existing directory under its own name or to the path given.
func TestCopyFile(t *testing.T) {
	f := newFSFake(t, "box")
	c, _ := cpClient(t, f)
	local := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 000 bytes: many chunks
	src := filepath.Join(local, "data.bin")
	if err := os.WriteFile(src, big, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(f.roots["box"], "work"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Copy(ctx, CopyOptions{Src: src, Dst: "box:/work"}); err != nil {
		t.Fatalf("copy in: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(f.roots["box"], "work/data.bin")); !bytes.Equal(got, big) {
		t.Fatalf("the sandbox holds %d bytes, want %d", len(got), len(big))
	}
	back := filepath.Join(local, "back.bin")
	if err := c.Copy(ctx, CopyOptions{Src: "box:/work/data.bin", Dst: back}); err != nil {
		t.Fatalf("copy out: %v", err)
	}
	got, err := os.ReadFile(back)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("copied back %d bytes (%v), want %d", len(got), err, len(big))
	}
	if fi, _ := os.Stat(back); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
	if err := c.Copy(ctx, CopyOptions{Src: "box:/work/data.bin", Dst: local + "/"}); err != nil {
		t.Fatalf("copy out into a directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(local, "data.bin")); err != nil {
		t.Error(err)
	}
	if entries, _ := os.ReadDir(local); len(entries) != 2 {
		t.Errorf("the local directory holds %d entries (a temporary file left?), want 2", len(entries))
	}
}

// TestCopyDirectory: a tree with a subdirectory and a symlink goes in as a
// tar archive and comes back the same.
func TestCopyDirectory(t *testing.T) {
	f := newFSFake(t, "box")
	c, _ := cpClient(t, f)
	local := t.TempDir()
	src := filepath.Join(local, "src")
	writeTree(t, src, map[string]string{"a.txt": "A", "sub/b.txt": "B", "sub/empty/": "", "link@": "sub/b.txt"})
	if err := os.Mkdir(filepath.Join(f.roots["box"], "work"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Copy(ctx, CopyOptions{Src: src, Dst: "box:/work"}); err != nil {
		t.Fatalf("copy in: %v", err)
	}
	if got, want := snapshot(t, filepath.Join(f.roots["box"], "work/src")), snapshot(t, src); !slices.Equal(got, want) {
		t.Fatalf("the sandbox holds %q, want %q", got, want)
	}
	back := filepath.Join(local, "back")
	if err := c.Copy(ctx, CopyOptions{Src: "box:/work/src", Dst: back}); err != nil {
		t.Fatalf("copy out: %v", err)
	}
	if got, want := snapshot(t, back), snapshot(t, src); !slices.Equal(got, want) {
		t.Fatalf("copied back %q, want %q", got, want)
	}
}

// TestCopyMaliciousArchive: an archive from the sandbox that reaches out
// of the destination writes nothing there, and cp fails saying so.
func TestCopyMaliciousArchive(t *testing.T) {
	f := newFSFake(t, "evil")
	top := t.TempDir()
	outside := filepath.Join(top, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	f.evil = archive(t, file("./ok", "fine"), file("../outside/pwned", "x"), file(outside+"/abs", "x"),
		symlinkTo("esc", "../outside"), file("esc/through", "x"), hardlinkTo("h", "../outside/x"))
	if err := os.Mkdir(filepath.Join(f.roots["evil"], "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, errw := cpClient(t, f)
	dest := filepath.Join(top, "dest")
	err := c.Copy(context.Background(), CopyOptions{Src: "evil:/d", Dst: dest})
	if err == nil || !strings.Contains(err.Error(), "skipped 4 entries") {
		t.Errorf("copy: %v, want a failure naming 4 skipped entries", err)
	}
	if got := snapshot(t, outside); !slices.Equal(got, []string{"./"}) {
		t.Errorf("written outside the destination: %q", got)
	}
	if got := snapshot(t, dest); !slices.Equal(got, []string{"./", "esc/", "esc/through: x", "ok: fine"}) {
		t.Errorf("destination holds %q", got)
	}
	if n := strings.Count(errw.String(), "warning: skipped"); n != 4 {
		t.Errorf("%d warnings, want 4:\n%s", n, errw.String())
	}
}

func TestCopyErrors(t *testing.T) {
	f := newFSFake(t, "box", "notar")
	for _, name := range []string{"box", "notar"} {
		if err := os.Mkdir(filepath.Join(f.roots[name], "d"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := cpClient(t, f)
	local := t.TempDir()
	tests := []struct {
		src, dst string
		usage    bool
		want     string
	}{
		{src: local, dst: local, usage: true, want: "name one side NAME:/PATH"},
		{src: "box:/d", dst: "box:/e", usage: true, want: "both in sandboxes"},
		{src: "box:d", dst: local, usage: true, want: "must be absolute"},
		{src: "box:/missing", dst: local, want: "/missing: no such file or directory in sandbox box"},
		{src: "ghost:/d", dst: local, want: "sandbox ghost not found in namespace default"},
		{src: "notar:/d", dst: filepath.Join(local, "x"), want: "sandbox notar has no tar in its PATH"},
		{src: local, dst: "notar:/d", want: "sandbox notar has no tar in its PATH"},
	}
	for _, tt := range tests {
		err := c.Copy(context.Background(), CopyOptions{Src: tt.src, Dst: tt.dst})
		if err == nil || !strings.Contains(err.Error(), tt.want) || IsUsage(err) != tt.usage {
			t.Errorf("cp %s %s: %v (usage %v), want %q (usage %v)", tt.src, tt.dst, err, IsUsage(err), tt.want, tt.usage)
		}
	}
}

// TestProgress: the line is drawn at most ten times a second and ends with
// the total.
func TestProgress(t *testing.T) {
	var buf syncBuffer
	p := startProgress(&buf, "box:/f", 2048)
	deadline := time.Now().Add(550 * time.Millisecond)
	for time.Now().Before(deadline) {
		p.add(1)
		time.Sleep(time.Millisecond)
	}
	p.add(2048 - p.n.Load())
	p.done()
	out := buf.String()
	if n := strings.Count(out, "\r"); n < 2 || n > 7 {
		t.Errorf("drawn %d times in 0.55s, want at most 10 a second:\n%q", n, out)
	}
	if !strings.HasSuffix(out, "\n") || !strings.Contains(out, "box:/f  2.0 KiB of 2.0 KiB (100%)") {
		t.Errorf("last line %q", out[strings.LastIndex(out, "\r"):])
	}
}

// A local file that fails to read midway cuts the upload: the sandbox's
// file keeps its old content instead of taking the part read (here none:
// /proc/self/mem is a regular file whose first read fails with EIO).
func TestCopyInReadErrorKeepsFile(t *testing.T) {
	f := newFSFake(t, "box")
	c, _ := cpClient(t, f)
	dst := filepath.Join(f.roots["box"], "f")
	if err := os.WriteFile(dst, []byte("old content"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := c.Copy(context.Background(), CopyOptions{Src: "/proc/self/mem", Dst: "box:/f"})
	if err == nil || !strings.Contains(err.Error(), "read /proc/self/mem") {
		t.Errorf("copy of an unreadable file: %v, want its read error", err)
	}
	if got, _ := os.ReadFile(dst); string(got) != "old content" {
		t.Errorf("the sandbox's file holds %q, want its old content", got)
	}
}
