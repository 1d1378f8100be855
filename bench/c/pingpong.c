/*
 * pingpong — two goroutines exchange an int64 over two unbuffered channels.
 *
 * The main goroutine sends i on `ping`; the echo goroutine receives it and
 * sends it back on `pong`. argv[1] is the number of round trips n; each round
 * trip is two messages, and one op is one message (a matched send/recv), so
 * the result is elapsed / (2n). Twin: bench/go/pingpong/main.go.
 *
 * Verification: every echoed value equals what was sent, and both sides' sums
 * equal n(n+1)/2.
 */
#include "bench_common.h"

#define NAME "pingpong"
#define DEFAULT_ITERS 1500000 /* round trips */

static int64_t iters;
static weft_chan *ping, *pong, *done;
static double ns_per_op = -1;

static void echo(void *arg) {
    (void)arg;
    int64_t v, sum = 0;
    while (bench_recv(NAME, ping, &v)) {
        sum += v;
        bench_send(NAME, pong, v);
    }
    bench_send(NAME, done, sum);
}

static void main_fn(void *arg) {
    (void)arg;
    const int64_t n = iters;
    ping = bench_chan(NAME, 0);
    pong = bench_chan(NAME, 0);
    done = bench_chan(NAME, 1);
    bench_go(NAME, echo, NULL);

    int64_t sum = 0, v;
    int64_t t0 = weft_nanotime();
    for (int64_t i = 1; i <= n; i++) {
        bench_send(NAME, ping, i);
        if (!bench_recv(NAME, pong, &v))
            bench_fail(NAME, "pong closed");
        if (v != i)
            bench_fail(NAME, "sent %lld, got back %lld", (long long)i, (long long)v);
        sum += v;
    }
    int64_t t1 = weft_nanotime();

    weft_chan_close(ping);
    int64_t echo_sum;
    if (!bench_recv(NAME, done, &echo_sum))
        bench_fail(NAME, "done closed");
    const int64_t want = n * (n + 1) / 2;
    if (sum != want || echo_sum != want)
        bench_fail(NAME, "sums %lld (main) / %lld (echo), want %lld", (long long)sum,
                   (long long)echo_sum, (long long)want);
    ns_per_op = (double)(t1 - t0) / (2.0 * (double)n);
}

int main(int argc, char **argv) {
    iters = bench_iters(NAME, argc, argv, DEFAULT_ITERS);
    bench_run(NAME, main_fn, &ns_per_op);
    /* Released only now: no goroutine is left to be blocked on them. */
    weft_chan_release(ping);
    weft_chan_release(pong);
    weft_chan_release(done);
    bench_print(NAME, ns_per_op);
    return 0;
}
