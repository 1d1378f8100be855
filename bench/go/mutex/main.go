// mutex — uncontended sync.Mutex Lock + Unlock in one goroutine.
//
// One op is one Lock/Unlock pair around an increment: elapsed / n.
// Twin of bench/lua/mutex.lua.
//
// Verification: the counter is n and the mutex is free afterwards.
package main

import (
	"fmt"
	"sync"
	"time"
	"weftbench/internal/benchutil"
)

const name = "mutex"
const defaultIters = 10000000

var bench = benchutil.B{Name: name}

func main() {
	n := bench.Iterations(defaultIters)
	var m sync.Mutex
	var count int64
	t0 := time.Now()
	for i := int64(0); i < n; i++ {
		m.Lock()
		count++
		m.Unlock()
	}
	elapsed := time.Since(t0)
	if count != n || !m.TryLock() {
		bench.Fail("count %d, want %d, or the mutex is held", count, n)
	}
	fmt.Printf("%s %.1f\n", name, float64(elapsed.Nanoseconds())/float64(n))
}
