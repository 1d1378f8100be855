/*
 * test_chan.c — channels: hand-off, buffering, FIFO order, close semantics,
 * moving heap values, non-blocking forms, many senders and receivers.
 */
#include "ctest.h"

#include <pthread.h>

#include <stdlib.h>
#include <string.h>

/* ---- unbuffered hand-off ----------------------------------------------------- */

static void echo(void *arg) {
    weft_chan **io = arg;
    weft_val v;
    while (weft_chan_recv(io[0], &v) == 1)
        CHECK_EQ(weft_chan_send(io[1], weft_val_int(v.u.i * 2)), WEFT_OK);
    weft_chan_close(io[1]);
}

static void unbuffered_main(void *arg) {
    (void)arg;
    weft_chan *io[2] = {weft_chan_new(0), weft_chan_new(0)};
    CHECK_EQ(weft_chan_cap(io[0]), 0);
    weft_go(echo, io);
    for (int i = 0; i < 10000; i++) {
        CHECK_EQ(weft_chan_send(io[0], weft_val_int(i)), WEFT_OK);
        weft_val v;
        CHECK_EQ(weft_chan_recv(io[1], &v), 1);
        CHECK_EQ(v.u.i, 2 * i);
        CHECK_EQ(v.tag, WEFT_TAG_INT64);
    }
    weft_chan_close(io[0]);
    weft_val v;
    CHECK_EQ(weft_chan_recv(io[1], &v), 0);
    CHECK_EQ(v.u.i, 0);
    weft_chan_release(io[0]);
    weft_chan_release(io[1]);
}

static void test_unbuffered(void) {
    ctest_run(1, unbuffered_main, NULL);
    ctest_run(2, unbuffered_main, NULL);
}

/* ---- buffered FIFO, len/cap, refill from blocked senders ------------------- */

static void fill_sender(void *arg) {
    weft_chan *c = arg;
    /* cap is 4: sends 4..11 block and queue up in order. */
    for (int i = 0; i < 12; i++)
        CHECK_EQ(weft_chan_send(c, weft_val_int(i)), WEFT_OK);
}

static void buffered_main(void *arg) {
    (void)arg;
    weft_chan *c = weft_chan_new(4);
    CHECK_EQ(weft_chan_cap(c), 4);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(weft_chan_send(c, weft_val_int(100 + i)), WEFT_OK);
    CHECK_EQ(weft_chan_len(c), 4);
    CHECK_EQ(weft_chan_trysend(c, weft_val_int(-1)), WEFT_EAGAIN);
    for (int i = 0; i < 4; i++) {
        weft_val v;
        CHECK_EQ(weft_chan_recv(c, &v), 1);
        CHECK_EQ(v.u.i, 100 + i);
    }
    CHECK_EQ(weft_chan_len(c), 0);
    weft_val v;
    CHECK_EQ(weft_chan_tryrecv(c, &v), WEFT_EAGAIN);

    /* A receive from a full buffer refills from the first blocked sender. */
    weft_go(fill_sender, c);
    while (weft_count() > 1 && weft_chan_len(c) < 4)
        weft_yield();
    for (int k = 0; k < 3; k++)
        weft_yield(); /* let the sender block on its fifth send */
    for (int i = 0; i < 12; i++) {
        CHECK_EQ(weft_chan_recv(c, &v), 1);
        CHECK_EQ(v.u.i, i);
    }
    weft_chan_release(c);
}

static void test_buffered_fifo(void) {
    ctest_run(1, buffered_main, NULL);
    ctest_run(2, buffered_main, NULL);
}

/* ---- close semantics ------------------------------------------------------- */

static atomic_int woke_recv, woke_send;

static void blocked_receiver(void *arg) {
    weft_val v;
    CHECK_EQ(weft_chan_recv(arg, &v), 0);
    CHECK_EQ(v.len, 0);
    atomic_fetch_add(&woke_recv, 1);
}

static void blocked_sender(void *arg) {
    weft_val v = weft_val_bytes("a value that lives on the heap", 30);
    CHECK_EQ(weft_chan_send(arg, v), WEFT_ECLOSED);
    /* The value stayed ours. */
    CHECK(memcmp(weft_val_data(&v), "a value that lives on the heap", 30) == 0);
    weft_val_free(&v);
    atomic_fetch_add(&woke_send, 1);
}

