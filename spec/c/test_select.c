/*
 * test_select.c — select: readiness, default, nil channels, uniform choice
 * among ready cases, exactly one case per select under races, closed
 * channels, duplicate channels.
 */
#include "ctest.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void basic_main(void *arg) {
    (void)arg;
    weft_chan *a = weft_chan_new(1), *b = weft_chan_new(1);
    weft_case cs[3] = {
        weft_case_recv(a),
        weft_case_recv(b),
        weft_case_recv(NULL),
    };
    /* Nothing ready: nonblock gives -1. */
    CHECK_EQ(weft_select(cs, 3, 1), -1);
    weft_chan_send(b, weft_val_int(7));
    CHECK_EQ(weft_select(cs, 3, 0), 1);
    CHECK_EQ(cs[1].ok, 1);
    CHECK_EQ(cs[1].val.u.i, 7);
    /* Send cases. */
    weft_case sc[2] = {weft_case_send(a, weft_val_int(5)), weft_case_send(NULL, weft_val_int(6))};
    CHECK_EQ(weft_select(sc, 2, 0), 0);
    CHECK_EQ(sc[0].ok, 1);
    CHECK_EQ(weft_chan_len(a), 1);
    CHECK_EQ(weft_select(sc, 2, 1), -1); /* a is full, the other is nil */
    /* Closed channels: a recv case is ready with ok = 0; a send case reports
     * the close with ok = 0 and keeps its value. */
    weft_chan_close(b);
    weft_case rc[1] = {weft_case_recv(b)};
    CHECK_EQ(weft_select(rc, 1, 0), 0);
    CHECK_EQ(rc[0].ok, 0);
    weft_case sb[1] = {weft_case_send(b, weft_val_bytes("0123456789abcdef", 16))};
    CHECK_EQ(weft_select(sb, 1, 0), 0);
    CHECK_EQ(sb[0].ok, 0);
    CHECK(memcmp(weft_val_data(&sb[0].val), "0123456789abcdef", 16) == 0);
    weft_val_free(&sb[0].val);
    /* No cases with nonblock; bad arguments. */
    CHECK_EQ(weft_select(NULL, 0, 1), -1);
    weft_case bad[1] = {weft_case_recv(a)};
    bad[0].dir = 99;
    CHECK_EQ(weft_select(bad, 1, 1), WEFT_EINVAL);
    CHECK_EQ(weft_select(NULL, 2, 1), WEFT_EINVAL);
    weft_chan_release(a);
    weft_chan_release(b);
}

static void test_basic(void) {
    ctest_run(1, basic_main, NULL);
}

/* ---- a blocked select is woken by exactly one case --------------------------- */

static void late_sender(void *arg) {
    weft_chan *c = arg;
    weft_yield();
    weft_chan_send(c, weft_val_int(42));
}

static void wake_main(void *arg) {
    (void)arg;
    weft_chan *a = weft_chan_new(0), *b = weft_chan_new(0);
    for (int i = 0; i < 1000; i++) {
        weft_go(late_sender, (i & 1) ? a : b);
        weft_case cs[2] = {weft_case_recv(a), weft_case_recv(b)};
        int k = weft_select(cs, 2, 0);
        CHECK_EQ(k, (i & 1) ? 0 : 1);
        CHECK_EQ(cs[k].val.u.i, 42);
        CHECK_EQ(cs[k].ok, 1);
    }
    weft_chan_release(a);
    weft_chan_release(b);
}

static void test_blocking_wake(void) {
    ctest_run(1, wake_main, NULL);
    ctest_run(2, wake_main, NULL);
}

/* ---- uniform choice among ready cases ------------------------------------------ */

