/*
 * tabkeys.h — counting a table's keys from LuaJIT's table layout (see
 * tabkeys.c), for lua/weft/shape.lua.
 */
#ifndef WEFT_TABKEYS_H
#define WEFT_TABKEYS_H

#include <lua.h>

/* Pushes nkeys(t1, ...) (the number of keys of the tables, together; -1 if
 * an argument is not a table or has more than 1024 slots), or nil when this
 * LuaJIT's table layout is not the one tabkeys.c reads. */
void weft_tabkeys_push(lua_State *L);

#endif
