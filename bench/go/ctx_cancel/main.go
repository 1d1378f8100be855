// ctx_cancel — derive a cancelable context from a long-lived parent and
// cancel it, n times.
//
// One op is context.WithCancel(parent) followed by cancel(): the child joins
// the parent's children, then is cancelled and leaves them. Twin of
// bench/lua/ctx_cancel.lua.
//
// Verification: every child reports context.Canceled and the parent is
// still live at the end.
package main

import (
	"context"
	"fmt"
	"time"
	"weftbench/internal/benchutil"
)

const name = "ctx_cancel"
const defaultIters = 1000000

var bench = benchutil.B{Name: name}

func main() {
	n := bench.Iterations(defaultIters)
	parent, cancelParent := context.WithCancel(context.Background())

	var canceled int64
	t0 := time.Now()
	for i := int64(0); i < n; i++ {
		ctx, cancel := context.WithCancel(parent)
		cancel()
		if ctx.Err() == context.Canceled {
			canceled++
		}
	}
	elapsed := time.Since(t0)

	if canceled != n || parent.Err() != nil {
		bench.Fail("%d of %d children canceled, parent err %v", canceled, n, parent.Err())
	}
	cancelParent()
	fmt.Printf("%s %.1f\n", name, float64(elapsed.Nanoseconds())/float64(n))
}
