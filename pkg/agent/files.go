package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// checkPath holds a path inside a sandbox to the contract: absolute, clean,
// without NUL.
func checkPath(field, p string) error {
	if p == "" || !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.ContainsRune(p, 0) {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s %q: want an absolute, clean path (such as /tmp/a.txt)", field, p))
	}
	return nil
}

// checkMode holds permission bits to what chmod takes.
func checkMode(mode uint32) error {
	if mode&^0o7777 != 0 {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("mode %#o: want permission bits (at most 07777)", mode))
	}
	return nil
}

func toFileInfo(f *initlink.FileInfo) *fsbv1.FileInfo {
	if f == nil {
		return nil
	}
	out := &fsbv1.FileInfo{Path: f.Path, Name: f.Name, Size: f.Size, Mode: f.Mode, SymlinkTarget: f.Target, Uid: f.UID, Gid: f.GID}
	switch f.Type {
	case initlink.TypeFile:
		out.Type = fsbv1.FileType_FILE_TYPE_FILE
	case initlink.TypeDir:
		out.Type = fsbv1.FileType_FILE_TYPE_DIRECTORY
	case initlink.TypeSymlink:
		out.Type = fsbv1.FileType_FILE_TYPE_SYMLINK
	default:
		out.Type = fsbv1.FileType_FILE_TYPE_OTHER
	}
	if f.ModUnixNano != 0 {
		out.ModifyTime = timestamppb.New(time.Unix(0, f.ModUnixNano))
	}
	return out
}

// ReadFile implements AgentService.ReadFile.
func (a *Agent) ReadFile(ctx context.Context, req *connect.Request[fsbv1.AgentServiceReadFileRequest], stream *connect.ServerStream[fsbv1.AgentServiceReadFileResponse]) error {
	if err := checkPath("path", req.Msg.GetPath()); err != nil {
		return err
	}
	l, err := a.linkOf(req.Msg.GetSandboxId())
	if err != nil {
		return err
	}
	s, err := l.Open(ctx, initlink.Request{Op: initlink.OpReadFile, Path: req.Msg.GetPath()})
	if err != nil {
		return linkError(err)
	}
	defer s.Close()
	var resp initlink.Response
	if err := s.RecvJSON(initlink.FrameResponse, &resp); err != nil {
		return linkError(err)
	}
	if err := stream.Send(&fsbv1.AgentServiceReadFileResponse{Info: toFileInfo(resp.File)}); err != nil {
		return err
	}
	for {
		t, p, err := s.Recv(initlink.AnswerTimeout)
		if err != nil {
			return linkError(err)
		}
		switch t {
		case initlink.FrameData:
			a.metrics.bytes.WithLabelValues("file_read").Add(float64(len(p)))
			if err := stream.Send(&fsbv1.AgentServiceReadFileResponse{Data: p}); err != nil {
				return err
			}
		case initlink.FrameEnd:
			return nil
		default:
			return linkError(fmt.Errorf("%w: a frame of type %d in a file's data", initlink.ErrProtocol, t))
		}
	}
}

// WriteFile implements AgentService.WriteFile: the first message names the
// file; its data and every later message's go to init in frames of at most
// initlink.ChunkSize, then FrameEnd, then init's answer.
func (a *Agent) WriteFile(ctx context.Context, stream *connect.ClientStream[fsbv1.AgentServiceWriteFileRequest]) (*connect.Response[fsbv1.AgentServiceWriteFileResponse], error) {
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, err
		}
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("no message: the first one names the file"))
	}
	// A file of any size may take longer than the server's bound on a
	// whole request body: only each read is bounded from here on.
	httpserver.ReadIdle(ctx, httpserver.ReadTimeout)
	first := stream.Msg()
	if err := checkPath("path", first.GetPath()); err != nil {
		return nil, err
	}
	if err := checkMode(first.GetMode()); err != nil {
		return nil, err
	}
	l, err := a.linkOf(first.GetSandboxId())
	if err != nil {
		return nil, err
	}
	s, err := l.Open(ctx, initlink.Request{Op: initlink.OpWriteFile, Path: first.GetPath(), Mode: first.GetMode(), Parents: first.GetMakeParents()})
	if err != nil {
		return nil, linkError(err)
	}
	defer s.Close()
	// A write init refused (a full disk) is followed by init's FrameError,
	// which says why: the broken write does not.
	failed := func(err error) error {
		if _, _, rerr := s.Recv(time.Second); rerr != nil {
			var ie *initlink.Error
			if errors.As(rerr, &ie) {
				return linkError(rerr)
			}
		}
		return linkError(err)
	}
	data := first.GetData()
	for {
		for len(data) > 0 {
			n := min(len(data), initlink.FileChunkSize)
			if err := s.Send(initlink.FrameData, data[:n]); err != nil {
				return nil, failed(err)
			}
			a.metrics.bytes.WithLabelValues("file_write").Add(float64(n))
			data = data[n:]
		}
		if !stream.Receive() {
			break
		}
		data = stream.Msg().GetData()
	}
	if err := stream.Err(); err != nil && !errors.Is(err, io.EOF) {
		// The client went away mid-file: init drops what it wrote when the
		// connection ends without FrameEnd.
		return nil, err
	}
	if err := s.Send(initlink.FrameEnd, nil); err != nil {
		return nil, failed(err)
	}
	var resp initlink.Response
	if err := s.RecvJSON(initlink.FrameResponse, &resp); err != nil {
		return nil, linkError(err)
	}
	return connect.NewResponse(&fsbv1.AgentServiceWriteFileResponse{Info: toFileInfo(resp.File)}), nil
}

