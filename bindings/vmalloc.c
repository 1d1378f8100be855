/*
 * vmalloc.c — the allocator of the Lua VMs that weft makes.
 *
 * Why. Lua code that passes messages builds and drops small tables and
 * strings all the time, and the collector frees them in runs. LuaJIT's own
 * allocator (dlmalloc) merges each freed block with its free neighbours and
 * splits blocks again to allocate: building the benchmark's message
 * {id, name, pos = {x, y, z}, ok} took about 176 ns with it and 120 ns with
 * free lists per size class, in one VM. So the VMs that weft creates get
 * this allocator; a VM made by someone else (the luajit that required weft)
 * keeps its own.
 *
 * Layout. Blocks of up to WEFT_VMALLOC_MAX_SMALL bytes are rounded up to a
 * multiple of 16 (the size class) and come from slabs: SLAB_SIZE bytes
 * aligned to SLAB_SIZE, a header, then blocks of one class. A block's slab
 * is its address with the low bits cleared. Larger blocks come from malloc.
 *
 *  - Each slab has its own list of freed blocks, the start of the blocks
 *    never handed out (carved lazily), and a count of live blocks.
 *  - Each class has a list of its slabs that have room; allocation takes
 *    from the first, a slab that fills leaves the list, and one that gets a
 *    block back joins it at the front.
 *  - A slab whose last block comes back leaves its class for a list of
 *    empty slabs, which any class reuses before asking malloc for more. The
 *    collector frees a cycle's garbage in one sweep and the next cycle
 *    allocates as much again: returning those slabs to malloc (which maps
 *    slabs of this size and alignment with mmap) cost more than the old
 *    allocator saved. Empty slabs beyond KEEP_EMPTY and beyond as many as
 *    are in use go back to malloc, so a heap that shrinks gives its memory
 *    back, the way LuaJIT's collector lets a heap grow to twice its live
 *    size before collecting.
 *  - Slabs end TAIL bytes early: LuaJIT compares strings 4 bytes at a time
 *    and may read up to 3 bytes past a string's end.
 *
 * Sizes. Lua passes a block's size when it frees or resizes it. The slab
 * header gives the class, so the size only decides between slab and malloc
 * (and LuaJIT's own accounting of its heap depends on those sizes being
 * exact).
 *
 * Shrinking never fails (Lua assumes it cannot: lj_tab_resize sets a
 * table's new array size before it shrinks the array, and frees it later
 * with that size). A block that cannot move to a smaller class stays where
 * it is. A malloc block shrunk to a slab size when no slab block can be had
 * stays in malloc as a stray: linked through its bytes past
 * WEFT_VMALLOC_MAX_SMALL (Lua uses no more than that of it now), and looked
 * for there, while there are any, before a block of a slab size is taken
 * for a slab's.
 *
 * Threads: none of its own. A VM is used by one thread at a time (its
 * processor's), and so is its allocator; there are no locks.
 */
#include "vmalloc.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLAB_SIZE ((size_t)64 * 1024)
#define TAIL 16
#define KEEP_EMPTY 16
#define NCLASS (WEFT_VMALLOC_MAX_SMALL / 16)

typedef struct slab slab;
struct slab {
    slab *prev, *next;       /* the class's list of slabs with room, or the empty list */
    slab *allprev, *allnext; /* every slab, for destroy */
    void *free;              /* freed blocks, linked through their first word */
    char *bump;              /* blocks from here on were never handed out */
    char *limit;             /* no block may end past this */
    uint32_t live;           /* blocks handed out */
    uint16_t cls;            /* block size / 16 */
    bool listed;             /* on the class's list */
};

/* Blocks start after the header, 16-byte aligned. */
#define HEADER_SIZE ((sizeof(slab) + 15) & ~(size_t)15)

struct weft_vmalloc {
    char *stray;             /* malloc blocks of slab sizes (see Shrinking), or NULL */
    slab *avail[NCLASS + 1]; /* by class: slabs with room */
    slab *empty;             /* slabs with no live block, linked by next */
    slab *all;
    size_t nslabs, nempty;   /* nslabs counts the empty ones too */
    size_t nmade;            /* slabs taken from malloc, ever */
};

