package pid1

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/initlink"
)

// stream is one attached client of a process.
type stream struct {
	f    *os.File
	p    *process
	gen  uint64
	wmu  sync.Mutex // serializes writes to f
	gone bool       // the client went away (under p.mu)
	done chan struct{}
}

func (s *stream) write(t initlink.FrameType, b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return initlink.WriteFrame(s.f, t, b)
}

func (s *stream) writeJSON(t initlink.FrameType, v any) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return initlink.WriteJSON(s.f, t, v)
}

// attach streams process pid on f, taking it over from an earlier stream.
func (m *Manager) attach(f *os.File, pid int) error {
	m.mu.Lock()
	p := m.procs[pid]
	m.mu.Unlock()
	if p == nil {
		return errorf(initlink.CodeNotFound, "no process %d (only processes started by exec are known)", pid)
	}
	return m.stream(f, p)
}

// stream sends p's output and exit on f, and takes input from f, until the
// process is done, the client goes, or a newer attach takes over.
func (m *Manager) stream(f *os.File, p *process) error {
	s := &stream{f: f, p: p, done: make(chan struct{})}
	defer close(s.done)
	p.mu.Lock()
	p.attaches++
	s.gen = p.attaches
	p.attached = s.gen
	p.cond.Broadcast() // an older stream sees it was taken over
	p.mu.Unlock()
	m.mu.Lock()
	m.streams[s] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.streams, s)
		m.mu.Unlock()
	}()

	if err := s.writeJSON(initlink.FrameStarted, initlink.Started{PID: p.pid}); err != nil {
		m.detach(s)
		return nil
	}
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		m.readInput(s)
	}()
	m.sendOutput(s)
	// Ends readInput, which waits in a read of f.
	_ = f.Close()
	readers.Wait()
	return nil
}

// sendOutput writes p's output as it comes, then its exit.
func (m *Manager) sendOutput(s *stream) {
	p := s.p
	for {
		p.mu.Lock()
		for len(p.out) == 0 && !p.finished() && p.attached == s.gen && !s.gone && !p.dropped && m.mainStatus.Load() < 0 {
			p.cond.Wait()
		}
		switch {
		case p.attached != s.gen:
			p.mu.Unlock()
			_ = s.writeJSON(initlink.FrameError, initlink.Error{Code: initlink.CodeDetached, Message: fmt.Sprintf("process %d was attached by a newer client", p.pid)})
			return
		case s.gone:
			p.attached = 0
			p.mu.Unlock()
			return
		case m.mainStatus.Load() >= 0 && !(p.finished() && len(p.out) == 0):
			p.mu.Unlock()
			_ = s.f.SetWriteDeadline(time.Now().Add(shutdownNotice))
			_ = s.writeJSON(initlink.FrameError, initlink.Error{Code: initlink.CodeSandboxExited,
				Message: fmt.Sprintf("the sandbox's main process exited (code %d); process %d was killed with it", m.mainStatus.Load(), p.pid)})
			return
		case len(p.out) > 0:
			c := p.out[0]
			p.out[0] = chunk{}
			p.out = p.out[1:]
			p.outSize -= len(c.b)
			p.cond.Broadcast() // room for the pumps
			p.mu.Unlock()
			if err := s.write(c.t, c.b); err != nil {
				// Kept for the next attach.
				p.mu.Lock()
				if !p.dropped {
					p.out = append([]chunk{c}, p.out...)
					p.outSize += len(c.b)
				}
				p.mu.Unlock()
				m.detach(s)
				return
			}
		case p.dropped:
			p.mu.Unlock()
			return
		default: // finished, output all sent
			exit := *p.exit
			p.mu.Unlock()
			if err := s.writeJSON(initlink.FrameExit, exit); err != nil {
				m.detach(s)
				return
			}
			p.mu.Lock()
			p.delivered = true
			if p.attached == s.gen {
				p.attached = 0
			}
			p.mu.Unlock()
			return
		}
	}
}

// detach marks s's client gone.
func (m *Manager) detach(s *stream) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	s.gone = true
	if s.p.attached == s.gen {
		s.p.attached = 0
	}
	s.p.cond.Broadcast()
}

// readInput reads FrameStdin and FrameCloseStdin from the stream's client
// until it goes; its going detaches the stream.
func (m *Manager) readInput(s *stream) {
	defer m.detach(s)
	buf := make([]byte, initlink.ChunkSize)
	for {
		t, b, err := initlink.ReadFrame(s.f, buf)
		if err != nil {
			return
		}
		switch t {
		case initlink.FrameStdin:
			err = s.p.input(b)
		case initlink.FrameCloseStdin:
			err = s.p.closeStdin()
		default:
			err = errorf(initlink.CodeInvalidArgument, "unexpected frame type %d on a process stream", t)
		}
		var le *initlink.Error
		switch {
		case err == nil:
		case errors.As(err, &le) && le.Code == initlink.CodeFailedPrecondition:
			// The process closed its input or exited: what it will not read
			// is dropped, and its output and exit still come.
		default:
			if !errors.As(err, &le) {
				le = &initlink.Error{Code: codeOf(err), Message: err.Error()}
			}
			_ = s.writeJSON(initlink.FrameError, le)
			return
		}
	}
}
