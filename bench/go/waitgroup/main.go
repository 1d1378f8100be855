// waitgroup — uncontended sync.WaitGroup Add(1) + Done() in one goroutine,
// then a Wait that returns at once.
//
// One op is one Add/Done pair: elapsed / n. Twin of bench/lua/waitgroup.lua.
package main

import (
	"fmt"
	"sync"
	"time"
	"weftbench/internal/benchutil"
)

const name = "waitgroup"
const defaultIters = 10000000

var bench = benchutil.B{Name: name}

func main() {
	n := bench.Iterations(defaultIters)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := int64(0); i < n; i++ {
		wg.Add(1)
		wg.Done()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	fmt.Printf("%s %.1f\n", name, float64(elapsed.Nanoseconds())/float64(n))
}
