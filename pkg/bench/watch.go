package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// recheck bounds how long a wait for output sleeps between two looks at
// the file when inotify reports nothing: a safety net, never the clock.
// A variable so that a test can take the net away.
var recheck = 20 * time.Millisecond

// watchEvents are the changes that may mean output: a file or directory
// made or moved in, or a file written.
const watchEvents = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MODIFY | unix.IN_CLOSE_WRITE

// awaitFile waits until found reports true and returns when it did. It
// looks again whenever inotify reports a change in dir, or, while dir is
// not there yet, in its deepest ancestor that is: the clock stops at the
// write that made found true, not at the next tick of a poll, and a
// waiting bench takes no CPU from what it measures.
func awaitFile(ctx context.Context, dir string, found func() (bool, error)) (time.Time, error) {
	w, err := newDirWatch()
	if err != nil {
		return time.Time{}, err
	}
	defer w.close()
	for {
		// The watch goes first, so that no change between the look and
		// the wait is missed.
		if err := w.follow(dir); err != nil {
			return time.Time{}, err
		}
		ok, err := found()
		if err != nil {
			return time.Time{}, err
		}
		if ok {
			return time.Now(), nil
		}
		if err := w.wait(ctx); err != nil {
			return time.Time{}, err
		}
	}
}

// dirWatch is an inotify instance watching one directory at a time.
type dirWatch struct {
	f  *os.File // non-blocking, so reads wait in Go's poller
	wd int      // the watch, or -1
	at string   // the directory watched
}

func newDirWatch() (*dirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("wait for output: inotify: %w", err)
	}
	return &dirWatch{f: os.NewFile(uintptr(fd), "inotify"), wd: -1}, nil
}

func (w *dirWatch) close() { w.f.Close() }

// follow watches dir, or its deepest ancestor that exists while dir does
// not.
func (w *dirWatch) follow(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if d == w.at {
			return nil
		}
		wd, err := w.add(d)
		switch {
		case err == nil:
			if w.wd >= 0 && w.wd != wd {
				w.remove(w.wd)
			}
			w.wd, w.at = wd, d
			return nil
		case errors.Is(err, unix.ENOENT) && d != filepath.Dir(d):
			continue
		default:
			return fmt.Errorf("wait for output: watch %s: %w", d, err)
		}
	}
}

func (w *dirWatch) add(dir string) (wd int, err error) {
	err = w.control(func(fd int) error {
		wd, err = unix.InotifyAddWatch(fd, dir, watchEvents|unix.IN_ONLYDIR)
		return err
	})
	return wd, err
}

func (w *dirWatch) remove(wd int) {
	_ = w.control(func(fd int) error {
		_, err := unix.InotifyRmWatch(fd, uint32(wd))
		return err
	})
}

func (w *dirWatch) control(f func(fd int) error) error {
	rc, err := w.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// wait returns once inotify reports a change, recheck has passed or ctx
// has ended (then with its error). It drains what is queued, so the next
// wait sleeps until something new happens.
func (w *dirWatch) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	deadline := time.Now().Add(recheck)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := w.f.SetReadDeadline(deadline); err != nil {
		return fmt.Errorf("wait for output: %w", err)
	}
	var buf [4096]byte
	_, err := w.f.Read(buf[:])
	switch {
	case err == nil, errors.Is(err, os.ErrDeadlineExceeded):
		return nil
	default:
		return fmt.Errorf("wait for output: read inotify: %w", err)
	}
}
