/*
 * codec.h — copies Lua values through weft channels.
 *
 * The Lua layer turns every value it sends into a weft_val with
 * weft_codec_encode and turns it back into a Lua value, in the same or in
 * another lua_State (another LuaJIT VM on another OS thread of the same
 * process), with weft_codec_decode. The encoding is self-contained bytes: it
 * never points into a lua_State, so the value may outlive the sender's VM.
 *
 * What a weft_val holds
 *   nil                 refused at the top level: "send of nil value"
 *   boolean             WEFT_TAG_BOOL, inline (u.i = 0/1), no allocation
 *   number              WEFT_TAG_NUMBER, inline double, no allocation
 *   string              WEFT_TAG_RAW: the bytes themselves, inline up to 8
 *                       bytes (no allocation), else one malloc'd buffer. A C
 *                       stage sending weft_val_bytes() is received as a string.
 *   int64_t / uint64_t  WEFT_TAG_INT64 / WEFT_TAG_UINT64, inline, and decode
 *   cdata (1LL, 2ULL)   to the same cdata type; a C stage's weft_val_int()
 *                       arrives as an int64_t cdata.
 *   anything else       WEFT_CODEC_TAG_BLOB: one malloc'd buffer (see below).
 *   (decode only)       WEFT_TAG_PTR becomes a light userdata.
 *
 * What a blob copies
 *   Tables deep, with their metatables, keys of any copyable type, and with
 *   identity kept: a table, function, cdata or handle reached twice decodes
 *   to one object reached twice, so cycles (t.self = t) survive; tables are
 *   read and written raw (no metamethod is called, __gc/__pairs included). Lua
 *   functions as bytecode (lua_dump, with debug info) plus their upvalues,
 *   encoded recursively (cycles through upvalues work). Upvalues SHARED by
 *   two closures inside one encoded value stay shared after decoding
 *   (lua_upvalueid / lua_upvaluejoin); sharing with closures outside the
 *   value is of course lost. A decoded function gets the decoding state's
 *   globals as its environment (function environments are not copied).
 *   Plain-data cdata (numbers, enums, complex, structs/unions/arrays without
 *   pointers, VLAs) as ctype name + bytes; the decoding VM re-creates the
 *   type with ffi.typeof(name), so a named struct must be ffi.cdef'd there
 *   too; anonymous struct/union/enum types are refused. Engine objects
 *   registered with weft_codec_register_handle are passed by reference.
 *   Everything else (C functions, coroutines, light userdata, other
 *   userdata, pointer cdata) is refused with a message naming the path:
 *     cannot copy userdata at field 'pattern'
 *     cannot copy thread at [3].co
 *     cannot copy upvalue 'f' (function: builtin) of function at x.lua:12
 *   weft_codec_encode_named can send values by name instead (see below).
 *   Tables nest without limit (a linked list of 100k nodes copies): a table
 *   more than 64 levels deep is written after the root value instead of
 *   inline, so the C recursion stays bounded. Functions nested in each
 *   other's upvalues more than WEFT_CODEC_MAX_DEPTH levels deep are refused
 *   ("cannot copy function nested more than 200 levels deep at ...").
 *
 * Values sent by name (weft_codec_encode_named, weft_codec_decode_named)
 *   For isolates (weft.spawn): the encoder is given a names table mapping
 *   values to paths (strings). Any value found in it, wherever it is reached
 *   (the root, table keys and values, metatables, upvalues), is written as
 *   its path instead of being copied or refused: module tables, C and fast
 *   functions (string.format, pairs), userdata such as io.stdout. Only
 *   objects are looked up (tables, functions, userdata, threads, cdata,
 *   light userdata), and only string paths count. Identity holds: a value
 *   reached twice is written once and decodes to one object. The decoder
 *   calls resolver(path) once per distinct path (two distinct values with
 *   the same path decode to one object) and uses its result; a resolver that
 *   raises or returns nil makes the decode fail with
 *     cannot resolve 'lpeg.match': <its error, or "the resolver returned nil">
 *   and decoding a by-name value without a resolver fails with
 *     cannot resolve 'lpeg.match': no resolver was given
 *   The decoder may also be given an environment table, which becomes the
 *   environment (setfenv) of every Lua function it decodes from bytecode
 *   (closures they create inherit it); by-name functions keep their own.
 *
 *   Labels: the encoder may be given a labels table that names fields of the
 *   ROOT table in messages, the way an upvalue is named: root[k] with
 *   labels[k] = {"global 'co'", "of function at x.lua:3"} gives
 *     cannot copy global 'co' (thread) of function at x.lua:3
 *     cannot copy userdata at field 'sock' in global 'co' of function at x.lua:3
 *     ... (reached through global 'co' of function at x.lua:3)
 *   labels[k] = "argument 2" (a string: no "where" part) gives
 *     cannot copy argument 2 (userdata)
 *   and labels[k] = "" makes the field transparent: messages read as if
 *   root[k] were the root value ("cannot copy upvalue 'f' (thread) of
 *   function at x.lua:12").
 *
 * Ownership and freeing
 *   weft_codec_encode fills *out, which the caller owns. weft_codec_decode
 *   never frees or changes the value: a value may be decoded any number of
 *   times. EVERY value made by weft_codec_encode must be freed exactly once
 *   with weft_codec_val_free, whether it was decoded or not (it is also
 *   correct for any other weft_val). A blob holds one reference on each
 *   engine object in it (taken by retain at encode time) and
 *   weft_codec_val_free drops them; decoding takes a new reference of its
 *   own (retain) for the Lua object that push creates. Anything that drops
 *   codec values without decoding them (a channel freed with values still
 *   buffered) must use weft_codec_val_free, not weft_val_free.
 *
 * Blob layout (native byte order; valid only inside the process that made
 * it, since handles are raw pointers)
 *   header   16 bytes: 'w', version 1, flags (1: the body refers back to
 *            objects), 0, u32 objects, u32 handles,
 *            u32 offset of the handle table (= end of the body)
 *   body     one value, then the deferred tables; a value is a type byte
 *            and its payload (LEB128 varints):
 *            0x00 nil  0x01 false  0x02 true  0x40+n small integer 0..63
 *            0x03 integer (zigzag varint)  0x04 double (8 bytes)
 *            0x80+n string of n < 128 bytes  0x05 string (varint length)
 *            0x06/0x07 table [with metatable]: varint narray, varint nhash,
 *                 narray values (1..narray), nhash key/value pairs [, mt]
 *            0x08 reference: varint object number (objects are numbered in
 *                 the order tables, functions, cdata and handles first appear)
 *            0x09 function: u32 bytecode length, u64 keyed hash, bytecode,
 *                 varint nups, then per upvalue a value or
 *            0x0a shared upvalue: varint object number of an earlier
 *                 function, varint upvalue index
 *            0x0b cdata: varint name length, name, varint VLA count+1 (0 for
 *                 fixed-size types), varint size, bytes
 *            0x0c / 0x0d int64_t / uint64_t cdata: 8 bytes
 *            0x0e handle: varint index into the handle table
 *            0x0f deferred table: numbered here, contents written later
 *            0x10 by name: varint length, path (numbered as an object, so
 *                 later occurrences are 0x08 references); a decoder without
 *                 a resolver refuses it. Blobs without it are unchanged.
 *   deferred after the body's value, for each 0x0f table in order, its
 *            contents: 0x06/0x07 and the table layout above
 *   handles  per handle 24 bytes: u32 type id, u32 0, u64 pointer, u64 keyed
 *            hash of (type id, pointer)
 *   The decoder checks every length, count, index and reference against the
 *   bytes it was given and fails cleanly on corrupt or truncated input.
 *   Bytecode and handle entries carry a hash keyed with a per-process random
 *   secret, so corrupted bytes are never fed to LuaJIT's bytecode loader (it
 *   does not verify bytecode) nor taken for a pointer; this protects against
 *   accidents, not against code that can already write the process memory.
 *
 * Limits: strings and blobs up to 4 GiB - 1 (weft_val.len is 32-bit); see
 * above for nesting. Encoding and decoding recurse in C once per inline
 * nesting level with about 210 bytes of frames per level (x86-64, -O2): at
 * most ~14 KiB for tables (64 inline levels), ~42 KiB in the worst case of
 * WEFT_CODEC_MAX_DEPTH levels of functions, plus ~3 KiB at the deepest point
 * when an error message is built; safe on a 64 KiB goroutine stack.
 *
 * Threading: a lua_State is used by one thread at a time as usual; handle
 * types are process-wide and may be registered from any thread.
 */
