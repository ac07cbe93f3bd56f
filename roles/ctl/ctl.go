// Package ctl is the `fsb ctl` role: the command-line client's commands and
// flags. What each command does lives in pkg/ctl.
package ctl

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/fast-sandbox/fast-sandbox/pkg/ctl"
)

// Command returns the `fsb ctl` command. Its arguments go to an App of its
// own, after interspersed has moved flags in front of positional arguments,
// so that flags work wherever they are typed.
func Command() *cli.Command {
	return &cli.Command{
		Name:            "ctl",
		Usage:           "the command-line client: run, list, get, update, logs, exec, cp, top, delete sandboxes; apply, get and delete pools; list agents",
		UsageText:       "fsb ctl [--server URL [--ca-file FILE]] [--token TOKEN | --kubeconfig FILE [--context NAME]] [-n NAMESPACE] COMMAND [options] (fsb ctl --help lists the commands)",
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run(ctx, c.App.Writer, c.App.ErrWriter, c.Args().Slice())
		},
	}
}

// run runs one ctl command line (without "fsb ctl") and returns an error
// that carries its exit status: 1 for a failed request, 2 for a usage
// mistake.
func run(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	app := newApp(stdout, stderr)
	return app.RunContext(ctx, append([]string{"fsb ctl"}, interspersed(app, args)...))
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:     "fsb ctl",
		HelpName: "fsb ctl",
		Usage:    "talk to a Fast Sandbox controller",
		Description: "Creates, inspects and deletes sandboxes through the controller's fast-path API\n" +
			"(fsb.v1.FastPathService). After `make up` (or `make cluster-up`), `source .fsb/env` sets\n" +
			"FSB_SERVER and FSB_TOKEN (and FSB_CA_FILE for an https:// controller).\n" +
			"The server, token and namespace come from the flags, else FSB_SERVER, FSB_TOKEN and\n" +
			"FSB_NAMESPACE, else the current context of the config file (fsb ctl config --help),\n" +
			"else the defaults. Flags may come before or after the command's arguments.\n" +
			"With --kubeconfig the token is the kubeconfig context's bearer token (a ServiceAccount's,\n" +
			"from kubectl create token) and the namespace the context's, for a controller run with\n" +
			"--kube-auth; --server still names the controller.\n\n" +
			"Example:\n" +
			"   source .fsb/env\n" +
			"   fsb ctl run hello --image localhost/fsb/busybox:latest -- sh -c 'echo hello; sleep 30'\n" +
			"   fsb ctl logs hello -f\n" +
			"   fsb ctl delete hello",
		Writer:                    stdout,
		ErrWriter:                 stderr,
		HideVersion:               true,
		DisableSliceFlagSeparator: true, // "-e A=1,2" is one variable
		// The errors go back to the fsb App, which prints them and exits.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   usageError,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usage("unknown command %q (see fsb ctl --help)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		Flags: []cli.Flag{
			// No Value: an empty flag (and environment) leaves the choice to
			// the config file's current context, then to DefaultText.
			&cli.StringFlag{Name: "server", EnvVars: []string{"FSB_SERVER"}, Usage: "the controller's fast-path `URL`", DefaultText: ctl.DefaultServer},
			&cli.StringFlag{Name: "token", EnvVars: []string{"FSB_TOKEN"}, Usage: "bearer `TOKEN` the controller accepts (make up writes it into .fsb/env)"},
			&cli.StringFlag{Name: "ca-file", EnvVars: []string{"FSB_CA_FILE"}, Usage: "trust an https:// controller whose certificate this CA `FILE` (PEM) signed, such as the ca.crt of scripts/deploy-secrets.sh", DefaultText: "the system's CAs"},
			&cli.StringFlag{Name: "namespace", Aliases: []string{"n"}, EnvVars: []string{"FSB_NAMESPACE"}, Usage: "the sandboxes' `NAMESPACE`", DefaultText: "default"},
			&cli.StringFlag{Name: "kubeconfig", Usage: "present the bearer token of a kubeconfig `FILE`'s context (a controller with --kube-auth checks it with the API server); it wins over --token, and its namespace over the config file's. The controller's address still comes from --server"},
			&cli.StringFlag{Name: "context", Usage: "the kubeconfig's `CONTEXT` (default: its current context)"},
		},
		Commands: []*cli.Command{
			runCommand(),
			listCommand(),
			getCommand(),
			logsCommand(),
			execCommand(),
			cpCommand(),
			updateCommand(),
			deleteCommand(),
			applyCommand(),
			agentsCommand(),
			topCommand(),
			configCommand(),
			benchCommand(),
		},
	}
}

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "create a sandbox and print it with the time the create took",
		UsageText: "fsb ctl run NAME [--image IMAGE] [options] [-- COMMAND [ARG...]]",
		Description: "Creates sandbox NAME from IMAGE and answers once it runs (fast mode) or once it runs\n" +
			"and is recorded (strong mode). COMMAND, after --, replaces the image's entrypoint and\n" +
			"cmd; without --, the first argument after NAME starts it.\n\n" +
			"Without --image it opens $EDITOR (else $VISUAL, else vi) on a commented YAML spec, the\n" +
			"other flags' values filled in. Save to create; a mistake reopens the editor with the\n" +
			"error on top; an empty (or unchanged) file cancels.\n\n" +
			"Example:\n" +
			"   fsb ctl run web --image localhost/fsb/busybox:latest -p 8080 -e GREETING=hi \\\n" +
			"     -- httpd -f -p 8080\n" +
			"   fsb ctl run job --image localhost/fsb/busybox:latest --mode strong --runtime crun \\\n" +
			"     --cpu 500m --memory 64Mi -- sh -c 'echo working; sleep 5'\n" +
			"   fsb ctl run crash --image localhost/fsb/busybox:latest --failure-policy auto-recreate \\\n" +
			"     --recovery-timeout 10m -- sh -c 'echo up; sleep 2; exit 3'\n" +
			"   fsb ctl run scratch --image localhost/fsb/busybox:latest --expire-in 10m -- sleep 3600\n" +
			"   fsb ctl run edited --mode strong    # write the rest of the spec in $EDITOR",
		OnUsageError: usageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "image", Usage: "the `IMAGE` to run, such as localhost/fsb/busybox:latest", DefaultText: "write the spec in $EDITOR"},
			&cli.StringSliceFlag{Name: "port", Aliases: []string{"p"}, Usage: "a `PORT` the sandbox listens on, reported as an endpoint (repeat for more)"},
			&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "an environment variable `NAME=VALUE` (repeat for more)"},
			&cli.StringSliceFlag{Name: "label", Aliases: []string{"l"}, Usage: "a label `KEY=VALUE` for selecting sandboxes (repeat for more)"},
			&cli.StringFlag{Name: "pool", Usage: "the `POOL` (SandboxPool) whose agents may run it; a pool that does not exist is an error", DefaultText: "the default pool"},
			&cli.StringFlag{Name: "mode", Usage: "`MODE`: fast (start, answer, then record) or strong (record, start, answer)", DefaultText: "the controller's"},
			&cli.StringFlag{Name: "runtime", Usage: "`RUNTIME`: runc, crun or gvisor", DefaultText: "runc"},
			&cli.StringFlag{Name: "workdir", Aliases: []string{"w"}, Usage: "working `DIR` of the command", DefaultText: "the image's"},
			&cli.StringFlag{Name: "cpu", Usage: "CPU limit as a Kubernetes `QUANTITY`, such as 500m", DefaultText: "none"},
			&cli.StringFlag{Name: "memory", Usage: "memory limit as a Kubernetes `QUANTITY`, such as 256Mi", DefaultText: "none"},
			&cli.Int64Flag{Name: "pids", Usage: "at most `N` processes at once", DefaultText: "the agent's"},
			&cli.StringFlag{Name: "failure-policy", Usage: "`POLICY`: manual (a non-zero exit, an OOM kill or a lost agent stays Failed or Lost) or auto-recreate (a new revision replaces it)", DefaultText: "manual"},
			&cli.StringFlag{Name: "recovery-timeout", Usage: "how long auto-recreate keeps trying without a running revision before it gives up, a `DURATION` of whole seconds (1s or more), such as 90s or 10m", DefaultText: "the controller's (5m by default)"},
			&cli.StringFlag{Name: "expire-in", Usage: "stop and delete the sandbox this `DURATION` after the create, such as 30s, 10m or 2h", DefaultText: "never"},
			&cli.BoolFlag{Name: "no-init", Usage: "run the command as PID 1 instead of under fsb init"},
		},
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			if c.NArg() == 0 {
				return usage("run needs a sandbox name: fsb ctl run NAME --image IMAGE [-- COMMAND...]")
			}
			return client.Run(c.Context, ctl.RunOptions{
				Name:            c.Args().First(),
				Image:           c.String("image"),
				Ports:           c.StringSlice("port"),
				Env:             c.StringSlice("env"),
				Labels:          c.StringSlice("label"),
				Pool:            c.String("pool"),
				Mode:            c.String("mode"),
				Runtime:         c.String("runtime"),
				WorkDir:         c.String("workdir"),
				CPU:             c.String("cpu"),
				Memory:          c.String("memory"),
				Pids:            c.Int64("pids"),
				FailurePolicy:   c.String("failure-policy"),
				RecoveryTimeout: c.String("recovery-timeout"),
				ExpireIn:        c.String("expire-in"),
				NoInit:          c.Bool("no-init"),
				Command:         c.Args().Tail(),
			})
		}),
	}
}

