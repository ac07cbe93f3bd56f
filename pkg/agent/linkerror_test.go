package agent

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// A process whose command JSON grows past init's frame is the caller's to
// shorten: InvalidArgument, not an init that does not answer.
func TestOversizedRequestIsInvalid(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, initlink.SocketName)
	l, err := initlink.Listen(initlink.Config{Path: path, Token: "t", UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	// Init's side: one idle connection, greeted.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := initlink.WriteJSON(c, initlink.FrameHello, initlink.Hello{Token: "t"}); err != nil {
		t.Fatal(err)
	}
	// Within the API's limits (128 KiB of command, 128 KiB of envs), but
	// JSON writes '<' as six bytes.
	big := strings.Repeat("<", 100<<10)
	proc := &initlink.Process{Args: []string{"echo", big}, Env: []string{"A=" + big}}
	_, err = l.Open(context.Background(), initlink.Request{Op: initlink.OpExec, Process: proc})
	if err == nil {
		t.Fatal("a request of more than a frame was sent")
	}
	if got := connect.CodeOf(linkError(err)); got != connect.CodeInvalidArgument {
		t.Errorf("oversized request: %v (%v), want %v", got, linkError(err), connect.CodeInvalidArgument)
	}
}