#ifndef WEFT_CODEC_H
#define WEFT_CODEC_H

#include <stddef.h>

#include "weft.h"
#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Tags of codec values (WEFT_TAG_USER and up belong to codecs). */
enum {
    WEFT_CODEC_TAG_BLOB = WEFT_TAG_USER, /* 16: an encoded value, layout above */
    /* 17: plain data (tables of booleans, numbers, strings and such tables,
     * with no metatable and no table reached twice) in LuaJIT's string.buffer
     * serialization format. lua/weft/init.lua writes and reads these itself
     * (LuaJIT serializes inside the VM, many times faster than walking
     * tables through the C API); weft_codec_decode reads them too. */
    WEFT_CODEC_TAG_PLAIN,
    /* 18: a small plain table as a shape id and its bare values
     * (lua/weft/shape.lua writes and reads these; weft_codec_decode calls
     * that module's decode). */
    WEFT_CODEC_TAG_SHAPED
};

enum {
    WEFT_CODEC_MAX_DEPTH = 200,       /* inline nesting; see above */
    WEFT_CODEC_MAX_HANDLE_TYPES = 64, /* process-wide */
    WEFT_CODEC_ERRLEN = 256           /* a good size for err buffers */
};

/* Encodes the value at stack index idx of L into *out (which must not hold
 * a value that needs freeing). Returns 0, or -1 with a NUL-terminated message
 * in err (truncated to errlen) and *out zeroed. L's stack is left as it was.
 * Scalars (booleans, numbers, strings up to 8 bytes, int64/uint64 cdata)
 * never allocate. Uses a few Lua stack slots and may run the GC. */