// outputFlag is the -o of the commands that print sandboxes.
func outputFlag() cli.Flag {
	return &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: ctl.OutputTable, Usage: "`FORMAT`: table, wide (more columns), json or yaml"}
}

func listCommand() *cli.Command {
	return &cli.Command{
		Name:      "list",
		Aliases:   []string{"ls"},
		Usage:     "list sandboxes",
		UsageText: "fsb ctl list [-l SELECTOR] [-A] [-o table|wide|json|yaml]",
		Description: "Lists the sandboxes of the namespace (-n), or of every namespace with -A. JSON output\n" +
			"is {\"items\": [...]}, each item shaped as `fsb ctl get NAME -o json` prints it; YAML\n" +
			"output has the same shape. wide adds SANDBOX-ID, NODE, RUNTIME, REVISION, EXPIRES (the\n" +
			"time left, - for never), EXIT, LABELS and MESSAGE.\n\n" +
			"Example:\n" +
			"   fsb ctl list\n" +
			"   fsb ctl list -A -l app=demo -o json\n" +
			"   fsb ctl list -o wide",
		OnUsageError: usageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "selector", Aliases: []string{"l"}, Usage: "only sandboxes whose labels match this Kubernetes label `SELECTOR`, such as app=demo,tier!=db"},
			&cli.BoolFlag{Name: "all-namespaces", Aliases: []string{"A"}, Usage: "list every namespace"},
			outputFlag(),
		},
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			if c.NArg() > 0 {
				return usage("list takes no arguments (got %q): to see one sandbox, fsb ctl get NAME", c.Args().First())
			}
			return client.List(c.Context, ctl.ListOptions{
				Selector:      c.String("selector"),
				AllNamespaces: c.Bool("all-namespaces"),
				Output:        c.String("output"),
			})
		}),
	}
}