static void fairness_main(void *arg) {
    (void)arg;
    enum { K = 4, N = 40000 };
    weft_chan *c[K];
    weft_case cs[K];
    for (int k = 0; k < K; k++)
        c[k] = weft_chan_new(1);
    int hits[K] = {0};
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < K; k++) {
            if (weft_chan_len(c[k]) == 0)
                weft_chan_send(c[k], weft_val_int(k));
            cs[k] = weft_case_recv(c[k]);
        }
        int k = weft_select(cs, K, 0);
        CHECK(k >= 0 && k < K);
        CHECK_EQ(cs[k].val.u.i, k);
        hits[k]++;
    }
    /* Chi-square with 3 degrees of freedom: 16.27 is the 0.1% tail. */
    double chi = 0, e = (double)N / K;
    for (int k = 0; k < K; k++)
        chi += (hits[k] - e) * (hits[k] - e) / e;
    CHECKF(chi < 16.27, "chi2=%.2f hits=%d,%d,%d,%d", chi, hits[0], hits[1], hits[2], hits[3]);
    for (int k = 0; k < K; k++)
        weft_chan_release(c[k]);
}

static void test_fairness(void) {
    ctest_run(1, fairness_main, NULL);
}

/* ---- uniform choice whatever makes a case ready ------------------------------
 * A value in the buffer, a closed channel, a partner parked on an unbuffered
 * channel, room in a buffer: each ready case is chosen as often as the
 * others (select passes over idle-looking cases before it locks, and must
 * not favour one kind of readiness), and a case that is not ready never. */

static void kinds_partner(void *arg) {
    weft_chan *u = arg;
    weft_val v;
    while (weft_chan_recv(u, &v) == 1)
        ;
}

static void kinds_main(void *arg) {
    (void)arg;
    enum { K = 5, N = 40000 };
    weft_chan *full = weft_chan_new(1), *closed = weft_chan_new(1), *u = weft_chan_new(0),
              *room = weft_chan_new(1), *idle = weft_chan_new(0);
    weft_chan_close(closed);
    weft_go(kinds_partner, u);
    int hits[K] = {0};
    weft_val v;
    for (int i = 0; i < N; i++) {
        if (weft_chan_len(full) == 0)
            weft_chan_send(full, weft_val_int(1));
        if (weft_chan_len(room) != 0)
            weft_chan_recv(room, &v);
        weft_yield(); /* one processor: the partner is parked on u again */
        weft_case cs[K] = {weft_case_recv(full), weft_case_recv(closed),
                           weft_case_send(u, weft_val_int(i)), weft_case_send(room, weft_val_int(i)),
                           weft_case_recv(idle)};
        int k = weft_select(cs, K, 1);
        CHECKF(k >= 0 && k < K - 1, "select chose %d", k);
        if (k < 0 || k >= K - 1)
            break;
        CHECK_EQ(cs[k].ok, k == 1 ? 0 : 1);
        hits[k]++;
    }
    /* Chi-square with 3 degrees of freedom: 16.27 is the 0.1% tail. */
    double chi = 0, e = (double)N / (K - 1);
    for (int k = 0; k < K - 1; k++)
        chi += (hits[k] - e) * (hits[k] - e) / e;
    CHECKF(chi < 16.27, "chi2=%.2f hits=%d,%d,%d,%d", chi, hits[0], hits[1], hits[2], hits[3]);
    weft_chan_close(u);
    weft_yield();
    weft_chan_release(full);
    weft_chan_release(closed);
    weft_chan_release(u);
    weft_chan_release(room);
    weft_chan_release(idle);
}

static void test_fair_kinds(void) {
    ctest_run(1, kinds_main, NULL);
}

/* ---- racing selects: each value taken once, each select performs one case --- */

enum { RS_CHANS = 4, RS_SENDERS = 4, RS_PER_SENDER = 25000 };

typedef struct {
    weft_chan *c[RS_CHANS];
    weft_chan *quit;
    weft_chan *done;
    atomic_ullong sum_sent, sum_recv;
    atomic_llong recv_count, sent_count;
} race_t;

static race_t race;

