/*
 * vmalloc_test.c — tests of the Lua VMs' allocator (bindings/vmalloc.c):
 * blocks hold what was written to them until freed, resizing keeps the
 * contents, slabs go back to malloc once empty (beyond what is kept), and
 * real LuaJIT VMs give back every block they took.
 *
 * One line per test; the last line is "N passed, N failed".
 */
#include "tally.h"
#include "vmalloc.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The allocator takes its slabs from posix_memalign: this one fails while
 * no_slabs is set (memory running out), else aligns what malloc gives. */
static int no_slabs;
int posix_memalign(void **out, size_t align, size_t size) {
    if (no_slabs)
        return ENOMEM;
    void *m = aligned_alloc(align, (size + align - 1) / align * align);
    if (!m)
        return ENOMEM;
    *out = m;
    return 0;
}


static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* Fills p with a pattern that depends on seed; checks it. */
static void fill(unsigned char *p, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed * 31 + i * 7);
}
static int check(const unsigned char *p, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed * 31 + i * 7))
            return 0;
    return 1;
}

static size_t held(const weft_vmalloc *a) {
    size_t h, m;
    weft_vmalloc_counts(a, &h, &m);
    return h;
}
static size_t made(const weft_vmalloc *a) {
    size_t h, m;
    weft_vmalloc_counts(a, &h, &m);
    return m;
}

#define SLOTS 4000

/* Random allocations, frees and resizes of 1..1500 bytes (slab and malloc
 * sizes, and moves between them): every live block keeps its pattern, is
 * 16-byte aligned, and destroy finds nothing left once all are freed. */
static void test_random(void) {
    weft_vmalloc *a = weft_vmalloc_new();
    static unsigned char *blk[SLOTS];
    static size_t size[SLOTS];
    static uint32_t seed[SLOTS];
    int bad = 0, misaligned = 0;
    for (int step = 0; step < 400000 && !bad; step++) {
        int i = (int)(rnd() % SLOTS);
        size_t n = 1 + rnd() % (rnd() % 4 == 0 ? 1500 : WEFT_VMALLOC_MAX_SMALL);
        if (!blk[i]) {
            blk[i] = weft_vmalloc_f(a, NULL, 0, n);
            size[i] = n;
            seed[i] = rnd();
            fill(blk[i], n, seed[i]);
        } else if (!check(blk[i], size[i], seed[i])) {
            bad = 1;
        } else if (rnd() % 2) {
            weft_vmalloc_f(a, blk[i], size[i], 0);
            blk[i] = NULL;
        } else {
            blk[i] = weft_vmalloc_f(a, blk[i], size[i], n);
            size_t keep = n < size[i] ? n : size[i];
            if (!check(blk[i], keep, seed[i]))
                bad = 1;
            size[i] = n;
            fill(blk[i], n, seed[i]);
        }
        if (blk[i] && ((uintptr_t)blk[i] & 15))
            misaligned++;
    }
    for (int i = 0; i < SLOTS; i++) {
        if (blk[i] && !check(blk[i], size[i], seed[i]))
            bad = 1;
        if (blk[i])
            weft_vmalloc_f(a, blk[i], size[i], 0);
        blk[i] = NULL;
    }
    size_t live = weft_vmalloc_destroy(a);
    result(!bad && !misaligned && live == 0, "random allocations keep their contents",
           "corrupted=%d misaligned=%d live at destroy=%zu", bad, misaligned, live);
}

/* A block resized within its class stays where it is; across classes, or
 * to and from malloc sizes, its contents move with it. */
static void test_resize(void) {
    weft_vmalloc *a = weft_vmalloc_new();
    unsigned char *p = weft_vmalloc_f(a, NULL, 0, 33);
    fill(p, 33, 1);
    unsigned char *q = weft_vmalloc_f(a, p, 33, 48);
    int same = q == p && check(q, 33, 1);
    unsigned char *r = weft_vmalloc_f(a, q, 48, 3000); /* to malloc */
    int grown = check(r, 33, 1);
    fill(r, 3000, 2);
    unsigned char *s = weft_vmalloc_f(a, r, 3000, 100); /* back to a slab */
    int shrunk = check(s, 100, 2);
    unsigned char *t = weft_vmalloc_f(a, s, 100, 17);
    int small = check(t, 17, 2);
    weft_vmalloc_f(a, t, 17, 0);
    size_t live = weft_vmalloc_destroy(a);
    result(same && grown && shrunk && small && live == 0, "resizing keeps contents",
           "same=%d grown=%d shrunk=%d small=%d live=%zu", same, grown, shrunk, small, live);
}