// ListDir implements AgentService.ListDir.
func (a *Agent) ListDir(ctx context.Context, req *connect.Request[fsbv1.AgentServiceListDirRequest]) (*connect.Response[fsbv1.AgentServiceListDirResponse], error) {
	if err := checkPath("path", req.Msg.GetPath()); err != nil {
		return nil, err
	}
	depth := req.Msg.GetDepth()
	if depth < 0 || depth > maxDepth {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("depth %d: want 0 to %d", depth, maxDepth))
	}
	resp, err := a.call(ctx, req.Msg.GetSandboxId(), initlink.Request{Op: initlink.OpListDir, Path: req.Msg.GetPath(), Depth: int(max(depth, 1))})
	if err != nil {
		return nil, err
	}
	if len(resp.Entries) > initlink.MaxEntries {
		return nil, linkError(fmt.Errorf("%w: %d entries, at most %d", initlink.ErrProtocol, len(resp.Entries), initlink.MaxEntries))
	}
	out := &fsbv1.AgentServiceListDirResponse{Entries: make([]*fsbv1.FileInfo, 0, len(resp.Entries))}
	for i := range resp.Entries {
		out.Entries = append(out.Entries, toFileInfo(&resp.Entries[i]))
	}
	return connect.NewResponse(out), nil
}

// maxDepth bounds how deep ListDir goes.
const maxDepth = 64

// Stat implements AgentService.Stat.
func (a *Agent) Stat(ctx context.Context, req *connect.Request[fsbv1.AgentServiceStatRequest]) (*connect.Response[fsbv1.AgentServiceStatResponse], error) {
	if err := checkPath("path", req.Msg.GetPath()); err != nil {
		return nil, err
	}
	resp, err := a.call(ctx, req.Msg.GetSandboxId(), initlink.Request{Op: initlink.OpStat, Path: req.Msg.GetPath()})
	if err != nil {
		return nil, err
	}
	if resp.File == nil {
		return nil, linkError(fmt.Errorf("%w: a stat answered without a file", initlink.ErrProtocol))
	}
	return connect.NewResponse(&fsbv1.AgentServiceStatResponse{Info: toFileInfo(resp.File)}), nil
}

// MakeDir implements AgentService.MakeDir.
func (a *Agent) MakeDir(ctx context.Context, req *connect.Request[fsbv1.AgentServiceMakeDirRequest]) (*connect.Response[fsbv1.AgentServiceMakeDirResponse], error) {
	if err := checkPath("path", req.Msg.GetPath()); err != nil {
		return nil, err
	}
	if err := checkMode(req.Msg.GetMode()); err != nil {
		return nil, err
	}
	resp, err := a.call(ctx, req.Msg.GetSandboxId(), initlink.Request{Op: initlink.OpMkdir, Path: req.Msg.GetPath(), Mode: req.Msg.GetMode(), Parents: true})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.AgentServiceMakeDirResponse{Created: resp.Created}), nil
}

// Move implements AgentService.Move.
func (a *Agent) Move(ctx context.Context, req *connect.Request[fsbv1.AgentServiceMoveRequest]) (*connect.Response[fsbv1.AgentServiceMoveResponse], error) {
	if err := checkPath("source", req.Msg.GetSource()); err != nil {
		return nil, err
	}
	if err := checkPath("destination", req.Msg.GetDestination()); err != nil {
		return nil, err
	}
	if _, err := a.call(ctx, req.Msg.GetSandboxId(), initlink.Request{Op: initlink.OpMove, Path: req.Msg.GetSource(), Dest: req.Msg.GetDestination()}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.AgentServiceMoveResponse{}), nil
}

// Remove implements AgentService.Remove.
func (a *Agent) Remove(ctx context.Context, req *connect.Request[fsbv1.AgentServiceRemoveRequest]) (*connect.Response[fsbv1.AgentServiceRemoveResponse], error) {
	if err := checkPath("path", req.Msg.GetPath()); err != nil {
		return nil, err
	}
	if _, err := a.call(ctx, req.Msg.GetSandboxId(), initlink.Request{Op: initlink.OpRemove, Path: req.Msg.GetPath(), Recursive: req.Msg.GetRecursive()}); err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.AgentServiceRemoveResponse{}), nil
}
