package ctl

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/fast-sandbox/fast-sandbox/pkg/ctl"
)

func execCommand() *cli.Command {
	return &cli.Command{
		Name:      "exec",
		Usage:     "run a command in a running sandbox; its exit status becomes fsb ctl's",
		UsageText: "fsb ctl exec [-i] [-t] [-u USER] [-w DIR] [-e NAME=VALUE]... [--timeout D] NAME -- COMMAND [ARG...]",
		Description: "Runs COMMAND inside sandbox NAME, next to its main process, through the sandbox's\n" +
			"fsb init. Its stdout goes to stdout, its stderr to stderr, and fsb ctl exits with its\n" +
			"exit status (128+N when signal N ended it: 137 for a kill, and for a --timeout).\n" +
			"Everything after NAME is the command; \"--\" before it is optional.\n\n" +
			"Input: with -i, or whenever fsb ctl's input is not a terminal (a pipe, a file), it is\n" +
			"passed to the process, and its end closes the process's input. Otherwise the process\n" +
			"reads nothing.\n\n" +
			"-t runs the process in a pseudo-terminal of the size of yours. With -i as well (-it),\n" +
			"your terminal is in raw mode until the process exits (keys, Ctrl-C included, go to the\n" +
			"process) and a resize of your window reaches it. Without -t, Ctrl-C is passed to the\n" +
			"process as SIGINT; a second Ctrl-C leaves it running and returns.\n\n" +
			"A sandbox made with --no-init has no exec. The process runs as the sandbox's user\n" +
			"unless -u names another, and is killed when the sandbox's main process exits.\n\n" +
			"Example:\n" +
			"   fsb ctl exec demo -- ls -l /tmp\n" +
			"   fsb ctl exec -it demo -- sh\n" +
			"   echo hello | fsb ctl exec demo -- sh -c 'cat > /tmp/greeting'\n" +
			"   fsb ctl exec -u nobody -w /tmp -e DEBUG=1 --timeout 30s demo -- sh -c 'make test'\n" +
			"   fsb ctl exec demo -- sh -c 'exit 3'; echo $?    # 3",
		OnUsageError:           usageError,
		UseShortOptionHandling: true,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "stdin", Aliases: []string{"i"}, Usage: "pass fsb ctl's input to the process (always done when the input is not a terminal)"},
			&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "run the process in a pseudo-terminal; with -i, an interactive session"},
			&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "run as `USER`: a name from the sandbox's /etc/passwd, or UID[:GID]", DefaultText: "the sandbox's user"},
			&cli.StringFlag{Name: "workdir", Aliases: []string{"w"}, Usage: "the working `DIR`, absolute", DefaultText: "the sandbox's"},
			&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "an environment variable `NAME=VALUE` (repeat for more)"},
			&cli.DurationFlag{Name: "timeout", Usage: "kill the process and everything it started after this `DURATION` (whole seconds), such as 30s", DefaultText: "none"},
		},
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			if c.NArg() == 0 {
				return usage("exec needs a sandbox name and a command: fsb ctl exec NAME -- COMMAND [ARG...]")
			}
			// The signals are the process's: Exec passes them on, so the
			// context must not end with them.
			ctx := context.WithoutCancel(c.Context)
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer signal.Stop(sigs)
			resizes := make(chan os.Signal, 1)
			signal.Notify(resizes, syscall.SIGWINCH)
			defer signal.Stop(resizes)
			return processStatus(client.Exec(ctx, ctl.ExecOptions{
				Name:    c.Args().First(),
				Command: c.Args().Tail(),
				Stdin:   c.Bool("stdin"),
				TTY:     c.Bool("tty"),
				User:    c.String("user"),
				WorkDir: c.String("workdir"),
				Env:     c.StringSlice("env"),
				Timeout: c.Duration("timeout"),
				Signals: sigs,
				Resizes: resizes,
			}))
		}),
	}
}

// processStatus makes a process's exit status fsb ctl's, without a
// message: the process has said what it had to.
func processStatus(err error) error {
	var exit *ctl.ExitError
	if errors.As(err, &exit) {
		return cli.Exit("", exit.Code)
	}
	return err
}
