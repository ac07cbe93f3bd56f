package ctl

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/urfave/cli/v2"

	"github.com/fast-sandbox/fast-sandbox/pkg/bench"
	"github.com/fast-sandbox/fast-sandbox/pkg/ctl"
	fsbv1 "github.com/fast-sandbox/fast-sandbox/pkg/gen/fsb/v1"
)

// The defaults of `fsb ctl bench` off a `make up` machine: the agent's and
// containerd's own.
const (
	defaultBenchImage  = "localhost/fsb/busybox:latest"
	defaultLogDir      = "/var/log/fsb"
	defaultSocket      = "/run/containerd/containerd.sock"
	defaultNamespace   = "fsb"
	defaultUpDir       = "/tmp/fsb-up" // scripts/up.sh's UP_DIR
	upDirFile          = ".fsb/up-dir" // where scripts/up.sh writes UP_DIR
	defaultGVisorShim  = "/run/fsb/runsc-fsb"
	gvisorWrapperInDir = "runsc-fsb"      // the agent writes it into --state-dir
	agentPidFile       = ".fsb/agent.pid" // where scripts/up.sh writes the agent's PID
	// The agent's own defaults, which make up keeps.
	defaultSnapshotter = "overlayfs"
	defaultPidsLimit   = 1024
	// The containerd namespace the equivalent baseline runs in: not the
	// agent's, as fsb's sandboxes have theirs to themselves.
	defaultBaselineNamespace = "fsb-bench"
)

