// echo — a TCP echo server and 100 client goroutines, each with its own
// connection, doing fixed-size round trips over 127.0.0.1. os.Args[1] is
// the total number of round trips n (split evenly over the clients); the
// result is elapsed / n. Twin of bench/lua/echo.lua.
//
// Verification: every reply equals the message sent, and the server echoed
// exactly clients * rounds * size bytes.
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"weftbench/internal/benchutil"
)

const name = "echo"
const defaultIters = 200000
const clients = 100
const size = 64

var bench = benchutil.B{Name: name}

func serve(ln net.Listener, echoed *int64) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func(c net.Conn) {
			buf := make([]byte, 4096)
			for {
				k, err := c.Read(buf)
				if err != nil {
					break
				}
				atomic.AddInt64(echoed, int64(k))
				if _, err := c.Write(buf[:k]); err != nil {
					break
				}
			}
			c.Close()
		}(c)
	}
}

func main() {
	n := bench.Iterations(defaultIters)
	rounds := (n + clients - 1) / clients
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		bench.Fail("listen: %v", err)
	}
	var echoed int64
	go serve(ln, &echoed)
	addr := ln.Addr().String()

	var ready, wg sync.WaitGroup
	start := make(chan struct{})
	var bad int32
	ready.Add(clients)
	wg.Add(clients)
	for i := 0; i < clients; i++ {
		go func(i int) {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				bench.Fail("dial: %v", err)
			}
			msg := []byte(fmt.Sprintf("%03d", i%1000) + string(bytes.Repeat([]byte("m"), size-3)))
			got := make([]byte, size)
			ready.Done()
			<-start
			for r := int64(0); r < rounds; r++ {
				if _, err := c.Write(msg); err != nil {
					bench.Fail("write: %v", err)
				}
				if _, err := io.ReadFull(c, got); err != nil {
					bench.Fail("read: %v", err)
				}
				if !bytes.Equal(got, msg) {
					atomic.StoreInt32(&bad, 1)
				}
			}
			c.Close()
		}(i)
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	if bad != 0 {
		bench.Fail("a reply differs from its message")
	}
	want := int64(clients) * rounds * size
	for atomic.LoadInt64(&echoed) < want {
		time.Sleep(time.Millisecond)
	}
	if e := atomic.LoadInt64(&echoed); e != want {
		bench.Fail("echoed %d bytes, want %d", e, want)
	}
	ln.Close()
	fmt.Printf("%s %.1f\n", name, float64(elapsed.Nanoseconds())/float64(clients*rounds))
}
