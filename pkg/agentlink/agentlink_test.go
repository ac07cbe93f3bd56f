package agentlink

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/fast-sandbox/fast-sandbox/pkg/registry"
)

// TestReconnectAttemptsAreAtMostASecondApart points a Set at an address
// that accepts connections and closes them at once, as a restarting agent
// would, and checks that the attempts to reach it back off to at most a
// second apart: a restarted agent is seen within about a second.
func TestReconnectAttemptsAreAtMostASecondApart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var attempts []time.Time
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			attempts = append(attempts, time.Now())
			mu.Unlock()
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })

	s := New(Config{Addresses: []string{ln.Addr().String()}, Registry: registry.New(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	s.Run(ctx)

	mu.Lock()
	defer mu.Unlock()
	if len(attempts) < 6 {
		t.Fatalf("%d attempts in 4s, want the back-off's 100 ms, 200 ms, ... capped at a second: %v", len(attempts), attempts)
	}
	for i := 1; i < len(attempts); i++ {
		// A failed attempt costs a little on top of the wait.
		if gap := attempts[i].Sub(attempts[i-1]); gap > 1300*time.Millisecond {
			t.Errorf("attempt %d came %s after the one before; want about a second at most", i, gap)
		}
	}
}
