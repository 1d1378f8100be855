// timers — n goroutines each sleep a pseudo-random duration.
//
// The durations are uniform in 0..100 ms by whole microseconds, drawn before
// timing from a Park-Miller generator with a fixed seed: the same durations
// as bench/lua/timers.lua. Lateness of one sleep = when it returned - (when
// it started + its duration).
//
//	timers [n] [total|p99]
//
// prints one metric: "total" (default), the wall time in ns from the first
// goroutine started to the last one joined, or "p99", the 99th percentile
// (nearest rank) of the lateness in ns. Both, with p50 and max, go to stderr.
//
// Verification: every goroutine records its wake-up.
package main

import (
	"fmt"
	"math"
	"os"
	"sort"
	"sync"
	"time"
	"weftbench/internal/benchutil"
)

const defaultIters = 100000
const seed, maxUs = 42, 100000

func main() {
	bench := benchutil.B{Name: "timers"}
	n := bench.Iterations(defaultIters)
	metric := "total"
	if len(os.Args) > 2 {
		metric = os.Args[2]
	}
	name := "timers_" + metric
	bench.Name = name
	if metric != "total" && metric != "p99" {
		bench.Fail("metric must be 'total' or 'p99', not '%s'", metric)
	}

	dur := make([]time.Duration, n)
	x := int64(seed)
	for i := range dur {
		x = x * 16807 % 2147483647
		dur[i] = time.Duration(x%(maxUs+1)) * time.Microsecond
	}

	late := make([]int64, n)
	woke := make([]bool, n)
	var wg sync.WaitGroup
	t0 := time.Now()
	wg.Add(int(n))
	for i := range dur {
		go func(i int, d time.Duration) {
			start := time.Now()
			time.Sleep(d)
			late[i] = int64(time.Since(start) - d)
			woke[i] = true
			wg.Done()
		}(i, dur[i])
	}
	wg.Wait()
	total := time.Since(t0)

	for i, ok := range woke {
		if !ok {
			bench.Fail("goroutine %d did not record its wake-up", i+1)
		}
	}
	sort.Slice(late, func(a, b int) bool { return late[a] < late[b] })
	pct := func(p float64) int64 {
		k := int(math.Ceil(p * float64(n)))
		if k < 1 {
			k = 1
		}
		return late[k-1]
	}
	fmt.Fprintf(os.Stderr, "%s: n %d total %.3f ms lateness p50 %d ns p99 %d ns max %d ns\n",
		name, n, float64(total.Nanoseconds())/1e6, pct(0.5), pct(0.99), late[n-1])
	if metric == "total" {
		fmt.Printf("%s %d\n", name, total.Nanoseconds())
	} else {
		fmt.Printf("%s %d\n", name, pct(0.99))
	}
}
