package pid1

import (
	"os"
	"strings"
	"unsafe"
)

// scrubEnviron wipes (with NUL bytes) the entries of name in the
// environment block the kernel gave this process at exec, the block
// /proc/<pid>/environ shows; environ is the environment as the process
// started with it (os.Environ before any change). Go copied the block at
// start, so nothing the process itself reads changes. On Linux a
// non-dumpable process keeps others out of its environ already; gVisor
// shows the block whatever the dumpable flag says, so only wiping it keeps
// the token to init there.
//
// Where the block is: the kernel lays out the argument strings and then
// the environment strings back to back, and os.Args point into the
// argument strings, uncopied. The walk checks every string against
// environ, and stops, wiping nothing more, at the first that differs.
func scrubEnviron(name string, environ []string) {
	if len(os.Args) == 0 {
		return
	}
	last := os.Args[len(os.Args)-1]
	base := unsafe.StringData(last)
	if base == nil {
		return
	}
	p := unsafe.Add(unsafe.Pointer(base), len(last)+1)
	for _, want := range environ {
		block := unsafe.Slice((*byte)(p), len(want)+1)
		if string(block[:len(want)]) != want || block[len(want)] != 0 {
			return
		}
		if strings.HasPrefix(want, name+"=") {
			clear(block[:len(want)])
		}
		p = unsafe.Add(p, len(want)+1)
	}
}