func benchCommand() *cli.Command {
	up := upDir()
	logDir := defaultLogDir
	if dirExists(filepath.Join(up, "logs")) {
		logDir = filepath.Join(up, "logs")
	}
	socket := defaultSocket
	if _, err := os.Stat(filepath.Join(up, "containerd.sock")); err == nil {
		socket = filepath.Join(up, "containerd.sock")
	}
	wrapper := ""
	for _, w := range []string{filepath.Join(up, "agent", gvisorWrapperInDir), defaultGVisorShim} {
		if _, err := os.Stat(w); err == nil {
			wrapper = w
			break
		}
	}
	netns := agentNetNS()
	return &cli.Command{
		Name:  "bench",
		Usage: "time create -> first output and delete of N sandboxes, beside raw containerd",
		UsageText: "fsb ctl bench [-n N] [-c C] [--mode fast|strong] [--runtime R] [--baseline [--attribute]] [--warm] [-o table|json]\n" +
			"   fsb ctl bench --exec [-n N] [--runtime R] [--file-mib M] [--baseline=false] [-o table|json]",
		Description: "Creates N sandboxes named bench-<random>-<i>, C at a time (C may not exceed the free\n" +
			"slots `fsb ctl agents` shows). Each worker creates one, waits for the first byte of its\n" +
			"output in the agent's log dir (so bench must run on the agent's host) and deletes it\n" +
			"(grace period --grace, 0 by default). It prints p50/p90/p99/max in milliseconds.\n" +
			"--baseline does the same work straight on containerd in the same run, interleaved, twice:\n" +
			"the plain baseline (containerd's default spec) and the equivalent one (the agent's spec\n" +
			"minus init: its netns, seccomp profile, no-new-privileges, pids limit and snapshotter, its\n" +
			"delete; in containerd namespace --baseline-namespace), and prints both ratios of the p50s.\n" +
			"--attribute also runs each step between the two and prints what each difference costs.\n" +
			"--warm adds, per round, a sandbox whose image, runtime and resources (--cpu, --memory,\n" +
			"--pids) should match a warm entry, counts the creates that claimed a warm sandbox (hits)\n" +
			"and those made cold (misses), and times the hits. The cold sandboxes (with --warm or\n" +
			"without) have the same resources but the pids limit spelt otherwise (the agent's default\n" +
			"written out), which is the same work but matches no warm entry: they are always cold.\n" +
			"See docs/benchmarks.md.\n" +
			"Every sandbox it made is deleted at the end, also after Ctrl-C.\n" +
			"After `bench`, -n is the count; the namespace is the global -n, given before `bench`\n" +
			"(fsb ctl -n team bench -n 50), or FSB_NAMESPACE.\n\n" +
			"With --exec it measures exec and files instead: it creates one long-running sandbox, then\n" +
			"times N execs (100 or more; 100 by default) of --command, each from the request to the\n" +
			"first byte of its output here, beside containerd's own exec into the same sandbox's task\n" +
			"(interleaved; from the Exec call to the first byte read from its stdout pipe; needs the\n" +
			"agent's containerd, so run it on the agent's host, or pass --baseline=false). Then it\n" +
			"uploads and downloads a file of --file-mib MiB (WriteFile, ReadFile) and times cp of as\n" +
			"much on this host. It prints p50/p90/p99/max of both execs and their ratio, and MiB/s\n" +
			"with the ratios to cp; -o json has exec_ms, baseline_exec_ms (each p50, p90, p99, max),\n" +
			"ratio_p50, upload_mib_s, download_mib_s, host_cp_mib_s, upload_ratio, download_ratio.\n" +
			"The sandbox is deleted at the end, also after an error or Ctrl-C.\n\n" +
			"Example:\n" +
			"   sudo bin/fsb ctl bench -n 20 -c 2 --baseline\n" +
			"   sudo bin/fsb ctl bench -n 200 -c 4 --warm --baseline\n" +
			"   sudo bin/fsb ctl bench --mode strong --runtime crun -o json | jq .ratio_p50\n" +
			"   sudo bin/fsb ctl bench --exec --runtime crun -o json | jq .exec_ms.p50",
		OnUsageError: usageError,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "count", Aliases: []string{"n"}, Value: 20, Usage: "`N` sandboxes in all"},
			&cli.IntFlag{Name: "concurrency", Aliases: []string{"c"}, Value: 1, Usage: "`C` sandboxes at a time, at most the free slots"},
			&cli.StringFlag{Name: "mode", Usage: "`MODE`: fast or strong", DefaultText: "the controller's"},
			&cli.StringFlag{Name: "image", Value: defaultBenchImage, Usage: "the `IMAGE` every sandbox runs"},
			&cli.StringFlag{Name: "runtime", Value: "runc", Usage: "`RUNTIME`: runc, crun or gvisor"},
			&cli.StringFlag{Name: "command", Value: "echo hello", Usage: "the `COMMAND` every sandbox runs, split at spaces; it must write output"},
			&cli.BoolFlag{Name: "baseline", Usage: "also run the same work straight on containerd, plain and equivalent, and print the ratios"},
			&cli.BoolFlag{Name: "attribute", Usage: "with --baseline, also run every step from the plain to the equivalent baseline"},
			&cli.BoolFlag{Name: "warm", Usage: "also create, each round, a sandbox that matches a warm entry, and count the claims"},
			&cli.StringFlag{Name: "cpu", Usage: "every sandbox's CPU limit, a `QUANTITY` (none by default)"},
			&cli.StringFlag{Name: "memory", Usage: "every sandbox's memory limit, a `QUANTITY` (none by default)"},
			&cli.Int64Flag{Name: "pids", Usage: "every sandbox's pids limit, `N` (0: the agent's default)"},
			&cli.DurationFlag{Name: "grace", Usage: "grace period (a `DURATION` in whole seconds) of every delete, fsb's and the equivalent baseline's"},
			&cli.StringFlag{Name: "netns", Value: netns, Usage: "the network namespace `PATH` the agent's sandboxes join, for --baseline (make up's agent's when found)"},
			&cli.StringFlag{Name: "snapshotter", Value: defaultSnapshotter, Usage: "the agent's --snapshotter `NAME`, for --baseline"},
			&cli.Int64Flag{Name: "default-pids-limit", Value: defaultPidsLimit, Usage: "the agent's --default-pids-limit `N`, for --baseline and --warm"},
			&cli.BoolFlag{Name: "seccomp-compat-arches", Usage: "the agent runs with --seccomp-compat-arches, for --baseline"},
			&cli.StringFlag{Name: "baseline-namespace", Value: defaultBaselineNamespace, Usage: "the containerd `NAMESPACE` the equivalent baseline runs in (the image is copied there)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: ctl.OutputTable, Usage: "`FORMAT`: table or json"},
			&cli.StringFlag{Name: "log-dir", Value: logDir, Usage: "the agent's --log-dir `DIR`, where output is seen (make up's when there is one)"},
			&cli.StringFlag{Name: "containerd-socket", Value: socket, Usage: "containerd's `SOCKET` for --baseline (make up's when there is one)"},
			&cli.StringFlag{Name: "containerd-namespace", Value: defaultNamespace, Usage: "the containerd `NAMESPACE` holding the image, for --baseline"},
			&cli.StringFlag{Name: "gvisor-wrapper", Value: wrapper, Usage: "the runsc wrapper `PATH` the agent runs for gvisor, for --baseline (the agent's when found)"},
			&cli.DurationFlag{Name: "timeout", Value: bench.DefaultStepTimeout, Usage: "bound (a `DURATION`) on each step of one sandbox: create to first output; delete"},
			&cli.BoolFlag{Name: "exec", Usage: "measure exec (and file transfers) in one sandbox instead of creates"},
			&cli.IntFlag{Name: "file-mib", Value: bench.DefaultFileSize >> 20, Usage: "with --exec, the size in `MiB` of the upload and download (0: none)"},
		},
		Action: func(c *cli.Context) error {
			return exitStatus(benchAction(c))
		},
	}
}

