/*
 * pool.c — recycled blocks for the bytes of small values (weft_pool_alloc).
 *
 * A value's buffer is mostly allocated by one thread (the sender's processor)
 * and freed by another (the receiver's). glibc's malloc serves that pattern
 * badly: the freeing thread's cache fills and the rest goes back to the
 * allocating thread's arena under its lock, while the allocating thread
 * finds its own cache empty every time. Here each thread that allocates has
 * a pool; a block records its pool; a block freed by its pool's thread goes
 * on the pool's local list, one freed by any other thread on the pool's
 * remote list; allocating pops the local list and, when that is empty,
 * takes the whole remote list at once.
 *
 * Invariants:
 *  - `local` is touched only by the thread that owns the pool. `remote` is
 *    a lock-free stack: any thread pushes one block (CAS, release); only the
 *    owner takes, and always the whole stack (exchange, acquire), so no ABA.
 *  - A pool is never freed (blocks of it may be in flight after its thread
 *    ends). When its thread exits, a TLS destructor gives it up; the next
 *    thread that needs a pool adopts it with its lists. So pools number at
 *    most the threads alive at once.
 *  - Blocks its own thread frees go back to malloc once the pool holds
 *    about POOL_KEEP (blocks taken from the remote list are not counted:
 *    counting would touch each, and those are bounded by what was in
 *    flight anyway).
 *  - Built with AddressSanitizer, blocks come from malloc and go back to it
 *    at once, so that use-after-free stays detectable.
 *
 * Lock order: pools_lock (adoption) is a leaf; nothing else takes a lock.
 */
#include "weft.h"

#include "lock.h"

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
    struct pool_blk *next; /* while free */
} pool_blk;

struct weft_pool {
    pool_blk *local; /* owner only */
    int nlocal;      /* owner only: about how many blocks `local` holds */
    _Atomic(pool_blk *) remote;
    atomic_int owned;
    weft_pool *all; /* pools_lock: the list of every pool */
};

_Static_assert(sizeof(pool_blk) == 16, "pool block header must keep 16-byte alignment");

static weft_mutex pools_lock = WEFT_MUTEX_INIT;
static weft_pool *pools;
static _Thread_local weft_pool *tls_pool;
static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

/* At thread exit: the pool is up for adoption; frees this thread still
 * makes (later destructors) go to its remote list like anyone else's. */
static void pool_release(void *arg) {
    tls_pool = NULL;
    atomic_store_explicit(&((weft_pool *)arg)->owned, 0, memory_order_release);
}

static void pool_key_init(void) {
    (void)pthread_key_create(&pool_key, pool_release);
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

void *weft_pool_alloc(size_t len) {
    if (len > WEFT_POOL_MAX)
        return NULL;
    weft_pool *p = pool_self();
    pool_blk *b;
    if (p && !p->local && atomic_load_explicit(&p->remote, memory_order_relaxed))
        p->local = atomic_exchange_explicit(&p->remote, NULL, memory_order_acquire);
    if (p && (b = p->local)) {
        p->local = b->next;
        if (p->nlocal > 0)
            p->nlocal--;
        return b + 1;
    }
    b = malloc(sizeof *b + WEFT_POOL_MAX);
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
        if (p->nlocal >= POOL_KEEP) {
            free(b);
            return;
        }
        b->next = p->local;
        p->local = b;
        p->nlocal++;
        return;
    }
    pool_blk *head = atomic_load_explicit(&p->remote, memory_order_relaxed);
    do
        b->next = head;
    while (!atomic_compare_exchange_weak_explicit(&p->remote, &head, b, memory_order_release,
                                                  memory_order_relaxed));
}

#endif /* POOL_OFF */
