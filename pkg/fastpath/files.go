package fastpath

import (
	"context"
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"

	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
	"github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1/fsbv1connect"
	"github.com/fast-sandbox/fast-sandbox/pkg/httpserver"
)

// Limits of the files API.
const (
	// maxMode bounds a mode: the permission bits with setuid, setgid and
	// sticky, as chmod takes them.
	maxMode = 0o7777
	// maxListDepth bounds ListDir's depth.
	maxListDepth = 64
	// relayChunk bounds the data of one message (or input call) to an
	// agent. A client's message at the controller's request limit would
	// otherwise pass the agent's same limit: it names the sandbox by its
	// ID, which can be longer than the namespace and name.
	relayChunk = 1 << 20
)

// validateMode checks the permission bits a request asks for.
func validateMode(field string, mode uint32) error {
	if mode > maxMode {
		return invalid(fmt.Errorf("%s %#o: want permission bits, at most %#o", field, mode, maxMode))
	}
	return nil
}

// ReadFile implements FastPathService.ReadFile: the agent's stream (the
// FileInfo, then the bytes) relayed one message at a time.
func (s *Server) ReadFile(ctx context.Context, req *connect.Request[fsbv1.ReadFileRequest], stream *connect.ServerStream[fsbv1.ReadFileResponse]) error {
	msg := req.Msg
	return s.readFile(ctx, msg.GetNamespace(), msg.GetName(), msg.GetPath(), func(r *fsbv1.AgentServiceReadFileResponse) error {
		return stream.Send(&fsbv1.ReadFileResponse{Info: r.GetInfo(), Data: r.GetData()})
	})
}

// readFile streams the file p of the sandbox namespace/name to send, a
// message at a time. An error before send was first called is the answer
// to the request; after, the stream is cut.
func (s *Server) readFile(ctx context.Context, namespace, name, p string, send func(*fsbv1.AgentServiceReadFileResponse) error) error {
	if err := validatePath("path", p); err != nil {
		return err
	}
	t, err := s.resolve(ctx, namespace, name)
	if err != nil {
		return err
	}
	client, callCtx, cancel, err := s.reach(ctx, t)
	if err != nil {
		return err
	}
	defer cancel()
	in, err := client.ReadFile(callCtx, connect.NewRequest(&fsbv1.AgentServiceReadFileRequest{SandboxId: t.sandboxID, Path: p}))
	if err != nil {
		return s.agentError(ctx, callCtx, t, err)
	}
	defer in.Close()
	for in.Receive() {
		s.cfg.Metrics.moved(bytesFileRead, len(in.Msg().GetData()))
		if err := send(in.Msg()); err != nil {
			return err
		}
	}
	return s.agentError(ctx, callCtx, t, in.Err())
}

// WriteFile implements FastPathService.WriteFile: the client's stream
// relayed into the agent's, one message at a time.
func (s *Server) WriteFile(ctx context.Context, stream *connect.ClientStream[fsbv1.WriteFileRequest]) (*connect.Response[fsbv1.WriteFileResponse], error) {
	// A file of any size: each message must come in time, not the whole.
	httpserver.ReadIdle(ctx, httpserver.ReadTimeout)
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, err
		}
		return nil, invalid(errors.New("WriteFile: no message; the first names the sandbox, the path and the mode"))
	}
	first := stream.Msg()
	info, err := s.writeFile(ctx, writeTarget{
		namespace: first.GetNamespace(), name: first.GetName(), path: first.GetPath(), mode: first.GetMode(), parents: first.GetMakeParents(),
	}, first.GetData(), func() ([]byte, error) {
		if stream.Receive() {
			return stream.Msg().GetData(), nil
		}
		if err := stream.Err(); err != nil {
			return nil, err
		}
		return nil, io.EOF
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.WriteFileResponse{Info: info}), nil
}

// writeTarget is the file a write goes to.
type writeTarget struct {
	namespace, name, path string
	mode                  uint32
	parents               bool
}

// writeFile writes data and then every chunk next returns, until io.EOF,
// into the file w, through the agent's WriteFile stream: the agent
// replaces the file once every byte is there. When next fails (the client
// went away, or sent a bad message) the agent's stream is cut, not closed,
// so the agent writes nothing: a file is never replaced by a part of
// itself.
func (s *Server) writeFile(ctx context.Context, w writeTarget, data []byte, next func() ([]byte, error)) (*fsbv1.FileInfo, error) {
	if err := validatePath("path", w.path); err != nil {
		return nil, err
	}
	if err := validateMode("mode", w.mode); err != nil {
		return nil, err
	}
	t, err := s.resolve(ctx, w.namespace, w.name)
	if err != nil {
		return nil, err
	}
	client, callCtx, cancel, err := s.reach(ctx, t)
	if err != nil {
		return nil, err
	}
	defer cancel()
	streamCtx, cut := context.WithCancel(callCtx)
	defer cut()
	out := client.WriteFile(streamCtx)
	// send sends m with its data cut to relayChunk pieces.
	send := func(m *fsbv1.AgentServiceWriteFileRequest) error {
		data := m.GetData()
		for {
			n := min(len(data), relayChunk)
			m.Data = data[:n]
			if err := out.Send(m); err != nil {
				return err
			}
			s.cfg.Metrics.moved(bytesFileWrite, n)
			if data = data[n:]; len(data) == 0 {
				return nil
			}
			m = &fsbv1.AgentServiceWriteFileRequest{}
		}
	}
	// abort resets the stream: cancelled before its request is closed, it
	// is reset, while closing it would end it well (the agent would take
	// the part for the whole) however soon the cancel follows.
	abort := func() {
		cut()
		if conn, cerr := out.Conn(); cerr == nil {
			_ = conn.CloseResponse()
		}
	}
	msg := &fsbv1.AgentServiceWriteFileRequest{SandboxId: t.sandboxID, Path: w.path, Mode: w.mode, MakeParents: w.parents, Data: data}
	for {
		if err := send(msg); err != nil {
			if !errors.Is(err, io.EOF) {
				// Not the agent's answer but the end of the call's
				// context (the client went away): Send fails at once,
				// before the transport has reset the stream, and a close
				// now could still end it well.
				abort()
				return nil, s.agentError(ctx, callCtx, t, err)
			}
			// The agent ended the call: its answer says why.
			break
		}
		data, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			abort()
			return nil, err
		}
		msg = &fsbv1.AgentServiceWriteFileRequest{Data: data}
	}
	resp, err := out.CloseAndReceive()
	if err != nil {
		return nil, s.agentError(ctx, callCtx, t, err)
	}
	return resp.Msg.GetInfo(), nil
}

