// Command linkprobe plays a process inside a sandbox that tries to drive
// the agent's link: it connects to the link's socket and, as asked, says
// hello with a token or nothing at all, then reports whether the agent
// kept the connection.
//
//	linkprobe SOCKET nohello|TOKEN
//
// It prints "connect: <error>" when it cannot even connect, "closed" when
// the agent ended the connection, "kept" when it stayed open for 4 s.
package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Println("usage: linkprobe SOCKET nohello|TOKEN")
		os.Exit(2)
	}
	c, err := net.Dial("unix", os.Args[1])
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			err = op.Err
		}
		fmt.Printf("connect: %v\n", err)
		return
	}
	defer c.Close()
	if tok := os.Args[2]; tok != "nohello" {
		payload := []byte(`{"token":"` + tok + `"}`)
		frame := make([]byte, 5+len(payload))
		binary.BigEndian.PutUint32(frame, uint32(1+len(payload)))
		frame[4] = 1 // FrameHello
		copy(frame[5:], payload)
		if _, err := c.Write(frame); err != nil {
			fmt.Printf("closed: %v\n", err)
			return
		}
	}
	c.SetReadDeadline(time.Now().Add(4 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		fmt.Println("closed")
		return
	}
	fmt.Println("kept")
}