func getCommand() *cli.Command {
	return &cli.Command{
		Name:      "get",
		Usage:     "show one sandbox, with its revision, failure policy, expiry, exit code and conditions",
		UsageText: "fsb ctl get NAME [-o table|wide|json|yaml]",
		Description: "Shows sandbox NAME: its row of fsb ctl list (-o wide: of list -o wide), then its\n" +
			"revision, failure policy, expiry (the time and the time left), exit code, message and\n" +
			"every condition with its status, reason and message. A Terminating sandbox's message\n" +
			"says what its delete waits for. The JSON form always has name, namespace, sandboxID,\n" +
			"phase, agent, node, endpoints, image, revision, exitCode (null until the command ended),\n" +
			"message, failurePolicy, expireTime (null for never), conditions, labels, createTime and\n" +
			"spec; the YAML form is the same document in YAML.\n\n" +
			"Example:\n" +
			"   fsb ctl get demo\n" +
			"   fsb ctl get demo -o json | jq -r .phase",
		OnUsageError: usageError,
		Flags:        []cli.Flag{outputFlag()},
		Subcommands:  []*cli.Command{getPoolsCommand()},
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			if c.NArg() != 1 {
				return usage("get needs exactly one sandbox name: fsb ctl get NAME (or fsb ctl get pools)")
			}
			return client.Get(c.Context, c.Args().First(), c.String("output"))
		}),
	}
}