static inline unsigned size_class(size_t n) {
    return (unsigned)((n + 15) >> 4);
}

static inline slab *slab_of(void *p) {
    return (slab *)((uintptr_t)p & ~(uintptr_t)(SLAB_SIZE - 1));
}

static void list_push(weft_vmalloc *a, slab *s) {
    slab **head = &a->avail[s->cls];
    s->prev = NULL;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    *head = s;
    s->listed = true;
}

static void list_remove(weft_vmalloc *a, slab *s) {
    if (s->prev)
        s->prev->next = s->next;
    else
        a->avail[s->cls] = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    s->listed = false;
}

static void slab_init(weft_vmalloc *a, slab *s, unsigned cls) {
    s->free = NULL;
    s->live = 0;
    s->cls = (uint16_t)cls;
    s->bump = (char *)s + HEADER_SIZE;
    s->limit = (char *)s + SLAB_SIZE - TAIL;
    list_push(a, s);
}

static slab *slab_new(weft_vmalloc *a, unsigned cls) {
    slab *s = a->empty;
    if (s) {
        a->empty = s->next;
        a->nempty--;
        slab_init(a, s, cls);
        return s;
    }
    void *mem;
    if (posix_memalign(&mem, SLAB_SIZE, SLAB_SIZE) != 0)
        return NULL;
    s = mem;
    memset(s, 0, sizeof *s);
    s->allnext = a->all;
    if (a->all)
        a->all->allprev = s;
    a->all = s;
    a->nslabs++;
    a->nmade++;
    slab_init(a, s, cls);
    return s;
}

/* s is on no list but the list of all slabs. */
static void slab_free(weft_vmalloc *a, slab *s) {
    if (s->allprev)
        s->allprev->allnext = s->allnext;
    else
        a->all = s->allnext;
    if (s->allnext)
        s->allnext->allprev = s->allprev;
    a->nslabs--;
    free(s);
}

static void *small_alloc(weft_vmalloc *a, unsigned cls) {
    slab *s = a->avail[cls];
    if (!s && !(s = slab_new(a, cls)))
        return NULL;
    size_t size = (size_t)cls << 4;
    void *b = s->free;
    if (b) {
        s->free = *(void **)b;
    } else {
        b = s->bump;
        s->bump += size;
    }
    s->live++;
    if (!s->free && s->bump + size > s->limit)
        list_remove(a, s); /* full */
    return b;
}

static void small_free(weft_vmalloc *a, void *p) {
    slab *s = slab_of(p);
    *(void **)p = s->free;
    s->free = p;
    if (--s->live == 0) {
        if (s->listed)
            list_remove(a, s);
        s->next = a->empty;
        a->empty = s;
        a->nempty++;
        /* Keep at most max(KEEP_EMPTY, slabs in use) empty slabs. */
        while (a->nempty > KEEP_EMPTY && a->nempty > a->nslabs - a->nempty) {
            slab *e = a->empty;
            a->empty = e->next;
            a->nempty--;
            slab_free(a, e);
        }
    } else if (!s->listed) {
        list_push(a, s);
    }
}

/* ---- strays: malloc blocks of slab sizes ---------------------------------- */

#define STRAY_LINK WEFT_VMALLOC_MAX_SMALL /* offset of a stray's link */
#define STRAY_SIZE (STRAY_LINK + sizeof(char *))

static char *stray_next(const char *b) {
    char *n;
    memcpy(&n, b + STRAY_LINK, sizeof n);
    return n;
}

static void stray_set_next(char *b, char *n) {
    memcpy(b + STRAY_LINK, &n, sizeof n);
}

static void stray_push(weft_vmalloc *a, char *b) {
    stray_set_next(b, a->stray);
    a->stray = b;
}

/* Takes p off the list of strays; false if it is not on it. */
static bool stray_take(weft_vmalloc *a, void *p) {
    char *prev = NULL;
    for (char *b = a->stray; b; prev = b, b = stray_next(b)) {
        if (b == p) {
            if (prev)
                stray_set_next(prev, stray_next(b));
            else
                a->stray = stray_next(b);
            return true;
        }
    }
    return false;
}

