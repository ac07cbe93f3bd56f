package e2b

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/ctxerr"
	fspb "github.com/fast-sandbox/fast-sandbox/pkg/gen/e2b/filesystem"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/e2b/filesystem/filesystemconnect"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// Limits of the filesystem service.
const (
	// maxListDepth is the deepest ListDir the FastPathService lists; a
	// deeper request is listed this deep.
	maxListDepth = 64
	// maxLinkHops bounds how many symlinks one entry's target is followed
	// through, and maxListLinks how many entries of one listing are
	// followed: past it a symlink is listed as a symlink, not as what it
	// points to.
	maxLinkHops  = 8
	maxListLinks = 32
)

// filesystemService serves envd's filesystem.Filesystem over the
// FastPathService. Every call acts for the request's user (UserFrom):
// relative paths resolve in that user's home, and what a call makes
// (MakeDir, the parents Move makes) is given to that user. The file
// operations themselves run as the sandbox's init, which is root in E2B's
// templates: envd runs them as the user, so a path the user may not
// write is refused there and succeeds here.
type filesystemService struct {
	api      API
	accounts *accountCache
	watchers *watchers
}

// NewFilesystemHandler returns the path and handler of envd's
// filesystem.Filesystem Connect service, for the router to mount: it
// reads the sandbox from the request's context (SandboxFrom).
func NewFilesystemHandler(api API, opts ...connect.HandlerOption) (string, http.Handler) {
	s := &filesystemService{api: api, accounts: newAccountCache(api), watchers: newWatchers()}
	return filesystemconnect.NewFilesystemHandler(s, opts...)
}

// fsCall is what every RPC starts from: the sandbox and the user.
type fsCall struct {
	sb   *Sandbox
	user fsUser
	acc  *sandboxAccounts
}

// begin returns the call of a request with headers h, or Unauthenticated
// when the router put no sandbox in ctx.
func (s *filesystemService) begin(ctx context.Context, h http.Header) (*fsCall, error) {
	sb := SandboxFrom(ctx)
	if sb == nil {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("no sandbox: the request did not come through the sandbox router"))
	}
	return s.beginAs(ctx, sb, UserFrom(h))
}

// beginAs is begin for a sandbox and a user name already known.
func (s *filesystemService) beginAs(ctx context.Context, sb *Sandbox, name string) (*fsCall, error) {
	u, acc, err := s.accounts.user(ctx, sb, name)
	if err != nil {
		return nil, err
	}
	return &fsCall{sb: sb, user: u, acc: acc}, nil
}

// resolve turns a request's path into the absolute, clean path the
// FastPathService takes: "~" and "~/x" are in the user's home, a relative
// path is too, and an empty one is the home itself (envd's rules).
func (c *fsCall) resolve(field, p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: holds a NUL byte, which no path can", field))
	}
	if rest, ok := strings.CutPrefix(p, "~"); ok {
		if rest != "" && rest[0] != '/' {
			return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s %q: cannot expand another user's home", field, p))
		}
		p = c.user.home + rest
	}
	if !path.IsAbs(p) {
		p = path.Join(c.user.home, p)
	}
	return path.Clean(p), nil
}

// stat describes p (lstat: a symlink itself).
func (s *filesystemService) stat(ctx context.Context, c *fsCall, p string) (*fsbv1.FileInfo, error) {
	r, err := s.api.Stat(ctx, connect.NewRequest(&fsbv1.StatRequest{Name: c.sb.ID, Namespace: c.sb.Namespace, Path: p}))
	if err != nil {
		return nil, err
	}
	return r.Msg.GetInfo(), nil
}

// follow follows the symlink info to what it points to, at most
// maxLinkHops links deep: it returns the target's absolute path and its
// info; a broken link (or one too deep) is its own path with a nil info,
// as envd says of a link it cannot resolve.
func (s *filesystemService) follow(ctx context.Context, c *fsCall, info *fsbv1.FileInfo) (string, *fsbv1.FileInfo, error) {
	cur := info
	for range maxLinkHops {
		t := cur.GetSymlinkTarget()
		if !path.IsAbs(t) {
			t = path.Join(path.Dir(cur.GetPath()), t)
		}
		t = path.Clean(t)
		next, err := s.stat(ctx, c, t)
		switch {
		case connect.CodeOf(err) == connect.CodeNotFound || connect.CodeOf(err) == connect.CodeFailedPrecondition:
			return info.GetPath(), nil, nil
		case err != nil:
			return "", nil, err
		case next.GetType() != fsbv1.FileType_FILE_TYPE_SYMLINK:
			return t, next, nil
		}
		cur = next
	}
	return info.GetPath(), nil, nil
}

