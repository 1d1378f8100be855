/*
 * ctest_main.c — runs the suites of spec/c: `ctest [filter...]` runs the
 * tests whose "suite.name" contains any filter. Prints one line per test and
 * `N passed, N failed` last; exits 1 on any failure.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ctest.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern const ctest_case chan_tests[], select_tests[], timer_tests[], sched_tests[],
    hosted_tests[], stress_tests[], sema_tests[], io_tests[], diag_tests[], pool_tests[];

static const struct {
    const char *suite;
    const ctest_case *cases;
} suites[] = {
    {"sched", sched_tests}, {"chan", chan_tests},     {"select", select_tests},
    {"timer", timer_tests}, {"hosted", hosted_tests}, {"stress", stress_tests},
    {"sema", sema_tests},   {"io", io_tests}, {"diag", diag_tests}, {"pool", pool_tests},
};

atomic_int ctest_failures;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

void ctest_fail(const char *file, int line, const char *expr, const char *fmt, ...) {
    int n = atomic_fetch_add(&ctest_failures, 1);
    if (n >= 20)
        return; /* enough said */
    pthread_mutex_lock(&out_lock);
    fprintf(stderr, "    %s:%d: check failed: %s", file, line, expr);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        fputs(" (", stderr);
        vfprintf(stderr, fmt, ap);
        fputc(')', stderr);
        va_end(ap);
    }
    fputc('\n', stderr);
    pthread_mutex_unlock(&out_lock);
}

void ctest_run(int procs, void (*fn)(void *), void *arg) {
    weft_config cfg = {procs, 0};
    int rc = weft_run(&cfg, fn, arg);
    CHECKF(rc == WEFT_OK, "weft_run returned %d", rc);
}

double ctest_scale(void) {
    const char *s = getenv("CTEST_SCALE");
    if (s && *s)
        return atof(s);
#if WEFT_TSAN
    return 0.2;
#elif WEFT_ASAN
    return 0.5;
#else
    return 1.0;
#endif
}

/* Watchdog: a test that takes longer than this is reported and aborts the
 * run, so a hang shows its name instead of eating the CI limit. */
static atomic_long deadline;
static const char *current;

static void *watchdog(void *arg) {
    (void)arg;
    for (;;) {
        sleep(1);
        long d = atomic_load(&deadline);
        if (d && time(NULL) > d) {
            fprintf(stderr, "FAIL %s: timed out (watchdog)\n", current);
            fflush(stderr);
            abort();
        }
    }
    return NULL;
}

static int selected(const char *full, int argc, char **argv) {
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(full, argv[i]))
            return 1;
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_t wd;
    pthread_create(&wd, NULL, watchdog, NULL);
    int limit = getenv("WEFT_SOAK") ? 3600 : 300;
    int passed = 0, failed = 0;
    for (size_t s = 0; s < sizeof suites / sizeof suites[0]; s++) {
        for (const ctest_case *c = suites[s].cases; c->name; c++) {
            char full[256];
            snprintf(full, sizeof full, "%s.%s", suites[s].suite, c->name);
            if (!selected(full, argc, argv))
                continue;
            current = full;
            int before = atomic_load(&ctest_failures);
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            atomic_store(&deadline, (long)time(NULL) + limit);
            c->fn();
            atomic_store(&deadline, 0);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
            if (atomic_load(&ctest_failures) == before) {
                passed++;
                printf("ok   %-40s %8.1f ms\n", full, ms);
            } else {
                failed++;
                printf("FAIL %-40s %8.1f ms\n", full, ms);
            }
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
