/*
 * shape.h — the process-wide registry of table shapes (shape.c), used by
 * lua/weft/shape.lua through the FFI and by the codec to decode shaped
 * values (WEFT_CODEC_TAG_SHAPED).
 */
#ifndef WEFT_SHAPE_H
#define WEFT_SHAPE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { WEFT_SHAPE_MAX = 4096 };

/* The id (1..WEFT_SHAPE_MAX) of the shape whose descriptor is desc[0..len),
 * registering it if new; -1 if the registry is full or out of memory. */
int weft_shape_intern(const char *desc, size_t len);
/* The descriptor of shape id and its length, or NULL for an unknown id. The
 * bytes stay valid until the process exits. */
const char *weft_shape_desc(int id, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
