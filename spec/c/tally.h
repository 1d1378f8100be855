/*
 * tally.h — the report of the standalone C test programs (codec_test,
 * vmalloc_test): one line per test, "ok   name" or "FAIL name: why", and a
 * last line "N passed, N failed". Included once per program.
 */
#ifndef WEFT_TALLY_H
#define WEFT_TALLY_H

#include <stdarg.h>
#include <stdio.h>

static int passed, failed;

/* Counts and prints one test's outcome; fmt (may be NULL) says why it failed. */
static void result(int ok, const char *name, const char *fmt, ...) {
    if (ok) {
        passed++;
        printf("ok   %s\n", name);
    } else {
        failed++;
        printf("FAIL %s", name);
        if (fmt) {
            va_list ap;
            va_start(ap, fmt);
            printf(": ");
            vprintf(fmt, ap);
            va_end(ap);
        }
        printf("\n");
    }
}

/* Prints the last line; the program's exit status. */
static int tally_end(void) {
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif
