/*
 * test_timer.c — time: weft_sleep, one-shot timers, stop and reset (Go 1.23
 * semantics: no stale value is received after either), tickers (ticks are
 * dropped, not queued), after-channels (their timers go with the channel),
 * after_func, timers across processors and from foreign threads, bad input.
 *
 * Time is the thing under test here, so the tests sleep. The rule checked
 * everywhere is that nothing fires EARLY; upper bounds are loose (CI machines
 * are loaded). EPS_NS only absorbs the rounding of seconds (double) to ns.
 */
#include "ctest.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MS 1000000LL      /* ns */
#define EPS_NS 1000LL     /* double <-> ns rounding only */
#define LATE_NS 1000 * MS /* loose upper bound for any wake-up */

static int64_t now_ns(void) {
    return weft_nanotime();
}

/* A timer value (weft_now() at fire, seconds) in ns. */
static int64_t val_ns(const weft_val *v) {
    return (int64_t)llround(v->u.d * 1e9);
}

/* Receives from c giving up after `limit` seconds: 1 value, 0 closed,
 * -1 timed out. Uses an after-channel, released at once. */
static int recv_within(weft_chan *c, weft_val *out, double limit) {
    weft_chan *to = weft_after(limit);
    weft_case cs[2] = {weft_case_recv(c), weft_case_recv(to)};
    int k = weft_select(cs, 2, 0);
    weft_chan_release(to);
    if (k == 0) {
        *out = cs[0].val;
        return cs[0].ok;
    }
    memset(out, 0, sizeof *out);
    return -1;
}

/* Sleeps (in a goroutine) until c holds a value or `limit` seconds passed. */
static void wait_buffered(weft_chan *c, double limit) {
    int64_t end = now_ns() + (int64_t)(limit * 1e9);
    while (weft_chan_len(c) == 0 && now_ns() < end)
        weft_sleep(0.001);
}

/* Sum of pending timers over all processors. */
static long pending_timers(void) {
    long n = 0;
    for (int i = 0; i < weft_procs(); i++) {
        weft_proc_stats st;
        CHECK_EQ(weft_proc_stats_get(i, &st), WEFT_OK);
        n += st.timers;
    }
    return n;
}

static int sanitized(void) {
    return ctest_scale() < 1.0;
}

/* ---- weft_sleep: at least the requested time; 0/negative/NaN prompt -------- */

static void sleep_basic_main(void *arg) {
    (void)arg;
    static const double ds[] = {0.001, 0.005, 0.02};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) {
        int64_t want = (int64_t)(ds[i] * 1e9);
        int64_t t0 = now_ns();
        weft_sleep(ds[i]);
        int64_t el = now_ns() - t0;
        CHECKF(el >= want - EPS_NS, "weft_sleep(%g) woke after %lld ns", ds[i], (long long)el);
        CHECKF(el < LATE_NS, "weft_sleep(%g) took %lld ns", ds[i], (long long)el);
    }
    int64_t t0 = now_ns();
    weft_sleep_ns(20 * MS + 123);
    int64_t el = now_ns() - t0;
    CHECKF(el >= 20 * MS + 123, "weft_sleep_ns woke after %lld ns", (long long)el);
    CHECK(el < LATE_NS);

    /* 0, negative, NaN: prompt (a yield at most). */
    t0 = now_ns();
    for (int i = 0; i < 100; i++) {
        weft_sleep(0);
        weft_sleep(-1);
        weft_sleep_ns(0);
        weft_sleep_ns(-5);
        weft_sleep(NAN);
    }
    el = now_ns() - t0;
    CHECKF(el < 200 * MS, "500 zero/negative sleeps took %lld ns", (long long)el);
}

static void test_sleep_basic(void) {
    ctest_run(1, sleep_basic_main, NULL);
    ctest_run(2, sleep_basic_main, NULL);
}

/* ---- many sleepers with random durations: all wake, none early -------------- */

enum { SM_N = 1000 };

static struct {
    weft_chan *done;
    atomic_int early;
    _Atomic int64_t worst_early, max_late;
} sm;

static void sm_sleeper(void *arg) {
    int i = (int)(intptr_t)arg;
    int64_t d = (i % 10 == 0) ? 0 : (int64_t)(ctest_mix((uint64_t)i) % (uint64_t)(50 * MS + 1));
    int64_t t0 = now_ns();
    weft_sleep_ns(d);
    int64_t el = now_ns() - t0;
    if (el < d) {
        atomic_fetch_add(&sm.early, 1);
        int64_t e = d - el, w = atomic_load(&sm.worst_early);
        while (e > w && !atomic_compare_exchange_weak(&sm.worst_early, &w, e))
            ;
    }
    int64_t late = el - d, m = atomic_load(&sm.max_late);
    while (late > m && !atomic_compare_exchange_weak(&sm.max_late, &m, late))
        ;
    weft_chan_send(sm.done, weft_val_int(i));
}

static void sleep_many_main(void *arg) {
    (void)arg;
    memset(&sm, 0, sizeof sm);
    sm.done = weft_chan_new(SM_N);
    for (int i = 0; i < SM_N; i++)
        CHECK(weft_go(sm_sleeper, (void *)(intptr_t)i) > 0);
    int64_t sum = 0;
    int got = 0;
    for (; got < SM_N; got++) {
        weft_val v;
        int k = recv_within(sm.done, &v, 5.0);
        if (k != 1)
            break;
        sum += v.u.i;
    }
    CHECKF(got == SM_N, "only %d of %d sleepers woke", got, SM_N);
    if (got == SM_N)
        CHECK_EQ(sum, (int64_t)SM_N * (SM_N - 1) / 2);
    CHECKF(atomic_load(&sm.early) == 0, "%d sleepers woke early (worst by %lld ns)",
           atomic_load(&sm.early), (long long)atomic_load(&sm.worst_early));
    CHECKF(atomic_load(&sm.max_late) < LATE_NS, "a sleeper woke %lld ns late",
           (long long)atomic_load(&sm.max_late));
    weft_chan_release(sm.done);
}

static void test_sleep_many(void) {
    ctest_run(1, sleep_many_main, NULL);
    ctest_run(2, sleep_many_main, NULL);
}

/* ---- sleepers wake in deadline order ----------------------------------------- */

enum { SO_N = 16 };

static struct {
    int64_t base, spacing;
    atomic_int seq;
    int order[SO_N];
    int64_t woke[SO_N];
    weft_chan *done;
} so;

