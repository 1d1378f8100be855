/*
 * select — a 2-case select loop in which one case is ready.
 *
 * A producer goroutine keeps a channel of capacity 128 (`data`) fed with
 * 1..n. The main goroutine runs n selects over {recv from data, recv from
 * `never`}, an unbuffered channel nothing is ever sent on (a real channel,
 * not NULL, so the select has to look at it). One op is one select:
 * elapsed / n. The clock starts before the producer is started.
 * The case array is rebuilt every iteration, as Go's select statement does.
 * Twin: bench/go/select/main.go.
 *
 * Verification: every select picks the data case with ok = 1, the values
 * arrive in order, and they sum to n(n+1)/2.
 */
#include "bench_common.h"

#define NAME "select"
#define DEFAULT_ITERS 4000000
#define CAP 128

static int64_t iters;
static weft_chan *data, *never;
static double ns_per_op = -1;

static void producer(void *arg) {
    (void)arg;
    const int64_t n = iters;
    for (int64_t i = 1; i <= n; i++)
        bench_send(NAME, data, i);
}

static void main_fn(void *arg) {
    (void)arg;
    const int64_t n = iters;
    data = bench_chan(NAME, CAP);
    never = bench_chan(NAME, 0);

    int64_t sum = 0;
    int64_t t0 = weft_nanotime();
    bench_go(NAME, producer, NULL);
    for (int64_t i = 1; i <= n; i++) {
        weft_case cs[2] = {
            {.ch = data, .dir = WEFT_CASE_RECV},
            {.ch = never, .dir = WEFT_CASE_RECV},
        };
        int k = weft_select(cs, 2, 0);
        if (k != 0)
            bench_fail(NAME, "select %lld returned %d", (long long)i, k);
        if (cs[0].ok != 1 || cs[0].val.tag != WEFT_TAG_INT64)
            bench_fail(NAME, "select %lld: ok %d tag %u", (long long)i, cs[0].ok,
                       (unsigned)cs[0].val.tag);
        int64_t v = cs[0].val.u.i;
        if (v != i)
            bench_fail(NAME, "select %lld received %lld", (long long)i, (long long)v);
        sum += v;
    }
    int64_t t1 = weft_nanotime();

    const int64_t want = n * (n + 1) / 2;
    if (sum != want)
        bench_fail(NAME, "sum %lld, want %lld", (long long)sum, (long long)want);
    ns_per_op = (double)(t1 - t0) / (double)n;
}

int main(int argc, char **argv) {
    iters = bench_iters(NAME, argc, argv, DEFAULT_ITERS);
    bench_run(NAME, main_fn, &ns_per_op);
    weft_chan_release(data);
    weft_chan_release(never);
    bench_print(NAME, ns_per_op);
    return 0;
}
