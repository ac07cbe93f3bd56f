package logfile

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"

	"github.com/containerd/containerd/runtime/v2/logging"
	"golang.org/x/sync/errgroup"

	"github.com/fast-sandbox/fast-sandbox/pkg/cgroup"
)

// DriverConfig is what `fsb log-driver` needs to know. containerd's shim
// passes a log binary's arguments in no fixed order, so the config travels
// as a single argument: a query string made by Encode.
type DriverConfig struct {
	Path     string
	MaxSize  int64
	MaxFiles int
	// Cgroup, when set, is the sandbox's cgroup (see package cgroup): the
	// driver makes it with Limits and runs in it, so that what a sandbox
	// makes it do counts against the sandbox's own limits.
	Cgroup string
	Limits cgroup.Limits
	// Control, when set, is a unix socket the driver listens on for
	// SwitchLog. A warm sandbox's driver starts with Control and no Path:
	// it holds the sandbox's output (Pending) until the agent claims the
	// sandbox and switches it to the claiming sandbox's log file.
	Control string
}

// Encode returns the config as "path=FILE&max-size=BYTES&max-files=N".
func (c DriverConfig) Encode() string {
	q := url.Values{}
	if c.Path != "" {
		q.Set("path", c.Path)
	}
	if c.Control != "" {
		q.Set("control", c.Control)
	}
	if c.MaxSize > 0 {
		q.Set("max-size", strconv.FormatInt(c.MaxSize, 10))
	}
	if c.MaxFiles > 0 {
		q.Set("max-files", strconv.Itoa(c.MaxFiles))
	}
	if c.Cgroup != "" {
		q.Set("cgroup", c.Cgroup)
		for k, v := range map[string]int64{"cpu-quota": c.Limits.CPUQuota, "cpu-period": c.Limits.CPUPeriod, "memory": c.Limits.Memory} {
			if v > 0 {
				q.Set(k, strconv.FormatInt(v, 10))
			}
		}
	}
	return q.Encode()
}

// ParseDriverConfig parses what Encode made.
func ParseDriverConfig(s string) (DriverConfig, error) {
	q, err := url.ParseQuery(s)
	if err != nil {
		return DriverConfig{}, fmt.Errorf("log driver config %q: %w", s, err)
	}
	c := DriverConfig{Path: q.Get("path"), Control: q.Get("control"), MaxFiles: 1}
	if c.Path == "" && c.Control == "" {
		return DriverConfig{}, fmt.Errorf("log driver config %q: no path", s)
	}
	if v := q.Get("max-size"); v != "" {
		if c.MaxSize, err = strconv.ParseInt(v, 10, 64); err != nil {
			return DriverConfig{}, fmt.Errorf("log driver max-size: %w", err)
		}
	}
	if v := q.Get("max-files"); v != "" {
		if c.MaxFiles, err = strconv.Atoi(v); err != nil {
			return DriverConfig{}, fmt.Errorf("log driver max-files: %w", err)
		}
	}
	c.Cgroup = q.Get("cgroup")
	for k, p := range map[string]*int64{"cpu-quota": &c.Limits.CPUQuota, "cpu-period": &c.Limits.CPUPeriod, "memory": &c.Limits.Memory} {
		if v := q.Get(k); v != "" {
			if *p, err = strconv.ParseInt(v, 10, 64); err != nil {
				return DriverConfig{}, fmt.Errorf("log driver %s: %w", k, err)
			}
		}
	}
	return c, nil
}

// DriverMain is the `log-driver` role's entry: args are what follows
// "log-driver", one config made by DriverConfig.Encode. containerd's shim
// runs it with the task's stdout and stderr as file descriptors 3 and 4; it
// signals ready on descriptor 5 once the log file is open, copies both
// streams into it until they close, and exits. It returns only on a bad
// config.
func DriverMain(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "fsb log-driver: want one argument, path=FILE[&max-size=BYTES&max-files=N]")
		return 2
	}
	cfg, err := ParseDriverConfig(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "fsb log-driver:", err)
		return 2
	}
	logging.Run(func(_ context.Context, io *logging.Config, ready func() error) error {
		return runDriver(cfg, io, ready)
	})
	return 0
}

// driverOOMScoreAdj is the log driver's oom_score_adj: as low as it goes
// while the driver can still be killed (-1000 would make it immune) when
// nothing else is left to kill.
const driverOOMScoreAdj = -998

func runDriver(cfg DriverConfig, io *logging.Config, ready func() error) error {
	var w *Writer
	if cfg.Path != "" {
		var err error
		if w, err = Create(cfg.Path, WithRotation(cfg.MaxSize, cfg.MaxFiles)); err != nil {
			return err
		}
	} else {
		w = Pending()
	}
	defer w.Close()
	if cfg.Control != "" {
		// Listening before ready: the agent may switch as soon as the
		// task exists.
		stop, err := serveControl(cfg.Control, w)
		if err != nil {
			return err
		}
		defer stop()
	}
	// The shim holds the task back until the driver is ready, so no output
	// is written before the file is open.
	if err := ready(); err != nil {
		return fmt.Errorf("signal ready: %w", err)
	}
	if cfg.Cgroup != "" {
		// The driver shares the sandbox's memory limit: when the sandbox
		// runs out, the OOM killer is to take the task, whose memory it
		// is, not the driver, which would lose the task's output. The
		// score is set before joining, so no OOM there finds it unset.
		// Lowering it needs CAP_SYS_RESOURCE; without it the task's own
		// score, raised above the shim's by its spec, still ranks the
		// task first, so a refusal is said but does not stop the driver.
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(driverOOMScoreAdj)), 0); err != nil {
			fmt.Fprintln(os.Stderr, "fsb log-driver: lower its OOM score:", err)
		}
		// After ready, before the first byte is copied: the task's create
		// does not wait the milliseconds joining takes (making the cgroup
		// in every hierarchy), what the task writes meanwhile waits in its
		// pipes, and every byte the driver copies counts against the
		// sandbox's limits. A driver that cannot join ends: the task's
		// writes then fail rather than flood outside the limits.
		leave, err := cgroup.Enter(cfg.Cgroup, cfg.Limits)
		if err != nil {
			return fmt.Errorf("log driver: join the sandbox's cgroup: %w", err)
		}
		defer func() {
			if lerr := leave(); lerr != nil {
				fmt.Fprintln(os.Stderr, "fsb log-driver: leave the sandbox's cgroup:", lerr)
			}
		}()
	}
	// Copying ends when the task's pipes close, not on SIGTERM: the shim
	// closes them once the task is gone, and what is still in them is kept.
	var g errgroup.Group
	g.Go(func() error { return w.Copy(Stdout, io.Stdout) })
	g.Go(func() error { return w.Copy(Stderr, io.Stderr) })
	return g.Wait()
}