static void race_sender(void *arg) {
    intptr_t id = (intptr_t)arg;
    for (int i = 0; i < RS_PER_SENDER; i++) {
        uint64_t x = ((uint64_t)id << 32) | (uint64_t)i;
        /* Offer the value on two channels at once: at most one may take it. */
        int a = (int)(ctest_mix(x) % RS_CHANS), b = (a + 1) % RS_CHANS;
        weft_case cs[2] = {weft_case_send(race.c[a], weft_val_int((int64_t)x)),
                           weft_case_send(race.c[b], weft_val_int((int64_t)x))};
        int k = weft_select(cs, 2, 0);
        CHECK(k == 0 || k == 1);
        CHECK_EQ(cs[k].ok, 1);
        atomic_fetch_add(&race.sum_sent, ctest_mix(x));
        atomic_fetch_add(&race.sent_count, 1);
    }
    weft_chan_send(race.done, weft_val_int(1));
}

static void race_receiver(void *arg) {
    (void)arg;
    for (;;) {
        weft_case cs[RS_CHANS + 1];
        for (int k = 0; k < RS_CHANS; k++)
            cs[k] = weft_case_recv(race.c[k]);
        cs[RS_CHANS] = weft_case_recv(race.quit);
        int k = weft_select(cs, RS_CHANS + 1, 0);
        if (k == RS_CHANS)
            break;
        CHECK_EQ(cs[k].ok, 1);
        atomic_fetch_add(&race.sum_recv, ctest_mix((uint64_t)cs[k].val.u.i));
        atomic_fetch_add(&race.recv_count, 1);
    }
    weft_chan_send(race.done, weft_val_int(2));
}

static void race_main(void *arg) {
    (void)arg;
    memset(&race, 0, sizeof race);
    for (int k = 0; k < RS_CHANS; k++)
        race.c[k] = weft_chan_new(k & 1); /* unbuffered and capacity 1 */
    race.quit = weft_chan_new(0);
    race.done = weft_chan_new(0);
    for (intptr_t i = 0; i < RS_SENDERS; i++) {
        weft_go(race_sender, (void *)i);
        weft_go(race_receiver, NULL);
    }
    weft_val v;
    for (int i = 0; i < RS_SENDERS; i++)
        weft_chan_recv(race.done, &v);
    /* Senders are done; drain what is still buffered, then stop receivers. */
    for (;;) {
        int any = 0;
        for (int k = 0; k < RS_CHANS; k++)
            any |= weft_chan_len(race.c[k]) != 0;
        if (!any)
            break;
        weft_yield();
    }
    weft_chan_close(race.quit);
    for (int i = 0; i < RS_SENDERS; i++)
        weft_chan_recv(race.done, &v);
    CHECK_EQ(atomic_load(&race.sent_count), (long long)RS_SENDERS * RS_PER_SENDER);
    CHECK_EQ(atomic_load(&race.recv_count), (long long)RS_SENDERS * RS_PER_SENDER);
    CHECK(atomic_load(&race.sum_sent) == atomic_load(&race.sum_recv));
    for (int k = 0; k < RS_CHANS; k++)
        weft_chan_release(race.c[k]);
    weft_chan_release(race.quit);
    weft_chan_release(race.done);
}

static void test_racing_selects(void) {
    for (int rep = 0; rep < 3; rep++)
        ctest_run(2, race_main, NULL);
}

/* ---- the same channel in several cases; send and receive on one channel ---- */

static void dup_peer(void *arg) {
    weft_chan *c = arg;
    weft_val v;
    CHECK_EQ(weft_chan_recv(c, &v), 1);
    CHECK_EQ(v.u.i, 9);
    CHECK_EQ(weft_chan_send(c, weft_val_int(10)), WEFT_OK);
}

