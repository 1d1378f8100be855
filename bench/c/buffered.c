/*
 * buffered — one producer, one consumer, a channel of capacity 128.
 *
 * A producer goroutine sends 1..n on the channel and closes it; the main
 * goroutine receives until the channel is closed. One op is one message:
 * elapsed / n. The clock starts before the producer is started.
 * Twin: bench/go/buffered/main.go.
 *
 * Verification: values arrive in order (the i-th received is i), exactly n
 * of them, summing to n(n+1)/2.
 */
#include "bench_common.h"

#define NAME "buffered"
#define DEFAULT_ITERS 8000000
#define CAP 128

static int64_t iters;
static weft_chan *ch;
static double ns_per_op = -1;

static void producer(void *arg) {
    (void)arg;
    const int64_t n = iters;
    for (int64_t i = 1; i <= n; i++)
        bench_send(NAME, ch, i);
    weft_chan_close(ch);
}

static void main_fn(void *arg) {
    (void)arg;
    const int64_t n = iters;
    ch = bench_chan(NAME, CAP);

    int64_t sum = 0, count = 0, v;
    int64_t t0 = weft_nanotime();
    bench_go(NAME, producer, NULL);
    while (bench_recv(NAME, ch, &v)) {
        count++;
        if (v != count)
            bench_fail(NAME, "message %lld is %lld", (long long)count, (long long)v);
        sum += v;
    }
    int64_t t1 = weft_nanotime();

    const int64_t want = n * (n + 1) / 2;
    if (count != n || sum != want)
        bench_fail(NAME, "received %lld values summing to %lld, want %lld summing to %lld",
                   (long long)count, (long long)sum, (long long)n, (long long)want);
    ns_per_op = (double)(t1 - t0) / (double)n;
}

int main(int argc, char **argv) {
    iters = bench_iters(NAME, argc, argv, DEFAULT_ITERS);
    bench_run(NAME, main_fn, &ns_per_op);
    weft_chan_release(ch);
    bench_print(NAME, ns_per_op);
    return 0;
}