static void so_sleeper(void *arg) {
    int i = (int)(intptr_t)arg;
    int64_t deadline = so.base + (int64_t)(i + 1) * so.spacing;
    weft_sleep_ns(deadline - now_ns());
    int64_t t = now_ns();
    int s = atomic_fetch_add(&so.seq, 1);
    so.order[s] = i;
    so.woke[i] = t;
    CHECKF(t >= deadline, "sleeper %d woke %lld ns early", i, (long long)(deadline - t));
    weft_chan_send(so.done, weft_val_int(i));
}

static void sleep_order_main(void *arg) {
    (void)arg;
    so.spacing = (sanitized() ? 10 : 5) * MS;
    atomic_store(&so.seq, 0);
    so.done = weft_chan_new(SO_N);
    so.base = now_ns() + 10 * MS;
    /* Started in a scrambled order: the heap, not creation, orders them. */
    for (int j = 0; j < SO_N; j++)
        CHECK(weft_go(so_sleeper, (void *)(intptr_t)((j * 7 + 3) % SO_N)) > 0);
    int got = 0;
    for (; got < SO_N; got++) {
        weft_val v;
        if (recv_within(so.done, &v, 3.0) != 1)
            break;
    }
    CHECK_EQ(got, SO_N);
    if (got == SO_N) {
        for (int k = 0; k < SO_N; k++)
            CHECKF(so.order[k] == k, "wake #%d was sleeper %d (woke %lld us after base)", k,
                   so.order[k], (long long)((so.woke[so.order[k]] - so.base) / 1000));
    }
    weft_chan_release(so.done);
}

static void test_sleep_order(void) {
    ctest_run(1, sleep_order_main, NULL);
    ctest_run(2, sleep_order_main, NULL);
}

/* ---- one-shot timer: one value, weft_now() at fire, never early --------------- */

static void timer_basic_main(void *arg) {
    (void)arg;
    /* A receiver blocked on the channel (hand-off). */
    int64_t t0 = now_ns();
    weft_timer *t = weft_timer_new(0.02);
    CHECK(t != NULL);
    weft_chan *c = weft_timer_chan(t);
    CHECK(c != NULL);
    CHECK_EQ(weft_chan_cap(c), 1);
    weft_val v;
    CHECK_EQ(weft_chan_tryrecv(c, &v), WEFT_EAGAIN);
    CHECK_EQ(recv_within(c, &v, 2.0), 1);
    int64_t t1 = now_ns();
    CHECK_EQ(v.tag, WEFT_TAG_NUMBER);
    CHECK_EQ(v.flags, 0);
    int64_t fired = val_ns(&v);
    CHECKF(fired >= t0 + 20 * MS - EPS_NS, "fired %lld ns early", (long long)(t0 + 20 * MS - fired));
    CHECKF(fired <= t1 + EPS_NS, "value %lld ns after its receipt", (long long)(fired - t1));
    CHECK(t1 - t0 >= 20 * MS);
    CHECK(t1 - t0 < LATE_NS);
    /* Only one value, ever. */
    weft_sleep(0.02);
    CHECK_EQ(weft_chan_tryrecv(c, &v), WEFT_EAGAIN);
    CHECK_EQ(weft_chan_len(c), 0);
    CHECK_EQ(weft_timer_stop(t), 0);
    weft_timer_free(t);

    /* Nobody waiting: the value is buffered, stamped with the fire time. */
    t0 = now_ns();
    t = weft_timer_new(0.005);
    c = weft_timer_chan(t);
    weft_sleep(0.015);
    CHECK_EQ(weft_chan_len(c), 1);
    t1 = now_ns();
    CHECK_EQ(weft_chan_tryrecv(c, &v), 1);
    CHECK_EQ(v.tag, WEFT_TAG_NUMBER);
    fired = val_ns(&v);
    CHECK(fired >= t0 + 5 * MS - EPS_NS);
    CHECK(fired <= t1 + EPS_NS);
    weft_sleep(0.01);
    CHECK_EQ(weft_chan_tryrecv(c, &v), WEFT_EAGAIN);
    weft_timer_free(t);

    /* Three timers created out of order are received in deadline order. */
    static const double ds[3] = {0.024, 0.008, 0.016};
    weft_timer *ts[3];
    t0 = now_ns();
    for (int i = 0; i < 3; i++)
        ts[i] = weft_timer_new(ds[i]);
    static const int want[3] = {1, 2, 0};
    for (int n = 0; n < 3; n++) {
        weft_case cs[3];
        for (int i = 0; i < 3; i++)
            cs[i] = weft_case_recv(weft_timer_chan(ts[i]));
        int k = weft_select(cs, 3, 0);
        CHECKF(k == want[n], "receive #%d came from timer %d", n, k);
        if (k >= 0) {
            CHECK_EQ(cs[k].ok, 1);
            CHECK(val_ns(&cs[k].val) >= t0 + (int64_t)(ds[k] * 1e9) - EPS_NS);
            CHECK(now_ns() - t0 >= (int64_t)(ds[k] * 1e9) - EPS_NS);
        }
    }
    for (int i = 0; i < 3; i++)
        weft_timer_free(ts[i]);
}

static void test_timer_basic(void) {
    ctest_run(1, timer_basic_main, NULL);
    ctest_run(2, timer_basic_main, NULL);
}

/* ---- stop ------------------------------------------------------------------------ */

static weft_chan *stop_quit, *stop_done;

static void stop_waiter(void *arg) {
    weft_timer *t = arg;
    weft_case cs[2] = {weft_case_recv(weft_timer_chan(t)), weft_case_recv(stop_quit)};
    int k = weft_select(cs, 2, 0);
    CHECKF(k == 1, "a goroutine waiting on a stopped timer got case %d", k);
    weft_chan_send(stop_done, weft_val_int(k));
}

