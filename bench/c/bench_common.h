/*
 * bench_common.h — shared helpers for the weft C micro-benchmarks.
 *
 * Every benchmark: runs its work in weft_run() with cfg.procs from
 * $WEFT_PROCS (default 2), takes its iteration count from argv[1], times the
 * measured loop with weft_nanotime() inside the main goroutine, verifies the
 * result, and prints exactly one line "<name> <ns_per_op>" on stdout — and
 * only if the verification passed. Any failure writes a message on stderr and
 * exits with status 1 without printing a number.
 *
 * Each benchmark has a Go twin in bench/go/<name>/main.go with the same
 * structure, iteration count and verification.
 */
#ifndef WEFT_BENCH_COMMON_H
#define WEFT_BENCH_COMMON_H

#include "weft.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Reports a failure and leaves at once. _Exit() rather than exit(): this may
 * be called on a goroutine stack while processors are running, and nothing
 * needs flushing (stdout has not been written to yet). */
static void bench_fail(const char *name, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));
static void bench_fail(const char *name, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s: FAILED: ", name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    _Exit(1);
}

/* $WEFT_PROCS, default 2. */
static inline int bench_procs(const char *name) {
    const char *s = getenv("WEFT_PROCS");
    if (!s || !*s)
        return 2;
    char *end;
    errno = 0;
    long n = strtol(s, &end, 10);
    if (errno || *end || n < 1 || n > 4096)
        bench_fail(name, "bad WEFT_PROCS '%s'", s);
    return (int)n;
}

/* argv[1] as a positive iteration count, else def. */
static inline int64_t bench_iters(const char *name, int argc, char **argv, int64_t def) {
    if (argc < 2)
        return def;
    char *end;
    errno = 0;
    long long n = strtoll(argv[1], &end, 10);
    if (errno || *end || end == argv[1] || n < 1)
        bench_fail(name, "bad iteration count '%s'", argv[1]);
    return (int64_t)n;
}

/* Runs main_fn as the main goroutine on a fresh engine; main_fn stores its
 * result (>= 0) in *ns_per_op, which starts out negative. */
static inline void bench_run(const char *name, void (*main_fn)(void *), const double *ns_per_op) {
    weft_config cfg = {0};
    cfg.procs = bench_procs(name);
    int rc = weft_run(&cfg, main_fn, NULL);
    if (rc != WEFT_OK)
        bench_fail(name, "weft_run returned %d", rc);
    if (*ns_per_op < 0)
        bench_fail(name, "main goroutine did not finish");
}

static inline weft_chan *bench_chan(const char *name, size_t cap) {
    weft_chan *c = weft_chan_new(cap);
    if (!c)
        bench_fail(name, "weft_chan_new(%zu) failed", cap);
    return c;
}

static inline void bench_go(const char *name, void (*fn)(void *), void *arg) {
    int64_t id = weft_go(fn, arg);
    if (id <= 0)
        bench_fail(name, "weft_go returned %lld", (long long)id);
}

/* Sends the int64 v on c; any error is fatal. */
static inline void bench_send(const char *name, weft_chan *c, int64_t v) {
    int rc = weft_chan_send(c, weft_val_int(v));
    if (rc != WEFT_OK)
        bench_fail(name, "weft_chan_send returned %d", rc);
}

/* Receives an int64 from c: 1 and *v set, or 0 when c is closed and drained. */
static inline int bench_recv(const char *name, weft_chan *c, int64_t *v) {
    weft_val x;
    int rc = weft_chan_recv(c, &x);
    if (rc == 0)
        return 0;
    if (rc != 1)
        bench_fail(name, "weft_chan_recv returned %d", rc);
    if (x.tag != WEFT_TAG_INT64 || (x.flags & WEFT_VAL_HEAP))
        bench_fail(name, "received a value with tag %u flags %u, not an int64",
                   (unsigned)x.tag, (unsigned)x.flags);
    *v = x.u.i;
    return 1;
}

static inline void bench_print(const char *name, double ns_per_op) {
    printf("%s %.1f\n", name, ns_per_op);
    fflush(stdout);
}

#endif
