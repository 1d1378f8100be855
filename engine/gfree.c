/*
 * gfree.c — free goroutine structs and free native stacks, for reuse.
 *
 * Both wait in arrays of pointers, last in first out, one per processor
 * (owner only) and one global (sched.lock), so that taking one reads
 * nothing of the others: a chain through the structs would read each of
 * them, one cache miss after the other, and they were mostly last written
 * on another core. A processor's array that is empty takes half a
 * processor's worth from the global one; a full one gives its older half
 * to it.
 *
 * Structs and stacks are kept apart because they travel differently. A
 * goroutine is made by one processor and often run (and ended) by another,
 * a thief: its struct must go from maker to runner and back, but its stack
 * need not, and the stack a processor ran on last is still in its cache.
 *  - Making a goroutine takes a stack from the maker's cold cache (so that
 *    an out-of-memory error is the maker's to report) and writes nothing on
 *    it: proc.c lays out the first frame when the goroutine starts.
 *  - Starting it exchanges that stack for one from its processor's hot
 *    cache, if there is one (weft_gfree_stack_start). The stack it came
 *    with goes, untouched, to the cold cache, and from there through the
 *    global array to makers.
 *  - Ending it puts its stack in the hot cache of the processor it ended on.
 * So a run of short goroutines runs on one stack per processor, and a
 * stolen goroutine moves none of its stack's lines between cores (before,
 * its first frame, the switch onto its stack and each deeper frame were
 * line transfers: bench/bounds.md, spawn).
 *
 * Invariants:
 *  - p->gfree, p->shot and p->scold (with their counts) are touched by p's
 *    thread only, or at teardown, when no thread runs.
 *  - weft_S.gfree and weft_S.sfree change under sched.lock only; their
 *    counts are atomics so that an empty one can be seen without the lock
 *    (a stale count only costs a lock round trip).
 *  - A struct on a free list is IDLE and has no stack (nat == NULL). Every
 *    struct ever made is in allgs until teardown, free or not, and was cut
 *    from one of weft_S.gslabs (blocks and allgs change under alllock).
 *  - A stack is in exactly one place: a live goroutine's nat, one cache, or
 *    nowhere (unmapped). The global array holds at most WEFT_SFREE_GLOBAL
 *    stacks; a processor's half that does not fit is unmapped.
 *
 * Lock order: sched.lock and alllock are leaves, never held together here.
 */
#include "core.h"
#include "prefetch.h"

#include <stdlib.h>
#include <string.h>


enum {
    GFREE_HALF = WEFT_GFREE_LOCAL / 2,
    SCOLD_HALF = WEFT_SCOLD_LOCAL / 2,
    SHOT_HALF = WEFT_SHOT_LOCAL / 2,
};

_Static_assert(sizeof(weft_g *) == sizeof(void *) && sizeof(weft_gnative *) == sizeof(void *),
               "global_take and global_give copy pointers of either kind as bytes");

/* The two global arrays. */
enum { POOL_STRUCTS, POOL_STACKS };

/* a, an array of *cap elements of elem bytes, reallocated to twice as
 * many (first, if none): the new array, or NULL with a unchanged. */
static void *grow(void *a, size_t *cap, size_t first, size_t elem) {
    size_t n = *cap ? *cap * 2 : first;
    void *b = realloc(a, n * elem);
    if (b)
        *cap = n;
    return b;
}

/* Room for n more in the global array of structs (sched.lock held). */
static bool gfree_room(int n) {
    size_t need = (size_t)atomic_load_explicit(&weft_S.ngfree, memory_order_relaxed) + (size_t)n;
    while (weft_S.capgfree < need) {
        weft_g **a = grow(weft_S.gfree, &weft_S.capgfree, 256, sizeof *a);
        if (!a)
            return false;
        weft_S.gfree = a;
    }
    return true;
}

/* Moves up to `want` pointers off the top of a global array into dst (an
 * array of weft_g * or weft_gnative *, as the pool); returns how many. */
static int global_take(void *dst, int pool, int want) {
    weft_mutex_lock(&weft_S.lock);
    atomic_int *np = pool == POOL_STRUCTS ? &weft_S.ngfree : &weft_S.nsfree;
    const char *base = pool == POOL_STRUCTS ? (const char *)weft_S.gfree : (const char *)weft_S.sfree;
    int n = atomic_load_explicit(np, memory_order_relaxed);
    int k = n < want ? n : want;
    memcpy(dst, base + (size_t)(n - k) * sizeof(void *), (size_t)k * sizeof(void *));
    atomic_store_explicit(np, n - k, memory_order_relaxed);
    weft_mutex_unlock(&weft_S.lock);
    return k;
}

