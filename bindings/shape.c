/*
 * shape.c — the process-wide registry of table shapes.
 *
 * A shape is the ordered list of (key, value type) pairs of a plain Lua
 * table, as `next` walks it. lua/weft/shape.lua sends such tables as a shape
 * id followed by the bare values (no keys, no per-value tags), and each VM
 * compiles one constructor per shape to rebuild them. The ids must mean the
 * same thing in every VM of the process, so they are handed out here: a
 * shape's descriptor (an opaque byte string made by shape.lua) is interned
 * once and gets a small id for the life of the process; a VM that meets an
 * id it has not seen fetches the descriptor.
 *
 * Invariants:
 *  - An id, once given, names the same descriptor until the process exits
 *    (descriptors are never freed or moved: values in flight may carry ids).
 *  - Ids are 1..WEFT_SHAPE_MAX; when the registry is full, interning fails
 *    and the sender uses another format.
 *
 * Lock order: `lock` is a leaf. Both calls are FFI calls made outside any
 * engine lock; each VM caches what it learns, so the lock is taken about once
 * per shape and VM.
 */
#include "shape.h"

#include "lock.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct shape_desc {
    size_t len;
    uint64_t hash;
    char bytes[];
} shape_desc;

static weft_mutex lock = WEFT_MUTEX_INIT;
static shape_desc *descs[WEFT_SHAPE_MAX + 1]; /* by id; [0] unused */
static int ndescs;
static int index_[2 * WEFT_SHAPE_MAX]; /* open addressing: ids, 0 = empty */

static uint64_t hash_bytes(const char *p, size_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

int weft_shape_intern(const char *desc, size_t len) {
    if (!desc || len == 0)
        return -1;
    uint64_t h = hash_bytes(desc, len);
    const size_t mask = 2 * WEFT_SHAPE_MAX - 1;
    int id = -1;
    weft_mutex_lock(&lock);
    size_t i = (size_t)h & mask;
    for (;; i = (i + 1) & mask) {
        int k = index_[i];
        if (k == 0)
            break;
        shape_desc *d = descs[k];
        if (d->hash == h && d->len == len && memcmp(d->bytes, desc, len) == 0) {
            id = k;
            goto out;
        }
    }
    if (ndescs < WEFT_SHAPE_MAX) {
        shape_desc *d = malloc(sizeof *d + len);
        if (d) {
            d->len = len;
            d->hash = h;
            memcpy(d->bytes, desc, len);
            id = ++ndescs;
            descs[id] = d;
            index_[i] = id;
        }
    }
out:
    weft_mutex_unlock(&lock);
    return id;
}

const char *weft_shape_desc(int id, size_t *len) {
    const char *p = NULL;
    weft_mutex_lock(&lock);
    if (id >= 1 && id <= ndescs) {
        p = descs[id]->bytes;
        *len = descs[id]->len;
    }
    weft_mutex_unlock(&lock);
    return p;
}
