/*
 * test_hosted.c — hosted goroutines, the engine side of Lua goroutines.
 *
 * A fake host stands in for the Lua binding: each hosted goroutine is a
 * small state machine whose step function runs until it must wait, exactly
 * as a Lua coroutine runs until it yields. Blocking operations use the
 * two-phase start/finish calls of core.h.
 *
 * Checked: hosted goroutines run only on the processor they are bound to;
 * values flow between hosted and native goroutines on both processors with
 * nothing lost or duplicated; select (with timeouts) and sleep work for
 * hosted goroutines; a hosted main ends the engine; goroutines left
 * blocked are discarded (the host is told) and withdrawn from channels.
 */
#include "core.h"
#include "ctest.h"

#include <stdlib.h>
#include <string.h>

typedef struct fake fake;
struct fake {
    int (*step)(fake *f); /* runs to the next wait; returns a WEFT_PARK_* */
    int pc;               /* where to resume */
    int home;             /* the processor it must always run on */
    int64_t i, n, sum;
    weft_chan *in, *out;
    weft_timer *timeout;
    weft_val v;
    weft_case cs[2];
    int steps;
};

static atomic_int discarded;

static void fake_run(weft_proc *p, weft_g *g) {
    fake *f = g->host;
    CHECKF(weft_proc_id() == f->home, "hosted goroutine ran on %d, bound to %d", weft_proc_id(),
           f->home);
    CHECK(g->bound == p);
    f->steps++;
    g->parkop = f->step(f);
}

static void fake_discard(weft_g *g) {
    (void)g;
    atomic_fetch_add(&discarded, 1);
}

static const weft_host fake_host = {fake_run, fake_discard, NULL, NULL};

/* ---- native producers, hosted consumers, hosted main ------------------------ */

enum { PRODUCERS = 4, CONSUMERS = 6, PER = 20000 };

static weft_chan *work, *sums;
static atomic_llong produced;

static void producer(void *arg) {
    int64_t base = (int64_t)(intptr_t)arg * PER;
    for (int64_t k = 1; k <= PER; k++) {
        CHECK_EQ(weft_chan_send(work, weft_val_int(base + k)), WEFT_OK);
        atomic_fetch_add(&produced, base + k);
    }
}

/* Receives from `work` with a select that also has a timeout case, until
 * work is closed; then sends its sum on `sums`. */
static int consumer_step(fake *f) {
    int rc;
    switch (f->pc) {
    case 0:
        f->timeout = weft_timer_new(3600);
        for (;;) {
            weft_timer_reset(f->timeout, 0.001);
            f->cs[0] = weft_case_recv(work);
            f->cs[1] = weft_case_recv(weft_timer_chan(f->timeout));
            do { /* EAGAIN: woken to select anew (chan.c) */
                rc = weft_select_start(f->cs, 2, 0);
                if (rc == WEFT_PENDING) {
                    f->pc = 1;
                    return WEFT_PARK_WAIT;
                case 1:
                    rc = weft_select_finish(f->cs, 2);
                }
            } while (rc == WEFT_EAGAIN);
            CHECK(rc == 0 || rc == 1);
            if (rc == 1)
                continue; /* timed out */
            if (!f->cs[0].ok)
                break;
            f->sum += f->cs[0].val.u.i;
            f->n++;
            if (f->n % 1000 == 0) {
                f->pc = 2;
                return WEFT_PARK_YIELD; /* be polite now and then */
            case 2:;
            }
        }
        weft_timer_free(f->timeout);
        f->v = weft_val_int(f->sum);
        rc = weft_chan_send_start(sums, &f->v);
        if (rc == WEFT_PENDING) {
            f->pc = 3;
            return WEFT_PARK_WAIT;
        case 3:
            rc = weft_chan_send_finish(&f->v);
        }
        CHECK_EQ(rc, WEFT_OK);
        return WEFT_PARK_EXIT;
    }
    CHECK(0);
    return WEFT_PARK_EXIT;
}

static fake consumers[CONSUMERS];
static atomic_llong consumed;

static weft_chan *producers_done;

static void producers_then_close(void *arg) {
    (void)arg;
    for (int i = 0; i < PRODUCERS; i++) {
        weft_val v;
        weft_chan_recv(producers_done, &v);
    }
    weft_chan_close(work);
}

static void producer_wrap(void *arg) {
    producer(arg);
    weft_chan_send(producers_done, weft_val_int(1));
}

