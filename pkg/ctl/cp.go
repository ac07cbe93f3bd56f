package ctl

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"
	"k8s.io/apimachinery/pkg/util/validation"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// copyChunk is how much file data one WriteFile message carries: what one
// frame between the agent and init carries (initlink.FileChunkSize).
const copyChunk = 256 << 10

// CopyOptions are the arguments of `fsb ctl cp`: each of Src and Dst is a
// local path or NAME:/PATH in a sandbox, exactly one of them remote.
type CopyOptions struct {
	Src, Dst string
}

// location is one side of a copy.
type location struct {
	sandbox string // empty for a local path
	path    string
}

func (l location) String() string {
	if l.sandbox == "" {
		return l.path
	}
	return l.sandbox + ":" + l.path
}

// parseLocation reads NAME:/PATH as a path in sandbox NAME and anything
// else as a local path. A local path with a colon in its first element
// can be written ./a:b.
func parseLocation(s string) (location, error) {
	name, p, ok := strings.Cut(s, ":")
	if !ok || strings.Contains(name, "/") || len(validation.IsDNS1123Label(name)) > 0 {
		if s == "" {
			return location{}, usagef("cp: an empty path")
		}
		return location{path: s}, nil
	}
	if !strings.HasPrefix(p, "/") {
		return location{}, usagef("cp: %q: the path in sandbox %s must be absolute, such as %s:/tmp/file", s, name, name)
	}
	return location{sandbox: name, path: path.Clean(p)}, nil
}

// Copy copies a file or a directory into or out of a sandbox. A file goes
// through ReadFile or WriteFile; a directory as a tar archive made or
// unpacked by tar inside the sandbox. As cp -r does, a destination that is
// an existing directory receives the source under its own name; otherwise
// the destination is made. An archive from the
// sandbox is unpacked with extractTar: entries that would land outside the
// destination are skipped with a warning, and Copy then fails.
func (c *Client) Copy(ctx context.Context, o CopyOptions) error {
	src, err := parseLocation(o.Src)
	if err != nil {
		return err
	}
	dst, err := parseLocation(o.Dst)
	if err != nil {
		return err
	}
	switch {
	case src.sandbox != "" && dst.sandbox != "":
		return usagef("cp copies between this machine and one sandbox: %s and %s are both in sandboxes", src, dst)
	case src.sandbox == "" && dst.sandbox == "":
		return usagef("cp copies between this machine and a sandbox: name one side NAME:/PATH (%s and %s are both local)", src, dst)
	case src.sandbox != "":
		return c.copyOut(ctx, src, dst.path)
	}
	return c.copyIn(ctx, src.path, dst)
}

// stat asks the sandbox about p; nil without error when p does not exist.
func (c *Client) stat(ctx context.Context, l location) (*fsbv1.FileInfo, error) {
	resp, err := c.api.Stat(ctx, connect.NewRequest(&fsbv1.StatRequest{Name: l.sandbox, Namespace: c.namespace, Path: l.path}))
	if err != nil {
		if connect.CodeOf(err) == connect.CodeNotFound && connect.IsWireError(err) {
			// Either the sandbox or the path: execError tells.
			if e := c.execError(ctx, err, l.sandbox); strings.HasPrefix(e.Error(), "sandbox ") {
				return nil, e
			}
			return nil, nil
		}
		return nil, c.execError(ctx, err, l.sandbox)
	}
	return resp.Msg.GetInfo(), nil
}

