package ctl

import (
	"github.com/urfave/cli/v2"

	"github.com/fast-sandbox/fast-sandbox/pkg/ctl"
)

func updateCommand() *cli.Command {
	return &cli.Command{
		Name:      "update",
		Usage:     "change a sandbox's labels or failure policy",
		UsageText: "fsb ctl update NAME [--label K=V]... [--remove-label K]... [--failure-policy manual|auto-recreate] [-o FORMAT]",
		Description: "Adds or changes labels (--label), removes labels (--remove-label) and sets the failure\n" +
			"policy of sandbox NAME, then prints it. The other labels stay as they are. The\n" +
			"controller does not support auto-recreate yet and says so.\n\n" +
			"Example:\n" +
			"   fsb ctl update web --label tier=front --remove-label canary\n" +
			"   fsb ctl update web --failure-policy manual -o yaml",
		OnUsageError: usageError,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "label", Aliases: []string{"l"}, Usage: "add or change the label `KEY=VALUE` (repeat for more)"},
			&cli.StringSliceFlag{Name: "remove-label", Usage: "remove the label `KEY` (repeat for more)"},
			&cli.StringFlag{Name: "failure-policy", Usage: "`POLICY`: manual or auto-recreate", DefaultText: "unchanged"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "`FORMAT`: table, wide, json or yaml", DefaultText: "a summary"},
		},
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			if c.NArg() != 1 {
				return usage("update needs exactly one sandbox name: fsb ctl update NAME [--label K=V]... [--remove-label K]...")
			}
			return client.Update(c.Context, ctl.UpdateOptions{
				Name:          c.Args().First(),
				Labels:        c.StringSlice("label"),
				RemoveLabels:  c.StringSlice("remove-label"),
				FailurePolicy: c.String("failure-policy"),
				Output:        c.String("output"),
			})
		}),
	}
}
