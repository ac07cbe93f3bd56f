package ctl

import (
	"github.com/urfave/cli/v2"

	"github.com/fast-sandbox/fast-sandbox/pkg/ctl"
)

func cpCommand() *cli.Command {
	return &cli.Command{
		Name:      "cp",
		Usage:     "copy files and directories into or out of a sandbox",
		UsageText: "fsb ctl cp SRC DST (one of them NAME:/PATH, in sandbox NAME of the namespace -n)",
		Description: "Copies between this machine and a running sandbox, as kubectl cp does: NAME:/PATH\n" +
			"names an absolute path in sandbox NAME; anything else is a local path (write a local\n" +
			"name with a colon as ./a:b). As with cp -r, a destination that is an existing directory\n" +
			"receives the source under its own name; otherwise the destination is created. A file\n" +
			"is written whole or not at all (through a temporary file renamed into place), with its\n" +
			"permission bits.\n\n" +
			"A file is streamed as it is. A directory travels as a tar archive made or unpacked by\n" +
			"tar inside the sandbox, so its image needs tar (busybox has it). Files land owned by\n" +
			"the sandbox's init user (root) in the sandbox, and by you here.\n\n" +
			"An archive from a sandbox is not trusted: an entry with an absolute path or \"..\", a\n" +
			"symlink or hardlink pointing out of the destination, and devices are skipped with a\n" +
			"warning; nothing is ever written outside the destination, and cp then exits with\n" +
			"status 1. Symlinks are made after every file, so no file is written through one.\n\n" +
			"On a terminal, stderr shows the bytes copied and the rate.\n\n" +
			"Example:\n" +
			"   fsb ctl cp demo:/etc/os-release .\n" +
			"   fsb ctl cp ./src demo:/work          # /work/src when /work exists\n" +
			"   fsb ctl cp demo:/work/out ./out\n" +
			"   fsb ctl -n team cp model.bin demo:/dev/shm/model.bin",
		OnUsageError: usageError,
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			if c.NArg() != 2 {
				return usage("cp needs a source and a destination: fsb ctl cp SRC DST, one of them NAME:/PATH")
			}
			return client.Copy(c.Context, ctl.CopyOptions{Src: c.Args().Get(0), Dst: c.Args().Get(1)})
		}),
	}
}
