// buffered — one producer, one consumer, a channel of capacity 128.
//
// A producer goroutine sends 1..n on the channel and closes it; the main
// goroutine receives until the channel is closed. One op is one message:
// elapsed / n. The clock starts before the producer is started.
// Twin of bench/c/buffered.c.
//
// Verification: values arrive in order (the i-th received is i), exactly n
// of them, summing to n(n+1)/2.
package main

import (
	"fmt"
	"time"
	"weftbench/internal/benchutil"
)

const name = "buffered"
const defaultIters = 8000000
const capacity = 128

var bench = benchutil.B{Name: name}

var iters int64
var ch chan int64

func producer() {
	n := iters
	for i := int64(1); i <= n; i++ {
		ch <- i
	}
	close(ch)
}

func main() {
	iters = bench.Iterations(defaultIters)
	n := iters
	ch = make(chan int64, capacity)

	var sum, count int64
	t0 := time.Now()
	go producer()
	for v := range ch {
		count++
		if v != count {
			bench.Fail("message %d is %d", count, v)
		}
		sum += v
	}
	elapsed := time.Since(t0)

	want := n * (n + 1) / 2
	if count != n || sum != want {
		bench.Fail("received %d values summing to %d, want %d summing to %d", count, sum, n, want)
	}
	fmt.Printf("%s %.1f\n", name, float64(elapsed.Nanoseconds())/float64(n))
}
