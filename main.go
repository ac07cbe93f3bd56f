//go:build !fsbhelper

// Command fsb is Fast Sandbox: one binary whose first argument picks a role.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/fast-sandbox/fast-sandbox/pkg/version"
	"github.com/fast-sandbox/fast-sandbox/roles/agent"
	"github.com/fast-sandbox/fast-sandbox/roles/controller"
	"github.com/fast-sandbox/fast-sandbox/roles/ctl"
	"github.com/fast-sandbox/fast-sandbox/roles/initproc"
	"github.com/fast-sandbox/fast-sandbox/roles/install"
	"github.com/fast-sandbox/fast-sandbox/roles/janitor"
	"github.com/fast-sandbox/fast-sandbox/roles/logdriver"
	versioncmd "github.com/fast-sandbox/fast-sandbox/roles/version"
)

func main() {
	app := &cli.App{
		Name:    "fsb",
		Usage:   "Fast Sandbox: millisecond sandboxes on Kubernetes and containerd",
		Version: version.Version + " (commit " + version.Commit + ")",
		Commands: []*cli.Command{
			controller.Command(),
			agent.Command(),
			janitor.Command(),
			ctl.Command(),
			versioncmd.Command(),
			initproc.Command(),
			logdriver.Command(),
			install.Command(),
		},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "fsb:", err)
		os.Exit(1)
	}
}