static void close_main(void *arg) {
    (void)arg;
    atomic_store(&woke_recv, 0);
    atomic_store(&woke_send, 0);
    /* Buffered values drain after close, then recv reports closed. */
    weft_chan *c = weft_chan_new(3);
    weft_chan_send(c, weft_val_int(1));
    weft_chan_send(c, weft_val_int(2));
    CHECK_EQ(weft_chan_close(c), WEFT_OK);
    CHECK(weft_chan_closed(c));
    CHECK_EQ(weft_chan_close(c), WEFT_ECLOSED);
    CHECK_EQ(weft_chan_send(c, weft_val_int(3)), WEFT_ECLOSED);
    CHECK_EQ(weft_chan_trysend(c, weft_val_int(3)), WEFT_ECLOSED);
    weft_val v;
    CHECK_EQ(weft_chan_recv(c, &v), 1);
    CHECK_EQ(v.u.i, 1);
    CHECK_EQ(weft_chan_tryrecv(c, &v), 1);
    CHECK_EQ(v.u.i, 2);
    CHECK_EQ(weft_chan_recv(c, &v), 0);
    CHECK_EQ(weft_chan_tryrecv(c, &v), 0);
    weft_chan_release(c);

    /* Close wakes every blocked receiver and every blocked sender. */
    weft_chan *r = weft_chan_new(0), *s = weft_chan_new(0);
    for (int i = 0; i < 50; i++) {
        weft_go(blocked_receiver, r);
        weft_go(blocked_sender, s);
    }
    /* Give them time to park; one that has not parked yet sees the close
     * at once, which the checks below accept as well. */
    for (int i = 0; i < 200; i++)
        weft_yield();
    weft_chan_close(r);
    weft_chan_close(s);
    while (weft_count() > 1)
        weft_yield();
    CHECK_EQ(atomic_load(&woke_recv), 50);
    CHECK_EQ(atomic_load(&woke_send), 50);
    weft_chan_release(r);
    weft_chan_release(s);
}

static void test_close(void) {
    for (int procs = 1; procs <= 2; procs++)
        ctest_run(procs, close_main, NULL);
}

/* ---- heap values move without copies or loss -------------------------------- */

static void string_producer(void *arg) {
    weft_chan *c = arg;
    for (int i = 0; i < 2000; i++) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "message number %d with padding", i);
        weft_val v = weft_val_bytes(buf, (uint32_t)n);
        CHECK(v.flags & WEFT_VAL_HEAP);
        CHECK_EQ(weft_chan_send(c, v), WEFT_OK);
    }
    weft_chan_close(c);
}

static void strings_main(void *arg) {
    (void)arg;
    weft_chan *c = weft_chan_new(16);
    weft_go(string_producer, c);
    weft_val v;
    int i = 0;
    while (weft_chan_recv(c, &v) == 1) {
        char want[64];
        int n = snprintf(want, sizeof want, "message number %d with padding", i++);
        CHECK_EQ(v.len, n);
        CHECK(memcmp(weft_val_data(&v), want, (size_t)n) == 0);
        weft_val_free(&v);
    }
    CHECK_EQ(i, 2000);
    /* Values still buffered when the last reference goes are freed (ASAN
     * would report them otherwise). */
    weft_chan *d = weft_chan_new(4);
    weft_chan_send(d, weft_val_bytes("left behind in the buffer!", 26));
    weft_chan_release(d);
    weft_chan_release(c);
}

static void test_heap_values(void) {
    ctest_run(2, strings_main, NULL);
}

/* ---- many senders, many receivers: nothing lost, nothing duplicated -------- */

typedef struct {
    weft_chan *c;
    weft_chan *done;
    int id, n;
} mm_arg;

static atomic_ullong mm_sum_sent, mm_sum_recv;
static atomic_llong mm_count;

static void mm_sender(void *arg) {
    mm_arg *a = arg;
    for (int i = 0; i < a->n; i++) {
        uint64_t x = ((uint64_t)a->id << 32) | (uint64_t)i;
        CHECK_EQ(weft_chan_send(a->c, weft_val_int((int64_t)x)), WEFT_OK);
        atomic_fetch_add(&mm_sum_sent, ctest_mix(x));
    }
    weft_chan_send(a->done, weft_val_int(1));
}

