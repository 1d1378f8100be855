/*
 * examples/c_pipeline.c — a pipeline of native goroutines on weft's C API:
 * a generator feeds numbers to four workers that test them for primality;
 * a collector counts the primes, printing progress on a ticker, and gives up
 * on a deadline with select. Built by `make` as build/examples/c_pipeline.
 *
 *   build/examples/c_pipeline [limit]
 */
#include "weft.h"

#include <stdio.h>
#include <stdlib.h>

enum { WORKERS = 4 };

static int64_t limit = 2000000;
static weft_chan *numbers, *results;

static void generate(void *arg) {
    (void)arg;
    for (int64_t n = 2; n <= limit; n++)
        if (weft_chan_send(numbers, weft_val_int(n)) != WEFT_OK)
            return;
    weft_chan_close(numbers);
}

static int is_prime(int64_t n) {
    for (int64_t d = 2; d * d <= n; d++)
        if (n % d == 0)
            return 0;
    return 1;
}

static void work(void *arg) {
    weft_chan *done = arg;
    weft_val v;
    while (weft_chan_recv(numbers, &v) == 1)
        if (is_prime(v.u.i))
            weft_chan_send(results, v);
    weft_chan_send(done, weft_val_int(1));
}

/* Closes results once every worker has finished. */
static void closer(void *arg) {
    weft_chan *done = arg;
    weft_val v;
    for (int i = 0; i < WORKERS; i++)
        weft_chan_recv(done, &v);
    weft_chan_close(results);
    weft_chan_release(done);
}

static void pipeline(void *arg) {
    (void)arg;
    numbers = weft_chan_new(256);
    results = weft_chan_new(256);
    weft_chan *done = weft_chan_new(WORKERS);
    weft_go(generate, NULL);
    for (int i = 0; i < WORKERS; i++)
        weft_go(work, done);
    weft_go(closer, done);

    weft_timer *progress = weft_ticker_new(0.1);
    weft_chan *deadline = weft_after(30);
    int64_t primes = 0, largest = 0;
    for (;;) {
        weft_case cs[3] = {weft_case_recv(results), weft_case_recv(weft_timer_chan(progress)),
                           weft_case_recv(deadline)};
        int k = weft_select(cs, 3, 0);
        if (k == 0 && !cs[0].ok)
            break; /* all workers done */
        if (k == 0) {
            primes++;
            if (cs[0].val.u.i > largest)
                largest = cs[0].val.u.i;
        } else if (k == 1) {
            fprintf(stderr, "  ... %lld primes so far\n", (long long)primes);
        } else {
            printf("deadline reached: partial result\n");
            break;
        }
    }
    weft_timer_free(progress);
    weft_chan_release(deadline);
    printf("%lld primes up to %lld (largest %lld) on %d processors\n", (long long)primes,
           (long long)limit, (long long)largest, weft_procs());
}

int main(int argc, char **argv) {
    if (argc > 1) {
        char *end;
        limit = strtoll(argv[1], &end, 10);
        if (*end || limit < 2) {
            fprintf(stderr, "usage: %s [limit >= 2]\n", argv[0]);
            return 2;
        }
    }
    if (weft_run(NULL, pipeline, NULL) != WEFT_OK) {
        fprintf(stderr, "c_pipeline: could not start the engine\n");
        return 1;
    }
    weft_chan_release(numbers);
    weft_chan_release(results);
    return 0;
}
