/*
 * ctest.h — the C test harness of the core. Tests are plain functions listed
 * in a suite table per file; CHECK may be used from any goroutine or thread:
 * a failed check is counted and reported, the test goes on, and the test
 * fails. A watchdog aborts a test that runs past its time limit.
 */
#ifndef WEFT_CTEST_H
#define WEFT_CTEST_H

#include "weft.h"
#include "sanitizer.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

typedef struct ctest_case {
    const char *name;
    void (*fn)(void);
} ctest_case;

extern atomic_int ctest_failures;
void ctest_fail(const char *file, int line, const char *expr, const char *fmt, ...);

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond))                                                                     \
            ctest_fail(__FILE__, __LINE__, #cond, NULL);                                 \
    } while (0)
#define CHECKF(cond, ...)                                                                \
    do {                                                                                 \
        if (!(cond))                                                                     \
            ctest_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                          \
    } while (0)
#define CHECK_EQ(a, b)                                                                   \
    do {                                                                                 \
        long long ctest_a_ = (long long)(a), ctest_b_ = (long long)(b);                  \
        if (ctest_a_ != ctest_b_)                                                        \
            ctest_fail(__FILE__, __LINE__, #a " == " #b, "%lld != %lld", ctest_a_, ctest_b_); \
    } while (0)

/* Runs fn(arg) as the main goroutine of a fresh engine with `procs` processors. */
void ctest_run(int procs, void (*fn)(void *), void *arg);

/* Scale for heavy tests: 1 normally, smaller under sanitizers. */
double ctest_scale(void);
/* splitmix64: a well-mixed hash for checksums. */
static inline uint64_t ctest_mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

#endif