static void mm_receiver(void *arg) {
    mm_arg *a = arg;
    weft_val v;
    int64_t last[16];
    for (int i = 0; i < 16; i++)
        last[i] = -1;
    while (weft_chan_recv(a->c, &v) == 1) {
        uint64_t x = (uint64_t)v.u.i;
        int sender = (int)(x >> 32);
        int64_t seq = (int64_t)(x & 0xffffffffu);
        /* Per sender, values arrive in the order they were sent. */
        CHECKF(seq > last[sender], "sender %d: %lld after %lld", sender, (long long)seq,
               (long long)last[sender]);
        last[sender] = seq;
        atomic_fetch_add(&mm_sum_recv, ctest_mix(x));
        atomic_fetch_add(&mm_count, 1);
    }
    weft_chan_send(a->done, weft_val_int(2));
}

static void mm_main(void *arg) {
    size_t cap = *(size_t *)arg;
    enum { S = 8, R = 8, N = 20000 };
    atomic_store(&mm_sum_sent, 0);
    atomic_store(&mm_sum_recv, 0);
    atomic_store(&mm_count, 0);
    weft_chan *c = weft_chan_new(cap), *done = weft_chan_new(0);
    mm_arg args[S + R];
    for (int i = 0; i < S + R; i++) {
        args[i] = (mm_arg){c, done, i % S, N};
        weft_go(i < S ? mm_sender : mm_receiver, &args[i]);
    }
    weft_val v;
    for (int i = 0; i < S; i++)
        weft_chan_recv(done, &v);
    weft_chan_close(c);
    for (int i = 0; i < R; i++)
        weft_chan_recv(done, &v);
    CHECK_EQ(atomic_load(&mm_count), (long long)S * N);
    CHECK(atomic_load(&mm_sum_sent) == atomic_load(&mm_sum_recv));
    weft_chan_release(c);
    weft_chan_release(done);
}

static void test_many_to_many(void) {
    size_t caps[] = {0, 1, 64};
    for (int rep = 0; rep < 3; rep++)
        for (size_t k = 0; k < 3; k++)
            ctest_run(2, mm_main, &caps[k]);
}

/* ---- non-blocking forms: every way a channel can be ready or not ----------------
 * They first look without the lock; each case below must still come out as
 * it would under the lock. One processor, so a goroutine started and given
 * a yield has reached its park. */

static void park_recv(void *arg) {
    weft_chan **io = arg;
    weft_val v;
    int rc = weft_chan_recv(io[0], &v);
    CHECK_EQ(weft_chan_send(io[1], weft_val_int(rc == 1 ? v.u.i : -1000 - rc)), WEFT_OK);
}

static void park_send(void *arg) {
    weft_chan **io = arg;
    int rc = weft_chan_send(io[0], weft_val_int(77));
    CHECK_EQ(weft_chan_send(io[1], weft_val_int(rc)), WEFT_OK);
}

static void park_select(void *arg) {
    weft_chan **io = arg; /* a receive on io[0] or on io[2], whichever comes */
    weft_case cs[2] = {weft_case_recv(io[0]), weft_case_recv(io[2])};
    int k = weft_select(cs, 2, 0);
    CHECK_EQ(weft_chan_send(io[1], weft_val_int(k)), WEFT_OK);
}

