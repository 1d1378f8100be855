/*
 * transfer.h — packed values: a Lua value encoded by the codec (with values
 * sent by name) and held by a full userdata until it is unpacked, in the same
 * or in another lua_State. lua/weft/transfer.lua builds weft.spawn's
 * function-and-arguments package on top of it.
 */
#ifndef WEFT_TRANSFER_H
#define WEFT_TRANSFER_H

#include "weft.h"
#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Adds to the table on top of L's stack (the weft_core module):
 *   pack(names, value [, labels [, funcs]]) -> packed | nil, message
 *       encodes value with weft_codec_encode_named (names, labels, funcs:
 *       tables or nil, see codec.h); never raises for a value that cannot be
 *       copied, it returns nil and the codec's message
 *   unpack(packed, resolver, env) -> value
 *       decodes with weft_codec_decode_named (resolver: a function or nil;
 *       env: a table or nil) and consumes packed, whether it succeeds or
 *       raises the codec's message; a consumed value raises
 *       "packed value already unpacked"
 *   pack_free(packed)
 *       frees the value now (idempotent); otherwise __gc frees a packed
 *       value that was never unpacked */
void weft_transfer_register(lua_State *L);

/* Moves the value out of the packed value at idx into *out (which the
 * caller then owns and frees with weft_codec_val_free); the packed value
 * counts as unpacked. Returns 0, or -1 (leaving *out zeroed) when idx is not
 * a packed value or was already consumed. */
int weft_transfer_take(lua_State *L, int idx, weft_val *out);

/* Pushes a packed value that owns *v, which is zeroed. On a memory error
 * (raised by Lua) *v is left to the caller. */
void weft_transfer_push(lua_State *L, weft_val *v);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_TRANSFER_H */
