// Package initlink is the channel between an agent and the fsb init (PID 1)
// of each of its sandboxes, through which init starts processes and does
// file work inside the sandbox.
//
// The agent listens; init dials. For every sandbox the agent makes a host
// directory holding one listening unix socket (SocketName), bind-mounted
// read-only at MountPath inside the sandbox, and gives init a random token
// in its environment (TokenEnv). Init removes the token from the
// environment of every process it starts and makes itself non-dumpable, so
// that no other process in the sandbox can read it from /proc/1; the
// directory and socket belong to init's user with mode 0700/0600, so that
// other users inside cannot even connect. The agent never connects to
// anything inside the sandbox, so nothing there can stand in for init.
//
// Init keeps IdleConns connections dialed and idle. Each carries exactly
// one request: the agent takes an idle connection, writes a FrameRequest,
// and reads the answer; init dials a replacement as soon as a request
// arrives. A connection is closed when its request is done. A stream (a
// process's output, a file's bytes) therefore has a connection of its own,
// and a slow reader holds back only its own writer: the kernel's socket
// buffer is the back-pressure.
//
// Every frame is a 4-byte big-endian length (of what follows), a 1-byte
// type and a payload of at most MaxPayload bytes. Control payloads are JSON;
// output, input and file data are raw bytes. Whatever init sends is
// untrusted input to the agent: frames are bounded, and the agent bounds
// the time it waits for each answer.
package initlink

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Where things are, inside the sandbox and on the wire.
const (
	// MountPath is where the sandbox's link directory is bind-mounted,
	// read-only, inside the sandbox.
	MountPath = "/.fsb/link"
	// ReadyName is the process name (/proc/<pid>/comm) fsb init takes once
	// it has subscribed to every signal: a stop waits for it before its
	// SIGTERM. Before that the signal would be lost (a PID 1 without a
	// handler) or end init itself (its Go runtime's default, exit 2).
	ReadyName = "fsb-init"
	// SocketName is the agent's listening socket in the link directory.
	SocketName = "s"
	// TokenEnv carries the sandbox's token to init, which removes it from
	// the environment of every process it starts.
	TokenEnv = "FSB_LINK_TOKEN"
	// IdleConns is how many idle connections init keeps dialed.
	IdleConns = 2
	// MaxConns bounds the connections one sandbox's init holds (idle and
	// busy) and the agent accepts from it.
	MaxConns = 64
	// MaxPayload bounds one frame's payload.
	MaxPayload = 1 << 20
	// ChunkSize is the most output, input or file data one frame carries.
	ChunkSize = 32 << 10
	// FileChunkSize is the most file data one frame carries: larger than
	// ChunkSize, since a file's transfer pays a cost per message on every
	// hop (init, agent, controller, client) and wants few of them, where a
	// process's output wants each piece sent as soon as it is there.
	FileChunkSize = 256 << 10
	// MaxEntries bounds the entries of one ListDir answer.
	MaxEntries = 10000
	// MaxProcesses bounds the processes one ListProcesses answer names
	// (init keeps at most this many records of exec'd processes).
	MaxProcesses = 1024
)

// FrameType says what a frame's payload is.
type FrameType byte

// The frame types. "agent→init" frames are sent by the agent, "init→agent"
// ones by init.
const (
	// FrameHello (init→agent, JSON Hello) opens every connection.
	FrameHello FrameType = iota + 1
	// FrameRequest (agent→init, JSON Request) is the one request of a
	// connection.
	FrameRequest
	// FrameResponse (init→agent, JSON Response) answers a unary request,
	// or opens a file stream (read_file) or closes one (write_file).
	FrameResponse
	// FrameError (init→agent, JSON Error) ends any request that failed,
	// at any point of its stream.
	FrameError
	// FrameStarted (init→agent, JSON Started) opens a process stream
	// (exec, attach).
	FrameStarted
	// FrameStdout and FrameStderr (init→agent) carry a process's output;
	// a PTY's output comes as FrameStdout.
	FrameStdout
	FrameStderr
	// FrameExit (init→agent, JSON Exit) ends a process stream.
	FrameExit
	// FrameStdin (agent→init) writes to the process's stdin;
	// FrameCloseStdin (agent→init, empty) closes it.
	FrameStdin
	FrameCloseStdin
	// FrameData carries file bytes: init→agent for read_file,
	// agent→init for write_file.
	FrameData
	// FrameEnd (empty) ends file data: init→agent after the last
	// read_file FrameData, agent→init after the last write_file one.
	FrameEnd
)