func logsCommand() *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print a sandbox's output, of its current revision or an earlier one",
		UsageText: "fsb ctl logs NAME [-f] [--tail N] [--timestamps] [--revision N | --previous]",
		Description: "Prints what sandbox NAME wrote: its stdout to stdout, its stderr to stderr. With -f\n" +
			"it keeps printing until the sandbox has ended (or Ctrl-C). A sandbox re-created by its\n" +
			"failure policy or --reset-revision runs as a new revision; --revision N and --previous\n" +
			"read an earlier one's log, as long as the controller keeps it (the last few revisions,\n" +
			"until the sandbox is deleted).\n\n" +
			"Example:\n" +
			"   fsb ctl logs demo\n" +
			"   fsb ctl logs demo -f --tail 20 --timestamps\n" +
			"   fsb ctl logs crash --revision 1\n" +
			"   fsb ctl logs crash --previous",
		OnUsageError: usageError,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new lines until the sandbox has ended"},
			&cli.IntFlag{Name: "tail", Usage: "only the last `N` lines", DefaultText: "all"},
			&cli.BoolFlag{Name: "timestamps", Usage: "start each line with the time it was written (RFC 3339, UTC)"},
			&cli.Int64Flag{Name: "revision", Usage: "read the log of revision `N` (1 or more; fsb ctl get shows the current one)", DefaultText: "the current revision"},
			&cli.BoolFlag{Name: "previous", Aliases: []string{"p"}, Usage: "read the log of the revision before the current one (as kubectl logs --previous)"},
		},
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			if c.NArg() != 1 {
				return usage("logs needs exactly one sandbox name: fsb ctl logs NAME [-f]")
			}
			o := ctl.LogsOptions{
				Name:       c.Args().First(),
				Follow:     c.Bool("follow"),
				Tail:       c.Int("tail"),
				Timestamps: c.Bool("timestamps"),
				Previous:   c.Bool("previous"),
			}
			if c.IsSet("revision") {
				rev := c.Int64("revision")
				o.Revision = &rev
			}
			return client.Logs(c.Context, o)
		}),
	}
}

func deleteCommand() *cli.Command {
	return &cli.Command{
		Name:      "delete",
		Aliases:   []string{"rm"},
		Usage:     "delete sandboxes",
		UsageText: "fsb ctl delete NAME... [--grace-period S] [--no-wait] [--timeout DURATION] [--ignore-not-found]",
		Description: "Deletes each sandbox NAME: SIGTERM, up to --grace-period seconds (default 10), then\n" +
			"SIGKILL; it answers once the container is gone, or at once with --no-wait.\n\n" +
			"Each sandbox's delete may take up to --timeout. When that passes, fsb ctl asks the\n" +
			"controller whether the deletion is recorded (the sandbox shows phase Terminating). If\n" +
			"it is, the delete goes on in the background: fsb ctl says so on stderr, with what the\n" +
			"sandbox waits for, and counts it as deleted (exit 0). If it is not, the delete failed\n" +
			"(exit 1): run it again.\n\n" +
			"Example:\n" +
			"   fsb ctl delete demo\n" +
			"   fsb ctl delete web job --grace-period 0\n" +
			"   fsb ctl delete stuck --timeout 10s",
		OnUsageError: usageError,
		Subcommands:  []*cli.Command{deletePoolCommand()},
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "grace-period", Usage: "`SECONDS` between SIGTERM and SIGKILL (0: kill at once)", DefaultText: "10"},
			&cli.BoolFlag{Name: "no-wait", Usage: "answer once the deletion is recorded, before the container is gone"},
			&cli.DurationFlag{Name: "timeout", Value: ctl.DefaultDeleteTimeout, Usage: "how long each sandbox's delete may take, a `DURATION` such as 30s or 2m; after it, a recorded delete goes on in the background"},
			&cli.BoolFlag{Name: "ignore-not-found", Usage: "treat a sandbox that does not exist as deleted"},
		},
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			o := ctl.DeleteOptions{
				Names:          c.Args().Slice(),
				NoWait:         c.Bool("no-wait"),
				IgnoreNotFound: c.Bool("ignore-not-found"),
				Timeout:        c.Duration("timeout"),
			}
			if c.IsSet("grace-period") {
				g := c.Int("grace-period")
				if g < 0 || g > 1<<31-1 {
					return usage("--grace-period %d: want seconds, 0 or more", g)
				}
				grace := int32(g)
				o.GracePeriod = &grace
			}
			if o.Timeout <= 0 {
				return usage("--timeout %s: want a positive duration such as 1m", o.Timeout)
			}
			return client.Delete(c.Context, o)
		}),
	}
}

