/*
 * test_diag.c — diagnostics of native engines: deadlocks reported (and
 * weft_run returning WEFT_EDEADLOCK), none reported while timers or other
 * processors can still wake someone, and dumps asked for by a goroutine and
 * by a thread that is none.
 */
#include "ctest.h"
#include "diag.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Runs fn on a fresh engine with stderr sent to /dev/null (the report). */
static int run_quiet(int procs, void (*fn)(void *), void *arg) {
    fflush(stderr);
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    dup2(null, 2);
    close(null);
    weft_config cfg = {procs, 0};
    int rc = weft_run(&cfg, fn, arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    return rc;
}

static void recv_forever(void *arg) {
    weft_val v;
    weft_chan_recv(arg, &v);
}

static void deadlock_main(void *arg) {
    weft_chan *c = arg;
    weft_go(recv_forever, c);
    weft_go(recv_forever, c);
    weft_val v;
    weft_chan_recv(c, &v); /* nobody sends */
}

static void test_deadlock(void) {
    for (int procs = 1; procs <= 4; procs++) {
        weft_chan *c = weft_chan_new(0);
        CHECK_EQ(run_quiet(procs, deadlock_main, c), WEFT_EDEADLOCK);
        weft_chan_release(c);
    }
}

/* Goroutines that wake each other through timers and channels across
 * processors, with moments where every processor is idle but a timer is
 * pending: never a deadlock. */
static void ping(void *arg) {
    weft_chan **cs = arg;
    weft_val v;
    while (weft_chan_recv(cs[0], &v) == 1) {
        weft_sleep_ns(200 * 1000);
        weft_chan_send(cs[1], v);
    }
    weft_chan_close(cs[1]); /* done with both: main may release them */
}

static void busy_main(void *arg) {
    (void)arg;
    weft_chan *a = weft_chan_new(0), *b = weft_chan_new(0);
    weft_chan *cs[2] = {a, b};
    weft_go(ping, cs);
    for (int i = 0; i < 50; i++) {
        weft_val v = {0};
        v.u.i = i;
        weft_chan_send(a, v);
        weft_chan_recv(b, &v);
        CHECK_EQ(v.u.i, i);
    }
    weft_chan_close(a);
    weft_val v;
    CHECK_EQ(weft_chan_recv(b, &v), 0); /* ping is done with a, b and cs */
    weft_chan_release(a);
    weft_chan_release(b);
}

static void test_no_false_deadlock(void) {
    for (int round = 0; round < 10; round++)
        CHECK_EQ(run_quiet(1 + round % 3, busy_main, NULL), WEFT_OK);
}

static void dump_main(void *arg) {
    (void)arg;
    weft_chan *c = weft_chan_new(0);
    int64_t id = weft_go(recv_forever, c);
    int64_t counts[5] = {0};
    while (counts[WEFT_G_WAITING] < 1) { /* it parks, on whichever processor */
        weft_yield();
        weft_diag_gcounts(counts);
    }
    char *d = weft_diag_dump(0);
    CHECK(d != NULL);
    if (d) {
        CHECKF(strncmp(d, "goroutine 1 [running]:\n\t(native goroutine", 40) == 0, "%s", d);
        char want[128];
        snprintf(want, sizeof want,
                 "\n\ngoroutine %lld [chan receive]:\n\t(native goroutine: C code, no Lua "
                 "traceback)\ncreated by native code in goroutine 1\n",
                 (long long)id);
        CHECKF(strstr(d, want) != NULL, "%s", d);
        free(d);
    }
    d = weft_diag_dump(1);
    CHECK(d && strstr(d, "goroutine 1 ") == NULL);
    free(d);
    weft_chan_close(c);
    weft_chan_release(c);
}

static void test_dump(void) {
    ctest_run(2, dump_main, NULL);
    CHECK(weft_diag_dump(0) == NULL); /* no engine */
}

static void test_dump_from_thread(void) {
    weft_config cfg = {2, 0};
    CHECK_EQ(weft_start(&cfg), WEFT_OK);
    weft_chan *c = weft_chan_new(0);
    weft_go(recv_forever, c);
    int64_t counts[5] = {0};
    while (counts[WEFT_G_WAITING] < 1)
        weft_diag_gcounts(counts); /* parked: its wait reason is written */
    for (int i = 0; i < 20; i++) {
        char *d = weft_diag_dump(0);
        CHECK(d && strstr(d, "goroutine 1 [chan receive]:\n"));
        free(d);
    }
    weft_chan_close(c);
    CHECK(weft_wait_idle(5));
    CHECK_EQ(weft_stop(), WEFT_OK);
    weft_chan_release(c);
}

/* A goroutine woken by its fd (the pipe main writes) while main goes to
 * sleep on the channel it answers on: the fd wait, finished in the
 * sleeping processor's loop, counts until the goroutine is runnable. */
static void fd_reader(void *arg) {
    int *fds = arg;
    char ch;
    if (weft_io_wait(fds[0], WEFT_IO_READ, -1) == WEFT_OK && read(fds[0], &ch, 1) == 1)
        weft_chan_send(*(weft_chan **)(fds + 2), weft_val_int(ch));
}

static void fd_main(void *arg) {
    int *fds = arg;
    weft_chan *c = *(weft_chan **)(fds + 2);
    for (int i = 0; i < 2000; i++) {
        weft_go(fd_reader, fds);
        for (int k = 0; k < 50; k++)
            weft_yield(); /* let the reader park, on either processor */
        char ch = 'x';
        CHECK_EQ(write(fds[1], &ch, 1), 1);
        weft_val v;
        CHECK_EQ(weft_chan_recv(c, &v), 1);
    }
}

static void test_no_false_deadlock_fd(void) {
    int fds[2 + 2 * sizeof(void *) / sizeof(int)];
    CHECK_EQ(pipe(fds), 0);
    weft_chan *c = weft_chan_new(0);
    *(weft_chan **)(fds + 2) = c;
    CHECK_EQ(run_quiet(2, fd_main, fds), WEFT_OK);
    weft_chan_release(c);
    close(fds[0]);
    close(fds[1]);
}

const ctest_case diag_tests[] = {
    {"deadlock", test_deadlock},
    {"no_false_deadlock", test_no_false_deadlock},
    {"no_false_deadlock_fd", test_no_false_deadlock_fd},
    {"dump", test_dump},
    {"dump_from_thread", test_dump_from_thread},
    {NULL, NULL},
};