// Request operations.
const (
	// OpExec starts Request.Process; the answer is a process stream:
	// FrameStarted, output, FrameExit (or FrameError).
	OpExec = "exec"
	// OpAttach attaches to process Request.PID: FrameStarted, the output
	// kept while detached, new output, FrameExit. A newer attach takes
	// the process over from an older one, whose stream ends with
	// FrameError code CodeDetached.
	OpAttach = "attach"
	// OpInput writes Request.Data to the process's stdin; OpCloseInput
	// closes it; OpSignal sends Request.Signal; OpResize sets the PTY's
	// size to Request.Rows x Request.Cols. Each answers FrameResponse.
	OpInput      = "input"
	OpCloseInput = "close_input"
	OpSignal     = "signal"
	OpResize     = "resize"
	// OpList answers Response.Processes.
	OpList = "list"
	// OpReadFile answers Response.File, then FrameData..., FrameEnd.
	OpReadFile = "read_file"
	// OpWriteFile reads FrameData... FrameEnd from the agent, writes
	// Request.Path atomically (a temporary file renamed), and answers
	// Response.File.
	OpWriteFile = "write_file"
	// OpListDir answers Response.Entries (Request.Depth levels, at most
	// MaxEntries); OpStat answers Response.File; OpMkdir makes Request.Path
	// with its parents and answers Response.Created; OpMove renames
	// Request.Path to Request.Dest; OpRemove removes Request.Path
	// (Request.Recursive for a directory with content).
	OpListDir = "list_dir"
	OpStat    = "stat"
	OpMkdir   = "mkdir"
	OpMove    = "move"
	OpRemove  = "remove"
	// OpStartMain starts Request.Process as the sandbox's main process in
	// an init started warm (`init --warm`), with init's stdout and stderr
	// (the log driver) and /dev/null as stdin, and answers Response.PID.
	// It is accepted once: a repeat answers the main process's PID with
	// Response.AlreadyStarted, so that a claim retried after an agent
	// crash never starts a second main process.
	OpStartMain = "start_main"
)

// Error codes init sends in Error.Code; the agent maps them to API codes.
const (
	CodeNotFound           = "not_found"
	CodeInvalidArgument    = "invalid_argument"
	CodeAlreadyExists      = "already_exists"
	CodePermissionDenied   = "permission_denied"
	CodeResourceExhausted  = "resource_exhausted"
	CodeFailedPrecondition = "failed_precondition"
	CodeInternal           = "internal"
	// CodeSandboxExited: the sandbox's main process exited, and init
	// with it; every process it started was killed.
	CodeSandboxExited = "sandbox_exited"
	// CodeDetached: a newer attach took the process over.
	CodeDetached = "detached"
)

// Hello opens every connection init dials.
type Hello struct {
	Token string `json:"token"`
}

// Request is the one request a connection carries.
type Request struct {
	Op      string   `json:"op"`
	Process *Process `json:"process,omitempty"`
	PID     int      `json:"pid,omitempty"`
	// Data is OpInput's input.
	Data   []byte `json:"data,omitempty"`
	Signal int    `json:"signal,omitempty"`
	Rows   uint16 `json:"rows,omitempty"`
	Cols   uint16 `json:"cols,omitempty"`
	// Path is what a file operation acts on; Dest is OpMove's target.
	Path string `json:"path,omitempty"`
	Dest string `json:"dest,omitempty"`
	// Mode is the permission bits of a new file or directory; 0 means
	// 0644 for a file, 0755 for a directory.
	Mode      uint32 `json:"mode,omitempty"`
	Parents   bool   `json:"parents,omitempty"`
	Depth     int    `json:"depth,omitempty"`
	Recursive bool   `json:"recursive,omitempty"`
}

// Process is a process to start.
type Process struct {
	Args []string `json:"args"`
	// Env entries ("KEY=value") are added to, and override, the
	// sandbox's own environment.
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	User string   `json:"user,omitempty"`
	PTY  bool     `json:"pty,omitempty"`
	Rows uint16   `json:"rows,omitempty"`
	Cols uint16   `json:"cols,omitempty"`
	// Stdin keeps the process's stdin open for input; otherwise it
	// reads /dev/null.
	Stdin         bool  `json:"stdin,omitempty"`
	TimeoutMillis int64 `json:"timeoutMillis,omitempty"`
	// Tag is a name the caller gives the process (CheckTag), kept with
	// its record and listed.
	Tag string `json:"tag,omitempty"`
}

// Response answers a request.
type Response struct {
	Processes []ProcessInfo `json:"processes,omitempty"`
	File      *FileInfo     `json:"file,omitempty"`
	Entries   []FileInfo    `json:"entries,omitempty"`
	Created   bool          `json:"created,omitempty"`
	// PID and AlreadyStarted answer OpStartMain.
	PID            int  `json:"pid,omitempty"`
	AlreadyStarted bool `json:"alreadyStarted,omitempty"`
}

