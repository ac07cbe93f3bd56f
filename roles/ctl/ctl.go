// Package ctl is the `fsb ctl` role: the command-line client.
package ctl

import "github.com/urfave/cli/v2"

// Command returns the `fsb ctl` command, which this release does not serve
// yet.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "ctl",
		Usage: "the command-line client: run, list, get, logs, delete sandboxes (not built yet)",
		Action: func(*cli.Context) error {
			return cli.Exit("fsb ctl: this role is not built yet in this release; it arrives with the controller", 2)
		},
	}
}
