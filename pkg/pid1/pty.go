package pid1

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// openPTY opens a new pseudo-terminal of rows x cols (24x80 when unset)
// and returns its master and slave.
func openPTY(rows, cols uint16) (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("exec: open a terminal: %w", err)
	}
	defer func() {
		if err != nil {
			_ = master.Close()
		}
	}()
	var n uint32
	err = control(master, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return fmt.Errorf("unlock: %w", err)
		}
		var err error
		n, err = unix.IoctlGetUint32(fd, unix.TIOCGPTN)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("exec: set up a terminal: %w", err)
	}
	if err := resizePTY(master, rows, cols); err != nil {
		return nil, nil, err
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.FormatUint(uint64(n), 10), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("exec: open a terminal: %w", err)
	}
	return master, slave, nil
}

// resizePTY sets the terminal's size; the kernel tells its foreground
// process group with SIGWINCH.
func resizePTY(master *os.File, rows, cols uint16) error {
	if rows == 0 {
		rows = 24
	}
	if cols == 0 {
		cols = 80
	}
	err := control(master, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
	if err != nil {
		return errorf(initlink.CodeInternal, "resize the terminal to %dx%d: %v", rows, cols, err)
	}
	return nil
}

// control runs fn on f's descriptor.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
