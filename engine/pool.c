/*
 * pool.c — recycled blocks for the bytes of small values (weft_pool_alloc).
 *
 * A value's buffer is mostly allocated by one thread (the sender's processor)
 * and freed by another (the receiver's). glibc's malloc serves that pattern
 * badly: the freeing thread's cache fills and the rest goes back to the
 * allocating thread's arena under its lock, while the allocating thread
 * finds its own cache empty every time. Here each thread that allocates has
 * a pool; a block records its pool; a block freed by its pool's thread goes
 * back on the pool's stack, blocks freed by any other thread come back in
 * batches; allocating pops the stack and, when that is empty, takes every
 * batch at once.
 *
 * Invariants:
 *  - `stack` is touched only by the thread that owns the pool. `remote` is
 *    a lock-free stack of batches (see pool_batch): any thread pushes one
 *    (CAS, release); only the owner takes, and always the whole stack
 *    (exchange, acquire), so no ABA.
 *  - A thread other than the owner that frees a block adds it to its own
 *    batch for that pool; the batch goes out when full, when the thread
 *    frees a block of another pool, or when the thread exits (TLS
 *    destructor). Until then up to BATCH blocks wait in it.
 *  - A pool is never freed (blocks of it may be in flight after its thread
 *    ends). When its thread exits, a TLS destructor gives it up; the next
 *    thread that needs a pool adopts it with its free blocks. So pools
 *    number at most the threads alive at once.
 *  - A pool keeps at most POOL_KEEP free blocks; past that, blocks go back
 *    to malloc.
 *  - Allocating prefetches the block that the next allocation will return
 *    (prefetch.h): the sender writes a value into it, and it was mostly
 *    last written by the receiver's core when it was freed.
 *  - Built with AddressSanitizer, weft_pool_alloc is malloc of the exact
 *    size and weft_pool_free is free, so that misuse stays detectable.
 *
 * Lock order: pools_lock (adoption) is a leaf; nothing else takes a lock.
 */
#include "weft.h"

#include "lock.h"
#include "prefetch.h"
#include "tls.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define POOL_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_OFF 1
#endif
#endif

#ifdef POOL_OFF

void *weft_pool_alloc(size_t len) {
    return len > WEFT_POOL_MAX ? NULL : malloc(len ? len : 1);
}

void weft_pool_free(void *p) {
    free(p);
}

#else

enum { POOL_KEEP = 4096 };

typedef struct weft_pool weft_pool;

/* A block: this header, then WEFT_POOL_MAX bytes of payload. 16 bytes keep
 * the payload as aligned as malloc's. */
typedef struct pool_blk {
    weft_pool *pool;
    struct pool_blk *next; /* a batch, on a remote list */
} pool_blk;

/* A batch: a free block whose payload lists up to BATCH more free blocks of
 * the same pool. A thread frees other pools' blocks into a batch of its
 * own (one per thread, for the pool it last freed to) and pushes it whole:
 * one CAS per BATCH blocks, and the owner reads pointers from an array
 * instead of chasing a list through blocks last written on another core. */
enum { BATCH = (WEFT_POOL_MAX - 8) / sizeof(pool_blk *) };
typedef struct pool_batch {
    int n;
    pool_blk *blk[BATCH];
} pool_batch;

struct weft_pool {
    pool_blk *stack[POOL_KEEP]; /* owner only: free blocks */
    int n;
    _Atomic(pool_blk *) remote; /* batches */
    atomic_int owned;
    weft_pool *all; /* pools_lock: the list of every pool */
};

_Static_assert(sizeof(pool_blk) == 16, "pool block header must keep 16-byte alignment");
_Static_assert(sizeof(pool_batch) <= WEFT_POOL_MAX, "a batch must fit in a block");

static weft_mutex pools_lock = WEFT_MUTEX_INIT;
static weft_pool *pools;
static _Thread_local weft_pool *tls_pool WEFT_TLS_FAST;
static _Thread_local pool_blk *tls_batch WEFT_TLS_FAST; /* the batch being filled */
static pthread_key_t pool_key, batch_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void batch_push(pool_blk *c) {
    weft_pool *p = c->pool;
    pool_blk *head = atomic_load_explicit(&p->remote, memory_order_relaxed);
    do
        c->next = head;
    while (!atomic_compare_exchange_weak_explicit(&p->remote, &head, c, memory_order_release,
                                                  memory_order_relaxed));
}