static void try_main(void *arg) {
    (void)arg;
    weft_val v;
    weft_chan *u = weft_chan_new(0), *res = weft_chan_new(4), *x = weft_chan_new(1);
    weft_chan *io[3] = {u, res, x};
    /* Unbuffered, nobody there: neither form proceeds. */
    CHECK_EQ(weft_chan_trysend(u, weft_val_int(1)), WEFT_EAGAIN);
    CHECK_EQ(weft_chan_tryrecv(u, &v), WEFT_EAGAIN);
    /* A parked receiver takes a try-send; a parked sender feeds a try-receive. */
    weft_go(park_recv, io);
    weft_yield();
    CHECK_EQ(weft_chan_tryrecv(u, &v), WEFT_EAGAIN); /* a receiver is no sender */
    CHECK_EQ(weft_chan_trysend(u, weft_val_int(41)), WEFT_OK);
    CHECK_EQ(weft_chan_recv(res, &v), 1);
    CHECK_EQ(v.u.i, 41);
    weft_go(park_send, io);
    weft_yield();
    CHECK_EQ(weft_chan_trysend(u, weft_val_int(2)), WEFT_EAGAIN); /* a sender is no receiver */
    CHECK_EQ(weft_chan_tryrecv(u, &v), 1);
    CHECK_EQ(v.u.i, 77);
    CHECK_EQ(weft_chan_recv(res, &v), 1);
    CHECK_EQ(v.u.i, WEFT_OK);
    /* A select's waiter that another case completed is withdrawn. */
    weft_go(park_select, io);
    weft_yield();
    CHECK_EQ(weft_chan_send(x, weft_val_int(5)), WEFT_OK);
    CHECK_EQ(weft_chan_recv(res, &v), 1);
    CHECK_EQ(v.u.i, 1);
    CHECK_EQ(weft_chan_trysend(u, weft_val_int(3)), WEFT_EAGAIN);
    /* Closed: a try-send reports it, a try-receive gets (0, zero value). */
    weft_chan_close(u);
    CHECK_EQ(weft_chan_trysend(u, weft_val_int(4)), WEFT_ECLOSED);
    CHECK_EQ(weft_chan_tryrecv(u, &v), 0);
    /* Buffered: full refuses, closed while full reports closed, and what
     * was buffered still comes out after the close. */
    weft_chan *b = weft_chan_new(1);
    CHECK_EQ(weft_chan_trysend(b, weft_val_int(8)), WEFT_OK);
    CHECK_EQ(weft_chan_trysend(b, weft_val_int(9)), WEFT_EAGAIN);
    weft_chan_close(b);
    CHECK_EQ(weft_chan_trysend(b, weft_val_int(9)), WEFT_ECLOSED);
    CHECK_EQ(weft_chan_tryrecv(b, &v), 1);
    CHECK_EQ(v.u.i, 8);
    CHECK_EQ(weft_chan_tryrecv(b, &v), 0);
    weft_chan_release(b);
    weft_chan_release(u);
    weft_chan_release(res);
    weft_chan_release(x);
}

static void test_try_forms(void) {
    ctest_run(1, try_main, NULL);
}

/* Try-loops on two processors: every value sent once arrives once. */
enum { TL_SENDERS = 2, TL_N = 50000 };
static atomic_llong tl_sent, tl_got, tl_sum;

static void tl_sender(void *arg) {
    weft_chan *c = arg;
    for (int i = 1; i <= TL_N; i++) {
        while (weft_chan_trysend(c, weft_val_int(i)) == WEFT_EAGAIN)
            weft_yield();
        atomic_fetch_add(&tl_sent, i);
    }
}

static weft_chan *tl_done;

static void tl_receiver(void *arg) {
    weft_chan *c = arg;
    weft_val v;
    for (;;) {
        int rc = weft_chan_tryrecv(c, &v);
        if (rc == 0) {
            CHECK_EQ(weft_chan_send(tl_done, weft_val_int(1)), WEFT_OK);
            return;
        }
        if (rc == 1) {
            atomic_fetch_add(&tl_got, 1);
            atomic_fetch_add(&tl_sum, v.u.i);
        } else {
            weft_yield();
        }
    }
}

static void tl_main(void *arg) {
    weft_chan *c = weft_chan_new(*(size_t *)arg);
    tl_done = weft_chan_new(1);
    atomic_store(&tl_sent, 0);
    atomic_store(&tl_got, 0);
    atomic_store(&tl_sum, 0);
    for (int i = 0; i < TL_SENDERS; i++)
        weft_go(tl_sender, c);
    weft_go(tl_receiver, c);
    while (atomic_load(&tl_sent) < (long long)TL_SENDERS * TL_N * (TL_N + 1) / 2)
        weft_yield();
    while (weft_chan_len(c) > 0)
        weft_yield();
    weft_chan_close(c);
    weft_val v;
    CHECK_EQ(weft_chan_recv(tl_done, &v), 1); /* the receiver saw the close */
    CHECK_EQ(atomic_load(&tl_got), (long long)TL_SENDERS * TL_N);
    CHECK_EQ(atomic_load(&tl_sum), (long long)TL_SENDERS * TL_N * (TL_N + 1) / 2);
    weft_chan_release(c);
    weft_chan_release(tl_done);
}

