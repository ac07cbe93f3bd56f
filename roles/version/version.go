// Package version is the `fsb version` command.
package version

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/fast-sandbox/fast-sandbox/pkg/version"
)

// Command returns the `fsb version` command.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version and commit of this binary",
		Action: func(c *cli.Context) error {
			_, err := fmt.Fprintf(c.App.Writer, "fsb %s (commit %s)\n", version.Version, version.Commit)
			return err
		},
	}
}