/* 200,000 blocks of 64 bytes take many slabs; freed, at most the kept
 * empty slabs remain (16), and they serve the next round without growth. */
static void test_slabs_return(void) {
    enum { N = 200000 };
    weft_vmalloc *a = weft_vmalloc_new();
    void **p = malloc(N * sizeof *p);
    for (int i = 0; i < N; i++)
        p[i] = weft_vmalloc_f(a, NULL, 0, 64);
    size_t peak = held(a);
    for (int i = 0; i < N; i++)
        weft_vmalloc_f(a, p[i], 64, 0);
    size_t after = held(a);
    for (int i = 0; i < 500; i++)
        p[i] = weft_vmalloc_f(a, NULL, 0, 200); /* another class reuses them */
    size_t reused = held(a);
    for (int i = 0; i < 500; i++)
        weft_vmalloc_f(a, p[i], 200, 0);
    free(p);
    size_t live = weft_vmalloc_destroy(a);
    result(peak >= N * 64 / (64 * 1024) && after <= 16 && reused == after && live == 0,
           "empty slabs go back to malloc", "peak=%zu after=%zu reused=%zu live=%zu", peak, after,
           reused, live);
}

/* A collector's cycle: the live part stays, as much again is allocated and
 * freed, again and again. After the first round the slabs come from the
 * empty ones kept (as many as are in use), not from malloc. */
static void test_cycle(void) {
    enum { N = 50000 };
    weft_vmalloc *a = weft_vmalloc_new();
    void **p = malloc(2 * N * sizeof *p);
    for (int i = 0; i < N; i++)
        p[i] = weft_vmalloc_f(a, NULL, 0, 96);
    size_t base = held(a), first = 0;
    for (int round = 0; round < 10; round++) {
        for (int i = N; i < 2 * N; i++)
            p[i] = weft_vmalloc_f(a, NULL, 0, 96);
        for (int i = N; i < 2 * N; i++)
            weft_vmalloc_f(a, p[i], 96, 0);
        if (round == 0)
            first = made(a);
    }
    size_t last = made(a);
    for (int i = 0; i < N; i++)
        weft_vmalloc_f(a, p[i], 96, 0);
    free(p);
    size_t live = weft_vmalloc_destroy(a);
    result(base > 16 && last == first && live == 0, "a collector's cycle reuses its slabs",
           "live part %zu slabs; from malloc after round 1: %zu, after round 10: %zu", base,
           first, last);
}

/* No block ends within 16 bytes of its slab's end: LuaJIT may read up to 3
 * bytes past a string. */
static void test_tail(void) {
    weft_vmalloc *a = weft_vmalloc_new();
    int bad = 0;
    for (size_t n = 16; n <= WEFT_VMALLOC_MAX_SMALL; n += 16) {
        for (int i = 0; i < 70000 / (int)n + 10; i++) {
            uintptr_t b = (uintptr_t)weft_vmalloc_f(a, NULL, 0, n);
            uintptr_t slab_end = (b & ~(uintptr_t)0xFFFF) + 0x10000;
            if (b + n + 16 > slab_end)
                bad++;
        }
    }
    weft_vmalloc_destroy(a);
    result(!bad, "blocks end before their slab's tail", "%d blocks too close", bad);
}

/* Shrinking never fails, even when no slab can be had: Lua assumes it
 * (LuaJIT's lj_tab_resize sets a table's smaller array size first and
 * frees the array with it later). A block that cannot move stays: in its
 * class, or, from malloc, as a block that later frees and resizes of slab
 * sizes recognise. Growing may fail, and leaves the block as it was. */