func getPoolsCommand() *cli.Command {
	return &cli.Command{
		Name:      "pools",
		Aliases:   []string{"pool"},
		Usage:     "list the SandboxPools, or show one",
		UsageText: "fsb ctl get pools [NAME] [-o table|wide|json|yaml]   (fsb ctl get pool NAME)",
		Description: "Lists the controller's SandboxPools (they live in its pool namespace, whatever -n\n" +
			"says), or shows pool NAME. Columns: NAME; AGENTS, the agents serving the pool the\n" +
			"controller is connected to now; WARM, its warm entries (count×image, /runtime when not\n" +
			"runc); AGE. wide adds CAPACITY (poolMin-poolMax and the idle buffer, <none> when the pool's\n" +
			"agents are started by other means), PODS (ready/current agent pods, Kubernetes),\n" +
			"RUNTIME-TYPE, STATUS (the pool controller's Ready reason, Deleting, or -) and LABELS.\n" +
			"JSON and YAML print each pool as its SandboxPool object, which fsb ctl apply -f takes\n" +
			"back; a list is {\"items\": [...]}.\n\n" +
			"The pool named default is the default pool's (agents started without --pool): it only\n" +
			"gives them warm entries.\n\n" +
			"Example:\n" +
			"   fsb ctl get pools\n" +
			"   fsb ctl get pool default -o yaml",
		OnUsageError: usageError,
		Flags:        []cli.Flag{outputFlag()},
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			if c.NArg() > 1 {
				return usage("get pools takes at most one pool name: fsb ctl get pool NAME")
			}
			return client.Pools(c.Context, c.Args().First(), c.String("output"))
		}),
	}
}

func deletePoolCommand() *cli.Command {
	return &cli.Command{
		Name:      "pool",
		Aliases:   []string{"pools"},
		Usage:     "delete a SandboxPool",
		UsageText: "fsb ctl delete pool NAME [--ignore-not-found]",
		Description: "Deletes SandboxPool NAME. Creates naming it are refused from then on; sandboxes running\n" +
			"on its agents go on. In Kubernetes its agent pods go once no sandbox uses it.\n\n" +
			"Example:\n" +
			"   fsb ctl delete pool gpu",
		OnUsageError: usageError,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "ignore-not-found", Usage: "treat a pool that does not exist as deleted"},
		},
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			if c.NArg() != 1 {
				return usage("delete pool needs exactly one pool name: fsb ctl delete pool NAME")
			}
			return client.DeletePool(c.Context, c.Args().First(), c.Bool("ignore-not-found"))
		}),
	}
}