/* Moves k pointers from src onto the top of a global array; returns how
 * many it took: the structs' array grows to take all k (none if it cannot
 * grow), the stacks' takes as many as fit below WEFT_SFREE_GLOBAL. */
static int global_give(const void *src, int pool, int k) {
    weft_mutex_lock(&weft_S.lock);
    atomic_int *np = pool == POOL_STRUCTS ? &weft_S.ngfree : &weft_S.nsfree;
    int n = atomic_load_explicit(np, memory_order_relaxed);
    int fit = pool == POOL_STRUCTS ? (gfree_room(k) ? k : 0)
                                   : (WEFT_SFREE_GLOBAL - n < k ? WEFT_SFREE_GLOBAL - n : k);
    char *base = pool == POOL_STRUCTS ? (char *)weft_S.gfree : (char *)weft_S.sfree;
    if (fit > 0) /* (the structs' array may not exist yet) */
        memcpy(base + (size_t)n * sizeof(void *), src, (size_t)fit * sizeof(void *));
    atomic_store_explicit(np, n + fit, memory_order_relaxed);
    weft_mutex_unlock(&weft_S.lock);
    return fit;
}

/* ---- structs ---------------------------------------------------------------- */

/* Structs are cut from blocks aligned to a cache line; the struct's own
 * alignment (core.h) makes its size whole lines, so each starts on one.
 * They are never freed one by one: a free one waits for reuse, and
 * teardown frees the blocks. */
#define G_SIZE sizeof(weft_g)
_Static_assert(sizeof(weft_g) % WEFT_CACHE_LINE == 0, "structs cut from a block start on a line");
enum { G_SLAB = 64 }; /* structs per block */

/* Room for one more struct in allgs and in the newest block (alllock held). */
static bool g_room(void) {
    weft_g **gs = weft_S.allgs;
    if (weft_S.nallgs == weft_S.capallgs && !(gs = grow(gs, &weft_S.capallgs, 256, sizeof *gs)))
        return false;
    weft_S.allgs = gs;
    if (weft_S.gslableft > 0)
        return true;
    char **bs = weft_S.gslabs;
    if (weft_S.ngslabs == weft_S.capgslabs && !(bs = grow(bs, &weft_S.capgslabs, 16, sizeof *bs)))
        return false;
    weft_S.gslabs = bs;
    char *b = aligned_alloc(WEFT_CACHE_LINE, G_SLAB * G_SIZE);
    if (!b)
        return false;
    memset(b, 0, G_SLAB * G_SIZE);
    weft_S.gslabs[weft_S.ngslabs++] = b;
    weft_S.gslabnext = b;
    weft_S.gslableft = G_SLAB;
    return true;
}

/* A new struct, entered in allgs. */
static weft_g *g_alloc(void) {
    weft_g *g = NULL;
    weft_mutex_lock(&weft_S.alllock);
    if (g_room()) {
        g = (weft_g *)(void *)weft_S.gslabnext;
        weft_S.gslabnext += G_SIZE;
        weft_S.gslableft--;
        weft_S.allgs[weft_S.nallgs++] = g;
        atomic_init(&g->state, WEFT_G_IDLE);
    }
    weft_mutex_unlock(&weft_S.alllock);
    return g;
}

/* A free struct: p's, else half a processor's worth from the global array,
 * else a new one. */
weft_g *weft_gfree_get(weft_proc *p) {
    bool global = atomic_load_explicit(&weft_S.ngfree, memory_order_relaxed) > 0;
    if (p && p->ngfree == 0 && global)
        p->ngfree = global_take(p->gfree, POOL_STRUCTS, GFREE_HALF);
    if (p && p->ngfree > 0) {
        weft_g *g = p->gfree[--p->ngfree];
        if (p->ngfree > 0)
            weft_prefetch_w(p->gfree[p->ngfree - 1]);
        return g;
    }
    weft_g *g;
    if (!p && global && global_take(&g, POOL_STRUCTS, 1))
        return g;
    return g_alloc();
}

