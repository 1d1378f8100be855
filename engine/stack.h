/*
 * stack.h — stacks for native goroutines: mmap'd, with a PROT_NONE guard page
 * below the usable area, so an overflow faults instead of corrupting memory.
 * Free stacks are kept for reuse (the caches of gfree.c); this file only
 * maps and unmaps.
 */
#ifndef WEFT_STACK_H
#define WEFT_STACK_H

#include <stddef.h>

typedef struct weft_stack {
    void *base;  /* start of the mapping (the guard page) */
    void *lo;    /* lowest usable address, just above the guard */
    size_t size; /* usable bytes above the guard */
} weft_stack;

size_t weft_stack_round(size_t size); /* page-rounded usable size, at least 16 KiB */
int weft_stack_alloc(weft_stack *s, size_t size);
void weft_stack_free(weft_stack *s);

#endif
