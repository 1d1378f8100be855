// select — a 2-case select loop in which one case is ready.
//
// A producer goroutine keeps a channel of capacity 128 (data) fed with 1..n.
// The main goroutine runs n selects over {recv from data, recv from never},
// an unbuffered channel nothing is ever sent on (a real channel, not nil, so
// the select has to look at it). One op is one select: elapsed / n. The
// clock starts before the producer is started. Twin of bench/c/select.c.
//
// Verification: every select picks the data case with ok = true, the values
// arrive in order, and they sum to n(n+1)/2.
package main

import (
	"fmt"
	"time"
	"weftbench/internal/benchutil"
)

const name = "select"
const defaultIters = 4000000
const capacity = 128

var bench = benchutil.B{Name: name}

var iters int64
var data, never chan int64

func producer() {
	n := iters
	for i := int64(1); i <= n; i++ {
		data <- i
	}
}

func main() {
	iters = bench.Iterations(defaultIters)
	n := iters
	data = make(chan int64, capacity)
	never = make(chan int64)

	var sum int64
	t0 := time.Now()
	go producer()
	for i := int64(1); i <= n; i++ {
		select {
		case v, ok := <-data:
			if !ok {
				bench.Fail("select %d: data closed", i)
			}
			if v != i {
				bench.Fail("select %d received %d", i, v)
			}
			sum += v
		case <-never:
			bench.Fail("select %d chose the never channel", i)
		}
	}
	elapsed := time.Since(t0)

	want := n * (n + 1) / 2
	if sum != want {
		bench.Fail("sum %d, want %d", sum, want)
	}
	fmt.Printf("%s %.1f\n", name, float64(elapsed.Nanoseconds())/float64(n))
}