static void stop_main(void *arg) {
    (void)arg;
    weft_val v;
    /* Pending: 1, then nothing is ever received. */
    weft_timer *t = weft_timer_new(0.02);
    CHECK_EQ(weft_timer_stop(t), 1);
    CHECK_EQ(weft_timer_stop(t), 0); /* already stopped */
    weft_sleep(0.04);
    CHECK_EQ(weft_chan_len(weft_timer_chan(t)), 0);
    CHECK_EQ(weft_chan_tryrecv(weft_timer_chan(t), &v), WEFT_EAGAIN);
    weft_timer_free(t);

    /* Fired and received: 0. */
    t = weft_timer_new(0.001);
    CHECK_EQ(recv_within(weft_timer_chan(t), &v, 2.0), 1);
    CHECK_EQ(weft_timer_stop(t), 0);
    weft_timer_free(t);

    /* Fired but not received: 0, and the stale value is drained. */
    t = weft_timer_new(0.001);
    wait_buffered(weft_timer_chan(t), 1.0);
    CHECK_EQ(weft_chan_len(weft_timer_chan(t)), 1);
    CHECK_EQ(weft_timer_stop(t), 0);
    CHECK_EQ(weft_chan_len(weft_timer_chan(t)), 0);
    CHECK_EQ(weft_chan_tryrecv(weft_timer_chan(t), &v), WEFT_EAGAIN);
    weft_sleep(0.01);
    CHECK_EQ(weft_chan_tryrecv(weft_timer_chan(t), &v), WEFT_EAGAIN);
    weft_timer_free(t);

    /* A goroutine blocked on the channel of a timer that gets stopped stays
     * blocked past the old deadline. */
    stop_quit = weft_chan_new(1);
    stop_done = weft_chan_new(1);
    t = weft_timer_new(0.015);
    CHECK(weft_go(stop_waiter, t) > 0);
    weft_sleep(0.002);
    CHECK_EQ(weft_timer_stop(t), 1);
    weft_sleep(0.03);
    CHECK_EQ(weft_chan_send(stop_quit, weft_val_int(1)), WEFT_OK);
    CHECK_EQ(recv_within(stop_done, &v, 2.0), 1);
    CHECK_EQ(v.u.i, 1);
    weft_timer_free(t);
    weft_chan_release(stop_quit);
    weft_chan_release(stop_done);
}

static void test_stop(void) {
    ctest_run(1, stop_main, NULL);
    ctest_run(2, stop_main, NULL);
}

/* ---- reset ----------------------------------------------------------------------- */

static void reset_main(void *arg) {
    (void)arg;
    weft_val v;
    /* Pending, moved earlier: arrives at the new deadline, not the old. */
    weft_timer *t = weft_timer_new(1.0);
    int64_t t0 = now_ns();
    CHECK_EQ(weft_timer_reset(t, 0.02), 1);
    CHECK_EQ(recv_within(weft_timer_chan(t), &v, 2.0), 1);
    CHECK(val_ns(&v) >= t0 + 20 * MS - EPS_NS);
    CHECKF(now_ns() - t0 < 900 * MS, "reset earlier waited %lld ns", (long long)(now_ns() - t0));

    /* Fired and received: reset gives 0 and arms it again. */
    t0 = now_ns();
    CHECK_EQ(weft_timer_reset(t, 0.01), 0);
    CHECK_EQ(recv_within(weft_timer_chan(t), &v, 2.0), 1);
    CHECK(val_ns(&v) >= t0 + 10 * MS - EPS_NS);
    weft_timer_free(t);

    /* Pending, moved later: not before the new deadline. */
    t = weft_timer_new(0.01);
    t0 = now_ns();
    CHECK_EQ(weft_timer_reset(t, 0.03), 1);
    CHECK_EQ(recv_within(weft_timer_chan(t), &v, 2.0), 1);
    CHECKF(val_ns(&v) >= t0 + 30 * MS - EPS_NS, "fired %lld ns before the new deadline",
           (long long)(t0 + 30 * MS - val_ns(&v)));
    CHECK(now_ns() - t0 >= 30 * MS);
    weft_timer_free(t);

    /* Fired but not received: the old value is gone; only the new one comes,
     * after the new deadline, and only once. */
    t = weft_timer_new(0.001);
    wait_buffered(weft_timer_chan(t), 1.0);
    CHECK_EQ(weft_chan_len(weft_timer_chan(t)), 1);
    t0 = now_ns();
    CHECK_EQ(weft_timer_reset(t, 0.02), 0);
    CHECK_EQ(weft_chan_tryrecv(weft_timer_chan(t), &v), WEFT_EAGAIN);
    CHECK_EQ(recv_within(weft_timer_chan(t), &v, 2.0), 1);
    CHECKF(val_ns(&v) >= t0 + 20 * MS - EPS_NS, "got a value stamped %lld ns before the new deadline",
           (long long)(t0 + 20 * MS - val_ns(&v)));
    weft_sleep(0.015);
    CHECK_EQ(weft_chan_tryrecv(weft_timer_chan(t), &v), WEFT_EAGAIN);

    /* Stopped: reset gives 0 and re-arms. */
    t0 = now_ns();
    CHECK_EQ(weft_timer_reset(t, 0.5), 0);
    CHECK_EQ(weft_timer_stop(t), 1);
    CHECK_EQ(weft_timer_reset(t, 0.01), 0);
    CHECK_EQ(recv_within(weft_timer_chan(t), &v, 2.0), 1);
    CHECK(val_ns(&v) >= t0 + 10 * MS - EPS_NS);

    /* Reset to 0 fires promptly; many resets leave one pending entry. */
    t0 = now_ns();
    CHECK_EQ(weft_timer_reset(t, 0), 0);
    CHECK_EQ(recv_within(weft_timer_chan(t), &v, 2.0), 1);
    CHECK(now_ns() - t0 < LATE_NS);
    long before = pending_timers();
    for (int i = 0; i < 1000; i++)
        weft_timer_reset(t, 10.0 + i);
    CHECK_EQ(pending_timers(), before + 1);
    CHECK_EQ(weft_timer_stop(t), 1);
    CHECK_EQ(pending_timers(), before);
    weft_timer_free(t);
}

static void test_reset(void) {
    ctest_run(1, reset_main, NULL);
    ctest_run(2, reset_main, NULL);
}

/* ---- stop/reset racing the firing -----------------------------------------------
 * Main creates a timer of 0..300 us; an actor goroutine (on the other
 * processor when there are two) stops or resets it around its deadline while
 * main waits in select on the timer's channel (every other iteration) and the
 * actor's report. If the call returned 1 main received nothing; either way
 * nothing is in the channel after the call, and nothing arrives later. */

enum { RC_MAX = 400 };

static struct {
    _Atomic(weft_timer *) cur;
    _Atomic int64_t target;
    atomic_int quit;
    int reset_mode;
    weft_chan *acted, *done;
    weft_timer *ts[RC_MAX];
} rc;

