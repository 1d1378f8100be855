/*
 * stack.c — mapping goroutine stacks with a guard page (see stack.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "sanitizer.h"
#include "stack.h"

#include <sys/mman.h>
#include <unistd.h>

#ifdef WEFT_ASAN
#include <sanitizer/asan_interface.h>
#endif

static size_t page_size(void) {
    long v = sysconf(_SC_PAGESIZE);
    return v > 0 ? (size_t)v : 4096;
}

size_t weft_stack_round(size_t size) {
    size_t ps = page_size();
    if (size < 16 * 1024)
        size = 16 * 1024;
    return (size + ps - 1) & ~(ps - 1);
}

int weft_stack_alloc(weft_stack *s, size_t size) {
    size_t ps = page_size();
    size = weft_stack_round(size);
    int flags = MAP_PRIVATE | MAP_ANONYMOUS;
#ifdef MAP_NORESERVE
    flags |= MAP_NORESERVE;
#endif
#ifdef MAP_STACK
    flags |= MAP_STACK;
#endif
    void *p = mmap(NULL, size + ps, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    if (mprotect(p, ps, PROT_NONE) != 0) {
        munmap(p, size + ps);
        return -1;
    }
    s->base = p;
    s->lo = (char *)p + ps;
    s->size = size;
    return 0;
}

void weft_stack_free(weft_stack *s) {
    if (s->base) {
#ifdef WEFT_ASAN
        /* Frames left poisoned on this stack (use-after-scope redzones of a
         * goroutine that finished) would outlive the mapping, and the next
         * mmap that reuses these addresses (a LuaJIT arena, say) would trip
         * over them. */
        __asan_unpoison_memory_region(s->lo, s->size);
#endif
        munmap(s->base, s->size + page_size());
    }
    s->base = s->lo = NULL;
    s->size = 0;
}
