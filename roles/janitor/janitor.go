// Package janitor is the `fsb janitor` role.
package janitor

import "github.com/urfave/cli/v2"

// Command returns the `fsb janitor` command, which this release does not
// serve yet.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "janitor",
		Usage: "reap orphan sandbox containers, snapshots and log files on this node (not built yet)",
		Action: func(*cli.Context) error {
			return cli.Exit("fsb janitor: this role is not built yet in this release; only `fsb agent` runs sandboxes so far", 2)
		},
	}
}
