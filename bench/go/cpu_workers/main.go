// cpu_workers — CPU-bound workers, one per processor, sharing a fixed amount
// of work.
//
// GOMAXPROCS workers share units job units (default 64) and each sends one
// result on a channel; the main goroutine sums them. One op is one job
// unit: elapsed / units. The clock starts before the workers are started.
// Twin of bench/lua/cpu_workers.lua (workers started with weft.spawn).
//
// A job unit j runs the Lehmer generator x <- x * 48271 mod (2^31 - 1) for
// steps steps from x = j: arithmetic only, no allocation, the same
// operations as the Lua twin. Worker w of n takes the units w, w + n,
// w + 2n, ... Run with the same units under GOMAXPROCS=1 and 2, the ratio of
// the two numbers is the speedup (the go_cpu_scaling row).
//
// Verification, independent of the loop: after steps steps unit j ends at
// j * 48271^steps mod (2^31 - 1), computed by square-and-multiply; the
// results must sum to the sum of those over all units, and every unit must
// be done exactly once.
package main

import (
	"fmt"
	"runtime"
	"time"
	"weftbench/internal/benchutil"
)

const name = "cpu_workers"
const defaultUnits = 64
const steps = 1000000
const multiplier, modulus = 48271, 2147483647

var bench = benchutil.B{Name: name}

type result struct{ units, sum int64 }

func job(x int64, steps int) int64 {
	for i := 0; i < steps; i++ {
		x = x * multiplier % modulus
	}
	return x
}

func worker(w, n, total int64, out chan<- result) {
	var r result
	for j := w; j <= total; j += n {
		r.sum += job(j, steps)
		r.units++
	}
	out <- r
}

func powmod(base, e int64) int64 {
	r := int64(1)
	for ; e > 0; e >>= 1 {
		if e&1 == 1 {
			r = r * base % modulus
		}
		base = base * base % modulus
	}
	return r
}

func main() {
	units := bench.Iterations(defaultUnits)
	n := int64(runtime.GOMAXPROCS(0))
	results := make(chan result, n)

	var sum, count int64
	t0 := time.Now()
	for w := int64(1); w <= n; w++ {
		go worker(w, n, units, results)
	}
	for w := int64(0); w < n; w++ {
		r := <-results
		sum += r.sum
		count += r.units
	}
	elapsed := time.Since(t0)

	jump, want := powmod(multiplier, steps), int64(0)
	for j := int64(1); j <= units; j++ {
		want += j * jump % modulus
	}
	if count != units || sum != want {
		bench.Fail("%d job units summing to %d, want %d summing to %d", count, sum, units, want)
	}
	fmt.Printf("%s %.1f\n", name, float64(elapsed.Nanoseconds())/float64(units))
}
