// spawn — start goroutines that do trivial work and exit.
//
// The main goroutine starts n goroutines in batches of batch: it starts a
// batch, then receives one completion per goroutine of the batch from done
// (capacity batch, so no child ever blocks on its send). Each child sends
// its argument i on done and exits. At most batch children are alive at
// once. One op is one goroutine start + run + exit: elapsed / n.
// Twin of bench/c/spawn.c.
//
// Verification: n completions whose values sum to n(n+1)/2.
package main

import (
	"fmt"
	"time"
	"weftbench/internal/benchutil"
)

const name = "spawn"
const defaultIters = 1200000
const batch = 1000

var bench = benchutil.B{Name: name}

var done chan int64

func child(i int64) {
	done <- i
}

func main() {
	n := bench.Iterations(defaultIters)
	done = make(chan int64, batch)

	var sum, count int64
	t0 := time.Now()
	for base := int64(0); base < n; base += batch {
		k := n - base
		if k > batch {
			k = batch
		}
		for j := int64(1); j <= k; j++ {
			go child(base + j)
		}
		for j := int64(0); j < k; j++ {
			v, ok := <-done
			if !ok {
				bench.Fail("done closed")
			}
			sum += v
			count++
		}
	}
	elapsed := time.Since(t0)

	want := n * (n + 1) / 2
	if count != n || sum != want {
		bench.Fail("%d completions summing to %d, want %d summing to %d", count, sum, n, want)
	}
	fmt.Printf("%s %.1f\n", name, float64(elapsed.Nanoseconds())/float64(n))
}