static void test_shrink_never_fails(void) {
    weft_vmalloc *a = weft_vmalloc_new();
    unsigned char *s = weft_vmalloc_f(a, NULL, 0, 500); /* a slab for class 32 */
    unsigned char *m1 = weft_vmalloc_f(a, NULL, 0, 2048);
    unsigned char *m2 = weft_vmalloc_f(a, NULL, 0, 520);
    unsigned char *m3 = weft_vmalloc_f(a, NULL, 0, 513);
    fill(s, 500, 1), fill(m1, 2048, 2), fill(m2, 520, 3), fill(m3, 513, 4);
    no_slabs = 1;
    int bad = 0;
    unsigned char *s2 = weft_vmalloc_f(a, s, 500, 100); /* to class 7: no slab */
    bad |= !s2 || !check(s2, 100, 1);
    unsigned char *n1 = weft_vmalloc_f(a, m1, 2048, 256);
    bad |= (!n1 || !check(n1, 256, 2)) << 1;
    unsigned char *n2 = weft_vmalloc_f(a, m2, 520, 512);
    bad |= (!n2 || !check(n2, 512, 3)) << 2;
    unsigned char *n3 = weft_vmalloc_f(a, m3, 513, 40);
    bad |= (!n3 || !check(n3, 40, 4)) << 3;
    unsigned char *g = weft_vmalloc_f(a, n3 ? n3 : m3, n3 ? 40 : 513, 60); /* grows: no slab */
    bad |= (g != NULL && g != n3) << 4;
    if (n1) { /* resized as a block of slab sizes, then of malloc sizes */
        n1 = weft_vmalloc_f(a, n1, 256, 300);
        bad |= (!n1 || !check(n1, 256, 2)) << 5;
        fill(n1, 300, 5);
        n1 = weft_vmalloc_f(a, n1, 300, 4000);
        bad |= (!n1 || !check(n1, 300, 5)) << 6;
    }
    no_slabs = 0;
    if (s2)
        weft_vmalloc_f(a, s2, 100, 0);
    if (n1)
        weft_vmalloc_f(a, n1, 4000, 0);
    if (n2)
        weft_vmalloc_f(a, n2, 512, 0);
    if (g || n3)
        weft_vmalloc_f(a, g ? g : n3, g ? 60 : 40, 0);
    if (!s2)
        weft_vmalloc_f(a, s, 500, 0);
    if (!n2)
        weft_vmalloc_f(a, m2, 520, 0);
    if (!n3)
        weft_vmalloc_f(a, m3, 513, 0);
    unsigned char *t = weft_vmalloc_f(a, NULL, 0, 64); /* slabs still work */
    bad |= (!t) << 7;
    weft_vmalloc_f(a, t, 64, 0);
    size_t live = weft_vmalloc_destroy(a);
    result(!bad && live == 0, "shrinking never fails", "bad=0x%x live=%zu", bad, live);
}

/* What that is for: a table's array part shrinks (a rehash, from malloc
 * size to slab size) while no slab can be had. LuaJIT sets the new array
 * size first; had the shrink failed, it would free the old malloc block as
 * a block of slab size later. Here the rehash succeeds and the collector
 * frees the table. */
static void test_vm_shrink_without_slabs(void) {
    enum { MAXFILL = 40000 };
    lua_State *L = weft_vm_new();
    luaL_openlibs(L);
    int rc = luaL_dostring(L, "collectgarbage('stop') t = {} for i = 1, 128 do t[i] = i end "
                              "for k = 1, 128 do t['k' .. k] = k end "
                              "for i = 5, 128 do t[i] = nil end "
                              "function go() t[1000] = 1 return t[1] + t[4] + t.k128 end");
    void *ud;
    lua_Alloc f = lua_getallocf(L, &ud);
    void **fill_p = malloc(MAXFILL * sizeof *fill_p);
    size_t *fill_n = malloc(MAXFILL * sizeof *fill_n);
    int n = 0;
    no_slabs = 1;
    for (size_t sz = 16; sz <= 96; sz += 16) /* the classes of the new array */
        while (n < MAXFILL && (fill_p[n] = f(ud, NULL, 0, sz)))
            fill_n[n++] = sz;
    lua_getglobal(L, "go");
    int rc2 = lua_pcall(L, 0, 1, 0); /* the rehash: no allocation but its own */
    int sum = rc2 == 0 ? (int)lua_tointeger(L, -1) : -1;
    char msg[128];
    snprintf(msg, sizeof msg, "%s", rc2 ? lua_tostring(L, -1) : "");
    lua_settop(L, 0);
    no_slabs = 0;
    while (n > 0) {
        n--;
        f(ud, fill_p[n], fill_n[n], 0);
    }
    free(fill_p);
    free(fill_n);
    int rc3 = luaL_dostring(L, "t = nil collectgarbage('restart') collectgarbage()");
    size_t live = weft_vm_close(L);
    result(rc == 0 && rc2 == 0 && sum == 133 && rc3 == 0 && live == 0,
           "a table's array shrinks while slabs run out", "rc=%d rc2=%d (%s) sum=%d rc3=%d live=%zu",
           rc, rc2, msg, sum, rc3, live);
}