// fsEntry describes info as envd does, a symlink as a symlink (entryOf
// follows it).
func fsEntry(acc *sandboxAccounts, info *fsbv1.FileInfo) *fspb.EntryInfo {
	e := &fspb.EntryInfo{
		Name:         info.GetName(),
		Type:         entryType(info.GetType()),
		Path:         info.GetPath(),
		Size:         info.GetSize(),
		Mode:         info.GetMode() & 0o777,
		Permissions:  entryPermissions(info.GetType(), info.GetMode()),
		Owner:        acc.owner(info.GetUid()),
		Group:        acc.group(info.GetGid()),
		ModifiedTime: info.GetModifyTime(),
	}
	if info.GetType() == fsbv1.FileType_FILE_TYPE_SYMLINK {
		t := info.GetSymlinkTarget()
		e.SymlinkTarget = &t
	}
	return e
}

// entryOf describes info as envd does: a symlink has the type and mode
// of what it points to (none when broken) and its target's absolute path.
func (s *filesystemService) entryOf(ctx context.Context, c *fsCall, info *fsbv1.FileInfo) (*fspb.EntryInfo, error) {
	e := fsEntry(c.acc, info)
	if info.GetType() != fsbv1.FileType_FILE_TYPE_SYMLINK {
		return e, nil
	}
	tp, target, err := s.follow(ctx, c, info)
	if err != nil {
		return nil, fsUpstream(err)
	}
	e.SymlinkTarget = &tp
	e.Type, e.Mode = fspb.FileType_FILE_TYPE_UNSPECIFIED, 0
	if target != nil {
		e.Type, e.Mode = entryType(target.GetType()), target.GetMode()&0o777
	}
	return e, nil
}

// entryType is envd's type of t. Devices, sockets and pipes have none: the
// SDK leaves such entries out of a listing, as with envd.
func entryType(t fsbv1.FileType) fspb.FileType {
	switch t {
	case fsbv1.FileType_FILE_TYPE_FILE:
		return fspb.FileType_FILE_TYPE_FILE
	case fsbv1.FileType_FILE_TYPE_DIRECTORY:
		return fspb.FileType_FILE_TYPE_DIRECTORY
	case fsbv1.FileType_FILE_TYPE_SYMLINK:
		return fspb.FileType_FILE_TYPE_SYMLINK
	}
	return fspb.FileType_FILE_TYPE_UNSPECIFIED
}

// entryPermissions is the permissions string envd sends: Go's fs.FileMode
// string of the type and mode ("-rw-r--r--", "drwxr-xr-x", "Lrwxrwxrwx").
func entryPermissions(t fsbv1.FileType, mode uint32) string {
	m := fs.FileMode(mode & 0o777)
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch t {
	case fsbv1.FileType_FILE_TYPE_DIRECTORY:
		m |= fs.ModeDir
	case fsbv1.FileType_FILE_TYPE_SYMLINK:
		m |= fs.ModeSymlink
	case fsbv1.FileType_FILE_TYPE_OTHER:
		m |= fs.ModeIrregular
	}
	return m.String()
}

// fsUpstream returns the FastPathService's error err as this service's:
// its code and message, without the headers and details of the
// controller's answer.
func fsUpstream(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return connect.NewError(ce.Code(), errors.New(ce.Message()))
	}
	if ce, ok := ctxerr.Of(err); ok {
		return ce
	}
	return connect.NewError(connect.CodeInternal, err)
}

