package logfile

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSwitchLogStartsTheFileAtTheSwitch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Short: a unix socket's path is bounded.
	sockDir, err := os.MkdirTemp("", "fsb-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "c")
	w := Pending()
	defer w.Close()
	stop, err := serveControl(sock, w)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(Stdout, false, []byte("warm output")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	path := filepath.Join(dir, "ns", "name", "sb-1.log")
	cfg := DriverConfig{Path: path, MaxSize: 1 << 20, MaxFiles: 2}
	if err := SwitchLog(ctx, sock, cfg); err != nil {
		t.Fatalf("switch: %v", err)
	}
	if err := w.Write(Stdout, false, []byte("claimed output")); err != nil {
		t.Fatal(err)
	}
	// A retried switch to the same file is harmless; another file is refused.
	if err := SwitchLog(ctx, sock, cfg); err != nil {
		t.Fatalf("repeated switch: %v", err)
	}
	if err := SwitchLog(ctx, sock, DriverConfig{Path: filepath.Join(dir, "other.log")}); err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("switch to another file: %v, want a refusal", err)
	}
	if got := readAll(t, path); !slices.Equal(got, []string{"claimed output"}) {
		t.Fatalf("log holds %q, want only what came after the switch", got)
	}
	stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("control socket left after stop: %v", err)
	}
	if err := SwitchLog(ctx, sock, cfg); err == nil {
		t.Fatal("switch after stop succeeded")
	}
}

func TestDriverConfigControlRoundTrip(t *testing.T) {
	in := DriverConfig{Control: "/run/x/c.l", MaxFiles: 1}
	out, err := ParseDriverConfig(in.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if out.Control != in.Control || out.Path != "" {
		t.Fatalf("round trip of %+v gave %+v", in, out)
	}
	if _, err := ParseDriverConfig(""); err == nil {
		t.Fatal("a config with neither path nor control was accepted")
	}
}
