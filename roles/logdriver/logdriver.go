// Package logdriver is the hidden `fsb log-driver` role, which containerd's
// shim starts beside every sandbox task (cio.BinaryIO) to write its output
// to the sandbox's log file; it outlives any restart of the agent.
package logdriver

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/fast-sandbox/fast-sandbox/pkg/logfile"
)

// Command returns the `fsb log-driver CONFIG` command; CONFIG is made by
// logfile.DriverConfig.Encode.
func Command() *cli.Command {
	return &cli.Command{
		Name:            "log-driver",
		Usage:           "copy a task's stdout and stderr into its log file (started by containerd's shim)",
		ArgsUsage:       "path=FILE[&max-size=BYTES&max-files=N]",
		Hidden:          true,
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			os.Exit(logfile.DriverMain(c.Args().Slice()))
			return nil
		},
	}
}