/* The struct of a goroutine that ended on p (its stack already given up). */
void weft_gfree_put(weft_proc *p, weft_g *g) {
    atomic_store_explicit(&g->state, WEFT_G_IDLE, memory_order_relaxed);
    if (p->ngfree == WEFT_GFREE_LOCAL) {
        /* Without room the older half stays in allgs only (freed at teardown). */
        global_give(p->gfree, POOL_STRUCTS, GFREE_HALF);
        memmove(p->gfree, p->gfree + GFREE_HALF, GFREE_HALF * sizeof *p->gfree);
        p->ngfree = GFREE_HALF;
    }
    p->gfree[p->ngfree++] = g;
}

/* ---- stacks ----------------------------------------------------------------- */

void weft_gfree_stack_destroy(weft_gnative *n) {
    weft_ctx_destroy(&n->ctx);
    weft_stack_free(&n->stack);
    free(n);
}

static weft_gnative *stack_alloc(void) {
    weft_gnative *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    if (weft_stack_alloc(&n->stack, weft_S.stack_size) != 0) {
        free(n);
        return NULL;
    }
    n->ctx.stack_lo = n->stack.lo;
    n->ctx.stack_size = n->stack.size;
    return n;
}

/* Gives the older half of p's cold stacks to the global array, which
 * unmaps what it has no room for. */
static void cold_give_half(weft_proc *p) {
    weft_gnative **a = p->scold;
    int fit = global_give(a, POOL_STACKS, SCOLD_HALF);
    for (int i = fit; i < SCOLD_HALF; i++)
        weft_gfree_stack_destroy(a[i]);
    memmove(a, a + SCOLD_HALF, SCOLD_HALF * sizeof *a);
    p->nscold = SCOLD_HALF;
}

static void cold_push(weft_proc *p, weft_gnative *n) {
    if (p->nscold == WEFT_SCOLD_LOCAL)
        cold_give_half(p);
    p->scold[p->nscold++] = n;
}

/* A stack for a goroutine being made on p: p's cold ones, else half a
 * processor's worth from the global array, else p's hot ones, else a new
 * one. */
weft_gnative *weft_gfree_stack_get(weft_proc *p) {
    bool global = atomic_load_explicit(&weft_S.nsfree, memory_order_relaxed) > 0;
    if (p && p->nscold == 0 && global)
        p->nscold = global_take(p->scold, POOL_STACKS, SCOLD_HALF);
    if (p && p->nscold > 0)
        return p->scold[--p->nscold];
    if (p && p->nshot > 0)
        return p->shot[--p->nshot];
    weft_gnative *n;
    if (!p && global && global_take(&n, POOL_STACKS, 1))
        return n;
    return stack_alloc();
}

/* g starts on p: on p's most recently used stack, if p has a hot one. */
void weft_gfree_stack_start(weft_proc *p, weft_g *g) {
    if (p->nshot == 0)
        return;
    cold_push(p, g->nat);
    g->nat = p->shot[--p->nshot];
}

/* The stack of a goroutine that ended on p; a full hot array moves its
 * older half to the cold one. */
void weft_gfree_stack_put(weft_proc *p, weft_gnative *n) {
    if (p->nshot == WEFT_SHOT_LOCAL) {
        for (int i = 0; i < SHOT_HALF; i++)
            cold_push(p, p->shot[i]);
        memmove(p->shot, p->shot + SHOT_HALF, SHOT_HALF * sizeof *p->shot);
        p->nshot = SHOT_HALF;
    }
    p->shot[p->nshot++] = n;
}

/* ---- teardown ------------------------------------------------------------- */

void weft_gfree_proc_teardown(weft_proc *p) {
    for (int i = 0; i < p->nshot; i++)
        weft_gfree_stack_destroy(p->shot[i]);
    for (int i = 0; i < p->nscold; i++)
        weft_gfree_stack_destroy(p->scold[i]);
    p->nshot = p->nscold = p->ngfree = 0;
}

void weft_gfree_teardown(void) {
    for (size_t i = 0; i < weft_S.ngslabs; i++)
        free(weft_S.gslabs[i]);
    free(weft_S.gslabs);
    weft_S.gslabs = NULL;
    weft_S.ngslabs = weft_S.capgslabs = 0;
    weft_S.gslabnext = NULL;
    weft_S.gslableft = 0;
    int n = atomic_load(&weft_S.nsfree);
    for (int i = 0; i < n; i++)
        weft_gfree_stack_destroy(weft_S.sfree[i]);
    atomic_store(&weft_S.nsfree, 0);
    free(weft_S.gfree);
    weft_S.gfree = NULL;
    atomic_store(&weft_S.ngfree, 0);
    weft_S.capgfree = 0;
}
