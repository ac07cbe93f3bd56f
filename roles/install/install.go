// Package install is the hidden `fsb install` role: it copies this fsb and
// the fsb-helper beside it into a directory of the node. The agent
// DaemonSet's init container runs it, since the image has no shell or cp
// and containerd, on the node, must find the binaries it runs in every
// sandbox (init) and beside it (the log driver) at a host path.
package install

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"
)

// binaries are the files copied, from the directory of this executable.
var binaries = []string{"fsb", "fsb-helper"}

// Command returns the `fsb install` command.
func Command() *cli.Command {
	return &cli.Command{
		Name:      "install",
		Usage:     "copy fsb and fsb-helper into a directory (the agent pod's init container)",
		UsageText: "fsb install DIR",
		Hidden:    true,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("usage: fsb install DIR", 2)
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own executable: %w", err)
			}
			if self, err = filepath.EvalSymlinks(self); err != nil {
				return fmt.Errorf("find own executable: %w", err)
			}
			return Binaries(filepath.Dir(self), c.Args().First(), c.App.Writer)
		},
	}
}

// Binaries copies fsb and fsb-helper from src into dst (made when
// missing), each to a temporary file renamed over the old one: a sandbox
// running the old binary keeps it (a rename leaves its inode alone), and a
// reader never sees half a file. It reports each copy on w.
func Binaries(src, dst string, w io.Writer) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	for _, name := range binaries {
		if err := copyFile(filepath.Join(src, name), filepath.Join(dst, name)); err != nil {
			return fmt.Errorf("install %s: %w", name, err)
		}
		fmt.Fprintf(w, "installed %s\n", filepath.Join(dst, name))
	}
	return nil
}

func copyFile(from, to string) (err error) {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.CreateTemp(filepath.Dir(to), "."+filepath.Base(to)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(out.Name())
		}
	}()
	if _, err = io.Copy(out, in); err != nil {
		return err
	}
	if err = out.Chmod(0o755); err != nil {
		return err
	}
	if err = out.Sync(); err != nil {
		return err
	}
	if err = out.Close(); err != nil {
		return err
	}
	if err = os.Rename(out.Name(), to); err != nil {
		return errors.Join(err, os.Remove(out.Name()))
	}
	return nil
}