// Stat implements filesystem.Filesystem.Stat: the path's entry, a
// symlink followed to tell its type. NotFound when it does not exist
// (the SDK's exists() reads that as false).
func (s *filesystemService) Stat(ctx context.Context, req *connect.Request[fspb.StatRequest]) (*connect.Response[fspb.StatResponse], error) {
	c, err := s.begin(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	p, err := c.resolve("path", req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	info, err := s.stat(ctx, c, p)
	if err != nil {
		return nil, fsUpstream(err)
	}
	e, err := s.entryOf(ctx, c, info)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fspb.StatResponse{Entry: e}), nil
}

// MakeDir implements filesystem.Filesystem.MakeDir: the directory and its
// missing parents, given to the user. A directory that exists already is
// AlreadyExists (the SDK's makeDir then returns false); any other file
// there is InvalidArgument.
func (s *filesystemService) MakeDir(ctx context.Context, req *connect.Request[fspb.MakeDirRequest]) (*connect.Response[fspb.MakeDirResponse], error) {
	c, err := s.begin(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	p, err := c.resolve("path", req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	made, err := s.makeDirs(ctx, c, p)
	if err != nil {
		return nil, err
	}
	if len(made) == 0 {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("directory already exists: %s", p))
	}
	if err := s.chown(ctx, c, made...); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fspb.MakeDirResponse{Entry: &fspb.EntryInfo{
		Name: path.Base(p), Type: fspb.FileType_FILE_TYPE_DIRECTORY, Path: p,
	}}), nil
}

// makeDirs makes the directory p and its missing parents and returns the
// directories it made, outermost first (none when p was a directory). It
// does not chown them.
func (s *filesystemService) makeDirs(ctx context.Context, c *fsCall, p string) ([]string, error) {
	// The directories that are missing, found before MakeDir makes them:
	// they are the ones to give to the user.
	var missing []string
	for d := p; ; d = path.Dir(d) {
		info, err := s.stat(ctx, c, d)
		if connect.CodeOf(err) == connect.CodeNotFound {
			missing = append([]string{d}, missing...)
			if d == "/" {
				break
			}
			continue
		}
		if err != nil {
			return nil, fsUpstream(err)
		}
		if info.GetType() == fsbv1.FileType_FILE_TYPE_SYMLINK {
			if _, target, err := s.follow(ctx, c, info); err != nil {
				return nil, fsUpstream(err)
			} else if target != nil {
				info = target
			}
		}
		if info.GetType() != fsbv1.FileType_FILE_TYPE_DIRECTORY {
			if d == p {
				return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path already exists but it is not a directory: %s", p))
			}
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("make %s: %s is not a directory", p, d))
		}
		break
	}
	if len(missing) == 0 {
		return nil, nil
	}
	r, err := s.api.MakeDir(ctx, connect.NewRequest(&fsbv1.MakeDirRequest{Name: c.sb.ID, Namespace: c.sb.Namespace, Path: p}))
	switch {
	case connect.CodeOf(err) == connect.CodeAlreadyExists:
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path already exists but it is not a directory: %s", p))
	case err != nil:
		return nil, fsUpstream(err)
	case !r.Msg.GetCreated():
		// Made meanwhile by someone else.
		return nil, nil
	}
	return missing, nil
}

// chown gives paths to the request's user, as envd makes them as that
// user; root's, and an unknown user's, stay as they are. The
// FastPathService has no chown: a `chown` runs in the sandbox as root.
func (s *filesystemService) chown(ctx context.Context, c *fsCall, paths ...string) error {
	return chownPaths(ctx, s.api, c.sb, c.user, paths...)
}

// chownBatch bounds the paths of one chown: a command has at most
// v1alpha1.MaxCommandEntries entries.
const chownBatch = 512

// chownPaths gives paths to u in sb with `chown uid:gid`, run as root, a
// batch at a time; root's, and an unknown user's, stay as they are.
func chownPaths(ctx context.Context, api API, sb *Sandbox, u fsUser, paths ...string) error {
	if !u.known || u.root() {
		return nil
	}
	for batch := range slices.Chunk(paths, chownBatch) {
		if err := chownBatchOf(ctx, api, sb, u, batch); err != nil {
			return err
		}
	}
	return nil
}

// chownBatchOf runs one chown.
func chownBatchOf(ctx context.Context, api API, sb *Sandbox, u fsUser, paths []string) error {
	what := fmt.Sprintf("give %s to %s", paths[0], u.name)
	if len(paths) > 1 {
		what = fmt.Sprintf("give %s and %d more to %s", paths[0], len(paths)-1, u.name)
	}
	cmd := append([]string{"chown", "-h", strconv.FormatUint(uint64(u.uid), 10) + ":" + strconv.FormatUint(uint64(u.gid), 10), "--"}, paths...)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := api.Exec(ctx, connect.NewRequest(&fsbv1.ExecRequest{Name: sb.ID, Namespace: sb.Namespace, Process: &fsbv1.ProcessSpec{Command: cmd, User: "0"}}))
	if err != nil {
		return connect.NewError(connect.CodeOf(err), fmt.Errorf("%s: %w", what, err))
	}
	defer st.Close()
	var stderr []byte
	for st.Receive() {
		ev := st.Msg().GetEvent()
		if len(stderr) < 1024 {
			stderr = append(stderr, ev.GetStderr()...)
		}
		if x := ev.GetExit(); x != nil {
			if x.GetExitCode() != 0 {
				return connect.NewError(connect.CodeInternal, fmt.Errorf("%s: chown exited %d: %s", what, x.GetExitCode(), strings.TrimSpace(string(stderr))))
			}
			return nil
		}
	}
	if err := st.Err(); err != nil {
		return connect.NewError(connect.CodeOf(err), fmt.Errorf("%s: %w", what, err))
	}
	return connect.NewError(connect.CodeInternal, fmt.Errorf("%s: chown's stream ended without its exit", what))
}

