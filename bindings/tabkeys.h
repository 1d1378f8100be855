/*
 * tabkeys.h — counting a table's keys from LuaJIT's table layout (see
 * tabkeys.c), for lua/weft/shape.lua.
 */
#ifndef WEFT_TABKEYS_H
#define WEFT_TABKEYS_H

#include <lua.h>

/* The number of keys of the tables referred to by slots[0..n) (slots of a
 * table's array part, see tabkeys.c), together; -1 if a slot does not hold
 * a table or a table has more than 1024 slots. Called through the FFI. */
int weft_tabkeys_count(const void *slots, int n);

/* Pushes tabkeys_slots(box, n) (the address of slot 1 of box's array part,
 * or nil if it has fewer than n slots from 1 on), or nil when this LuaJIT's
 * table layout is not the one tabkeys.c reads. */
void weft_tabkeys_push(lua_State *L);

#endif
