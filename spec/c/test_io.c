/*
 * test_io.c — the netpoller for native goroutines: waits on pipes across
 * processors (every byte relayed once, in order), timeouts, a busy
 * processor still waking its fd waiters, weft_io_wake_closed, an engine
 * stopping with goroutines parked on fds, bad input.
 */
#include "ctest.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

static void nb_pipe(int fds[2]) {
    CHECK_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
}

/* ---- relay: NPIPES writers and readers, byte by byte ---------------------- */

#define NPIPES 16
#define NBYTES 2000

typedef struct relay {
    int fds[NPIPES][2];
    atomic_long total;
    atomic_int bad;
    weft_chan *done;
} relay;

typedef struct relay_arg {
    relay *r;
    int i;
} relay_arg;

static relay_arg rargs[NPIPES];

static void relay_reader(void *arg) {
    relay_arg *a = arg;
    int fd = a->r->fds[a->i][0];
    int expect = 0;
    for (;;) {
        unsigned char buf[64];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            for (ssize_t k = 0; k < n; k++, expect++)
                if (buf[k] != (unsigned char)(expect * 7 + a->i))
                    atomic_fetch_add(&a->r->bad, 1);
            atomic_fetch_add(&a->r->total, n);
            continue;
        }
        if (n == 0)
            break;
        CHECK(errno == EAGAIN);
        CHECK_EQ(weft_io_wait(fd, WEFT_IO_READ, -1), WEFT_OK);
    }
    CHECK_EQ(expect, NBYTES);
    close(fd);
    weft_chan_send(a->r->done, weft_val_int(a->i));
}

static void relay_writer(void *arg) {
    relay_arg *a = arg;
    int fd = a->r->fds[a->i][1];
    for (int k = 0; k < NBYTES;) {
        unsigned char b = (unsigned char)(k * 7 + a->i);
        ssize_t n = write(fd, &b, 1);
        if (n == 1) {
            k++;
            if (k % 97 == 0)
                weft_yield();
            continue;
        }
        CHECK(errno == EAGAIN);
        CHECK_EQ(weft_io_wait(fd, WEFT_IO_WRITE, -1), WEFT_OK);
    }
    close(fd);
}

static void relay_main(void *arg) {
    relay *r = arg;
    for (int i = 0; i < NPIPES; i++) {
        nb_pipe(r->fds[i]);
        rargs[i] = (relay_arg){r, i};
        weft_go(relay_reader, &rargs[i]);
        weft_go(relay_writer, &rargs[i]);
    }
    for (int i = 0; i < NPIPES; i++) {
        weft_val v;
        CHECK_EQ(weft_chan_recv(r->done, &v), 1);
    }
}

static void test_relay(void) {
    relay r = {0};
    r.done = weft_chan_new(NPIPES);
    ctest_run(2, relay_main, &r);
    CHECK_EQ(atomic_load(&r.total), (long)NPIPES * NBYTES);
    CHECK_EQ(atomic_load(&r.bad), 0);
    weft_chan_release(r.done);
}

/* ---- timeout ---------------------------------------------------------------- */

static void timeout_main(void *arg) {
    (void)arg;
    int fds[2];
    nb_pipe(fds);
    int64_t t0 = weft_nanotime();
    CHECK_EQ(weft_io_wait(fds[0], WEFT_IO_READ, 0.02), WEFT_EAGAIN);
    CHECK(weft_nanotime() - t0 >= 20 * 1000000LL - 1000);
    /* A writable pipe is ready at once, timeout or not. */
    CHECK_EQ(weft_io_wait(fds[1], WEFT_IO_WRITE, 5), WEFT_OK);
    CHECK_EQ(weft_io_wait(fds[1], WEFT_IO_READ | WEFT_IO_WRITE, 0), WEFT_OK);
    close(fds[0]);
    close(fds[1]);
}

static void test_timeout(void) {
    ctest_run(1, timeout_main, NULL);
}

/* ---- a busy processor still wakes its fd waiters ----------------------------- */

typedef struct busy {
    int fds[2];
    atomic_int woken;
} busy;

static void busy_waiter(void *arg) {
    busy *b = arg;
    CHECK_EQ(weft_io_wait(b->fds[0], WEFT_IO_READ, -1), WEFT_OK);
    atomic_store(&b->woken, 1);
}

