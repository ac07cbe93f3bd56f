package logfile

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// controlTimeout bounds one control connection's exchange on the driver's
// side.
const controlTimeout = 10 * time.Second

// serveControl listens on path (replacing a socket a killed driver left)
// and answers each connection's one switch request: a line holding a
// DriverConfig's encoding (its path and rotation), answered "ok" once w
// writes there, or "error: ..." when it cannot. stop closes the listener,
// removes the socket and waits for the connections being served.
func serveControl(path string, w *Writer) (stop func(), err error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("log driver control socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("log driver control socket: %w", err)
	}
	// Root's alone, as the agent is.
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("log driver control socket: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(controlTimeout))
				line, err := bufio.NewReaderSize(c, 64<<10).ReadString('\n')
				if err != nil {
					return
				}
				answer := "ok\n"
				if err := switchTo(w, strings.TrimSuffix(line, "\n")); err != nil {
					answer = "error: " + strings.ReplaceAll(err.Error(), "\n", " ") + "\n"
				}
				_, _ = c.Write([]byte(answer))
			}()
		}
	}()
	return func() {
		_ = ln.Close()
		wg.Wait()
	}, nil
}

func switchTo(w *Writer, encoded string) error {
	cfg, err := ParseDriverConfig(encoded)
	if err != nil {
		return err
	}
	if cfg.Path == "" {
		return errors.New("switch log: no path")
	}
	return w.Switch(cfg.Path, WithRotation(cfg.MaxSize, cfg.MaxFiles))
}

// SwitchLog asks the log driver listening on control to write to cfg.Path
// (rotated by cfg.MaxSize and cfg.MaxFiles) from now on, and returns once
// it does: output written after that lands in the new file, nothing before
// it does. A switch repeated to the same path succeeds.
func SwitchLog(ctx context.Context, control string, cfg DriverConfig) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", control)
	if err != nil {
		return fmt.Errorf("switch log: reach the log driver: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	msg := DriverConfig{Path: cfg.Path, MaxSize: cfg.MaxSize, MaxFiles: cfg.MaxFiles}.Encode()
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return fmt.Errorf("switch log: %w", err)
	}
	answer, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("switch log: no answer from the log driver: %w", err)
	}
	if answer != "ok\n" {
		return fmt.Errorf("switch log: the log driver answered %q", strings.TrimSpace(answer))
	}
	return nil
}
