package initlink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var b bytes.Buffer
	big := bytes.Repeat([]byte("x"), MaxPayload)
	for _, p := range [][]byte{nil, []byte("hi"), big} {
		if err := WriteFrame(&b, FrameStdout, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteJSON(&b, FrameExit, Exit{Code: 137, Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	for _, want := range [][]byte{nil, []byte("hi"), big} {
		typ, got, err := ReadFrame(&b, buf)
		if err != nil || typ != FrameStdout || !bytes.Equal(got, want) {
			t.Fatalf("ReadFrame = %d, %d bytes, %v; want stdout, %d bytes", typ, len(got), err, len(want))
		}
	}
	typ, got, err := ReadFrame(&b, buf)
	var exit Exit
	if err != nil || typ != FrameExit || Decode(got, &exit) != nil || exit.Code != 137 || exit.Signal != "KILL" {
		t.Fatalf("exit frame: %d %q %v", typ, got, err)
	}
	if _, _, err := ReadFrame(&b, buf); err != io.EOF {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

func TestFrameBounds(t *testing.T) {
	if err := WriteFrame(io.Discard, FrameData, make([]byte, MaxPayload+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("writing a frame above MaxPayload: %v", err)
	}
	for _, n := range []uint32{0, MaxPayload + 2, 1 << 31} {
		var head [4]byte
		binary.BigEndian.PutUint32(head[:], n)
		// A peer announcing a huge frame sends nothing after it: the
		// reader must refuse the length, not wait or allocate it.
		if _, _, err := ReadFrame(bytes.NewReader(head[:]), nil); !errors.Is(err, ErrFrameTooLarge) {
			t.Errorf("length %d: %v, want ErrFrameTooLarge", n, err)
		}
	}
	var b bytes.Buffer
	_ = WriteFrame(&b, FrameStdout, []byte("truncated"))
	if _, _, err := ReadFrame(bytes.NewReader(b.Bytes()[:8]), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a frame cut short: %v, want ErrUnexpectedEOF", err)
	}
}

func TestCheckTag(t *testing.T) {
	for _, ok := range []string{"", "server", "my tag/1:ü", string(bytes.Repeat([]byte("t"), MaxTagBytes))} {
		if err := CheckTag(ok); err != nil {
			t.Errorf("CheckTag(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"a\nb", `a"b`, `a\b`, "a<b", "a&b", "a\u2028", "\xff", string(bytes.Repeat([]byte("t"), MaxTagBytes+1))} {
		if err := CheckTag(bad); err == nil {
			t.Errorf("CheckTag(%q) = nil, want an error", bad)
		}
	}
}