int weft_codec_encode(lua_State *L, int idx, weft_val *out, char *err, size_t errlen);

/* Options of weft_codec_encode_named: stack indices of tables, 0 for none.
 *   names   value -> path (string): such values are sent by name
 *   labels  root key -> label: names root fields in messages (see above)
 *   funcs   a sequence; every Lua function copied as bytecode is appended
 *           to it (each once), so that a caller can inspect what was copied */
typedef struct weft_codec_opts {
    int names, labels, funcs;
} weft_codec_opts;

/* weft_codec_encode with options (opts may be NULL: no options). */
int weft_codec_encode_named(lua_State *L, int idx, const weft_codec_opts *opts, weft_val *out, char *err,
                            size_t errlen);

/* Pushes the value that v holds (see the tags above). Returns 0 with one
 * value pushed, or -1 with nothing pushed and a message in err. Never frees
 * or modifies v; safe on corrupt or truncated input. */
int weft_codec_decode(lua_State *L, const weft_val *v, char *err, size_t errlen);

/* weft_codec_decode that resolves values sent by name with the function (or
 * callable) at stack index resolver, called as resolver(path) -> value, and
 * makes the table at stack index env the environment of the Lua functions
 * it decodes. Either index may be 0 (no resolver: by-name values fail; no
 * env: functions get L's globals). Same results and guarantees otherwise. */
int weft_codec_decode_named(lua_State *L, const weft_val *v, int resolver, int env, char *err, size_t errlen);

/* Frees any weft_val; for a blob, first drops the references it holds on
 * engine objects (the release callback of each handle in it). Leaves v
 * zeroed. */
void weft_codec_val_free(weft_val *v);

/* Declares an engine object type that is passed by reference. A full
 * userdata whose metatable is luaL_getmetatable(L, tname) (which must exist
 * when this is called) and whose payload starts with `void *obj` (non-NULL)
 * is encoded as (type, obj) after retain(obj), which returns the pointer to
 * store (normally obj). Decoding calls retain(obj) and then push(L, obj),
 * which must create the Lua object taking over that reference and return 1
 * (one value pushed), or push nothing and return 0 (the decoder then
 * releases the reference and fails). release(obj) drops one reference;
 * retain and release must be callable from any thread.
 *
 * Types are process-wide by name: register the type in every lua_State that
 * encodes it (one call per state). A second registration of a name with
 * the same callbacks reuses the type; with other callbacks it fails.
 * Returns 0, or -1 (no metatable named tname in L, different callbacks,
 * too many types, or NULL arguments). */
int weft_codec_register_handle(lua_State *L, const char *tname, void *(*retain)(void *),
                               void (*release)(void *), int (*push)(lua_State *L, void *obj));

#ifdef __cplusplus
}
#endif
#endif /* WEFT_CODEC_H */