func applyCommand() *cli.Command {
	return &cli.Command{
		Name:      "apply",
		Usage:     "create or replace Sandboxes and SandboxPools from YAML",
		UsageText: "fsb ctl apply -f FILE   (-f - reads standard input)",
		Description: "Reads one or more YAML documents (separated by ---), each a Sandbox or a SandboxPool\n" +
			"of apiVersion sandbox.fast.io/v1alpha1, and creates each object, or replaces it:\n" +
			"  SandboxPool: created, or its labels and spec replaced whole (no merge). Pools live in\n" +
			"    the controller's pool namespace; metadata.namespace is ignored. A pool without\n" +
			"    spec.capacity keeps no agent pods: its agents are started with --pool NAME. The\n" +
			"    pool named default gives the default pool its spec.warm.\n" +
			"  Sandbox: created in metadata.namespace (else -n); one that exists gets what fsb ctl\n" +
			"    update changes: its labels (replaced), and spec.failurePolicy, spec.expireTime and\n" +
			"    spec.recoveryTimeoutSeconds when the document sets them. Its other spec fields stay\n" +
			"    (delete it and apply again to change them).\n" +
			"Each object gets a line: created, configured or unchanged. A document that fails is\n" +
			"named on stderr by its number and object; the others are applied all the same, and the\n" +
			"exit status is 1.\n\n" +
			"Example:\n" +
			"   fsb ctl apply -f pools.yaml\n" +
			"   fsb ctl get pool default -o yaml | sed 's/count: 2/count: 4/' | fsb ctl apply -f -",
		OnUsageError: usageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "filename", Aliases: []string{"f"}, Usage: "the YAML `FILE` (- for standard input)"},
		},
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			if c.NArg() > 0 {
				return usage("apply takes no arguments (got %q): name the file with -f", c.Args().First())
			}
			if c.String("filename") == "" {
				return usage("apply needs -f FILE (- for standard input)")
			}
			return client.Apply(c.Context, c.String("filename"))
		}),
	}
}

func agentsCommand() *cli.Command {
	return &cli.Command{
		Name:      "agents",
		Usage:     "list the agents the controller schedules on, with their free slots",
		UsageText: "fsb ctl agents [-o table|json]",
		Description: "Lists the agents: ID, pool (- for the default pool, which takes sandboxes without --pool),\n" +
			"state, the address sandboxes' endpoints use, node, sandboxes held out of capacity,\n" +
			"runtimes, and how many images each has without a pull. STATE is cordoned for an agent\n" +
			"its SandboxPool is scaling down (it gets no new sandboxes), conflict when two addresses\n" +
			"report one agent ID (two agents started with the same --agent-id): a line on stderr\n" +
			"names both, that agent gets no new sandboxes until only one is left, and its running\n" +
			"sandboxes are left alone; - otherwise. -o json has them as pool, cordoned and\n" +
			"conflictingAddresses.\n\n" +
			"Example:\n" +
			"   fsb ctl agents",
		OnUsageError: usageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: ctl.OutputTable, Usage: "`FORMAT`: table or json"},
		},
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			if c.NArg() > 0 {
				return usage("agents takes no arguments (got %q)", c.Args().First())
			}
			return client.Agents(c.Context, c.String("output"))
		}),
	}
}

func topCommand() *cli.Command {
	return &cli.Command{
		Name:      "top",
		Usage:     "show what a running sandbox uses now: CPU, memory, page cache, disk",
		UsageText: "fsb ctl top NAME [-o table|json]",
		Description: "Named after kubectl top: one reading of sandbox NAME's resource usage, which its agent\n" +
			"takes from the sandbox's cgroup (through containerd) and its root file system's snapshot.\n" +
			"CPU is the share of the sandbox's cores (CORES: its --cpu limit rounded up, else the node's\n" +
			"CPU count) it used over a 200 ms window the agent measures, so the command takes that long.\n" +
			"MEMORY is what it holds without the page cache the kernel drops first (as docker stats\n" +
			"counts it), LIMIT its --memory limit (none: the node's memory is the bound), CACHE the page\n" +
			"cache charged to it, DISK what it wrote to its root file system (<unknown> when the agent's\n" +
			"snapshotter cannot say). Sizes are in binary units (Ki, Mi, Gi). The log driver, which\n" +
			"runs beside the sandbox under the same limits, is not counted. -o json has name,\n" +
			"namespace, revision, time, cpuPercent, cpuCount, cpuWindowMillis, cpuUsedNanos (since the\n" +
			"sandbox started), memoryUsedBytes, memoryLimitBytes (0: none), memoryCacheBytes,\n" +
			"nodeMemoryBytes and diskUsedBytes (null when unknown). It works for --no-init sandboxes.\n\n" +
			"Example:\n" +
			"   fsb ctl top demo\n" +
			"   fsb ctl top demo -o json | jq .cpuPercent",
		OnUsageError: usageError,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: ctl.OutputTable, Usage: "`FORMAT`: table or json"},
		},
		Action: withClient(func(c *cli.Context, client *ctl.Client) error {
			if c.NArg() != 1 {
				return usage("top needs exactly one sandbox name: fsb ctl top NAME")
			}
			return client.Top(c.Context, c.Args().First(), c.String("output"))
		}),
	}
}

