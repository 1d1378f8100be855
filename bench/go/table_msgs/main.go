// table_msgs — small records from a producer goroutine to a consumer
// goroutine over a channel of capacity 1024.
//
// The producer sends n messages {ID: i, Name: "item" + i%100, Pos: {i + 0.5,
// i * 0.25, -i}, OK: true} (the names made once, before the loop) and closes
// the channel; the consumer checks every field and the order and reports
// on done; the main goroutine waits for the report. One op is one message:
// elapsed / n (1e9 / op is messages per second). The clock starts before
// the goroutines are started. Twin of bench/lua/table_msgs.lua, where the
// message is a table deep-copied by the channel between isolates.
//
// Verification: the i-th message received has ID i and the fields above;
// n of them arrive, their IDs summing to n(n+1)/2.
package main

import (
	"fmt"
	"strconv"
	"time"
	"weftbench/internal/benchutil"
)

const name = "table_msgs"
const defaultIters = 1000000
const capacity = 1024

var bench = benchutil.B{Name: name}

type message struct {
	ID   int64
	Name string
	Pos  [3]float64
	OK   bool
}

// report is what the consumer sends on done: counts, or what was wrong.
type report struct {
	count, sum int64
	err        string
}

func itemNames() []string {
	names := make([]string, 100)
	for k := range names {
		names[k] = "item" + strconv.Itoa(k)
	}
	return names
}

func produce(out chan<- message, n int64) {
	names := itemNames()
	for i := int64(1); i <= n; i++ {
		f := float64(i)
		out <- message{ID: i, Name: names[i%100], Pos: [3]float64{f + 0.5, f * 0.25, -f}, OK: true}
	}
	close(out)
}

func consume(in <-chan message, done chan<- report) {
	names := itemNames()
	var r report
	for m := range in {
		i := m.ID
		if i != r.count+1 {
			done <- report{err: fmt.Sprintf("message %d has id %d", r.count+1, i)}
			return
		}
		f := float64(i)
		if m.Name != names[i%100] || !m.OK || m.Pos != [3]float64{f + 0.5, f * 0.25, -f} {
			done <- report{err: fmt.Sprintf("message %d has wrong fields", i)}
			return
		}
		r.count, r.sum = i, r.sum+i
	}
	done <- r
}

func main() {
	n := bench.Iterations(defaultIters)
	msgs := make(chan message, capacity)
	done := make(chan report, 1)

	t0 := time.Now()
	go consume(msgs, done)
	go produce(msgs, n)
	r := <-done
	elapsed := time.Since(t0)

	if r.err != "" {
		bench.Fail("%s", r.err)
	}
	if want := n * (n + 1) / 2; r.count != n || r.sum != want {
		bench.Fail("%d messages summing to %d, want %d summing to %d", r.count, r.sum, n, want)
	}
	fmt.Printf("%s %.1f\n", name, float64(elapsed.Nanoseconds())/float64(n))
}
