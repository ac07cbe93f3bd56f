// Command mkimage writes an image of the rig as an OCI image layout tar
// that containerd's Import and `ctr images import` accept: the busybox test
// image (the default), the template image of E2B's `base` template, or the
// fsb image or the pause image of a real node.
//
//	go run ./scripts/mkimage -o FILE [-busybox /bin/busybox] [-ref REF]
//	go run ./scripts/mkimage -kind e2b -o FILE [-busybox /bin/busybox] [-bash /bin/bash-static] [-ref REF]
//	go run ./scripts/mkimage -kind fsb -o FILE -ref REF -fsb bin/fsb -helper bin/fsb-helper
//	go run ./scripts/mkimage -kind pause -o FILE -ref REF -helper bin/fsb-helper [-busybox /bin/busybox]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/fast-sandbox/fast-sandbox/pkg/testimage"
)

func main() {
	out := flag.String("o", "", "output file (required)")
	kind := flag.String("kind", "busybox", "which image: busybox (the test image), e2b (E2B's base template), fsb or pause")
	busybox := flag.String("busybox", testimage.DefaultBusybox, "static busybox binary (busybox, e2b and pause images)")
	bash := flag.String("bash", testimage.DefaultBash, "static bash binary (e2b image)")
	fsb := flag.String("fsb", "bin/fsb", "static fsb binary (fsb image)")
	helper := flag.String("helper", "bin/fsb-helper", "static fsb-helper binary (fsb and pause images)")
	ref := flag.String("ref", "", "image name recorded in the archive (default for busybox: "+testimage.Ref+", for e2b: "+testimage.E2BRef+")")
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	var img v1.Image
	var err error
	switch *kind {
	case "busybox":
		if *ref == "" {
			*ref = testimage.Ref
		}
		img, err = testimage.Build(*busybox)
	case "e2b":
		if *ref == "" {
			*ref = testimage.E2BRef
		}
		img, err = testimage.E2BBase(*busybox, *bash)
	case "fsb":
		img, err = testimage.Fsb(*fsb, *helper)
	case "pause":
		img, err = testimage.Pause(*busybox, *helper)
	default:
		fmt.Fprintf(os.Stderr, "mkimage: unknown -kind %q: want busybox, e2b, fsb or pause\n", *kind)
		os.Exit(2)
	}
	if err == nil && *ref == "" {
		err = fmt.Errorf("-kind %s needs -ref", *kind)
	}
	if err == nil {
		err = write(*out, img, *ref)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

// write writes img to out atomically: a reader never sees a partial
// archive.
func write(out string, img v1.Image, ref string) error {
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
