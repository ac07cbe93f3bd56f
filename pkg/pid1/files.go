package pid1

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// serveFile answers a file request on f. Init does the work as its own
// user, so paths resolve in the sandbox's root and mounts.
func serveFile(f *os.File, req *initlink.Request) error {
	if err := checkPath(req.Path); err != nil {
		return err
	}
	switch req.Op {
	case initlink.OpReadFile:
		return readFile(f, req.Path)
	case initlink.OpWriteFile:
		return writeFile(f, req)
	}
	var resp initlink.Response
	var err error
	switch req.Op {
	case initlink.OpListDir:
		resp.Entries, err = listDir(req.Path, req.Depth)
	case initlink.OpStat:
		resp.File, err = stat(req.Path)
	case initlink.OpMkdir:
		resp.Created, err = mkdir(req.Path, req.Mode)
	case initlink.OpMove:
		if err = checkPath(req.Dest); err == nil {
			err = move(req.Path, req.Dest)
		}
	case initlink.OpRemove:
		err = remove(req.Path, req.Recursive)
	}
	if err != nil {
		return fileError(err)
	}
	b, err := json.Marshal(resp)
	if err != nil {
		return fmt.Errorf("encode the answer: %w", err)
	}
	// MaxEntries bounds a listing's count, not its bytes: long names may
	// pass one frame well below it, and a frame too large would only come
	// back as an internal error.
	if len(b) > initlink.MaxPayload {
		return errorf(initlink.CodeResourceExhausted, "list %s: its %d entries take %d bytes, more than the %d one answer holds; list a smaller depth or a subdirectory",
			req.Path, len(resp.Entries), len(b), initlink.MaxPayload)
	}
	return initlink.WriteFrame(f, initlink.FrameResponse, b)
}

// checkPath accepts absolute, clean paths only.
func checkPath(p string) error {
	if p == "" || !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.ContainsRune(p, 0) {
		return errorf(initlink.CodeInvalidArgument, "path %q: want an absolute, clean path", p)
	}
	return nil
}

// fileError turns err into an *initlink.Error with the code of its errno.
func fileError(err error) error {
	var le *initlink.Error
	if errors.As(err, &le) {
		return err
	}
	msg := err.Error()
	if errors.Is(err, unix.ENOSPC) {
		// The errno's own words already say it; the API promises them.
		msg = strings.Replace(msg, unix.ENOSPC.Error(), "no space left on device", 1)
	}
	return &initlink.Error{Code: codeOf(err), Message: msg}
}

func infoOf(path string, st *unix.Stat_t) *initlink.FileInfo {
	fi := &initlink.FileInfo{
		Path:        path,
		Name:        filepath.Base(path),
		Size:        st.Size,
		Mode:        st.Mode & 0o7777,
		ModUnixNano: time.Unix(st.Mtim.Unix()).UnixNano(),
		UID:         st.Uid,
		GID:         st.Gid,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		fi.Type = initlink.TypeFile
	case unix.S_IFDIR:
		fi.Type = initlink.TypeDir
	case unix.S_IFLNK:
		fi.Type = initlink.TypeSymlink
		fi.Target, _ = os.Readlink(path)
	default:
		fi.Type = initlink.TypeOther
	}
	return fi
}

func stat(path string) (*initlink.FileInfo, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return infoOf(path, &st), nil
}

// readFile sends the regular file at path: its FileInfo, then its bytes.
func readFile(f *os.File, path string) error {
	// O_NONBLOCK: opening a FIFO does not wait for a writer; it is refused
	// below like any file that is not regular.
	file, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return fileError(err)
	}
	defer file.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(file.Fd()), &st); err != nil {
		return fileError(&os.PathError{Op: "stat", Path: path, Err: err})
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return errorf(initlink.CodeFailedPrecondition, "read %s: not a regular file", path)
	}
	if err := initlink.WriteJSON(f, initlink.FrameResponse, initlink.Response{File: infoOf(path, &st)}); err != nil {
		return nil
	}
	buf := make([]byte, initlink.FileChunkSize)
	for {
		n, err := file.Read(buf)
		if n > 0 {
			if werr := initlink.WriteFrame(f, initlink.FrameData, buf[:n]); werr != nil {
				return nil // the agent went away
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fileError(err)
		}
	}
	_ = initlink.WriteFrame(f, initlink.FrameEnd, nil)
	return nil
}

var tempSeq atomic.Uint64