/* destroy counts blocks never freed (and frees their slabs). */
static void test_destroy_counts(void) {
    weft_vmalloc *a = weft_vmalloc_new();
    for (int i = 0; i < 10; i++)
        weft_vmalloc_f(a, NULL, 0, 24);
    void *big = weft_vmalloc_f(a, NULL, 0, 4096);
    weft_vmalloc_f(a, big, 4096, 0);
    size_t live = weft_vmalloc_destroy(a);
    result(live == 10, "destroy counts what is left", "live=%zu", live);
}

static const char *const SCRIPT =
    "local ffi = require 'ffi'\n"
    "local keep, n = {}, 0\n"
    "for i = 1, 200000 do\n"
    "  local t = { id = i, name = 'item' .. i % 1000, pos = { i, i * 2, i * 3 }, ok = true }\n"
    "  local f = function() return t end\n"
    "  local c = ffi.new('double[?]', i % 40 + 1)\n"
    "  c[0] = i\n"
    "  if i % 100 == 0 then keep[#keep + 1] = { t, f, c, string.rep('x', i % 700) } end\n"
    "  if #keep > 500 then keep = {} end\n"
    "  local co = coroutine.wrap(function(a) coroutine.yield(a + 1) end)\n"
    "  n = n + co(i) - i\n"
    "end\n"
    "local s = {}\n"
    "for i = 1, 3000 do s[i] = ('%d:%s'):format(i, ('y'):rep(i % 300)) end\n"
    "table.sort(s)\n"
    "collectgarbage()\n"
    "return n, #s, collectgarbage('count')\n";

/* A real VM on this allocator runs code that allocates every kind of
 * object LuaJIT has (JIT-compiled too) and, closed, gives back every block:
 * the sizes LuaJIT passes when freeing match what it asked for. */
static void test_vm(void) {
    lua_State *L = weft_vm_new();
    if (!L) {
        result(0, "a VM gives back every block", "no VM");
        return;
    }
    luaL_openlibs(L);
    int rc = luaL_loadstring(L, SCRIPT) || lua_pcall(L, 0, 3, 0);
    int ok = rc == 0 && lua_tointeger(L, -3) == 200000 && lua_tointeger(L, -2) == 3000;
    const char *err = rc ? lua_tostring(L, -1) : "";
    char msg[256];
    snprintf(msg, sizeof msg, "%s", err ? err : "?");
    size_t live = weft_vm_close(L);
    result(ok && live == 0, "a VM gives back every block", "rc=%d (%s) live at close=%zu", rc,
           msg, live);
}

/* An error outside any protected call reaches the panic function, as with
 * luaL_newstate (which then prints it and lets the process abort). Here it
 * is only checked that a VM made here has one. */
static void test_panic_set(void) {
    lua_State *L = weft_vm_new();
    lua_CFunction old = lua_atpanic(L, NULL);
    result(old != NULL, "a new VM has a panic function", "none");
    weft_vm_close(L);
}

int main(void) {
    test_random();
    test_resize();
    test_slabs_return();
    test_cycle();
    test_tail();
    test_destroy_counts();
    test_shrink_never_fails();
    test_vm();
    test_vm_shrink_without_slabs();
    test_panic_set();
    return tally_end();
}
