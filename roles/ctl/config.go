package ctl

import (
	"github.com/urfave/cli/v2"

	"github.com/fast-sandbox/fast-sandbox/pkg/ctl"
)

func configCommand() *cli.Command {
	return &cli.Command{
		Name:      "config",
		Usage:     "view and change the config file's contexts (server, token file, namespace)",
		UsageText: "fsb ctl config view | set NAME [--server URL] [--token-file FILE] [--ca-file FILE] [-n NAMESPACE] | use-context NAME",
		Description: "The config file, $XDG_CONFIG_HOME/fsb/config.yaml (else ~/.config/fsb/config.yaml),\n" +
			"holds named contexts: a server, the path of a file holding its token, the path of the CA\n" +
			"certificate of an https:// server, and a namespace.\n" +
			"The current context fills in what neither the flags nor FSB_SERVER, FSB_TOKEN and\n" +
			"FSB_NAMESPACE give.\n\n" +
			"Example:\n" +
			"   fsb ctl config set local --server http://127.0.0.1:9090 --token-file .fsb/user-token\n" +
			"   fsb ctl config use-context local\n" +
			"   fsb ctl config view",
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usage("unknown config command %q: want view, set or use-context (see fsb ctl config --help)", c.Args().First())
			}
			return cli.ShowSubcommandHelp(c)
		},
		Subcommands: []*cli.Command{{
			Name:      "view",
			Usage:     "print the config file (token files' paths, never tokens)",
			UsageText: "fsb ctl config view",
			Description: "Prints the config file's contexts and which one is current.\n\n" +
				"Example:\n" +
				"   fsb ctl config view",
			OnUsageError: usageError,
			Action: withConfig(func(c *cli.Context, path string) error {
				if c.NArg() > 0 {
					return usage("config view takes no arguments (got %q)", c.Args().First())
				}
				return ctl.ViewConfig(c.App.Writer, c.App.ErrWriter, path)
			}),
		}, {
			Name:      "set",
			Usage:     "create or change a context; the first one becomes current",
			UsageText: "fsb ctl config set NAME [--server URL] [--token-file FILE] [--ca-file FILE] [-n NAMESPACE]",
			Description: "Creates context NAME, or changes the values given of an existing one. The token file\n" +
				"is kept by its absolute path and read at each call.\n\n" +
				"Example:\n" +
				"   fsb ctl config set prod --server https://fsb.example.com --token-file ~/.fsb-prod-token -n team\n" +
				"   fsb ctl config set cluster --server https://127.0.0.1:9443 --ca-file deploy/secrets/ca.crt",
			OnUsageError: usageError,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "server", Usage: "the controller's fast-path `URL`"},
				&cli.StringFlag{Name: "token-file", Usage: "the `FILE` holding the controller's bearer token"},
				&cli.StringFlag{Name: "ca-file", Usage: "the CA certificate `FILE` (PEM) an https:// server's certificate must chain to; used with this context's server only"},
				&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, Usage: "the sandboxes' `NAMESPACE`"},
			},
			Action: withConfig(func(c *cli.Context, path string) error {
				if c.NArg() != 1 {
					return usage("config set needs exactly one context name: fsb ctl config set NAME [--server URL] [--token-file FILE] [--ca-file FILE] [-n NAMESPACE]")
				}
				return ctl.SetContext(c.App.Writer, path, ctl.ContextOptions{
					Name:      c.Args().First(),
					Server:    c.String("server"),
					TokenFile: c.String("token-file"),
					CAFile:    c.String("ca-file"),
					Namespace: c.String("namespace"),
				})
			}),
		}, {
			Name:      "use-context",
			Usage:     "make a context the current one",
			UsageText: "fsb ctl config use-context NAME",
			Description: "Makes context NAME the one commands use.\n\n" +
				"Example:\n" +
				"   fsb ctl config use-context prod",
			OnUsageError: usageError,
			Action: withConfig(func(c *cli.Context, path string) error {
				if c.NArg() != 1 {
					return usage("use-context needs exactly one context name: fsb ctl config use-context NAME")
				}
				return ctl.UseContext(c.App.Writer, path, c.Args().First())
			}),
		}},
	}
}

// withConfig runs f with the config file's path and turns its error into
// an exit status.
func withConfig(f func(c *cli.Context, path string) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		path, err := ctl.ConfigPath()
		if err == nil {
			err = f(c, path)
		}
		return exitStatus(err)
	}
}