// Move implements filesystem.Filesystem.Move: a rename (a regular file
// is copied across devices); the destination's missing parents are made
// for the user first, and the answer is the destination's entry.
func (s *filesystemService) Move(ctx context.Context, req *connect.Request[fspb.MoveRequest]) (*connect.Response[fspb.MoveResponse], error) {
	c, err := s.begin(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	src, err := c.resolve("source", req.Msg.GetSource())
	if err != nil {
		return nil, err
	}
	dst, err := c.resolve("destination", req.Msg.GetDestination())
	if err != nil {
		return nil, err
	}
	made, err := s.makeDirs(ctx, c, path.Dir(dst))
	if err != nil {
		return nil, err
	}
	if err := s.chown(ctx, c, made...); err != nil {
		return nil, err
	}
	if _, err := s.api.Move(ctx, connect.NewRequest(&fsbv1.MoveRequest{Name: c.sb.ID, Namespace: c.sb.Namespace, Source: src, Destination: dst})); err != nil {
		return nil, fsUpstream(err)
	}
	info, err := s.stat(ctx, c, dst)
	if err != nil {
		return nil, fsUpstream(err)
	}
	e, err := s.entryOf(ctx, c, info)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fspb.MoveResponse{Entry: e}), nil
}

// ListDir implements filesystem.Filesystem.ListDir: the entries depth
// levels down (0 means 1; at most maxListDepth), never entering symlinked
// directories. A path that is a symlink to a directory lists that
// directory under the path asked for. NotFound when missing,
// InvalidArgument when not a directory.
func (s *filesystemService) ListDir(ctx context.Context, req *connect.Request[fspb.ListDirRequest]) (*connect.Response[fspb.ListDirResponse], error) {
	c, err := s.begin(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	p, err := c.resolve("path", req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	depth := min(max(req.Msg.GetDepth(), 1), maxListDepth)
	dir, err := s.dir(ctx, c, p)
	if err != nil {
		return nil, err
	}
	r, err := s.api.ListDir(ctx, connect.NewRequest(&fsbv1.ListDirRequest{Name: c.sb.ID, Namespace: c.sb.Namespace, Path: dir, Depth: int32(depth)}))
	if err != nil {
		return nil, fsUpstream(err)
	}
	entries := make([]*fspb.EntryInfo, 0, len(r.Msg.GetEntries()))
	links := 0
	for _, info := range r.Msg.GetEntries() {
		if dir != p {
			// Under the path asked for, as envd answers.
			info.Path = p + strings.TrimPrefix(info.GetPath(), dir)
		}
		var e *fspb.EntryInfo
		if info.GetType() == fsbv1.FileType_FILE_TYPE_SYMLINK && links < maxListLinks {
			links++
			if e, err = s.entryOf(ctx, c, info); err != nil {
				return nil, err
			}
		} else {
			e = fsEntry(c.acc, info)
		}
		entries = append(entries, e)
	}
	return connect.NewResponse(&fspb.ListDirResponse{Entries: entries}), nil
}

// dir returns the directory p is, following p when it is a symlink:
// NotFound when there is nothing, InvalidArgument when it is not a
// directory.
func (s *filesystemService) dir(ctx context.Context, c *fsCall, p string) (string, error) {
	info, err := s.stat(ctx, c, p)
	if err != nil {
		return "", fsUpstream(err)
	}
	dir := p
	if info.GetType() == fsbv1.FileType_FILE_TYPE_SYMLINK {
		tp, target, err := s.follow(ctx, c, info)
		if err != nil {
			return "", fsUpstream(err)
		}
		if target == nil {
			return "", connect.NewError(connect.CodeNotFound, fmt.Errorf("path not found: %s is a broken symlink", p))
		}
		dir, info = tp, target
	}
	if info.GetType() != fsbv1.FileType_FILE_TYPE_DIRECTORY {
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("path is not a directory: %s", p))
	}
	return dir, nil
}

// Remove implements filesystem.Filesystem.Remove: the file, or the
// directory with everything in it; a path that does not exist is removed
// already (envd's RemoveAll).
func (s *filesystemService) Remove(ctx context.Context, req *connect.Request[fspb.RemoveRequest]) (*connect.Response[fspb.RemoveResponse], error) {
	c, err := s.begin(ctx, req.Header())
	if err != nil {
		return nil, err
	}
	p, err := c.resolve("path", req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	_, err = s.api.Remove(ctx, connect.NewRequest(&fsbv1.RemoveRequest{Name: c.sb.ID, Namespace: c.sb.Namespace, Path: p, Recursive: true}))
	if connect.CodeOf(err) == connect.CodeNotFound {
		// The path, or the sandbox? Only a sandbox that answers has a
		// path that is gone already.
		_, err = s.stat(ctx, c, "/")
	}
	if err != nil {
		return nil, fsUpstream(err)
	}
	return connect.NewResponse(&fspb.RemoveResponse{}), nil
}
