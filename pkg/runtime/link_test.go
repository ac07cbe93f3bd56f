package runtime

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

func TestCheckLinkDir(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want string // in the error; empty: no error
	}{
		{DefaultLinkDir, ""},
		{"/" + strings.Repeat("d", 85), ""},
		{"/" + strings.Repeat("d", 90), "pick a shorter --link-dir"},
		{"run/fsb/link", "absolute"},
	} {
		err := checkLinkDir(tc.dir)
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkLinkDir(%d bytes): %v, want %q", len(tc.dir), err, tc.want)
		}
	}
}

// openLinkRuntime returns a Runtime with only what links need.
func openLinkRuntime(t testing.TB) *Runtime {
	dir, err := os.MkdirTemp("", "fsbl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return &Runtime{cfg: Config{LinkDir: dir}, links: make(map[string]*initlink.Link)}
}

func TestLinkDirLifecycle(t *testing.T) {
	r := openLinkRuntime(t)
	ls := linkSpec{token: "t0k3n", uid: 65534, gid: 65534}
	if err := r.openLink("sb-a-1", ls); err != nil {
		t.Fatal(err)
	}
	dir := r.linkDir("sb-a-1")
	if filepath.Dir(dir) != r.cfg.LinkDir || len(filepath.Base(dir)) != linkHashLen {
		t.Errorf("link dir %s: want <LinkDir>/<%d hex>", dir, linkHashLen)
	}
	for _, p := range []struct {
		path string
		mode os.FileMode
	}{{dir, os.ModeDir | 0o700}, {filepath.Join(dir, initlink.SocketName), os.ModeSocket | 0o600}} {
		st, err := os.Stat(p.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != p.mode || fmt.Sprint(ownerOf(st)) != "[65534 65534]" {
			t.Errorf("%s: mode %v owner %v, want %v owned by 65534:65534", p.path, st.Mode(), ownerOf(st), p.mode)
		}
	}
	if _, ok := r.Link("sb-a-1"); !ok {
		t.Fatal("no open link")
	}
	// A restarted agent listens in the same directory (its inode is what
	// a running sandbox's mount holds), after removing the stale socket.
	// The directory as a running sandbox's mount holds it.
	held, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	r.CloseLinks()
	// A killed agent leaves its socket file behind.
	if err := os.WriteFile(filepath.Join(dir, initlink.SocketName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.openLink("sb-a-1", ls); err != nil {
		t.Fatalf("listen again: %v", err)
	}
	viaMount := fmt.Sprintf("/proc/self/fd/%d/%s", held.Fd(), initlink.SocketName)
	c, err := net.Dial("unix", viaMount)
	if err != nil {
		t.Fatalf("the new socket is not reached through the directory a sandbox holds: %v", err)
	}
	c.Close()
	r.closeLink("sb-a-1")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("link dir after closeLink: %v", err)
	}
}

// BenchmarkOpenLink is what a link adds to a cold create on the host: the
// token, the directory and the listening socket, and their removal.
func BenchmarkOpenLink(b *testing.B) {
	r := openLinkRuntime(b)
	for i := range b.N {
		id := fmt.Sprintf("sb-bench-%d", i)
		var ls linkSpec
		if _, err := r.linkOpts(id, &ls); err != nil {
			b.Fatal(err)
		}
		if err := r.openLink(id, ls); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		r.closeLink(id)
		b.StartTimer()
	}
}

func ownerOf(st os.FileInfo) [2]uint32 {
	s := st.Sys().(*syscall.Stat_t)
	return [2]uint32{s.Uid, s.Gid}
}
