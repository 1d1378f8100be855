/*
 * vmalloc.h — the allocator of the Lua VMs that weft makes (the weft
 * binary's VM and every processor's VM): small blocks from size-class slabs,
 * larger ones from malloc. See vmalloc.c.
 */
#ifndef WEFT_VMALLOC_H
#define WEFT_VMALLOC_H

#include <lua.h>
#include <stddef.h>

typedef struct weft_vmalloc weft_vmalloc;

/* Blocks of at most this many bytes come from slabs. */
#define WEFT_VMALLOC_MAX_SMALL 512

/* A new allocator, or NULL if out of memory. */
weft_vmalloc *weft_vmalloc_new(void);
/* lua_Alloc: ud is a weft_vmalloc. Frees p when nsize is 0; osize must be
 * the size p was allocated or last resized with (Lua always passes it).
 * Shrinking (nsize <= osize) never fails, as Lua assumes. */
void *weft_vmalloc_f(void *ud, void *p, size_t osize, size_t nsize);
/* Frees the allocator and every slab; returns the number of small blocks
 * that were still allocated (0 when its user freed all it allocated). */
size_t weft_vmalloc_destroy(weft_vmalloc *a);
/* Slabs held now, and slabs taken from malloc so far (for tests). */
void weft_vmalloc_counts(const weft_vmalloc *a, size_t *held, size_t *made);

/* A Lua VM whose memory comes from a weft_vmalloc (with luaL_newstate's
 * panic function), or NULL if out of memory. No libraries are opened. */
lua_State *weft_vm_new(void);
/* lua_close, then destroys its allocator; returns what destroy returns. */
size_t weft_vm_close(lua_State *L);

#endif
