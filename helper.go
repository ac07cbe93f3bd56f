//go:build fsbhelper

// This file builds the helper variant of fsb (`make build` writes it to
// bin/fsb-helper): only the two roles containerd runs inside or beside every
// sandbox, `init` and `log-driver`, with the same arguments as in the full
// binary. It imports nothing else, so it starts in a few milliseconds where
// the full binary spends over ten initializing packages it would not use;
// both roles sit on every sandbox's create path.
package main

import (
	"fmt"
	"os"

	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
	"github.com/fast-sandbox/fast-sandbox/pkg/pid1"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fsb-helper init -- CMD [ARGS...] | fsb-helper log-driver CONFIG")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "init":
		os.Exit(pid1.Main(os.Args[2:]))
	case "log-driver":
		os.Exit(logfile.DriverMain(os.Args[2:]))
	}
	fmt.Fprintf(os.Stderr, "fsb-helper: unknown role %q: want init or log-driver\n", os.Args[1])
	os.Exit(2)
}