static void test_try_loops(void) {
    size_t caps[] = {1, 16};
    for (int rep = 0; rep < 3; rep++)
        for (size_t k = 0; k < 2; k++)
            ctest_run(2, tl_main, &caps[k]);
}

/* ---- every form at once on a buffered channel -----------------------------------
 * Blocking, non-blocking and select senders and receivers on two processors,
 * with a select that both sends to and receives from the channel, then a
 * close: every value arrives exactly once, each sender's values in order, and
 * len never exceeds cap. Capacities 1 (the smallest ring), 3 (not a power of
 * two) and 64. */

enum { RM_SENDERS = 5, RM_N = 20000, RM_RECEIVERS = 4 };
static atomic_ullong rm_sum_sent, rm_sum_recv;
static atomic_llong rm_sent, rm_recv;

typedef struct rm_arg {
    weft_chan *c, *never, *done;
    int id; /* sender id, or receiver kind */
} rm_arg;

static void rm_got(rm_arg *a, int64_t *last, weft_val v) {
    uint64_t x = (uint64_t)v.u.i;
    int sender = (int)(x >> 32);
    int64_t seq = (int64_t)(x & 0xffffffffu);
    CHECKF(sender >= 0 && sender < RM_SENDERS, "value from sender %d", sender);
    CHECKF(seq > last[sender], "sender %d: %lld after %lld", sender, (long long)seq,
           (long long)last[sender]);
    last[sender] = seq;
    CHECK(weft_chan_len(a->c) <= weft_chan_cap(a->c));
    atomic_fetch_add(&rm_sum_recv, ctest_mix(x));
    atomic_fetch_add(&rm_recv, 1);
}

static void rm_sender(void *arg) {
    rm_arg *a = arg;
    int64_t last[RM_SENDERS]; /* the selecting sender's receives */
    for (int i = 0; i < RM_SENDERS; i++)
        last[i] = -1;
    for (int i = 0; i < RM_N; i++) {
        uint64_t x = ((uint64_t)a->id << 32) | (uint64_t)i;
        weft_val v = weft_val_int((int64_t)x);
        switch (a->id % 3) {
        case 0:
            CHECK_EQ(weft_chan_send(a->c, v), WEFT_OK);
            break;
        case 1:
            while (weft_chan_trysend(a->c, v) == WEFT_EAGAIN)
                weft_yield();
            break;
        default:
            for (;;) { /* send, or take a value on the way */
                weft_case cs[2] = {weft_case_send(a->c, v), weft_case_recv(a->c)};
                int k = weft_select(cs, 2, 0);
                CHECK(k == 0 || k == 1);
                if (k == 0) {
                    CHECK_EQ(cs[0].ok, 1);
                    break;
                }
                CHECK_EQ(cs[1].ok, 1);
                rm_got(a, last, cs[1].val);
            }
        }
        atomic_fetch_add(&rm_sum_sent, ctest_mix(x));
        atomic_fetch_add(&rm_sent, 1);
    }
    weft_chan_send(a->done, weft_val_int(1));
}

static void rm_receiver(void *arg) {
    rm_arg *a = arg;
    int64_t last[RM_SENDERS];
    for (int i = 0; i < RM_SENDERS; i++)
        last[i] = -1;
    weft_val v;
    for (;;) {
        int rc;
        if (a->id == 0) {
            rc = weft_chan_recv(a->c, &v);
        } else if (a->id == 1) {
            while ((rc = weft_chan_tryrecv(a->c, &v)) == WEFT_EAGAIN)
                weft_yield();
        } else {
            weft_case cs[2] = {weft_case_recv(a->never), weft_case_recv(a->c)};
            CHECK_EQ(weft_select(cs, 2, 0), 1);
            rc = cs[1].ok;
            v = cs[1].val;
        }
        if (rc == 0)
            break;
        CHECK_EQ(rc, 1);
        rm_got(a, last, v);
    }
    weft_chan_send(a->done, weft_val_int(2));
}

