//go:build !fsbhelper

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fast-sandbox/fast-sandbox/pkg/rig"
)

// terminal is a pseudo-terminal pair: the test holds the master side, as a
// terminal emulator does, and a program runs on the slave side.
type terminal struct {
	master *os.File
	slave  *os.File
	// The raw descriptors, for ioctls: os.File.Fd would put the master in
	// blocking mode, where Close no longer ends a blocked Read.
	mfd, sfd int
	out      *rig.Buffer // everything read from the master
	done     chan struct{}
	// gone, once closed, says the program on the slave side has ended:
	// no output is awaited any more.
	gone chan struct{}
}

// openTerminal opens a pseudo-terminal of rows x cols; the test's end
// closes it and stops its reader.
func openTerminal(t *testing.T, rows, cols uint16) *terminal {
	t.Helper()
	// Non-blocking, so that the runtime poller owns the fd and closing the
	// master ends a read blocked on it.
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(mfd)
		t.Fatalf("unlock the pty: %v", err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(mfd)
		t.Fatalf("pty number: %v", err)
	}
	sfd, err := unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(mfd)
		t.Fatalf("open /dev/pts/%d: %v", n, err)
	}
	term := &terminal{master: os.NewFile(uintptr(mfd), "ptmx"), slave: os.NewFile(uintptr(sfd), fmt.Sprintf("/dev/pts/%d", n)),
		mfd: mfd, sfd: sfd, out: &rig.Buffer{}, done: make(chan struct{}), gone: make(chan struct{})}
	term.resize(t, rows, cols)
	go func() {
		defer close(term.done)
		buf := make([]byte, 4096)
		for {
			n, err := term.master.Read(buf)
			term.out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		term.master.Close()
		<-term.done
		term.slave.Close()
	})
	return term
}

// resize sets the terminal's size, as a terminal emulator does when its
// window changes: the kernel sends SIGWINCH to the terminal's foreground
// process group.
func (term *terminal) resize(t *testing.T, rows, cols uint16) {
	t.Helper()
	if err := unix.IoctlSetWinsize(term.mfd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatalf("resize the pty: %v", err)
	}
}

// termios is the slave side's terminal settings.
func (term *terminal) termios(t *testing.T) unix.Termios {
	t.Helper()
	tio, err := unix.IoctlGetTermios(term.sfd, unix.TCGETS)
	if err != nil {
		t.Fatalf("termios: %v", err)
	}
	return *tio
}

// type_ writes s to the terminal, as typed keys.
func (term *terminal) type_(t *testing.T, s string) {
	t.Helper()
	if _, err := term.master.WriteString(s); err != nil {
		t.Fatalf("type %q: %v", s, err)
	}
}

// waitOutput waits until the terminal's output after offset from holds
// want, and returns the offset just past it; false once timeout has passed
// or the program has ended without it.
func (term *terminal) waitOutput(t *testing.T, from int, want string, timeout time.Duration) (int, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var ended bool
		select {
		case <-term.gone:
			ended = true
		default:
		}
		out := term.out.String()
		if i := strings.Index(out[min(from, len(out)):], want); i >= 0 {
			return from + i + len(want), true
		}
		if ended || time.Now().After(deadline) {
			return from, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testCtlExecTerminal runs `fsb ctl exec -it NAME -- sh` on a real
// pseudo-terminal, as a user at a terminal would: the shell runs in a
// terminal inside, sees the outer terminal's size and its resize, its exit
// code becomes the CLI's, and the terminal's settings are restored.
func testCtlExecTerminal(t *testing.T, p *execPlane) {
	const name = "ctl-exec-it"
	p.sandbox(t, name, "")
	term := openTerminal(t, 30, 90)
	before := term.termios(t)

	cmd := exec.Command(rig.FsbBinary(t), "ctl", "exec", "-it", name, "--", "sh")
	cmd.Env = append(os.Environ(), "FSB_SERVER="+p.server, "FSB_TOKEN=user-token-1", "HOME="+t.TempDir(), "TERM=dumb")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = term.slave, term.slave, term.slave
	// Its own session with the pty as controlling terminal: a resize
	// signals it, as it would signal a shell's foreground job.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(term.gone) }()
	t.Cleanup(func() {
		select {
		case <-term.gone:
		default:
			cmd.Process.Kill()
			<-term.gone
		}
	})
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\nterminal output:\n%q", append(args, term.out.String())...)
	}

	// busybox sh prompts "/ # " once it runs on a terminal.
	at, ok := term.waitOutput(t, 0, "# ", 30*time.Second)
	if !ok {
		fail("no shell prompt")
	}
	term.type_(t, "tty; stty size\r")
	if at, ok = term.waitOutput(t, at, "/dev/pts/", 10*time.Second); !ok {
		fail("tty did not name a /dev/pts terminal")
	}
	if at, ok = term.waitOutput(t, at, "30 90", 10*time.Second); !ok {
		fail("stty size did not say the terminal's 30 90")
	}

	// The resize reaches the CLI as SIGWINCH and the shell's terminal
	// through ResizePty; it lands asynchronously, so ask until it shows.
	term.resize(t, 50, 120)
	for i := 0; ; i++ {
		term.type_(t, "stty size\r")
		var seen bool
		if at, seen = term.waitOutput(t, at, "50 120", time.Second); seen {
			break
		}
		if i == 10 {
			fail("stty size never said 50 120 after the resize")
		}
	}

	term.type_(t, "exit 7\r")
	select {
	case <-term.gone:
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) || ee.ExitCode() != 7 {
			fail("the CLI ended with %v, want exit status 7", waitErr)
		}
	case <-time.After(20 * time.Second):
		fail("the CLI did not exit after the shell's exit 7")
	}
	if after := term.termios(t); after != before {
		t.Errorf("the terminal's settings after the CLI exited differ from before (raw mode not restored):\nbefore %+v\nafter  %+v", before, after)
	}
}