/* p, a malloc block of osize > WEFT_VMALLOC_MAX_SMALL bytes, made a stray
 * (it now holds at most WEFT_VMALLOC_MAX_SMALL bytes); NULL if it cannot
 * hold the link. */
static void *stray_keep(weft_vmalloc *a, void *p, size_t osize) {
    char *b = p;
    if (osize < STRAY_SIZE && !(b = realloc(p, STRAY_SIZE)))
        return NULL;
    stray_push(a, b);
    return b;
}

/* Frees or resizes p (osize <= WEFT_VMALLOC_MAX_SMALL) if it is a stray. */
static bool stray_resize(weft_vmalloc *a, void *p, size_t nsize, void **out) {
    if (!stray_take(a, p))
        return false;
    if (nsize == 0) {
        free(p);
        *out = NULL;
    } else if (nsize <= WEFT_VMALLOC_MAX_SMALL) {
        stray_push(a, p); /* it has the room */
        *out = p;
    } else {
        *out = realloc(p, nsize); /* a malloc block again */
        if (!*out)
            stray_push(a, p); /* could not grow: unchanged */
    }
    return true;
}

void *weft_vmalloc_f(void *ud, void *p, size_t osize, size_t nsize) {
    weft_vmalloc *a = ud;
    void *r;
    if (p && osize <= WEFT_VMALLOC_MAX_SMALL && a->stray && stray_resize(a, p, nsize, &r))
        return r;
    if (nsize == 0) {
        if (p) {
            if (osize <= WEFT_VMALLOC_MAX_SMALL)
                small_free(a, p);
            else
                free(p);
        }
        return NULL;
    }
    if (!p)
        return nsize <= WEFT_VMALLOC_MAX_SMALL ? small_alloc(a, size_class(nsize)) : malloc(nsize);
    if (osize <= WEFT_VMALLOC_MAX_SMALL) {
        if (nsize <= WEFT_VMALLOC_MAX_SMALL && size_class(nsize) == slab_of(p)->cls)
            return p;
    } else if (nsize > WEFT_VMALLOC_MAX_SMALL) {
        return realloc(p, nsize);
    }
    /* Between classes, or between a slab and malloc. A failure to grow is
     * Lua's memory error; a shrink keeps the block (see Shrinking). */
    void *q = nsize <= WEFT_VMALLOC_MAX_SMALL ? small_alloc(a, size_class(nsize)) : malloc(nsize);
    if (!q) {
        if (nsize > osize)
            return NULL;
        return osize <= WEFT_VMALLOC_MAX_SMALL ? p : stray_keep(a, p, osize);
    }
    memcpy(q, p, osize < nsize ? osize : nsize);
    if (osize <= WEFT_VMALLOC_MAX_SMALL)
        small_free(a, p);
    else
        free(p);
    return q;
}

weft_vmalloc *weft_vmalloc_new(void) {
    return calloc(1, sizeof(weft_vmalloc));
}

size_t weft_vmalloc_destroy(weft_vmalloc *a) {
    if (!a)
        return 0;
    size_t live = 0;
    while (a->all) {
        live += a->all->live;
        slab_free(a, a->all); /* the class and empty lists go with a */
    }
    free(a);
    return live;
}

void weft_vmalloc_counts(const weft_vmalloc *a, size_t *held, size_t *made) {
    *held = a->nslabs;
    *made = a->nmade;
}

/* What luaL_newstate's VMs do on an error outside any protected call. */
static int vm_panic(lua_State *L) {
    const char *s = lua_tostring(L, -1);
    fprintf(stderr, "PANIC: unprotected error in call to Lua API (%s)\n", s ? s : "?");
    fflush(stderr);
    return 0;
}

lua_State *weft_vm_new(void) {
    weft_vmalloc *a = weft_vmalloc_new();
    if (!a)
        return NULL;
    lua_State *L = lua_newstate(weft_vmalloc_f, a);
    if (!L) {
        weft_vmalloc_destroy(a);
        return NULL;
    }
    lua_atpanic(L, vm_panic);
    return L;
}

size_t weft_vm_close(lua_State *L) {
    void *ud = NULL;
    lua_Alloc f = lua_getallocf(L, &ud);
    lua_close(L);
    return f == weft_vmalloc_f ? weft_vmalloc_destroy(ud) : 0;
}