/* At thread exit: the pool is up for adoption; frees this thread still
 * makes (later destructors) go out in batches like anyone else's. */
static void pool_release(void *arg) {
    tls_pool = NULL;
    atomic_store_explicit(&((weft_pool *)arg)->owned, 0, memory_order_release);
}

/* At thread exit: the batch being filled goes to its pool. */
static void batch_release(void *arg) {
    (void)arg;
    if (tls_batch)
        batch_push(tls_batch);
    tls_batch = NULL;
}

static void pool_key_init(void) {
    (void)pthread_key_create(&pool_key, pool_release);
    (void)pthread_key_create(&batch_key, batch_release);
}

/* This thread's pool, adopting an abandoned one or making one. */
static weft_pool *pool_self(void) {
    weft_pool *p = tls_pool;
    if (p)
        return p;
    pthread_once(&pool_once, pool_key_init);
    weft_mutex_lock(&pools_lock);
    for (p = pools; p; p = p->all) {
        int zero = 0;
        if (atomic_compare_exchange_strong(&p->owned, &zero, 1))
            break;
    }
    if (!p && (p = calloc(1, sizeof *p))) {
        atomic_init(&p->owned, 1);
        atomic_init(&p->remote, NULL);
        p->all = pools;
        pools = p;
    }
    weft_mutex_unlock(&pools_lock);
    if (p) {
        tls_pool = p;
        (void)pthread_setspecific(pool_key, p);
    }
    return p;
}

/* Owner: a free block onto the stack, or back to malloc if it is full. */
static void stack_put(weft_pool *p, pool_blk *b) {
    if (p->n < POOL_KEEP)
        p->stack[p->n++] = b;
    else
        free(b);
}

/* Owner: takes every batch freed to p by other threads. */
static void take_remote(weft_pool *p) {
    pool_blk *c = atomic_exchange_explicit(&p->remote, NULL, memory_order_acquire);
    while (c) {
        pool_blk *next = c->next;
        pool_batch *bt = (pool_batch *)(c + 1);
        for (int i = 0; i < bt->n; i++)
            stack_put(p, bt->blk[i]);
        stack_put(p, c);
        c = next;
    }
}

void *weft_pool_alloc(size_t len) {
    if (len > WEFT_POOL_MAX)
        return NULL;
    weft_pool *p = pool_self();
    if (p && p->n == 0 && atomic_load_explicit(&p->remote, memory_order_relaxed))
        take_remote(p);
    if (p && p->n > 0) {
        pool_blk *b = p->stack[--p->n];
        /* The next block to go out was last touched by the thread that
         * freed it, mostly on another core: start fetching it now (see
         * prefetch.h), its header's line and the payload's first. */
        if (p->n > 0) {
            pool_blk *next = p->stack[p->n - 1];
            weft_prefetch_w(next);
            weft_prefetch_w((const char *)(next + 1) + 48);
        }
        return b + 1;
    }
    pool_blk *b = malloc(sizeof *b + WEFT_POOL_MAX);
    if (!b)
        return NULL;
    b->pool = p;
    return b + 1;
}

void weft_pool_free(void *ptr) {
    if (!ptr)
        return;
    pool_blk *b = (pool_blk *)ptr - 1;
    weft_pool *p = b->pool;
    if (!p) { /* allocated while this thread had no pool (out of memory) */
        free(b);
        return;
    }
    if (p == tls_pool) {
        stack_put(p, b);
        return;
    }
    pool_blk *c = tls_batch;
    if (c && c->pool == p) {
        pool_batch *bt = (pool_batch *)(c + 1);
        bt->blk[bt->n++] = b;
        if (bt->n == BATCH) {
            batch_push(c);
            tls_batch = NULL;
        }
        return;
    }
    if (c)
        batch_push(c); /* another pool's: send it now */
    else {
        pthread_once(&pool_once, pool_key_init);
        (void)pthread_setspecific(batch_key, (void *)1); /* so that exit runs batch_release */
    }
    ((pool_batch *)(b + 1))->n = 0;
    tls_batch = b;
}

#endif /* POOL_OFF */
