package httpserver

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// deadlines bounds a request's I/O, not its life. http.Server's ReadTimeout
// and WriteTimeout run from the start of a request to its end, so they
// would cut the long-lived streams (StreamLogs with follow, WatchStatus)
// and a create that waits for an image pull. Instead, per request:
//
//   - the body must arrive within read of the headers (a caller dripping a
//     body is cut); the deadline is lifted once the body has been read, so
//     a handler that runs on afterwards is not cancelled by it;
//   - each write, and each flush, must complete within write (a caller that
//     stops reading is cut); between writes no deadline is set, so a stream
//     may stay silent as long as it has nothing to say.
//
// A handler whose body is a stream (an upload of any size, an interactive
// session's input) trades the first bound for another with ReadIdle.
func deadlines(next http.Handler, read, write time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		// A request without a body is not read at all: on HTTP/1.1 the
		// server already waits on the connection to notice a hang-up, and a
		// read deadline would cancel the request when it passes.
		if r.Body != nil && r.Body != http.NoBody {
			_ = rc.SetReadDeadline(time.Now().Add(read))
			body := &deadlineBody{ReadCloser: r.Body, rc: rc}
			r.Body = body
			r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, body))
		}
		dw := &deadlineWriter{ResponseWriter: w, rc: rc, timeout: write, flushEach: r.ProtoMajor >= 2}
		next.ServeHTTP(dw, r)
		if r.ProtoMajor == 1 {
			// net/http flushes what the handler left buffered after it
			// returns: bound that write too. The next request on the
			// connection gets deadlines of its own.
			_ = rc.SetWriteDeadline(time.Now().Add(write))
		}
	})
}

type bodyKey struct{}

// ReadIdle replaces the bound on the time the body of the request whose
// context is ctx may take to arrive: from now on each read of it must bring
// data within idle, however long the whole body takes; zero lifts every
// bound. Handlers of streamed bodies call it once the caller is
// authenticated. Without a body it does nothing.
func ReadIdle(ctx context.Context, idle time.Duration) {
	b, ok := ctx.Value(bodyKey{}).(*deadlineBody)
	if !ok {
		return
	}
	b.idle.Store(int64(idle))
	b.streamed.Store(true)
	if idle == 0 {
		_ = b.rc.SetReadDeadline(time.Time{})
	}
}

// deadlineBody lifts the read deadline once the body has been read.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	once sync.Once
	// streamed says ReadIdle was called; idle is its bound on each read.
	streamed atomic.Bool
	idle     atomic.Int64
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if idle := time.Duration(b.idle.Load()); b.streamed.Load() && idle > 0 {
		// Only the wait for data counts: a handler that takes its time
		// with what it read (a slow consumer further down) is not cut.
		_ = b.rc.SetReadDeadline(time.Now().Add(idle))
		defer b.rc.SetReadDeadline(time.Time{})
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.lift()
	}
	return n, err
}

func (b *deadlineBody) Close() error {
	b.lift()
	return b.ReadCloser.Close()
}

func (b *deadlineBody) lift() {
	b.once.Do(func() { _ = b.rc.SetReadDeadline(time.Time{}) })
}

// deadlineWriter gives each write its own deadline. On HTTP/2 it flushes
// each write at once, so nothing is left buffered, to be written without a
// deadline, when the handler returns.
type deadlineWriter struct {
	http.ResponseWriter
	rc        *http.ResponseController
	timeout   time.Duration
	flushEach bool
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	defer w.rc.SetWriteDeadline(time.Time{})
	n, err := w.ResponseWriter.Write(p)
	if err == nil && w.flushEach {
		err = w.rc.Flush()
	}
	return n, err
}

// Flush implements http.Flusher, which Connect relies on to send each
// message of a stream as it is written.
func (w *deadlineWriter) Flush() {
	_ = w.FlushError()
}

// FlushError is Flush with its error, for http.ResponseController.
func (w *deadlineWriter) FlushError() error {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	defer w.rc.SetWriteDeadline(time.Time{})
	return w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
