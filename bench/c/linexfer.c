/*
 * linexfer.c — what moving one cache line from one core to the other costs
 * on this machine: two threads hand a counter back and forth, each waiting
 * for the other's increment. Prints "linexfer <ns>", the time of one hand-
 * over (one line transfer), the median of three rounds.
 *
 * bench/run.sh prints it before and after the benchmarks: every benchmark
 * whose goroutines talk across processors pays it several times per
 * operation, and on a virtual machine it follows where the host runs the
 * vCPUs (45 ns and 200 ns were both seen on the 2-vCPU machine of
 * bench/RESULTS.md, minutes apart).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { ROUNDS = 3, HANDOVERS = 400000 };

static _Alignas(64) atomic_long turn;

/* Waits for each even value (odd for the other side) and increments it. */
static void play(long first) {
    for (long i = first; i < HANDOVERS; i += 2) {
        while (atomic_load_explicit(&turn, memory_order_acquire) != i)
            ;
        atomic_store_explicit(&turn, i + 1, memory_order_release);
    }
}

static void *other(void *arg) {
    (void)arg;
    play(1);
    return NULL;
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    double ns[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        atomic_store(&turn, 0);
        pthread_t t;
        double t0 = now_ns();
        if (pthread_create(&t, NULL, other, NULL) != 0) {
            fprintf(stderr, "linexfer: cannot start a thread\n");
            return 1;
        }
        play(0);
        pthread_join(t, NULL);
        ns[r] = (now_ns() - t0) / HANDOVERS;
    }
    qsort(ns, ROUNDS, sizeof ns[0], cmp);
    printf("linexfer %.1f\n", ns[ROUNDS / 2]);
    return 0;
}
