// Package controller is the `fsb controller` role.
package controller

import "github.com/urfave/cli/v2"

// Command returns the `fsb controller` command, which this release does not
// serve yet.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "controller",
		Usage: "serve the fast-path API and run the sandbox controllers (not built yet)",
		Action: func(*cli.Context) error {
			return cli.Exit("fsb controller: this role is not built yet in this release; only `fsb agent` runs sandboxes so far", 2)
		},
	}
}