static int main_step(fake *f) {
    int rc;
    switch (f->pc) {
    case 0:
        work = weft_chan_new(8);
        sums = weft_chan_new(0);
        producers_done = weft_chan_new(PRODUCERS);
        for (int i = 0; i < CONSUMERS; i++) {
            memset(&consumers[i], 0, sizeof consumers[i]);
            consumers[i].step = consumer_step;
            consumers[i].home = weft_proc_id();
            CHECK(weft_go_hosted(&consumers[i]) > 0);
        }
        for (intptr_t i = 0; i < PRODUCERS; i++)
            CHECK(weft_go(producer_wrap, (void *)i) > 0);
        CHECK(weft_go(producers_then_close, NULL) > 0);
        /* A short sleep first, as a hosted goroutine. */
        f->i = weft_nanotime();
        if (weft_sleep_start(2000000) == WEFT_PENDING) {
            f->pc = 1;
            return WEFT_PARK_WAIT;
        }
        /* fall through */
    case 1:
        CHECK(weft_nanotime() - f->i >= 2000000);
        for (f->n = 0; f->n < CONSUMERS; f->n++) {
            rc = weft_chan_recv_start(sums, &f->v);
            if (rc == WEFT_PENDING) {
                f->pc = 2;
                return WEFT_PARK_WAIT;
            case 2:
                rc = weft_chan_recv_finish(&f->v);
            }
            CHECK_EQ(rc, 1);
            atomic_fetch_add(&consumed, f->v.u.i);
        }
        return WEFT_PARK_EXIT;
    }
    CHECK(0);
    return WEFT_PARK_EXIT;
}

static void test_hosted_with_native(void) {
    for (int rep = 0; rep < 3; rep++) {
        atomic_store(&produced, 0);
        atomic_store(&consumed, 0);
        atomic_store(&discarded, 0);
        fake m = {.step = main_step, .home = 0};
        weft_config cfg = {2, 0};
        CHECK_EQ(weft_run_hosted(&cfg, &fake_host, &m), WEFT_OK);
        long long n = (long long)PRODUCERS * PER;
        CHECK_EQ(atomic_load(&produced), n * (n + 1) / 2);
        CHECK_EQ(atomic_load(&consumed), atomic_load(&produced));
        int64_t got = 0;
        for (int i = 0; i < CONSUMERS; i++) {
            got += consumers[i].n;
            CHECK(consumers[i].steps > 0);
        }
        CHECK_EQ(got, n);
        CHECK_EQ(atomic_load(&discarded), 0);
        weft_chan_release(work);
        weft_chan_release(sums);
        weft_chan_release(producers_done);
    }
}

/* ---- goroutines left blocked are discarded and withdrawn ------------------- */

static weft_chan *never;

static int blocked_step(fake *f) {
    int rc;
    switch (f->pc) {
    case 0:
        f->pc = 1;
        switch (f->i % 3) {
        case 0:
            rc = weft_chan_recv_start(never, &f->v);
            break;
        case 1:
            rc = weft_chan_recv_start(NULL, &f->v);
            break;
        default:
            f->cs[0] = weft_case_recv(never);
            f->cs[1] = weft_case_recv(never); /* twice: duplicates are allowed */
            rc = weft_select_start(f->cs, 2, 0);
        }
        CHECK_EQ(rc, WEFT_PENDING);
        return WEFT_PARK_WAIT;
    }
    CHECK(0); /* never resumed */
    return WEFT_PARK_EXIT;
}

static fake blocked[30];

static int leaving_main_step(fake *f) {
    switch (f->pc) {
    case 0:
        for (int i = 0; i < 30; i++) {
            memset(&blocked[i], 0, sizeof blocked[i]);
            blocked[i].step = blocked_step;
            blocked[i].i = i;
            CHECK(weft_go_hosted(&blocked[i]) > 0);
        }
        f->pc = 1;
        return WEFT_PARK_YIELD; /* let them all block */
    case 1:
        CHECK_EQ(weft_count(), 31);
        return WEFT_PARK_EXIT;
    }
    return WEFT_PARK_EXIT;
}

static void test_hosted_discard(void) {
    atomic_store(&discarded, 0);
    never = weft_chan_new(0);
    fake m = {.step = leaving_main_step};
    CHECK_EQ(weft_run_hosted(NULL, &fake_host, &m), WEFT_OK);
    CHECK_EQ(atomic_load(&discarded), 30);
    for (int i = 0; i < 30; i++)
        CHECK_EQ(blocked[i].steps, 1);
    /* Nobody is left waiting on the channel. */
    CHECK_EQ(weft_chan_trysend(never, weft_val_int(1)), WEFT_EAGAIN);
    weft_val v;
    CHECK_EQ(weft_chan_tryrecv(never, &v), WEFT_EAGAIN);
    weft_chan_release(never);
}

/* ---- bad calls -------------------------------------------------------------- */

static void test_hosted_bad_calls(void) {
    weft_val v = weft_val_int(1);
    CHECK_EQ(weft_chan_send_start(NULL, &v), WEFT_ENOTG);
    CHECK_EQ(weft_select_start(NULL, 0, 1), WEFT_ENOTG);
    CHECK_EQ(weft_sleep_start(1000), WEFT_ENOTG);
    CHECK_EQ(weft_go_hosted(&v), WEFT_ESTATE);
    CHECK_EQ(weft_run_hosted(NULL, NULL, NULL), WEFT_EINVAL);
}

const ctest_case hosted_tests[] = {
    {"with_native", test_hosted_with_native},
    {"discard", test_hosted_discard},
    {"bad_calls", test_hosted_bad_calls},
    {NULL, NULL},
};