// copyOut copies src, in a sandbox, to the local path dst.
func (c *Client) copyOut(ctx context.Context, src location, dst string) error {
	info, err := c.stat(ctx, src)
	if err != nil {
		return err
	}
	if info == nil {
		return fmt.Errorf("%s: no such file or directory in sandbox %s", src.path, src.sandbox)
	}
	target := dst
	local, err := os.Stat(dst)
	switch {
	case err == nil && local.IsDir():
		target = filepath.Join(dst, path.Base(src.path))
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if info.GetType() != fsbv1.FileType_FILE_TYPE_DIRECTORY {
		return c.readFile(ctx, src, target)
	}
	if fi, err := os.Stat(target); err == nil && !fi.IsDir() {
		return fmt.Errorf("cannot copy directory %s over file %s", src, target)
	}
	if err := os.Mkdir(target, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	p := c.newProgress("", 0)
	pr, pw := io.Pipe()
	extracted := make(chan error, 1)
	var st ExtractStats
	go func() {
		var err error
		st, err = extractTar(p.reader(pr), target, func(w string) { fmt.Fprintf(c.err, "fsb ctl: warning: %s\n", w) })
		if err == nil {
			// tar pads its archive past the end marker.
			_, err = io.Copy(io.Discard, pr)
		}
		// Whatever is left unread must not hold the exec up.
		pr.CloseWithError(errors.Join(err, errors.New("extraction ended")))
		extracted <- err
	}()
	runErr := c.runTar(ctx, src.sandbox, []string{"tar", "cf", "-", "-C", src.path, "."}, nil, pw)
	pw.CloseWithError(runErr)
	extractErr := <-extracted
	p.done()
	switch {
	case runErr != nil && (extractErr == nil || errors.Is(extractErr, runErr)):
		// The extraction only saw the exec's end.
		return runErr
	case extractErr != nil:
		return fmt.Errorf("unpack into %s: %w", target, extractErr)
	}
	if st.Skipped > 0 {
		return fmt.Errorf("copied %d files into %s, but skipped %d entries that would have been written outside it or are special files (see the warnings above)", st.Files, target, st.Skipped)
	}
	return nil
}

// readFile copies one file of a sandbox to target, through a temporary
// file beside it, so that target is whole or untouched.
func (c *Client) readFile(ctx context.Context, src location, target string) error {
	stream, err := c.api.ReadFile(ctx, connect.NewRequest(&fsbv1.ReadFileRequest{Name: src.sandbox, Namespace: c.namespace, Path: src.path}))
	if err != nil {
		return c.execError(ctx, err, src.sandbox)
	}
	defer stream.Close()
	tmp, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".fsb-cp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	var p *progress
	var mode fs.FileMode = 0o644
	for stream.Receive() {
		msg := stream.Msg()
		if info := msg.GetInfo(); info != nil {
			mode = fs.FileMode(info.GetMode()) & fs.ModePerm
			p = c.newProgress(src.String(), info.GetSize())
		}
		if _, err := tmp.Write(msg.GetData()); err != nil {
			return err
		}
		p.add(int64(len(msg.GetData())))
	}
	p.done()
	if err := stream.Err(); err != nil {
		return c.execError(ctx, err, src.sandbox)
	}
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), target)
}

// copyIn copies the local path src into a sandbox at dst.
func (c *Client) copyIn(ctx context.Context, src string, dst location) error {
	local, err := os.Stat(src)
	if err != nil {
		return err
	}
	info, err := c.stat(ctx, dst)
	if err != nil {
		return err
	}
	target := dst
	if info.GetType() == fsbv1.FileType_FILE_TYPE_DIRECTORY {
		target.path = path.Join(dst.path, filepath.Base(filepath.Clean(src)))
	}
	switch {
	case local.Mode().IsRegular():
		return c.writeFile(ctx, src, local, target)
	case !local.IsDir():
		return fmt.Errorf("%s is neither a file nor a directory", src)
	}
	if _, err := c.api.MakeDir(ctx, connect.NewRequest(&fsbv1.MakeDirRequest{Name: target.sandbox, Namespace: c.namespace, Path: target.path})); err != nil {
		if connect.CodeOf(err) == connect.CodeAlreadyExists {
			return fmt.Errorf("cannot copy directory %s over file %s", src, target)
		}
		return c.execError(ctx, err, target.sandbox)
	}
	p := c.newProgress("", 0)
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeTar(src, p.writer(pw), func(w string) { fmt.Fprintf(c.err, "fsb ctl: warning: %s\n", w) }))
	}()
	err = c.runTar(ctx, target.sandbox, []string{"tar", "xf", "-", "-C", target.path}, pr, io.Discard)
	// The archive's writer ends once its reader is gone.
	pr.CloseWithError(errors.New("the copy ended"))
	p.done()
	return err
}

