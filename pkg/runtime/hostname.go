package runtime

import (
	"fmt"
	"os"
	goruntime "runtime"

	"golang.org/x/sys/unix"
)

// maxHostname is the kernel's bound on a hostname (HOST_NAME_MAX).
const maxHostname = 63

// hostnameOf is the hostname a sandbox's container gets: its name, cut to
// what the kernel takes.
func hostnameOf(name string) string {
	if len(name) > maxHostname {
		return name[:maxHostname]
	}
	return name
}

// setHostname gives the container whose init runs as pid (on the host) the
// hostname name: a warm sandbox's UTS namespace was made with warmHostname
// before any claim named it. It enters that namespace from a thread of its
// own, which returns to the agent's namespace after, or, if it cannot,
// ends with its goroutine instead of serving the agent again. Under gVisor
// the hostname is the sandbox kernel's, which the host cannot reach: the
// caller leaves such a sandbox alone.
func setHostname(pid uint32, name string) error {
	if pid == 0 {
		return fmt.Errorf("set hostname %q: the container's init has no known PID", name)
	}
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/uts", pid))
	if err != nil {
		return fmt.Errorf("set hostname %q: %w", name, err)
	}
	defer target.Close()
	done := make(chan error, 1)
	// Owned by this call, which waits for it.
	go func() {
		goruntime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/uts")
		if err != nil {
			goruntime.UnlockOSThread()
			done <- fmt.Errorf("set hostname %q: the agent's UTS namespace: %w", name, err)
			return
		}
		defer own.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWUTS); err != nil {
			goruntime.UnlockOSThread()
			done <- fmt.Errorf("set hostname %q: enter the container's UTS namespace: %w", name, err)
			return
		}
		err = unix.Sethostname([]byte(name))
		if unix.Setns(int(own.Fd()), unix.CLONE_NEWUTS) == nil {
			goruntime.UnlockOSThread()
		}
		if err != nil {
			err = fmt.Errorf("set hostname %q: %w", name, err)
		}
		done <- err
	}()
	return <-done
}
