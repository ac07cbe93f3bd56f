package ctl

import (
	"github.com/urfave/cli/v2"

	"github.com/fast-sandbox/fast-sandbox/pkg/ctl"
)

func updateCommand() *cli.Command {
	return &cli.Command{
		Name:  "update",
		Usage: "change a sandbox's labels, failure policy, expiry or recovery timeout, or re-create it",
		UsageText: "fsb ctl update NAME [--label K=V]... [--remove-label K]... [--failure-policy manual|auto-recreate]\n" +
			"   [--expire-in DURATION | --no-expire] [--recovery-timeout DURATION] [--reset-revision] [-o FORMAT]",
		Description: "Changes sandbox NAME, then prints it, the first line saying what changed. --label adds or\n" +
			"changes labels and --remove-label removes them; the other labels stay as they are.\n" +
			"--failure-policy auto-recreate starts a new revision after a non-zero exit, an OOM kill\n" +
			"or a lost agent, until --recovery-timeout passes without a running revision.\n" +
			"--expire-in sets the expiry that long from now (the sandbox is then stopped, shown as\n" +
			"Expired and deleted); --no-expire removes it. --reset-revision stops the running\n" +
			"revision gracefully and starts the next one.\n\n" +
			"Example:\n" +
			"   fsb ctl update web --label tier=front --remove-label canary\n" +
			"   fsb ctl update crash --failure-policy auto-recreate --recovery-timeout 10m\n" +
			"   fsb ctl update web --expire-in 30s\n" +
			"   fsb ctl update web --no-expire -o yaml\n" +
			"   fsb ctl update web --reset-revision",
		OnUsageError: usageError,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "label", Aliases: []string{"l"}, Usage: "add or change the label `KEY=VALUE` (repeat for more)"},
			&cli.StringSliceFlag{Name: "remove-label", Usage: "remove the label `KEY` (repeat for more)"},
			&cli.StringFlag{Name: "failure-policy", Usage: "`POLICY`: manual (a failure stays Failed or Lost) or auto-recreate (a new revision replaces it)", DefaultText: "unchanged"},
			&cli.StringFlag{Name: "expire-in", Usage: "expire the sandbox this `DURATION` from now, such as 30s, 10m or 2h (positive; --no-expire removes the expiry)", DefaultText: "unchanged"},
			&cli.BoolFlag{Name: "no-expire", Usage: "remove the sandbox's expiry: it runs until deleted"},
			&cli.StringFlag{Name: "recovery-timeout", Usage: "how long auto-recreate keeps trying without a running revision, a `DURATION` of whole seconds (1s or more), such as 90s or 10m", DefaultText: "unchanged"},
			&cli.BoolFlag{Name: "reset-revision", Usage: "re-create the sandbox as a new revision: the running one is stopped gracefully first"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "`FORMAT`: table, wide, json or yaml", DefaultText: "a summary"},
		},
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			if c.NArg() != 1 {
				return usage("update needs exactly one sandbox name: fsb ctl update NAME [--label K=V]... [--failure-policy P] [--expire-in D]...")
			}
			return client.Update(c.Context, ctl.UpdateOptions{
				Name:            c.Args().First(),
				Labels:          c.StringSlice("label"),
				RemoveLabels:    c.StringSlice("remove-label"),
				FailurePolicy:   c.String("failure-policy"),
				ResetRevision:   c.Bool("reset-revision"),
				ExpireIn:        c.String("expire-in"),
				NoExpire:        c.Bool("no-expire"),
				RecoveryTimeout: c.String("recovery-timeout"),
				Output:          c.String("output"),
			})
		}),
	}
}