static void rc_actor(void *arg) {
    (void)arg;
    for (;;) {
        weft_timer *t;
        while (!(t = atomic_exchange(&rc.cur, NULL))) {
            if (atomic_load(&rc.quit)) {
                weft_chan_send(rc.done, weft_val_int(0));
                return;
            }
            weft_yield();
        }
        int64_t target = atomic_load(&rc.target);
        while (now_ns() < target)
            weft_yield();
        int r = rc.reset_mode ? weft_timer_reset(t, 10.0) : weft_timer_stop(t);
        weft_val v;
        int k = weft_chan_tryrecv(weft_timer_chan(t), &v);
        CHECKF(k == WEFT_EAGAIN, "%s returned %d, then the channel held a value",
               rc.reset_mode ? "reset" : "stop", r);
        weft_chan_send(rc.acted, weft_val_int(r));
    }
}

static void race_main(void *arg) {
    int mode = (int)(intptr_t)arg;
    int n = (int)(RC_MAX * ctest_scale());
    if (n < 60)
        n = 60;
    rc.reset_mode = mode;
    atomic_store(&rc.cur, NULL);
    atomic_store(&rc.quit, 0);
    rc.acted = weft_chan_new(1);
    rc.done = weft_chan_new(1);
    CHECK(weft_go(rc_actor, NULL) > 0);
    int won = 0, fired = 0, drained = 0;
    for (int i = 0; i < n; i++) {
        uint64_t h = ctest_mix((uint64_t)i * 31 + (uint64_t)mode);
        int64_t d = (h % 8 == 0) ? 0 : (int64_t)((h >> 8) % (uint64_t)(300 * 1000));
        int64_t jitter = (int64_t)((h >> 32) % 400000) - 150000; /* -150..+250 us */
        int64_t t0 = now_ns();
        weft_timer *t = weft_timer_new((double)d / 1e9);
        rc.ts[i] = t;
        atomic_store(&rc.target, t0 + d + jitter);
        atomic_store(&rc.cur, t);
        int got = 0, r = -1;
        /* Odd iterations do not listen: a fired value waits in the buffer
         * and the call must drain it. */
        int listen = !(i & 1);
        for (;;) {
            weft_case cs[2] = {weft_case_recv(listen ? weft_timer_chan(t) : NULL),
                               weft_case_recv(rc.acted)};
            int k = weft_select(cs, 2, 0);
            if (k == 0) {
                got++;
                CHECK(val_ns(&cs[0].val) >= t0 + d - EPS_NS);
                continue;
            }
            CHECK_EQ(k, 1);
            r = (int)cs[1].val.u.i;
            break;
        }
        weft_val v;
        CHECK_EQ(weft_chan_tryrecv(weft_timer_chan(t), &v), WEFT_EAGAIN);
        CHECKF(got <= 1, "iteration %d: %d values from a one-shot timer", i, got);
        if (r == 1) {
            won++;
            CHECKF(got == 0, "iteration %d: %s returned 1 but a value was received", i,
                   mode ? "reset" : "stop");
        } else {
            CHECK_EQ(r, 0);
            fired++;
            drained += got == 0;
        }
    }
    atomic_store(&rc.quit, 1);
    weft_val v;
    CHECK_EQ(recv_within(rc.done, &v, 5.0), 1);
    /* Past every original deadline: nothing arrives late. */
    weft_sleep(0.005);
    for (int i = 0; i < n; i++) {
        CHECKF(weft_chan_tryrecv(weft_timer_chan(rc.ts[i]), &v) == WEFT_EAGAIN,
               "timer %d delivered after %s", i, mode ? "reset" : "stop");
        if (mode)
            CHECK_EQ(weft_timer_stop(rc.ts[i]), 1); /* re-armed for 10 s */
        weft_timer_free(rc.ts[i]);
    }
    /* Both sides of the race were exercised. */
    CHECKF(won > 0 && fired > 0 && drained > 0, "won %d, fired %d (drained %d) of %d", won, fired,
           drained, n);
    weft_chan_release(rc.acted);
    weft_chan_release(rc.done);
}

static void test_stop_race(void) {
    ctest_run(1, race_main, (void *)0);
    ctest_run(2, race_main, (void *)0);
}

static void test_reset_race(void) {
    ctest_run(1, race_main, (void *)1);
    ctest_run(2, race_main, (void *)1);
}

/* ---- tickers ------------------------------------------------------------------------ */

static void ticker_main(void *arg) {
    (void)arg;
    weft_val v;
    /* Ticks on the grid start + k*P: the k-th is never before that. */
    const int64_t P = 10 * MS;
    int64_t start = now_ns();
    weft_timer *tk = weft_ticker_new(0.01);
    CHECK(tk != NULL);
    weft_chan *c = weft_timer_chan(tk);
    CHECK_EQ(weft_chan_cap(c), 1);
    int64_t prev = start;
    for (int k = 1; k <= 6; k++) {
        CHECK_EQ(recv_within(c, &v, 2.0), 1);
        int64_t f = val_ns(&v), r = now_ns();
        CHECK_EQ(v.tag, WEFT_TAG_NUMBER);
        CHECKF(f >= start + k * P - EPS_NS, "tick %d fired %lld ns early", k,
               (long long)(start + k * P - f));
        CHECKF(f > prev, "tick %d not after tick %d", k, k - 1);
        CHECK(f <= r + EPS_NS);
        prev = f;
    }
    CHECK(now_ns() - start >= 6 * P);
    CHECK(now_ns() - start < LATE_NS);
    /* Stop: no more ticks. A ticker is pending until stopped. */
    CHECK_EQ(weft_timer_stop(tk), 1);
    CHECK_EQ(weft_timer_stop(tk), 0);
    weft_sleep(0.03);
    CHECK_EQ(weft_chan_tryrecv(c, &v), WEFT_EAGAIN);
    weft_timer_free(tk);
}

static void test_ticker(void) {
    ctest_run(1, ticker_main, NULL);
    ctest_run(2, ticker_main, NULL);
}

/* A receiver away for ~5.5 periods finds one tick, not five; the next comes
 * on the grid, after the receipt. One processor: no firing can race the
 * receive. */
