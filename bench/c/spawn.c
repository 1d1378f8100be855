/*
 * spawn — start goroutines that do trivial work and exit.
 *
 * The main goroutine starts n goroutines in batches of BATCH: it starts a
 * batch, then receives one completion per goroutine of the batch from
 * `done` (capacity BATCH, so no child ever blocks on its send). Each child
 * sends its argument i on `done` and exits. At most BATCH children are alive
 * at once. One op is one goroutine start + run + exit: elapsed / n.
 * Twin: bench/go/spawn/main.go.
 *
 * Verification: n completions whose values sum to n(n+1)/2.
 */
#include "bench_common.h"

#define NAME "spawn"
#define DEFAULT_ITERS 1200000
#define BATCH 1000

static int64_t iters;
static weft_chan *done;
static double ns_per_op = -1;

static void child(void *arg) {
    bench_send(NAME, done, (int64_t)(intptr_t)arg);
}

static void main_fn(void *arg) {
    (void)arg;
    const int64_t n = iters;
    done = bench_chan(NAME, BATCH);

    int64_t sum = 0, count = 0, v;
    int64_t t0 = weft_nanotime();
    for (int64_t base = 0; base < n; base += BATCH) {
        int64_t k = n - base < BATCH ? n - base : BATCH;
        for (int64_t j = 1; j <= k; j++)
            bench_go(NAME, child, (void *)(intptr_t)(base + j));
        for (int64_t j = 0; j < k; j++) {
            if (!bench_recv(NAME, done, &v))
                bench_fail(NAME, "done closed");
            sum += v;
            count++;
        }
    }
    int64_t t1 = weft_nanotime();

    const int64_t want = n * (n + 1) / 2;
    if (count != n || sum != want)
        bench_fail(NAME, "%lld completions summing to %lld, want %lld summing to %lld",
                   (long long)count, (long long)sum, (long long)n, (long long)want);
    ns_per_op = (double)(t1 - t0) / (double)n;
}

int main(int argc, char **argv) {
    iters = bench_iters(NAME, argc, argv, DEFAULT_ITERS);
    bench_run(NAME, main_fn, &ns_per_op);
    weft_chan_release(done);
    bench_print(NAME, ns_per_op);
    return 0;
}
