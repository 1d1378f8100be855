/*
 * test_pool.c — the recycled value blocks (engine/pool.c): blocks crossing
 * processors intact, recycling from the local and the remote list, pools
 * adopted after their thread ends, and the size limit.
 */
#include "ctest.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { PRODUCERS = 4, PER_PRODUCER = 50000 };

typedef struct {
    weft_chan *c, *done;
    atomic_int producers_left;
    atomic_llong received, sum;
    atomic_int corrupt;
} xfer;

typedef struct {
    xfer *x;
    int id;
} producer_arg;

/* The whole block carries (producer, sequence): a block handed out twice
 * while in use, or recycled before its reader is done, shows up as a
 * mismatch. */
static void fill(unsigned char *p, int id, int seq) {
    for (int i = 0; i < WEFT_POOL_MAX; i++)
        p[i] = (unsigned char)(id * 31 + seq + i);
}

static void producer(void *arg) {
    producer_arg *a = arg;
    for (int seq = 0; seq < PER_PRODUCER; seq++) {
        weft_val v;
        CHECK(weft_val_alloc_pooled(&v, WEFT_POOL_MAX, WEFT_TAG_RAW) != NULL);
        CHECK_EQ(v.flags, WEFT_VAL_HEAP | WEFT_VAL_POOLED);
        if (!v.u.p)
            break;
        fill(v.u.p, a->id, seq);
        ((int *)v.u.p)[0] = seq; /* the first bytes carry the sequence */
        ((int *)v.u.p)[1] = a->id; /* and the producer */
        CHECK_EQ(weft_chan_send(a->x->c, v), WEFT_OK);
        if (seq % 64 == 0)
            weft_yield();
    }
    if (atomic_fetch_sub(&a->x->producers_left, 1) == 1)
        weft_chan_close(a->x->c);
}

static void consumer(void *arg) {
    xfer *x = arg;
    weft_val v;
    while (weft_chan_recv(x->c, &v) == 1) {
        int seq = ((int *)v.u.p)[0], id = ((int *)v.u.p)[1];
        /* past the sequence and producer, the bytes are what fill() wrote */
        unsigned char want[WEFT_POOL_MAX];
        fill(want, id, seq);
        if (id < 0 || id >= PRODUCERS || v.len != WEFT_POOL_MAX ||
            memcmp((unsigned char *)v.u.p + 2 * sizeof(int), want + 2 * sizeof(int),
                   WEFT_POOL_MAX - 2 * sizeof(int)) != 0)
            atomic_fetch_add(&x->corrupt, 1);
        atomic_fetch_add(&x->received, 1);
        atomic_fetch_add(&x->sum, seq);
        weft_val_free(&v);
    }
}

static void consumer_goroutine(void *arg) {
    xfer *x = arg;
    consumer(x);
    CHECK_EQ(weft_chan_send(x->done, weft_val_int(1)), WEFT_OK);
}

static producer_arg pargs[PRODUCERS];

static void xfer_main(void *arg) {
    xfer *x = arg;
    for (int i = 0; i < PRODUCERS; i++) {
        pargs[i].x = x;
        pargs[i].id = i;
        weft_go(producer, &pargs[i]);
    }
    weft_go(consumer_goroutine, x);
    consumer(x);
    weft_val v; /* the engine stops when main returns: wait for the other */
    CHECK_EQ(weft_chan_recv(x->done, &v), 1);
}

/* Values in pooled blocks cross processors (native goroutines migrate, so
 * blocks are allocated and freed on both threads) and arrive whole, each
 * once. */
static void test_cross_processor(void) {
    xfer x;
    memset(&x, 0, sizeof x);
    x.c = weft_chan_new(128);
    x.done = weft_chan_new(1);
    atomic_init(&x.producers_left, PRODUCERS);
    ctest_run(2, xfer_main, &x);
    CHECK_EQ(atomic_load(&x.received), (long long)PRODUCERS * PER_PRODUCER);
    CHECK_EQ(atomic_load(&x.sum), (long long)PRODUCERS * PER_PRODUCER * (PER_PRODUCER - 1) / 2);
    CHECK_EQ(atomic_load(&x.corrupt), 0);
    weft_chan_release(x.c);
    weft_chan_release(x.done);
}

/* ---- threads that come and go --------------------------------------------- */

/* Pairs of threads, round after round: each allocates blocks, fills them,
 * hands half to its peer and frees what it gets after checking it, and the
 * rest itself; blocks outlive the thread that allocated them. Each round's
 * threads adopt the pools the last round's left, with whatever their lists
 * hold. A block handed out while still in use shows up as damaged bytes. */