static void ticker_slow_main(void *arg) {
    (void)arg;
    weft_val v;
    const int64_t P = 10 * MS;
    int64_t start = now_ns();
    weft_timer *tk = weft_ticker_new(0.01);
    weft_chan *c = weft_timer_chan(tk);
    weft_sleep(0.055);
    int64_t tr = now_ns();
    CHECK_EQ(weft_chan_len(c), 1);
    CHECK_EQ(weft_chan_tryrecv(c, &v), 1);
    CHECK(val_ns(&v) >= start + P - EPS_NS);
    CHECK(val_ns(&v) <= tr + EPS_NS);
    CHECKF(weft_chan_tryrecv(c, &v) == WEFT_EAGAIN, "ticks were queued");
    CHECK_EQ(recv_within(c, &v, 2.0), 1);
    int64_t f = val_ns(&v), r = now_ns();
    CHECKF(f >= tr, "the next tick was stamped %lld ns before the receipt", (long long)(tr - f));
    CHECK(f >= start + 6 * P - EPS_NS);
    CHECKF(r - tr < LATE_NS, "next tick %lld ns after the buffered one", (long long)(r - tr));
    weft_timer_free(tk);
}

static void test_ticker_slow_receiver(void) {
    ctest_run(1, ticker_slow_main, NULL);
}

static void ticker_reset_main(void *arg) {
    (void)arg;
    weft_val v;
    /* A 10 s ticker reset to 10 ms ticks at 10 ms. */
    weft_timer *tk = weft_ticker_new(10.0);
    weft_chan *c = weft_timer_chan(tk);
    int64_t t0 = now_ns();
    CHECK_EQ(weft_timer_reset(tk, 0.01), 1);
    for (int k = 1; k <= 5; k++) {
        CHECK_EQ(recv_within(c, &v, 2.0), 1);
        CHECKF(val_ns(&v) >= t0 + k * 10 * MS - EPS_NS, "tick %d early after reset", k);
    }
    CHECKF(now_ns() - t0 < 900 * MS, "5 ticks took %lld ns", (long long)(now_ns() - t0));
    /* Let a tick get buffered, then reset to 30 ms: the buffered tick is
     * dropped and the next comes 30 ms after the reset. */
    wait_buffered(c, 1.0);
    int64_t t1 = now_ns();
    CHECK_EQ(weft_timer_reset(tk, 0.03), 1);
    CHECK_EQ(weft_chan_tryrecv(c, &v), WEFT_EAGAIN);
    CHECK_EQ(recv_within(c, &v, 2.0), 1);
    CHECKF(val_ns(&v) >= t1 + 30 * MS - EPS_NS, "tick %lld ns before the new period",
           (long long)(t1 + 30 * MS - val_ns(&v)));
    /* seconds <= 0 (or NaN) keeps the period. */
    int64_t t2 = now_ns();
    CHECK_EQ(weft_timer_reset(tk, 0), 1);
    CHECK_EQ(recv_within(c, &v, 2.0), 1);
    CHECK(val_ns(&v) >= t2 + 30 * MS - EPS_NS);
    int64_t t3 = now_ns();
    CHECK_EQ(weft_timer_reset(tk, NAN), 1);
    CHECK_EQ(recv_within(c, &v, 2.0), 1);
    CHECK(val_ns(&v) >= t3 + 30 * MS - EPS_NS);
    /* Stopped, then reset: ticks again. */
    CHECK_EQ(weft_timer_stop(tk), 1);
    int64_t t4 = now_ns();
    CHECK_EQ(weft_timer_reset(tk, 0.005), 0);
    CHECK_EQ(recv_within(c, &v, 2.0), 1);
    CHECK(val_ns(&v) >= t4 + 5 * MS - EPS_NS);
    weft_timer_free(tk);
}

static void test_ticker_reset(void) {
    ctest_run(1, ticker_reset_main, NULL);
    ctest_run(2, ticker_reset_main, NULL);
}

/* ---- weft_after ------------------------------------------------------------------------ */

static void after_main(void *arg) {
    (void)arg;
    weft_val v;
    int64_t t0 = now_ns();
    weft_chan *c = weft_after(0.02);
    CHECK(c != NULL);
    CHECK_EQ(weft_chan_cap(c), 1);
    CHECK_EQ(weft_chan_recv(c, &v), 1);
    CHECK_EQ(v.tag, WEFT_TAG_NUMBER);
    CHECK(val_ns(&v) >= t0 + 20 * MS - EPS_NS);
    CHECK(now_ns() - t0 >= 20 * MS);
    CHECK(now_ns() - t0 < LATE_NS);
    weft_sleep(0.03);
    CHECK_EQ(weft_chan_tryrecv(c, &v), WEFT_EAGAIN);
    weft_chan_release(c);

    /* The timeout idiom. */
    weft_chan *never = weft_chan_new(0);
    t0 = now_ns();
    weft_chan *to = weft_after(0.02);
    weft_case cs[2] = {weft_case_recv(never), weft_case_recv(to)};
    CHECK_EQ(weft_select(cs, 2, 0), 1);
    CHECK(now_ns() - t0 >= 20 * MS);
    CHECK(val_ns(&cs[1].val) >= t0 + 20 * MS - EPS_NS);
    weft_chan_release(to);
    weft_chan_release(never);

    /* Fired and never received, then released; retained twice. */
    c = weft_after(0.001);
    wait_buffered(c, 1.0);
    CHECK_EQ(weft_chan_len(c), 1);
    weft_chan_release(c);
    c = weft_after(0.005);
    weft_chan_retain(c);
    weft_chan_release(c);
    CHECK_EQ(recv_within(c, &v, 2.0), 1);
    weft_chan_release(c);
}

static void test_after(void) {
    ctest_run(1, after_main, NULL);
    ctest_run(2, after_main, NULL);
}

/* Releasing an after-channel before it fires frees its timer: pending timers
 * do not accumulate. */
static void after_release_main(void *arg) {
    (void)arg;
    enum { N = 10000 };
    long base = pending_timers();
    for (int i = 0; i < N; i++)
        weft_chan_release(weft_after(60));
    long n1 = pending_timers() - base;
    CHECKF(n1 <= 2, "%ld timers left pending after releasing %d after-channels", n1, N);

    for (int i = 0; i < N; i++) {
        weft_chan *c = weft_after(60);
        weft_case cs[1] = {weft_case_recv(c)};
        CHECK_EQ(weft_select(cs, 1, 1), -1);
        weft_chan_release(c);
    }
    long n2 = pending_timers() - base;
    CHECKF(n2 <= 2, "%ld timers left pending after %d nonblocking selects", n2, N);

    /* The timeout idiom where the other case wins, blocking select. */
    weft_chan *ready = weft_chan_new(1);
    for (int i = 0; i < N; i++) {
        weft_chan_send(ready, weft_val_int(i));
        weft_chan *to = weft_after(60);
        weft_case cs[2] = {weft_case_recv(ready), weft_case_recv(to)};
        CHECK_EQ(weft_select(cs, 2, 0), 0);
        weft_chan_release(to);
    }
    long n3 = pending_timers() - base;
    CHECKF(n3 <= 2, "%ld timers left pending after %d won selects", n3, N);
    weft_chan_release(ready);
}