// withClient builds the client from the global flags (or the environment,
// or the config file), runs f with it, and turns its error into an exit
// status.
func withClient(f func(*cli.Context, *ctl.Client) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		client, err := newClient(c)
		if err == nil {
			err = f(c, client)
		}
		return exitStatus(err)
	}
}

func newClient(c *cli.Context) (*ctl.Client, error) {
	path, err := ctl.ConfigPath()
	if err != nil {
		// No home to find the file in: the flags and the environment decide.
		path = ""
	}
	conn, err := resolveConnection(c, path)
	if err != nil {
		return nil, err
	}
	return clientOf(c, conn)
}

// clientOf returns the client of the controller conn names: every command
// builds its client here, so that each honours the whole connection
// (server, token, CA, namespace).
func clientOf(c *cli.Context, conn ctl.Connection) (*ctl.Client, error) {
	return ctl.New(ctl.Config{
		Server:    conn.Server,
		Token:     conn.Token,
		CAFile:    conn.CAFile,
		Namespace: conn.Namespace,
		Out:       c.App.Writer,
		Err:       c.App.ErrWriter,
		Editor:    cmp.Or(os.Getenv("EDITOR"), os.Getenv("VISUAL")),
	})
}

// exitStatus turns a command's error into "error: ..." and its exit
// status: 2 for a usage mistake, 1 for the rest.
func exitStatus(err error) error {
	var exit cli.ExitCoder
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit):
		return err
	case ctl.IsUsage(err):
		return cli.Exit("error: "+err.Error(), 2)
	default:
		return cli.Exit("error: "+err.Error(), 1)
	}
}

// usage is a usage mistake: exit status 2.
func usage(format string, args ...any) error {
	return cli.Exit("error: "+fmt.Sprintf(format, args...), 2)
}

// usageError reports a flag urfave/cli could not parse, with where to look.
func usageError(c *cli.Context, err error, _ bool) error {
	help := "fsb ctl"
	if c.Command != nil && c.Command.HelpName != "" {
		help = c.Command.HelpName
	}
	return usage("%v (see %s --help)", err, help)
}

// resolveConnection decides the controller, token and namespace from the
// global flags, the environment, a kubeconfig (--kubeconfig, --context) and
// the config file at path, for every command.
func resolveConnection(c *cli.Context, path string) (ctl.Connection, error) {
	given := ctl.Connection{
		Server:    c.String("server"),
		Token:     c.String("token"),
		Namespace: c.String("namespace"),
		CAFile:    c.String("ca-file"),
	}
	if kc := c.String("kubeconfig"); kc != "" {
		creds, err := ctl.LoadKubeCredentials(kc, c.String("context"))
		if err != nil {
			return ctl.Connection{}, err
		}
		given.Token = creds.Token
		given.Namespace = cmp.Or(given.Namespace, creds.Namespace)
	} else if c.String("context") != "" {
		return ctl.Connection{}, usage("--context names a kubeconfig context: give --kubeconfig FILE too (fsb ctl config use-context picks fsb's own contexts)")
	}
	return ctl.ResolveConnection(path, given)
}
