package runtime

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestReadSeccompBPF(t *testing.T) {
	// BPF_LD|BPF_W|BPF_ABS of seccomp_data.arch, then BPF_RET ALLOW.
	prog := []byte{0x20, 0, 0, 0, 4, 0, 0, 0, 0x06, 0, 0, 0, 0, 0, 0xff, 0x7f}
	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{"a program", prog, true},
		{"the largest program", make([]byte, maxBPFInstructions*8), true},
		{"empty", nil, false},
		{"a partial instruction", prog[:12], false},
		{"too many instructions", make([]byte, (maxBPFInstructions+1)*8), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "seccomp.bpf")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readSeccompBPF(path)
			if tc.ok != (err == nil) {
				t.Fatalf("readSeccompBPF: %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && !bytes.Equal(got, tc.data) {
				t.Errorf("read %d bytes, want the file's %d", len(got), len(tc.data))
			}
		})
	}
	if _, err := readSeccompBPF(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file was read")
	}
}

func TestSeccompFiltersByProfile(t *testing.T) {
	native := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Architectures: []specs.Arch{specs.ArchX86_64},
		Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow}}}
	compat := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86},
		Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow}}}
	key := func(binary string, p *specs.LinuxSeccomp) string {
		k, err := seccompKey(binary, p)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	var f seccompFilters
	f.put(key("crun", native), "AAAA")
	if got, ok := f.get(key("crun", native)); !ok || got != "AAAA" {
		t.Errorf("get = %q, %v; want the filter put for the same profile", got, ok)
	}
	if _, ok := f.get(key("crun", compat)); ok {
		t.Error("another profile got its filter")
	}
	if _, ok := f.get(key("/opt/crun", native)); ok {
		t.Error("another binary got its filter")
	}

	f.expect("c1", key("crun", native))
	if k, ok := f.expected("c1"); !ok || k != key("crun", native) {
		t.Errorf("expected(c1) = %q, %v", k, ok)
	}
	if _, ok := f.expected("c1"); ok {
		t.Error("expected(c1) answered twice")
	}
	for i := range maxPending * 3 {
		f.expect(strconv.Itoa(i), "k")
	}
	if n := len(f.pending); n > maxPending {
		t.Errorf("%d pending entries, want at most %d", n, maxPending)
	}
}