static void test_after_release(void) {
    ctest_run(1, after_release_main, NULL);
    ctest_run(2, after_release_main, NULL);
}

/* After-channels released by another goroutine around their deadline, racing
 * the firing (for ASAN/TSAN). */
enum { AR_MAX = 600 };

static struct {
    weft_chan *q, *done;
    weft_chan *c[AR_MAX];
    int64_t target[AR_MAX];
} ar;

static void ar_releaser(void *arg) {
    (void)arg;
    weft_val v;
    while (weft_chan_recv(ar.q, &v) == 1) {
        int i = (int)v.u.i;
        while (now_ns() < ar.target[i])
            weft_yield();
        if (i % 3 == 0) {
            weft_val x;
            int k = weft_chan_tryrecv(ar.c[i], &x);
            CHECK(k == 1 || k == WEFT_EAGAIN);
        }
        weft_chan_release(ar.c[i]);
    }
    weft_chan_send(ar.done, weft_val_int(0));
}

static void after_race_main(void *arg) {
    (void)arg;
    int n = (int)(AR_MAX * ctest_scale());
    if (n < 100)
        n = 100;
    ar.q = weft_chan_new(0);
    ar.done = weft_chan_new(1);
    long base = pending_timers();
    CHECK(weft_go(ar_releaser, NULL) > 0);
    for (int i = 0; i < n; i++) {
        uint64_t h = ctest_mix((uint64_t)i + 77);
        int64_t d = (int64_t)(h % (200 * 1000));
        int64_t jitter = (int64_t)((h >> 32) % 200000) - 100000;
        int64_t t0 = now_ns();
        ar.c[i] = weft_after((double)d / 1e9);
        ar.target[i] = t0 + d + jitter;
        weft_chan_send(ar.q, weft_val_int(i));
    }
    weft_chan_close(ar.q);
    weft_val v;
    CHECK_EQ(recv_within(ar.done, &v, 5.0), 1);
    long left = pending_timers() - base;
    CHECKF(left <= 2, "%ld timers left pending", left);
    weft_chan_release(ar.q);
    weft_chan_release(ar.done);
}

static void test_after_release_race(void) {
    ctest_run(1, after_race_main, NULL);
    ctest_run(2, after_race_main, NULL);
}

/* ---- weft_after_func ------------------------------------------------------------------- */

typedef struct {
    _Atomic int64_t ran_id, ran_at;
    atomic_int runs;
    weft_chan *done;
} af_t;

static void af_fn(void *arg) {
    af_t *a = arg;
    atomic_store(&a->ran_at, now_ns());
    atomic_store(&a->ran_id, weft_id());
    atomic_fetch_add(&a->runs, 1);
    if (a->done)
        weft_chan_send(a->done, weft_val_int(1));
}

static void after_func_main(void *arg) {
    (void)arg;
    weft_val v;
    af_t a;
    memset(&a, 0, sizeof a);
    a.done = weft_chan_new(4);
    int64_t t0 = now_ns();
    weft_timer *t = weft_after_func(0.02, af_fn, &a);
    CHECK(t != NULL);
    CHECK(weft_timer_chan(t) == NULL);
    CHECK_EQ(recv_within(a.done, &v, 2.0), 1);
    CHECK(atomic_load(&a.ran_id) > 0);
    CHECK(atomic_load(&a.ran_id) != weft_id());
    CHECKF(atomic_load(&a.ran_at) >= t0 + 20 * MS, "after_func ran %lld ns early",
           (long long)(t0 + 20 * MS - atomic_load(&a.ran_at)));
    CHECK(atomic_load(&a.ran_at) - t0 < LATE_NS);
    CHECK_EQ(weft_timer_stop(t), 0);
    weft_sleep(0.01);
    CHECK_EQ(atomic_load(&a.runs), 1);
    weft_timer_free(t);

    /* Stopped before firing: never runs. */
    af_t b;
    memset(&b, 0, sizeof b);
    t = weft_after_func(0.02, af_fn, &b);
    CHECK_EQ(weft_timer_stop(t), 1);
    weft_timer_free(t);
    /* Freed while pending: never runs either. */
    t = weft_after_func(0.02, af_fn, &b);
    weft_timer_free(t);
    weft_sleep(0.04);
    CHECK_EQ(atomic_load(&b.runs), 0);

    /* Reset: runs once, at the new deadline. */
    atomic_store(&a.runs, 0);
    t = weft_after_func(1.0, af_fn, &a);
    t0 = now_ns();
    CHECK_EQ(weft_timer_reset(t, 0.01), 1);
    CHECK_EQ(recv_within(a.done, &v, 2.0), 1);
    CHECK(atomic_load(&a.ran_at) >= t0 + 10 * MS);
    weft_sleep(0.01);
    CHECK_EQ(atomic_load(&a.runs), 1);
    weft_timer_free(t);

    CHECK(weft_after_func(0.01, NULL, &a) == NULL);
    weft_chan_release(a.done);
}

static void test_after_func(void) {
    ctest_run(1, after_func_main, NULL);
    ctest_run(2, after_func_main, NULL);
}

/* ---- across processors -----------------------------------------------------------------
 * Main keeps processor A busy (spinning) while a helper is stolen by B; the
 * helper then spins on B (never parks, so it stays there) and acts on timers
 * main created in A's heap. Its last act re-arms a timer from B and exits, so
 * B's heap fires it. */

enum { XP_STOP = 1, XP_RESET = 2, XP_EXIT = 3 };

static struct {
    atomic_int helper_proc, op, result;
    _Atomic(weft_timer *) t;
    _Atomic int64_t acted_at;
} xp;

static void xp_helper(void *arg) {
    (void)arg;
    atomic_store(&xp.helper_proc, weft_proc_id());
    for (;;) {
        int op;
        while ((op = atomic_load(&xp.op)) == 0)
            ;
        if (op == XP_EXIT)
            return;
        weft_timer *t = atomic_load(&xp.t);
        atomic_store(&xp.acted_at, now_ns());
        int r = op == XP_STOP ? weft_timer_stop(t) : weft_timer_reset(t, 0.02);
        atomic_store(&xp.op, 0);
        atomic_store(&xp.result, r);
        if (op == XP_RESET)
            return;
    }
}