static void rm_main(void *arg) {
    size_t cap = *(size_t *)arg;
    atomic_store(&rm_sum_sent, 0);
    atomic_store(&rm_sum_recv, 0);
    atomic_store(&rm_sent, 0);
    atomic_store(&rm_recv, 0);
    weft_chan *c = weft_chan_new(cap), *never = weft_chan_new(0), *done = weft_chan_new(0);
    rm_arg args[RM_SENDERS + RM_RECEIVERS];
    for (int i = 0; i < RM_SENDERS + RM_RECEIVERS; i++) {
        int send = i < RM_SENDERS;
        args[i] = (rm_arg){c, never, done, send ? i : (i - RM_SENDERS) % 3};
        weft_go(send ? rm_sender : rm_receiver, &args[i]);
    }
    weft_val v;
    for (int i = 0; i < RM_SENDERS; i++)
        CHECK_EQ(weft_chan_recv(done, &v), 1);
    CHECK_EQ(weft_chan_close(c), WEFT_OK);
    for (int i = 0; i < RM_RECEIVERS; i++)
        CHECK_EQ(weft_chan_recv(done, &v), 1);
    CHECK_EQ(atomic_load(&rm_sent), (long long)RM_SENDERS * RM_N);
    CHECK_EQ(atomic_load(&rm_recv), (long long)RM_SENDERS * RM_N);
    CHECK(atomic_load(&rm_sum_sent) == atomic_load(&rm_sum_recv));
    CHECK_EQ(weft_chan_len(c), 0);
    weft_chan_release(c);
    weft_chan_release(never);
    weft_chan_release(done);
}

static void test_ring_mixed(void) {
    size_t caps[] = {1, 3, 64};
    for (int rep = 0; rep < 3; rep++)
        for (size_t k = 0; k < 3; k++)
            ctest_run(2, rm_main, &caps[k]);
}

/* ---- the non-blocking forms agree with len ---------------------------------------
 * One sender and one receiver on a channel of 1, on two threads: when len
 * says the buffer is empty, the only sender's try-send must succeed; when it
 * says it holds a value, the only receiver's try-receive must. (A slot the
 * other side has reserved but not finished with is waited out.) */

enum { TA_N = 300000 };
static weft_chan *ta_c;
static atomic_long ta_bad_send, ta_bad_recv, ta_bad_order;

static void *ta_sender(void *arg) {
    (void)arg;
    for (long i = 0; i < TA_N;) {
        if (weft_chan_len(ta_c) != 0)
            continue;
        if (weft_chan_trysend(ta_c, weft_val_int(i)) == WEFT_OK)
            i++;
        else
            atomic_fetch_add(&ta_bad_send, 1);
    }
    return NULL;
}

static void *ta_receiver(void *arg) {
    (void)arg;
    for (long next = 0; next < TA_N;) {
        size_t len = weft_chan_len(ta_c);
        weft_val v;
        int rc = weft_chan_tryrecv(ta_c, &v);
        if (rc == 1) {
            if (v.u.i != next)
                atomic_fetch_add(&ta_bad_order, 1);
            next = v.u.i + 1;
        } else if (len == 1) {
            atomic_fetch_add(&ta_bad_recv, 1);
        }
    }
    return NULL;
}

static void test_try_agrees_with_len(void) {
    ta_c = weft_chan_new(1);
    atomic_store(&ta_bad_send, 0);
    atomic_store(&ta_bad_recv, 0);
    atomic_store(&ta_bad_order, 0);
    pthread_t s, r;
    CHECK_EQ(pthread_create(&s, NULL, ta_sender, NULL), 0);
    CHECK_EQ(pthread_create(&r, NULL, ta_receiver, NULL), 0);
    pthread_join(s, NULL);
    pthread_join(r, NULL);
    CHECK_EQ(atomic_load(&ta_bad_send), 0);
    CHECK_EQ(atomic_load(&ta_bad_recv), 0);
    CHECK_EQ(atomic_load(&ta_bad_order), 0);
    CHECK_EQ(weft_chan_len(ta_c), 0);
    weft_chan_release(ta_c);
}

/* ---- nil channels ------------------------------------------------------------ */