func benchAction(c *cli.Context) error {
	if c.Bool("exec") {
		return execBenchAction(c)
	}
	if c.NArg() > 0 {
		return usage("bench takes no arguments (got %q); the command is --command", c.Args().First())
	}
	output := c.String("output")
	if output != ctl.OutputTable && output != ctl.OutputJSON {
		return usage("-o %q: want table or json", output)
	}
	mode := strings.ToLower(c.String("mode"))
	if mode != "" && mode != "fast" && mode != "strong" {
		return usage("--mode %q: want fast or strong", c.String("mode"))
	}
	n, conc := c.Int("count"), c.Int("concurrency")
	switch {
	case n < 1 || n > 100000:
		return usage("-n %d: want 1 to 100000 sandboxes", n)
	case conc < 1 || conc > n:
		return usage("-c %d: want 1 to -n (%d)", conc, n)
	}
	command := strings.Fields(c.String("command"))
	if len(command) == 0 {
		return usage("--command is empty: the bench waits for output, so the command must write some")
	}
	logDir := c.String("log-dir")
	if !dirExists(logDir) {
		return usage("--log-dir %s does not exist: give the agent's --log-dir (bench must run on the agent's host)", logDir)
	}
	conn, err := benchConnection(c)
	if err != nil {
		return err
	}
	client, err := clientOf(c, conn)
	if err != nil {
		return usage("%v", err)
	}
	api := client.API()
	grace := c.Duration("grace")
	if grace < 0 || grace%time.Second != 0 {
		return usage("--grace %s: want whole seconds, 0 or more", grace)
	}
	if c.Bool("attribute") && !c.Bool("baseline") {
		return usage("--attribute needs --baseline")
	}
	var res *fsbv1.Resources
	if c.String("cpu") != "" || c.String("memory") != "" || c.Int64("pids") != 0 {
		res = &fsbv1.Resources{Cpu: c.String("cpu"), Memory: c.String("memory"), Pids: c.Int64("pids")}
	}
	o := bench.LoadOptions{
		N:           n,
		Concurrency: conc,
		Namespace:   conn.Namespace,
		Mode:        mode,
		Image:       c.String("image"),
		Runtime:     c.String("runtime"),
		Command:     command,
		LogDir:      logDir,
		StepTimeout: c.Duration("timeout"),
		// The cold sandboxes claim no warm one, with --warm or without:
		// the same work, the pids limit spelt otherwise.
		Resources: bench.ColdResources(res, c.Int64("default-pids-limit")),
		Grace:     grace,
	}
	if c.Bool("warm") {
		o.Warm, o.WarmResources = true, res
	}
	if c.Bool("baseline") {
		binary := o.Runtime
		if o.Runtime == "gvisor" {
			binary = c.String("gvisor-wrapper")
		}
		if binary == "" {
			fmt.Fprintln(c.App.ErrWriter, "note: no baseline for gvisor: no runsc wrapper found; give the agent's with --gvisor-wrapper")
		} else {
			client, err := containerd.New(c.String("containerd-socket"), containerd.WithDefaultNamespace(c.String("containerd-namespace")))
			if err != nil {
				return fmt.Errorf("--baseline needs containerd on this host: %w", err)
			}
			defer client.Close()
			plain := bench.Baseline{
				Client:      client,
				Image:       o.Image,
				Snapshotter: "overlayfs",
				BinaryName:  binary,
				RuntimeName: o.Runtime,
				Command:     command,
				Resources:   o.Resources,
			}
			agent := bench.Agent{
				NetNSPath:           c.String("netns"),
				Snapshotter:         c.String("snapshotter"),
				DefaultPidsLimit:    c.Int64("default-pids-limit"),
				SeccompCompatArches: c.Bool("seccomp-compat-arches"),
				Grace:               grace,
			}
			steps := bench.Steps(plain, agent, c.String("baseline-namespace"))
			if !c.Bool("attribute") {
				steps = []bench.Step{steps[0], {Name: "equivalent", Baseline: steps[len(steps)-1].Baseline}}
			}
			o.Baselines = steps
		}
	}

	r, err := bench.Load(c.Context, api, o)
	if r == nil {
		return err
	}
	return report(c, output, r, len(r.Create) > 0, err)
}

