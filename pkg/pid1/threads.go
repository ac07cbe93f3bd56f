package pid1

import (
	"runtime"
	"sync"
)

// reservedThreads is how many OS threads init starts ahead of need.
const reservedThreads = 4

// reserveThreads makes the Go runtime start n OS threads now and keep them
// idle for later. Init's threads count against the sandbox's pids limit,
// and a Go program that cannot start a thread when it needs one (a blocking
// system call hands its P to another) dies with "newosproc": a fork bomb
// inside the sandbox, filling the limit, would end init and with it the
// sandbox. The runtime never ends an idle thread, so threads started while
// pids are free serve init when they are not.
//
// Each goroutine locks itself to a thread and waits: a locked goroutine's
// thread runs nothing else, so the runtime starts another thread for the
// next one. Unlocked before they return, the threads go idle instead of
// ending with their goroutine. reserveThreads returns once they have.
func reserveThreads(n int) {
	var locked, unlocked sync.WaitGroup
	release := make(chan struct{})
	locked.Add(n)
	unlocked.Add(n)
	for range n {
		go func() {
			defer unlocked.Done()
			runtime.LockOSThread()
			locked.Done()
			<-release
			runtime.UnlockOSThread()
		}()
	}
	locked.Wait()
	close(release)
	unlocked.Wait()
}