static void test_nil_channel(void) {
    weft_val v;
    CHECK_EQ(weft_chan_trysend(NULL, weft_val_int(1)), WEFT_EAGAIN);
    CHECK_EQ(weft_chan_tryrecv(NULL, &v), WEFT_EAGAIN);
    CHECK_EQ(weft_chan_close(NULL), WEFT_EINVAL);
    CHECK_EQ(weft_chan_len(NULL), 0);
    CHECK_EQ(weft_chan_cap(NULL), 0);
    CHECK_EQ(weft_chan_send(NULL, weft_val_int(1)), WEFT_ENOTG);
    CHECK_EQ(weft_chan_recv(NULL, &v), WEFT_ENOTG);
}

/* ---- a non-blocking form whose partner frees the channel at once ----------- */

/* trysend to a parked receiver, tryrecv from a parked sender, and a
 * non-blocking select receiving from one, on an unbuffered channel: the partner holds the only reference and drops it as
 * soon as it runs, which, on 2 processors, may be before the non-blocking
 * form has returned. That form must not touch the channel after waking the
 * partner (ASAN and TSAN report it when the partner ran on the other
 * processor). The main goroutine only borrows the channel; it retries
 * until the partner is parked; every partner finishes and the values
 * handed over add up. */
enum { PF_ROUNDS = 2000 };
static atomic_int pf_done;
static atomic_llong pf_sum;

static void pf_receiver(void *arg) {
    weft_chan *c = arg;
    weft_val v;
    CHECK_EQ(weft_chan_recv(c, &v), 1);
    atomic_fetch_add(&pf_sum, (long long)v.u.i);
    weft_chan_release(c);
    atomic_fetch_add(&pf_done, 1);
}

static void pf_sender(void *arg) {
    weft_chan *c = arg;
    CHECK_EQ(weft_chan_send(c, weft_val_int(1000)), WEFT_OK);
    weft_chan_release(c);
    atomic_fetch_add(&pf_done, 1);
}

static void pf_main(void *arg) {
    (void)arg;
    long long want = 0; /* what the receivers were handed */
    for (int r = 0; r < PF_ROUNDS; r++) {
        weft_chan *c = weft_chan_new(0); /* its reference goes to the partner */
        if (r % 3 == 2) { /* select's first pass, as a non-blocking select */
            CHECK(weft_go(pf_sender, c) > 0);
            weft_case cs[1] = {weft_case_recv(c)};
            int k;
            while ((k = weft_select(cs, 1, 1)) == -1)
                weft_yield();
            CHECK_EQ(k, 0);
            CHECK_EQ(cs[0].val.u.i, 1000);
        } else if (r % 3 == 0) {
            CHECK(weft_go(pf_receiver, c) > 0);
            int rc;
            while ((rc = weft_chan_trysend(c, weft_val_int(r))) == WEFT_EAGAIN)
                weft_yield();
            CHECK_EQ(rc, WEFT_OK);
            want += r;
        } else {
            CHECK(weft_go(pf_sender, c) > 0);
            weft_val v;
            int rc;
            while ((rc = weft_chan_tryrecv(c, &v)) == WEFT_EAGAIN)
                weft_yield();
            CHECK_EQ(rc, 1);
            CHECK_EQ(v.u.i, 1000);
        }
    }
    while (weft_count() > 1)
        weft_yield();
    CHECK_EQ(atomic_load(&pf_done), PF_ROUNDS);
    CHECK_EQ(atomic_load(&pf_sum), want);
}

static void test_try_partner_frees(void) {
    atomic_store(&pf_done, 0);
    atomic_store(&pf_sum, 0);
    ctest_run(2, pf_main, NULL);
}

const ctest_case chan_tests[] = {
    {"unbuffered", test_unbuffered},
    {"buffered_fifo", test_buffered_fifo},
    {"close", test_close},
    {"heap_values", test_heap_values},
    {"many_to_many", test_many_to_many},
    {"nil_channel", test_nil_channel},
    {"try_forms", test_try_forms},
    {"try_loops", test_try_loops},
    {"ring_mixed", test_ring_mixed},
    {"try_agrees_with_len", test_try_agrees_with_len},
    {"try_partner_frees", test_try_partner_frees},
    {NULL, NULL},
};
