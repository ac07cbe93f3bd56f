// Command mkimage writes the busybox test image as an OCI image layout tar
// that containerd's Import and `ctr images import` accept.
//
//	go run ./scripts/mkimage -o FILE [-busybox /bin/busybox] [-ref REF]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fast-sandbox/fast-sandbox/pkg/testimage"
)

func main() {
	out := flag.String("o", "", "output file (required)")
	busybox := flag.String("busybox", testimage.DefaultBusybox, "static busybox binary to build the image from")
	ref := flag.String("ref", testimage.Ref, "image name recorded in the archive")
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*out, *busybox, *ref); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

// run builds the image and writes it to out atomically: a reader never sees
// a partial archive.
func run(out, busybox, ref string) error {
	img, err := testimage.Build(busybox)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriter(tmp)
	if err := testimage.WriteOCIArchive(w, img, ref); err != nil {
		tmp.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}
