// pingpong — two goroutines exchange an int64 over two unbuffered channels.
//
// The main goroutine sends i on ping; the echo goroutine receives it and
// sends it back on pong. os.Args[1] is the number of round trips n; each
// round trip is two messages, and one op is one message (a matched
// send/recv), so the result is elapsed / (2n). Twin of bench/c/pingpong.c.
//
// Verification: every echoed value equals what was sent, and both sides'
// sums equal n(n+1)/2.
package main

import (
	"fmt"
	"time"
	"weftbench/internal/benchutil"
)

const name = "pingpong"
const defaultIters = 1500000 // round trips

var bench = benchutil.B{Name: name}

var ping, pong, done chan int64

func echo() {
	var sum int64
	for v := range ping {
		sum += v
		pong <- v
	}
	done <- sum
}

func main() {
	n := bench.Iterations(defaultIters)
	ping = make(chan int64)
	pong = make(chan int64)
	done = make(chan int64, 1)
	go echo()

	var sum int64
	t0 := time.Now()
	for i := int64(1); i <= n; i++ {
		ping <- i
		v, ok := <-pong
		if !ok {
			bench.Fail("pong closed")
		}
		if v != i {
			bench.Fail("sent %d, got back %d", i, v)
		}
		sum += v
	}
	elapsed := time.Since(t0)

	close(ping)
	echoSum := <-done
	want := n * (n + 1) / 2
	if sum != want || echoSum != want {
		bench.Fail("sums %d (main) / %d (echo), want %d", sum, echoSum, want)
	}
	fmt.Printf("%s %.1f\n", name, float64(elapsed.Nanoseconds())/(2*float64(n)))
}
