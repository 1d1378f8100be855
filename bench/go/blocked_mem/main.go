// blocked_mem — memory per blocked goroutine: N goroutines (default
// 1,000,000) blocked receiving on one channel; resident memory is read
// before and after, then the channel is closed and every goroutine must
// finish. Prints bytes per goroutine. Twin: bench/lua/blocked_mem.lua.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
)

func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		fail("cannot read /proc/self/statm: %v", err)
	}
	var size, resident int64
	fmt.Sscan(string(b), &size, &resident)
	return resident * 4096
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "blocked_mem: FAILED: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	n := 1000000
	if len(os.Args) > 1 {
		v, err := strconv.Atoi(os.Args[1])
		if err != nil || v < 1 {
			fail("bad count '%s'", os.Args[1])
		}
		n = v
	}
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