static int xp_do(int op, weft_timer *t) {
    atomic_store(&xp.result, -1);
    atomic_store(&xp.t, t);
    atomic_store(&xp.op, op);
    int64_t end = now_ns() + 2000 * MS;
    while (atomic_load(&xp.result) == -1 && now_ns() < end)
        ;
    return atomic_load(&xp.result);
}

static void cross_proc_main(void *arg) {
    (void)arg;
    weft_val v;
    atomic_store(&xp.helper_proc, -1);
    atomic_store(&xp.op, 0);
    CHECK(weft_go(xp_helper, NULL) > 0);
    int64_t end = now_ns() + 2000 * MS;
    while (atomic_load(&xp.helper_proc) < 0 && now_ns() < end)
        ; /* no yield: the helper must be stolen */
    int me = weft_proc_id(), other = atomic_load(&xp.helper_proc);
    CHECKF(other >= 0 && other != me, "helper on processor %d, main on %d", other, me);
    if (other < 0 || other == me) {
        atomic_store(&xp.op, XP_EXIT);
        return;
    }
    /* Pending, stopped from B: 1, nothing ever arrives. */
    weft_timer *t1 = weft_timer_new(0.02);
    CHECK_EQ(xp_do(XP_STOP, t1), 1);
    weft_sleep(0.04);
    CHECK_EQ(weft_chan_tryrecv(weft_timer_chan(t1), &v), WEFT_EAGAIN);
    /* Fired and received: 0. */
    weft_timer *t2 = weft_timer_new(0.001);
    CHECK_EQ(recv_within(weft_timer_chan(t2), &v, 2.0), 1);
    CHECK_EQ(xp_do(XP_STOP, t2), 0);
    /* Fired, unreceived: 0 and drained from B. */
    weft_timer *t3 = weft_timer_new(0.001);
    wait_buffered(weft_timer_chan(t3), 1.0);
    CHECK_EQ(weft_chan_len(weft_timer_chan(t3)), 1);
    CHECK_EQ(xp_do(XP_STOP, t3), 0);
    CHECK_EQ(weft_chan_tryrecv(weft_timer_chan(t3), &v), WEFT_EAGAIN);
    /* Pending in A's heap, reset from B (now in B's heap); B fires it. */
    weft_timer *t4 = weft_timer_new(1.0);
    CHECK_EQ(xp_do(XP_RESET, t4), 1);
    int64_t ra = atomic_load(&xp.acted_at);
    CHECK_EQ(recv_within(weft_timer_chan(t4), &v, 2.0), 1);
    CHECK(val_ns(&v) >= ra + 20 * MS - EPS_NS);
    CHECK(now_ns() - ra < 900 * MS);
    CHECK_EQ(weft_timer_stop(t4), 0);
    weft_timer_free(t1);
    weft_timer_free(t2);
    weft_timer_free(t3);
    weft_timer_free(t4);
}

static void test_cross_proc(void) {
    ctest_run(2, cross_proc_main, NULL);
}

/* ---- a thread that is no goroutine (weft_start) ----------------------------------------- */

static void nap_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* tryrecv in a loop, for threads that cannot block on a channel. */
static int poll_recv(weft_chan *c, weft_val *v, double limit) {
    int64_t end = now_ns() + (int64_t)(limit * 1e9);
    for (;;) {
        int k = weft_chan_tryrecv(c, v);
        if (k != WEFT_EAGAIN)
            return k;
        if (now_ns() > end)
            return -1;
        nap_us(200);
    }
}

static af_t foreign_af;

static void *foreign_timers(void *arg) {
    (void)arg;
    weft_val v;
    CHECK_EQ(weft_id(), 0);
    CHECK_EQ(weft_proc_id(), -1);
    int64_t t0 = now_ns();
    weft_sleep(1.0); /* no goroutine: does nothing */
    CHECK(now_ns() - t0 < 500 * MS);

    /* A far timer first, so the next one is the earliest of processor 0. */
    weft_timer *far = weft_timer_new(10.0);
    t0 = now_ns();
    weft_timer *t = weft_timer_new(0.02);
    weft_chan *ac = weft_after(0.03);
    weft_timer *f = weft_after_func(0.025, af_fn, &foreign_af);
    weft_timer *tk = weft_ticker_new(0.01);
    weft_timer *s = weft_timer_new(0.02);
    CHECK(far && t && ac && f && tk && s);
    CHECK_EQ(weft_timer_stop(s), 1);
    CHECK_EQ(poll_recv(weft_timer_chan(t), &v, 2.0), 1);
    CHECK(val_ns(&v) >= t0 + 20 * MS - EPS_NS);
    CHECK_EQ(poll_recv(ac, &v, 2.0), 1);
    CHECK(val_ns(&v) >= t0 + 30 * MS - EPS_NS);
    for (int k = 1; k <= 3; k++) {
        CHECK_EQ(poll_recv(weft_timer_chan(tk), &v, 2.0), 1);
        CHECK(val_ns(&v) >= t0 + k * 10 * MS - EPS_NS);
    }
    int64_t end = now_ns() + 2000 * MS;
    while (atomic_load(&foreign_af.runs) == 0 && now_ns() < end)
        nap_us(500);
    CHECK_EQ(atomic_load(&foreign_af.runs), 1);
    CHECK(atomic_load(&foreign_af.ran_id) > 0);
    CHECK(atomic_load(&foreign_af.ran_at) >= t0 + 25 * MS);
    CHECK_EQ(weft_chan_tryrecv(weft_timer_chan(s), &v), WEFT_EAGAIN);
    CHECK_EQ(weft_timer_stop(tk), 1);
    /* Reset from here: fires after the new deadline. */
    int64_t t1 = now_ns();
    CHECK_EQ(weft_timer_reset(t, 0.01), 0);
    CHECK_EQ(poll_recv(weft_timer_chan(t), &v, 2.0), 1);
    CHECK(val_ns(&v) >= t1 + 10 * MS - EPS_NS);

    /* Timers added while every processor sleeps are not missed (a lost
     * wake-up would show as a timer far past its deadline). */
    int n = (int)(100 * ctest_scale());
    if (n < 30)
        n = 30;
    int64_t worst = 0;
    for (int i = 0; i < n; i++) {
        int64_t d = (int64_t)(ctest_mix((uint64_t)i + 5) % (2 * MS));
        if (i % 10 == 0)
            nap_us(3000); /* let the processors fall asleep */
        int64_t a = now_ns();
        weft_timer *x = weft_timer_new((double)d / 1e9);
        int k = poll_recv(weft_timer_chan(x), &v, 1.0);
        CHECKF(k == 1, "timer %d (%lld ns) from a foreign thread not fired within 1 s", i, (long long)d);
        if (k == 1) {
            CHECK(val_ns(&v) >= a + d - EPS_NS);
            if (val_ns(&v) - (a + d) > worst)
                worst = val_ns(&v) - (a + d);
        }
        weft_timer_free(x);
    }
    CHECKF(worst < 500 * MS, "a foreign timer fired %lld ns late", (long long)worst);

    weft_timer_free(t);
    weft_timer_free(f);
    weft_timer_free(tk);
    weft_timer_free(s);
    weft_chan_release(ac);
    return far; /* freed after the engine stopped */
}