// writeFile streams the local file src into the sandbox at target.
func (c *Client) writeFile(ctx context.Context, src string, fi fs.FileInfo, target location) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	// A read that fails cuts the stream (cancel, then CloseResponse), never
	// closes it: a stream closed well ends a write, and the part sent
	// would replace the file.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream := c.stream.WriteFile(ctx)
	cut := func() {
		cancel()
		if conn, err := stream.Conn(); err == nil {
			_ = conn.CloseResponse()
		}
	}
	p := c.newProgress(target.String(), fi.Size())
	first := &fsbv1.WriteFileRequest{Name: target.sandbox, Namespace: c.namespace, Path: target.path, Mode: uint32(fi.Mode().Perm())}
	buf := make([]byte, copyChunk)
	for sent := false; ; sent = true {
		n, rerr := io.ReadFull(f, buf)
		msg := &fsbv1.WriteFileRequest{Data: buf[:n]}
		if !sent {
			first.Data = buf[:n]
			msg = first
		}
		if n > 0 || !sent {
			if err := stream.Send(msg); err != nil {
				if !errors.Is(err, io.EOF) {
					// The context ended (Ctrl-C): Send fails before the
					// transport resets the stream, and a close now
					// could still end it well.
					cut()
					return c.execError(ctx, err, target.sandbox)
				}
				// The server ended the stream: CloseAndReceive says why.
				break
			}
			p.add(int64(n))
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			cut()
			return fmt.Errorf("read %s: %w", src, rerr)
		}
	}
	_, err = stream.CloseAndReceive()
	p.done()
	if err != nil {
		return c.execError(ctx, err, target.sandbox)
	}
	return nil
}

// maxTarStderr bounds what is kept of tar's complaints.
const maxTarStderr = 16 << 10

// runTar runs a tar command in a sandbox: stdin, when set, is its input;
// its output goes to stdout. A non-zero exit is an error quoting tar's
// stderr; a missing tar says so.
func (c *Client) runTar(ctx context.Context, sandbox string, cmd []string, stdin io.Reader, stdout io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := &fsbv1.ExecRequest{Name: sandbox, Namespace: c.namespace, Process: &fsbv1.ProcessSpec{Command: cmd, Stdin: stdin != nil}}
	var conn procConn
	var err error
	if stdin != nil {
		conn, err = c.startInteractive(ctx, req)
	} else {
		conn, err = c.startExec(ctx, req)
	}
	if err != nil {
		return c.tarError(ctx, err, sandbox)
	}
	defer conn.Close()
	var stderr bytes.Buffer
	inputDone := make(chan error, 1)
	for {
		ev, err := conn.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("the controller ended the stream of tar before it exited")
			}
			return c.tarError(ctx, err, sandbox)
		}
		switch e := ev.GetEvent().(type) {
		case *fsbv1.ExecEvent_Started:
			if stdin != nil {
				go func() { inputDone <- copyInput(conn, stdin) }()
			}
		case *fsbv1.ExecEvent_Stdout:
			if _, err := stdout.Write(e.Stdout); err != nil {
				// The other side stopped reading: stop tar too, since
				// leaving would let it run on.
				_ = conn.Signal("KILL")
				return err
			}
		case *fsbv1.ExecEvent_Stderr:
			if stderr.Len() < maxTarStderr {
				stderr.Write(e.Stderr[:min(len(e.Stderr), maxTarStderr-stderr.Len())])
			}
		case *fsbv1.ExecEvent_Exit:
			code := e.Exit.GetExitCode()
			msg := strings.TrimSpace(stderr.String())
			switch {
			case code == 0:
				return nil
			case code == 127 || code == 126:
				return noTar(sandbox, msg)
			case msg == "":
				msg = fmt.Sprintf("exit status %d", code)
			}
			select {
			case err := <-inputDone:
				if err != nil {
					msg += "; sending the archive: " + err.Error()
				}
			default:
			}
			return fmt.Errorf("tar in sandbox %s failed: %s", sandbox, msg)
		}
	}
}

func (c *Client) tarError(ctx context.Context, err error, sandbox string) error {
	err = c.execError(ctx, err, sandbox)
	if msg := err.Error(); strings.Contains(msg, "tar") && (strings.Contains(msg, "not found") || strings.Contains(msg, "no such file")) {
		return noTar(sandbox, msg)
	}
	return err
}

func noTar(sandbox, msg string) error {
	return fmt.Errorf("sandbox %s has no tar in its PATH (%s): a directory is copied as a tar archive, so its image needs tar (busybox has it); single files copy without it",
		sandbox, msg)
}

// writeTar writes the directory dir as a tar archive to w: directories,
// regular files and symlinks, named relative to dir, owned by root (tar in
// the sandbox runs as its init's user). Anything else is skipped with a
// warning.
func writeTar(dir string, w io.Writer, warn func(string)) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		case !fi.Mode().IsRegular() && !fi.IsDir():
			warn(fmt.Sprintf("skipped %s: a special file is not copied", p))
			return nil
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