static void *busy_thread(void *arg) {
    busy *b = arg;
    struct timespec ts = {0, 10 * 1000000};
    nanosleep(&ts, NULL);
    CHECK_EQ(write(b->fds[1], "x", 1), 1);
    return NULL;
}

static void busy_main(void *arg) {
    busy *b = arg;
    nb_pipe(b->fds);
    weft_go(busy_waiter, b);
    weft_yield(); /* the waiter parks */
    pthread_t th;
    pthread_create(&th, NULL, busy_thread, b);
    /* Never idle: only the scheduler's periodic poll can wake the waiter. */
    int64_t end = weft_nanotime() + 10 * 1000000000LL;
    while (!atomic_load(&b->woken) && weft_nanotime() < end)
        weft_yield();
    CHECK(atomic_load(&b->woken));
    pthread_join(th, NULL);
    close(b->fds[0]);
    close(b->fds[1]);
}

static void test_busy_proc(void) {
    busy b = {0};
    ctest_run(1, busy_main, &b);
}

/* ---- weft_io_wake_closed ------------------------------------------------------- */

typedef struct closer {
    int fds[2];
    atomic_int results[4];
    weft_chan *done;
} closer;

static void closed_waiter(void *arg) {
    closer *c = arg;
    int rc = weft_io_wait(c->fds[0], WEFT_IO_READ, -1);
    atomic_fetch_add(&c->results[rc == WEFT_ECLOSED ? 0 : 1], 1);
    weft_chan_send(c->done, weft_val_int(1));
}

static void closed_main(void *arg) {
    closer *c = arg;
    nb_pipe(c->fds);
    for (int i = 0; i < 3; i++)
        weft_go(closed_waiter, c);
    /* One processor: the yield puts main behind the three, which park. */
    weft_yield();
    CHECK_EQ(weft_io_wake_closed(c->fds[0]), 3);
    CHECK_EQ(weft_io_wake_closed(c->fds[0]), 0);
    close(c->fds[0]);
    close(c->fds[1]);
    for (int i = 0; i < 3; i++) {
        weft_val v;
        CHECK_EQ(weft_chan_recv(c->done, &v), 1);
    }
    CHECK_EQ(atomic_load(&c->results[0]), 3);
    CHECK_EQ(atomic_load(&c->results[1]), 0);
}

static void test_wake_closed(void) {
    closer c = {0};
    c.done = weft_chan_new(3);
    ctest_run(1, closed_main, &c);
    weft_chan_release(c.done);
}

/* ---- stop with goroutines parked on fds ----------------------------------------- */

static int stop_fds[2];

static void stop_waiter(void *arg) {
    (void)arg;
    weft_io_wait(stop_fds[0], WEFT_IO_READ, -1);
    CHECK(0); /* never woken: the engine stops first */
}

static void stop_main(void *arg) {
    (void)arg;
    for (int i = 0; i < 8; i++)
        weft_go(stop_waiter, NULL);
    weft_sleep(0.01);
}

static void test_stop_with_waiters(void) {
    nb_pipe(stop_fds);
    ctest_run(2, stop_main, NULL);
    ctest_run(2, stop_main, NULL); /* again, on fresh loops */
    close(stop_fds[0]);
    close(stop_fds[1]);
}

/* ---- bad input ------------------------------------------------------------------- */

static void bad_main(void *arg) {
    (void)arg;
    CHECK_EQ(weft_io_wait(-1, WEFT_IO_READ, 0), WEFT_EINVAL);
    CHECK_EQ(weft_io_wait(0, 0, 0), WEFT_EINVAL);
    CHECK_EQ(weft_io_wait(0, 4, 0), WEFT_EINVAL);
}

static void test_bad_input(void) {
    CHECK_EQ(weft_io_wait(0, WEFT_IO_READ, 0), WEFT_ENOTG);
    CHECK_EQ(weft_io_wake_closed(0), 0);
    ctest_run(1, bad_main, NULL);
}

const ctest_case io_tests[] = {
    {"relay", test_relay},
    {"timeout", test_timeout},
    {"busy_proc", test_busy_proc},
    {"wake_closed", test_wake_closed},
    {"stop_with_waiters", test_stop_with_waiters},
    {"bad_input", test_bad_input},
    {NULL, NULL},
};
