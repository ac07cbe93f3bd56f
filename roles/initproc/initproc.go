// Package initproc is the hidden `fsb init` role: PID 1 of every sandbox.
package initproc

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/fast-sandbox/fast-sandbox/pkg/pid1"
)

// Command returns the `fsb init -- CMD [ARGS...]` command.
func Command() *cli.Command {
	return &cli.Command{
		Name:            "init",
		Usage:           "run CMD as a sandbox's PID 1 child: forward signals, reap zombies, exit with its status",
		ArgsUsage:       "-- CMD [ARGS...]",
		Hidden:          true,
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			os.Exit(pid1.Main(c.Args().Slice()))
			return nil
		},
	}
}