static void dup_main(void *arg) {
    (void)arg;
    weft_chan *c = weft_chan_new(0);
    weft_go(dup_peer, c);
    /* Blocks with a send and a receive queued on one channel: the peer's
     * receive takes the send. */
    weft_case cs[3] = {weft_case_send(c, weft_val_int(9)),
                       weft_case_recv(c),
                       weft_case_recv(c)};
    int k = weft_select(cs, 3, 0);
    CHECK_EQ(k, 0);
    CHECK_EQ(cs[0].ok, 1);
    /* Then the peer's send is taken by one of the duplicate receive cases. */
    weft_case rs[2] = {weft_case_recv(c), weft_case_recv(c)};
    k = weft_select(rs, 2, 0);
    CHECK(k == 0 || k == 1);
    CHECK_EQ(rs[k].val.u.i, 10);
    weft_chan_release(c);
}

static void test_duplicate_channels(void) {
    for (int rep = 0; rep < 20; rep++)
        ctest_run(2, dup_main, NULL);
}

/* ---- close wakes a blocked select -------------------------------------------- */

static void closer(void *arg) {
    weft_yield();
    weft_chan_close(arg);
}

static void close_wake_main(void *arg) {
    (void)arg;
    for (int i = 0; i < 200; i++) {
        weft_chan *a = weft_chan_new(0), *b = weft_chan_new(0);
        weft_go(closer, b);
        weft_case cs[2] = {weft_case_recv(a), weft_case_send(b, weft_val_int(1))};
        int k = weft_select(cs, 2, 0);
        CHECK_EQ(k, 1);
        CHECK_EQ(cs[1].ok, 0);
        weft_chan_release(a);
        weft_chan_release(b);
    }
}

static void test_close_wakes_select(void) {
    ctest_run(2, close_wake_main, NULL);
}

/* A select's winning channel may be freed as soon as the case took effect:
 * the goroutine that sent (or received, or closed) holds the only reference
 * and drops it at once, before the woken select has run again. The select
 * must not touch that channel afterwards (ASAN: make asan). One processor,
 * so the select is parked before the other side acts, and runs after it. */
static weft_chan *fw_never;

static void fw_select(void *arg) {
    weft_case *cs = arg;
    int k = weft_select(cs, 2, 0);
    CHECK_EQ(k, 0);
    CHECK_EQ(weft_chan_send(fw_never, weft_val_int(k)), WEFT_OK);
}

static void fw_main(void *arg) {
    (void)arg;
    fw_never = weft_chan_new(1);
    weft_val v;
    for (int round = 0; round < 6; round++) {
        size_t cap = round % 3 == 0 ? 0 : 2;
        weft_chan *c = weft_chan_new(cap);
        weft_case cs[2] = {round < 3 ? weft_case_recv(c) : weft_case_send(c, weft_val_int(1)),
                           weft_case_recv(fw_never)};
        for (size_t i = 0; round >= 3 && i < cap; i++) /* a send case must wait too */
            CHECK_EQ(weft_chan_send(c, weft_val_int(100)), WEFT_OK);
        weft_go(fw_select, cs);
        weft_yield(); /* parked in its select */
        if (round < 3)
            CHECK_EQ(weft_chan_send(c, weft_val_int(round)), WEFT_OK);
        else
            CHECK_EQ(weft_chan_recv(c, &v), 1);
        weft_chan_release(c); /* the last reference */
        CHECK_EQ(weft_chan_recv(fw_never, &v), 1);
        if (round < 3)
            CHECK_EQ(cs[0].val.u.i, round);
    }
    weft_chan_release(fw_never);
}

static void test_winner_freed(void) {
    ctest_run(1, fw_main, NULL);
}

const ctest_case select_tests[] = {
    {"basic", test_basic},
    {"blocking_wake", test_blocking_wake},
    {"fairness", test_fairness},
    {"fair_kinds", test_fair_kinds},
    {"racing_selects", test_racing_selects},
    {"duplicate_channels", test_duplicate_channels},
    {"close_wakes_select", test_close_wakes_select},
    {"winner_freed", test_winner_freed},
    {NULL, NULL},
};