enum { ROUNDS = 8, PER_THREAD = 2000 };

typedef struct {
    pthread_mutex_t lock;
    void *box[2][PER_THREAD]; /* box[i]: what thread i hands to 1 - i */
    int nbox[2];
    atomic_int damaged, checked;
} handover;

typedef struct {
    handover *h;
    int me;
    pthread_barrier_t *bar;
} hand_arg;

static void *hand_thread(void *arg) {
    hand_arg *a = arg;
    handover *h = a->h;
    void *keep[PER_THREAD];
    int nkeep = 0;
    for (int i = 0; i < PER_THREAD; i++) {
        unsigned char *p = weft_pool_alloc(WEFT_POOL_MAX);
        CHECK(p != NULL);
        if (!p)
            continue;
        fill(p, a->me, i);
        ((int *)p)[0] = i;
        ((int *)p)[1] = a->me;
        if (i % 2) {
            pthread_mutex_lock(&h->lock);
            h->box[a->me][h->nbox[a->me]++] = p;
            pthread_mutex_unlock(&h->lock);
        } else {
            keep[nkeep++] = p;
        }
    }
    pthread_barrier_wait(a->bar);
    int other = 1 - a->me;
    void *mine[2][PER_THREAD];
    int n[2] = {0, 0};
    pthread_mutex_lock(&h->lock);
    for (int i = 0; i < h->nbox[other]; i++)
        mine[0][n[0]++] = h->box[other][i];
    pthread_mutex_unlock(&h->lock);
    for (int i = 0; i < nkeep; i++)
        mine[1][n[1]++] = keep[i];
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < n[k]; i++) {
            unsigned char *p = mine[k][i];
            int seq = ((int *)p)[0], id = ((int *)p)[1];
            unsigned char want[WEFT_POOL_MAX];
            fill(want, id, seq);
            if (id != (k == 0 ? other : a->me) ||
                memcmp(p + 2 * sizeof(int), want + 2 * sizeof(int), WEFT_POOL_MAX - 2 * sizeof(int)) != 0)
                atomic_fetch_add(&h->damaged, 1);
            atomic_fetch_add(&h->checked, 1);
            weft_pool_free(p);
        }
    return NULL;
}

static void test_threads_come_and_go(void) {
    handover h;
    memset(&h, 0, sizeof h);
    pthread_mutex_init(&h.lock, NULL);
    for (int round = 0; round < ROUNDS; round++) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, 2);
        h.nbox[0] = h.nbox[1] = 0;
        pthread_t t[2];
        hand_arg args[2];
        for (int i = 0; i < 2; i++) {
            args[i] = (hand_arg){&h, i, &bar};
            CHECK_EQ(pthread_create(&t[i], NULL, hand_thread, &args[i]), 0);
        }
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&bar);
    }
    pthread_mutex_destroy(&h.lock);
    CHECK_EQ(atomic_load(&h.checked), ROUNDS * 2 * PER_THREAD);
    CHECK_EQ(atomic_load(&h.damaged), 0);
}

static void test_limits(void) {
    CHECK(weft_pool_alloc(WEFT_POOL_MAX + 1) == NULL);
    void *p = weft_pool_alloc(0);
    CHECK(p != NULL);
    weft_pool_free(p);
    weft_pool_free(NULL);
    /* weft_val_free releases pooled and malloc'd buffers alike */
    weft_val v;
    CHECK(weft_val_alloc_pooled(&v, 100, WEFT_TAG_RAW) != NULL);
    CHECK_EQ(v.flags, WEFT_VAL_HEAP | WEFT_VAL_POOLED);
    weft_val_free(&v);
    CHECK_EQ(v.flags, 0);
    /* inline up to 8 bytes, malloc'd past a block */
    CHECK(weft_val_alloc_pooled(&v, 8, WEFT_TAG_RAW) == v.u.b);
    CHECK_EQ(v.flags, 0);
    CHECK(weft_val_alloc_pooled(&v, WEFT_POOL_MAX + 1, WEFT_TAG_RAW) != NULL);
    CHECK_EQ(v.flags, WEFT_VAL_HEAP);
    weft_val_free(&v);
    weft_val w = weft_val_bytes("0123456789abcdef", 16);
    CHECK_EQ(w.flags, WEFT_VAL_HEAP);
    weft_val_free(&w);
}

const ctest_case pool_tests[] = {
    {"cross_processor", test_cross_processor},
    {"threads_come_and_go", test_threads_come_and_go},
    {"limits", test_limits},
    {NULL, NULL},
};