// ListDir implements FastPathService.ListDir.
func (s *Server) ListDir(ctx context.Context, req *connect.Request[fsbv1.ListDirRequest]) (*connect.Response[fsbv1.ListDirResponse], error) {
	msg := req.Msg
	if err := validatePath("path", msg.GetPath()); err != nil {
		return nil, err
	}
	if d := msg.GetDepth(); d < 0 || d > maxListDepth {
		return nil, invalid(fmt.Errorf("depth %d: want 1 (the directory's own entries) to %d", d, maxListDepth))
	}
	r, err := unary(ctx, s, msg.GetNamespace(), msg.GetName(), func(ctx context.Context, c fsbv1connect.AgentServiceClient, t *target) (*fsbv1.AgentServiceListDirResponse, error) {
		r, err := c.ListDir(ctx, connect.NewRequest(&fsbv1.AgentServiceListDirRequest{SandboxId: t.sandboxID, Path: msg.GetPath(), Depth: msg.GetDepth()}))
		return msgOf(r), err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.ListDirResponse{Entries: r.GetEntries()}), nil
}

// Stat implements FastPathService.Stat.
func (s *Server) Stat(ctx context.Context, req *connect.Request[fsbv1.StatRequest]) (*connect.Response[fsbv1.StatResponse], error) {
	msg := req.Msg
	if err := validatePath("path", msg.GetPath()); err != nil {
		return nil, err
	}
	r, err := unary(ctx, s, msg.GetNamespace(), msg.GetName(), func(ctx context.Context, c fsbv1connect.AgentServiceClient, t *target) (*fsbv1.AgentServiceStatResponse, error) {
		r, err := c.Stat(ctx, connect.NewRequest(&fsbv1.AgentServiceStatRequest{SandboxId: t.sandboxID, Path: msg.GetPath()}))
		return msgOf(r), err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.StatResponse{Info: r.GetInfo()}), nil
}

// MakeDir implements FastPathService.MakeDir.
func (s *Server) MakeDir(ctx context.Context, req *connect.Request[fsbv1.MakeDirRequest]) (*connect.Response[fsbv1.MakeDirResponse], error) {
	msg := req.Msg
	if err := validatePath("path", msg.GetPath()); err != nil {
		return nil, err
	}
	if err := validateMode("mode", msg.GetMode()); err != nil {
		return nil, err
	}
	r, err := unary(ctx, s, msg.GetNamespace(), msg.GetName(), func(ctx context.Context, c fsbv1connect.AgentServiceClient, t *target) (*fsbv1.AgentServiceMakeDirResponse, error) {
		r, err := c.MakeDir(ctx, connect.NewRequest(&fsbv1.AgentServiceMakeDirRequest{SandboxId: t.sandboxID, Path: msg.GetPath(), Mode: msg.GetMode()}))
		return msgOf(r), err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.MakeDirResponse{Created: r.GetCreated()}), nil
}

// Move implements FastPathService.Move.
func (s *Server) Move(ctx context.Context, req *connect.Request[fsbv1.MoveRequest]) (*connect.Response[fsbv1.MoveResponse], error) {
	msg := req.Msg
	if err := validatePath("source", msg.GetSource()); err != nil {
		return nil, err
	}
	if err := validatePath("destination", msg.GetDestination()); err != nil {
		return nil, err
	}
	_, err := unary(ctx, s, msg.GetNamespace(), msg.GetName(), func(ctx context.Context, c fsbv1connect.AgentServiceClient, t *target) (*fsbv1.AgentServiceMoveResponse, error) {
		r, err := c.Move(ctx, connect.NewRequest(&fsbv1.AgentServiceMoveRequest{SandboxId: t.sandboxID, Source: msg.GetSource(), Destination: msg.GetDestination()}))
		return msgOf(r), err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.MoveResponse{}), nil
}

// Remove implements FastPathService.Remove.
func (s *Server) Remove(ctx context.Context, req *connect.Request[fsbv1.RemoveRequest]) (*connect.Response[fsbv1.RemoveResponse], error) {
	msg := req.Msg
	if err := validatePath("path", msg.GetPath()); err != nil {
		return nil, err
	}
	if msg.GetPath() == "/" {
		return nil, invalid(errors.New("path \"/\": the sandbox's root cannot be removed"))
	}
	_, err := unary(ctx, s, msg.GetNamespace(), msg.GetName(), func(ctx context.Context, c fsbv1connect.AgentServiceClient, t *target) (*fsbv1.AgentServiceRemoveResponse, error) {
		r, err := c.Remove(ctx, connect.NewRequest(&fsbv1.AgentServiceRemoveRequest{SandboxId: t.sandboxID, Path: msg.GetPath(), Recursive: msg.GetRecursive()}))
		return msgOf(r), err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsbv1.RemoveResponse{}), nil
}
