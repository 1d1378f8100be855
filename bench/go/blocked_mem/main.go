// blocked_mem — memory per blocked goroutine: N goroutines (default
// 1,000,000) blocked receiving on one channel; resident memory is read
// before and after, then the channel is closed and every goroutine must
// finish. Prints bytes per goroutine. Twin: bench/lua/blocked_mem.lua.
package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"weftbench/internal/benchutil"
)

var bench = benchutil.B{Name: "blocked_mem"}

func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		bench.Fail("cannot read /proc/self/statm: %v", err)
	}
	var size, resident int64
	fmt.Sscan(string(b), &size, &resident)
	return resident * 4096
}

func main() {
	n := int(bench.Iterations(1000000))
	runtime.GC()
	before := rss()
	c := make(chan int)
	var wg sync.WaitGroup
	wg.Add(n)
	var started sync.WaitGroup
	started.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			started.Done()
			if _, ok := <-c; !ok {
				wg.Done()
			}
		}()
	}
	started.Wait()
	runtime.GC()
	after := rss()
	close(c)
	wg.Wait()
	fmt.Printf("blocked_mem %.1f\n", float64(after-before)/float64(n))
}