// Error says why a request failed.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Started opens a process stream.
type Started struct {
	PID int `json:"pid"`
}

// Exit ends a process stream.
type Exit struct {
	// Code is the exit code, or 128+signal.
	Code int `json:"code"`
	// Signal names the signal that ended the process ("KILL").
	Signal   string `json:"signal,omitempty"`
	TimedOut bool   `json:"timedOut,omitempty"`
}

// ProcessInfo describes a process init started.
type ProcessInfo struct {
	PID       int      `json:"pid"`
	Args      []string `json:"args"`
	PTY       bool     `json:"pty,omitempty"`
	Running   bool     `json:"running,omitempty"`
	Exit      *Exit    `json:"exit,omitempty"`
	Attached  bool     `json:"attached,omitempty"`
	StartUnix int64    `json:"startUnixNano"`
	Tag       string   `json:"tag,omitempty"`
}

// MaxTagBytes bounds a process's tag.
const MaxTagBytes = 64

// CheckTag checks a process's tag: at most MaxTagBytes of UTF-8 that JSON
// writes as it is (no control character, quote, backslash, '<', '>', '&',
// U+2028 or U+2029), so that a tag costs a listing no more than its bytes
// and every record of MaxProcesses still fits one frame.
func CheckTag(tag string) error {
	if len(tag) > MaxTagBytes {
		return fmt.Errorf("tag: %d bytes, at most %d", len(tag), MaxTagBytes)
	}
	if !utf8.ValidString(tag) {
		return errors.New("tag: not UTF-8")
	}
	for _, r := range tag {
		if r < 0x20 || r == 0x7f || r == 0x2028 || r == 0x2029 || strings.ContainsRune(`"\<>&`, r) {
			return fmt.Errorf("tag %q: holds %q, which a tag may not (control characters, quotes, backslashes, '<', '>', '&')", tag, r)
		}
	}
	return nil
}

// File types in FileInfo.Type.
const (
	TypeFile    = "file"
	TypeDir     = "dir"
	TypeSymlink = "symlink"
	TypeOther   = "other"
)

// FileInfo describes one path (lstat).
type FileInfo struct {
	Path string `json:"path"`
	Name string `json:"name"`
	Type string `json:"type"`
	Size int64  `json:"size"`
	// Mode is the permission bits with setuid, setgid and sticky.
	Mode        uint32 `json:"mode"`
	ModUnixNano int64  `json:"modUnixNano"`
	Target      string `json:"target,omitempty"`
	UID         uint32 `json:"uid"`
	GID         uint32 `json:"gid"`
}

// ErrFrameTooLarge marks a frame whose length is above MaxPayload.
var ErrFrameTooLarge = errors.New("initlink: frame too large")

// WriteFrame writes one frame.
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrFrameTooLarge, len(payload), MaxPayload)
	}
	buf := make([]byte, 5+len(payload))
	binary.BigEndian.PutUint32(buf, uint32(1+len(payload)))
	buf[4] = byte(t)
	copy(buf[5:], payload)
	_, err := w.Write(buf)
	return err
}

// WriteJSON writes one frame whose payload is v as JSON.
func WriteJSON(w io.Writer, t FrameType, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("initlink: encode frame %d: %w", t, err)
	}
	return WriteFrame(w, t, b)
}

// ReadFrame reads one frame. The payload is read into buf when it fits
// (pass a buffer of MaxPayload bytes to read without allocating), else into
// a new slice. A length above MaxPayload+1 or of 0 is an error: the
// connection is then unusable.
func ReadFrame(r io.Reader, buf []byte) (FrameType, []byte, error) {
	var head [5]byte
	if _, err := io.ReadFull(r, head[:4]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(head[:4])
	if n == 0 || n > MaxPayload+1 {
		return 0, nil, fmt.Errorf("%w: %d bytes, at most %d", ErrFrameTooLarge, n, MaxPayload+1)
	}
	if _, err := io.ReadFull(r, head[4:5]); err != nil {
		return 0, nil, noEOF(err)
	}
	size := int(n - 1)
	if cap(buf) >= size {
		buf = buf[:size]
	} else {
		buf = make([]byte, size)
	}
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, noEOF(err)
	}
	return FrameType(head[4]), buf, nil
}

// Decode decodes a JSON payload into v.
func Decode(payload []byte, v any) error {
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("initlink: decode frame: %w", err)
	}
	return nil
}

// noEOF turns an EOF inside a frame into ErrUnexpectedEOF: only an EOF
// between frames is a clean end.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