// benchConnection resolves the controller, token and namespace from the
// global flags, the environment and the config file, as newClient does for
// the other commands.
func benchConnection(c *cli.Context) (ctl.Connection, error) {
	path, err := ctl.ConfigPath()
	if err != nil {
		path = ""
	}
	return resolveConnection(c, path)
}

// upDir returns the directory `make up` keeps containerd and the sandbox
// logs in: what scripts/up.sh wrote into .fsb/up-dir (in the current
// directory), else its default.
func upDir() string {
	if b, err := os.ReadFile(upDirFile); err == nil {
		if d := strings.TrimSpace(string(b)); d != "" {
			return d
		}
	}
	return defaultUpDir
}

// agentNetNS returns the network namespace the agent's sandboxes join: by
// default the agent's own, so that of the PID scripts/up.sh wrote into
// .fsb/agent.pid (in the current directory), else this process's (an
// agent on the host network shares it).
func agentNetNS() string {
	if b, err := os.ReadFile(agentPidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			if p := fmt.Sprintf("/proc/%d/ns/net", pid); fileExists(p) {
				return p
			}
		}
	}
	return fmt.Sprintf("/proc/%d/ns/net", os.Getpid())
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func dirExists(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir()
}

func execBenchAction(c *cli.Context) error {
	if c.NArg() > 0 {
		return usage("bench takes no arguments (got %q); the command is --command", c.Args().First())
	}
	output := c.String("output")
	if output != ctl.OutputTable && output != ctl.OutputJSON {
		return usage("-o %q: want table or json", output)
	}
	mode := strings.ToLower(c.String("mode"))
	if mode != "" && mode != "fast" && mode != "strong" {
		return usage("--mode %q: want fast or strong", c.String("mode"))
	}
	n := bench.MinExecN
	if c.IsSet("count") {
		n = c.Int("count")
	}
	if n < bench.MinExecN || n > 1000000 {
		return usage("-n %d: want %d to 1000000 execs", n, bench.MinExecN)
	}
	if c.IsSet("concurrency") {
		return usage("--exec times one exec at a time: -c does not apply")
	}
	mib := c.Int("file-mib")
	if mib < 0 || mib > 1<<20 {
		return usage("--file-mib %d: want 0 to 1048576", mib)
	}
	command := strings.Fields(c.String("command"))
	if len(command) == 0 {
		return usage("--command is empty: the bench waits for output, so the command must write some")
	}
	conn, err := benchConnection(c)
	if err != nil {
		return err
	}
	client, err := clientOf(c, conn)
	if err != nil {
		return usage("%v", err)
	}
	o := bench.ExecBenchOptions{
		N:           n,
		Namespace:   conn.Namespace,
		Mode:        mode,
		Image:       c.String("image"),
		Runtime:     c.String("runtime"),
		Command:     command,
		StepTimeout: c.Duration("timeout"),
		FileSize:    int64(mib) << 20,
	}
	// The containerd exec is the point of comparison: on unless turned
	// off outright.
	if !c.IsSet("baseline") || c.Bool("baseline") {
		cd, err := containerd.New(c.String("containerd-socket"), containerd.WithDefaultNamespace(c.String("containerd-namespace")))
		if err != nil {
			return fmt.Errorf("the containerd exec beside fsb's needs the agent's containerd on this host (--containerd-socket), or --baseline=false: %w", err)
		}
		defer cd.Close()
		o.Containerd = cd
	}
	r, err := bench.ExecBench(c.Context, client.StreamAPI(), o)
	if r == nil {
		return err
	}
	return report(c, output, r, len(r.Exec) > 0, err)
}

// report prints r as output asks, when it measured anything, and returns
// err with what r says failed.
func report(c *cli.Context, output string, r interface {
	WriteTable(io.Writer) error
	WriteJSON(io.Writer) error
	Err() error
}, measured bool, err error) error {
	if measured {
		write := r.WriteTable
		if output == ctl.OutputJSON {
			write = r.WriteJSON
		}
		if werr := write(c.App.Writer); werr != nil {
			return werr
		}
	}
	return errors.Join(err, r.Err())
}