static void test_foreign_thread(void) {
    memset(&foreign_af, 0, sizeof foreign_af);
    weft_config cfg = {2, 0};
    CHECK_EQ(weft_start(&cfg), WEFT_OK);
    pthread_t th;
    void *far = NULL;
    pthread_create(&th, NULL, foreign_timers, NULL);
    pthread_join(th, &far);
    CHECK_EQ(weft_stop(), WEFT_OK);
    /* Timers outlive the engine. */
    weft_timer_free(far);
}

/* ---- bad input --------------------------------------------------------------------------- */

static void af_count(void *arg) {
    atomic_fetch_add((atomic_int *)arg, 1);
}

static void bad_input_main(void *arg) {
    (void)arg;
    weft_val v;
    CHECK(weft_ticker_new(0) == NULL);
    CHECK(weft_ticker_new(-1) == NULL);
    CHECK(weft_ticker_new(-1e-9) == NULL);
    CHECK(weft_ticker_new(1e-10) == NULL); /* rounds to 0 ns */
    CHECK(weft_ticker_new(NAN) == NULL);
    CHECK_EQ(weft_timer_stop(NULL), 0);
    CHECK_EQ(weft_timer_reset(NULL, 1.0), 0);
    weft_timer_free(NULL);
    CHECK(weft_timer_chan(NULL) == NULL);

    /* NaN, negative, zero: fire promptly. */
    static const double ds[] = {NAN, -1.0, -INFINITY, 0.0};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) {
        int64_t t0 = now_ns();
        weft_timer *t = weft_timer_new(ds[i]);
        CHECK(t != NULL);
        if (!t)
            continue;
        CHECK_EQ(recv_within(weft_timer_chan(t), &v, 2.0), 1);
        CHECKF(now_ns() - t0 < 500 * MS, "weft_timer_new(%g) took %lld ns", ds[i],
               (long long)(now_ns() - t0));
        weft_timer_free(t);
        t0 = now_ns();
        weft_chan *c = weft_after(ds[i]);
        CHECK(c != NULL);
        if (c) {
            CHECK_EQ(recv_within(c, &v, 2.0), 1);
            CHECK(now_ns() - t0 < 500 * MS);
            weft_chan_release(c);
        }
    }
    atomic_int runs = 0;
    weft_timer *f = weft_after_func(NAN, af_count, &runs);
    int64_t end = now_ns() + 2000 * MS;
    while (atomic_load(&runs) == 0 && now_ns() < end)
        weft_sleep(0.001);
    CHECK_EQ(atomic_load(&runs), 1);
    weft_timer_free(f);

    /* Huge and infinite durations: pending, stoppable. */
    weft_timer *h = weft_timer_new(1e300), *inf = weft_timer_new(INFINITY);
    weft_timer *tk = weft_ticker_new(1e300);
    CHECK(h && inf && tk);
    weft_sleep(0.005);
    CHECK_EQ(weft_chan_tryrecv(weft_timer_chan(h), &v), WEFT_EAGAIN);
    CHECK_EQ(weft_chan_tryrecv(weft_timer_chan(inf), &v), WEFT_EAGAIN);
    CHECK_EQ(weft_chan_tryrecv(weft_timer_chan(tk), &v), WEFT_EAGAIN);
    CHECK_EQ(weft_timer_stop(h), 1);
    CHECK_EQ(weft_timer_stop(inf), 1);
    CHECK_EQ(weft_timer_stop(tk), 1);
    weft_timer_free(h);
    weft_timer_free(inf);
    weft_timer_free(tk);
}

static void test_bad_input(void) {
    ctest_run(1, bad_input_main, NULL);
}

/* ---- handles outlive the engine ----------------------------------------------------------- */

static struct {
    weft_timer *pending, *fired, *ticker, *func;
    weft_chan *after, *after_fired;
} ol;

static atomic_int ol_runs;

static void outlive_main(void *arg) {
    (void)arg;
    ol.pending = weft_timer_new(10.0);
    ol.fired = weft_timer_new(0);
    ol.ticker = weft_ticker_new(0.001);
    ol.func = weft_after_func(10.0, af_count, &ol_runs);
    ol.after = weft_after(10.0);
    ol.after_fired = weft_after(0);
    weft_sleep(0.01); /* ol.fired, a tick and ol.after_fired are buffered */
    CHECK_EQ(weft_chan_len(weft_timer_chan(ol.fired)), 1);
    CHECK_EQ(weft_chan_len(ol.after_fired), 1);
}

static void test_outlive_engine(void) {
    memset(&ol, 0, sizeof ol);
    ctest_run(2, outlive_main, NULL);
    weft_timer_free(ol.pending);
    weft_timer_free(ol.fired);
    weft_timer_free(ol.ticker);
    weft_timer_free(ol.func);
    weft_chan_release(ol.after);
    weft_chan_release(ol.after_fired);
}

const ctest_case timer_tests[] = {
    {"sleep_basic", test_sleep_basic},
    {"sleep_many", test_sleep_many},
    {"sleep_order", test_sleep_order},
    {"timer_basic", test_timer_basic},
    {"stop", test_stop},
    {"reset", test_reset},
    {"stop_race", test_stop_race},
    {"reset_race", test_reset_race},
    {"ticker", test_ticker},
    {"ticker_slow_receiver", test_ticker_slow_receiver},
    {"ticker_reset", test_ticker_reset},
    {"after", test_after},
    {"after_release", test_after_release},
    {"after_release_race", test_after_release_race},
    {"after_func", test_after_func},
    {"cross_proc", test_cross_proc},
    {"foreign_thread", test_foreign_thread},
    {"bad_input", test_bad_input},
    {"outlive_engine", test_outlive_engine},
    {NULL, NULL},
};
