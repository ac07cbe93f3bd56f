package agent

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/runtime"
)

// TestExposedPortIsReachable checks that a sandbox shares its agent's network
// namespace: what it serves on an exposed port answers at the endpoint the
// agent reports, for each runtime.
func TestExposedPortIsReachable(t *testing.T) {
	h := newHarness(t)
	for _, rt := range []string{runtime.RuntimeRunc, runtime.RuntimeCrun, runtime.RuntimeGVisor} {
		t.Run(rt, func(t *testing.T) {
			port := freeLoopbackPort(t)
			s := spec(fmt.Sprintf("echo listening; exec nc -l -p %d -e echo hello-from-%s", port, rt))
			s.Runtime = rt
			s.ExposedPorts = []int32{int32(port)}
			sb := h.create(s)
			if len(sb.GetEndpoints()) != 1 || sb.GetEndpoints()[0] != fmt.Sprintf("127.0.0.1:%d", port) {
				t.Fatalf("endpoints = %v", sb.GetEndpoints())
			}
			h.waitLog(sb, "listening")
			var reply string
			deadline := time.Now().Add(15 * time.Second)
			for {
				conn, err := net.DialTimeout("tcp", sb.GetEndpoints()[0], time.Second)
				if err == nil {
					conn.SetDeadline(time.Now().Add(5 * time.Second))
					b, _ := io.ReadAll(conn)
					conn.Close()
					reply = strings.TrimSpace(string(b))
					if reply != "" {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("nothing answered at %s: %v", sb.GetEndpoints()[0], err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if reply != "hello-from-"+rt {
				t.Errorf("reply %q", reply)
			}
			h.delete(sb.GetSandboxId(), 0)
		})
	}
}

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