// writeFile writes the FrameData that follows on f into req.Path: into a
// temporary file beside it, renamed over it at FrameEnd, so that a reader
// sees the old content or the new, never a part.
func writeFile(f *os.File, req *initlink.Request) (err error) {
	mode := os.FileMode(req.Mode & 0o7777)
	if mode == 0 {
		mode = 0o644
	}
	dir := filepath.Dir(req.Path)
	if req.Parents {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fileError(err)
		}
	}
	if st, err := os.Lstat(req.Path); err == nil && st.IsDir() {
		return errorf(initlink.CodeFailedPrecondition, "write %s: is a directory", req.Path)
	}
	tmp := filepath.Join(dir, "."+filepath.Base(req.Path)+".fsb-"+strconv.Itoa(os.Getpid())+"-"+strconv.FormatUint(tempSeq.Add(1), 10))
	file, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fileError(err)
	}
	defer func() {
		if file != nil {
			_ = file.Close()
		}
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	buf := make([]byte, initlink.FileChunkSize)
	for done := false; !done; {
		t, b, rerr := initlink.ReadFrame(f, buf)
		if rerr != nil {
			return errorf(initlink.CodeInvalidArgument, "write %s: the data stream broke off: %v", req.Path, rerr)
		}
		switch t {
		case initlink.FrameData:
			if _, werr := file.Write(b); werr != nil {
				return fileError(fmt.Errorf("write %s: %w", req.Path, errnoOf(werr)))
			}
		case initlink.FrameEnd:
			done = true
		default:
			return errorf(initlink.CodeInvalidArgument, "write %s: unexpected frame type %d in the data", req.Path, t)
		}
	}
	// The mode asked for, whatever the umask.
	if err := file.Chmod(mode); err != nil {
		return fileError(err)
	}
	cerr := file.Close()
	file = nil
	if cerr != nil {
		return fileError(fmt.Errorf("write %s: %w", req.Path, errnoOf(cerr)))
	}
	if err := os.Rename(tmp, req.Path); err != nil {
		return fileError(err)
	}
	info, err := stat(req.Path)
	if err != nil {
		return fileError(err)
	}
	return initlink.WriteJSON(f, initlink.FrameResponse, initlink.Response{File: info})
}

// errnoOf keeps the errno of a write error and drops the temporary file's
// name, which means nothing to the caller.
func errnoOf(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// listDir lists path's entries, depth levels down (0 or 1: its own), never
// following symlinks, at most initlink.MaxEntries.
func listDir(path string, depth int) ([]initlink.FileInfo, error) {
	if depth < 1 {
		depth = 1
	}
	info, err := stat(path)
	if err != nil {
		return nil, err
	}
	if info.Type != initlink.TypeDir {
		return nil, errorf(initlink.CodeFailedPrecondition, "list %s: not a directory", path)
	}
	entries := []initlink.FileInfo{}
	var walk func(dir string, level int) error
	walk = func(dir string, level int) error {
		names, err := readNames(dir)
		if err != nil {
			if dir == path {
				return err
			}
			return nil // a subdirectory that cannot be read is listed, not entered
		}
		for _, name := range names {
			full := filepath.Join(dir, name)
			var st unix.Stat_t
			if unix.Lstat(full, &st) != nil {
				continue // gone meanwhile
			}
			if len(entries) == initlink.MaxEntries {
				return errorf(initlink.CodeResourceExhausted, "list %s: more than %d entries; list a smaller depth or a subdirectory", path, initlink.MaxEntries)
			}
			fi := infoOf(full, &st)
			entries = append(entries, *fi)
			if fi.Type == initlink.TypeDir && level < depth {
				if err := walk(full, level+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(path, 1); err != nil {
		return nil, err
	}
	return entries, nil
}

// readNames returns dir's entry names, sorted.
func readNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	entries, err := d.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	slices.Sort(names)
	return names, nil
}

// mkdir makes path and its missing parents; created is false when path is
// a directory already.
func mkdir(path string, mode uint32) (created bool, err error) {
	perm := os.FileMode(mode & 0o7777)
	if perm == 0 {
		perm = 0o755
	}
	if st, err := os.Lstat(path); err == nil {
		if st.IsDir() {
			return false, nil
		}
		return false, errorf(initlink.CodeAlreadyExists, "mkdir %s: exists and is not a directory", path)
	}
	if err := os.MkdirAll(path, perm); err != nil {
		return false, err
	}
	// The mode asked for, whatever the umask.
	return true, os.Chmod(path, perm)
}

// move renames src to dst; a regular file on another device is copied and
// the source removed.
func move(src, dst string) error {
	err := os.Rename(src, dst)
	if !errors.Is(err, unix.EXDEV) {
		return err
	}
	st, serr := os.Lstat(src)
	if serr != nil {
		return serr
	}
	if !st.Mode().IsRegular() {
		return errorf(initlink.CodeFailedPrecondition, "move %s to %s: another device, and only a regular file is moved across devices", src, dst)
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".fsb-"+strconv.Itoa(os.Getpid())+"-"+strconv.FormatUint(tempSeq.Add(1), 10))
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, st.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Chmod(st.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky))
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("move %s to %s: %w", src, dst, errnoOf(err))
	}
	return os.Remove(src)
}

// remove removes path; a directory with content only when recursive.
func remove(path string, recursive bool) error {
	if path == "/" {
		return errorf(initlink.CodeInvalidArgument, "remove /: refused")
	}
	if _, err := os.Lstat(path); err != nil {
		return err
	}
	if recursive {
		return os.RemoveAll(path)
	}
	return os.Remove(path)
}
