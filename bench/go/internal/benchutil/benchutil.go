// Package benchutil holds what every Go twin shares: the iteration count
// from the command line and failing without printing a number.
package benchutil

import (
	"fmt"
	"os"
	"strconv"
)

// B names a benchmark in its messages.
type B struct{ Name string }

// Fail reports a wrong result or bad usage on stderr and exits 1, so that no
// number is printed for a benchmark that computed the wrong thing.
func (b B) Fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, b.Name+": FAILED: "+format+"\n", args...)
	os.Exit(1)
}

// Iterations is argv[1] as a positive count, or def when absent.
func (b B) Iterations(def int64) int64 {
	if len(os.Args) < 2 {
		return def
	}
	n, err := strconv.ParseInt(os.Args[1], 10, 64)
	if err != nil || n < 1 {
		b.Fail("bad iteration count '%s'", os.Args[1])
	}
	return n
}
