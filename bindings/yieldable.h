/*
 * yieldable.h — whether the running Lua code may yield, as an FFI call
 * (see yieldable.c).
 */
#ifndef WEFT_YIELDABLE_H
#define WEFT_YIELDABLE_H

#include <lua.h>

/* Finds where LuaJIT keeps the running state, once per process; L's VM
 * must have LuaJIT 2.1's layout with 64-bit GC references. */
void weft_yieldable_probe(lua_State *L);

/* 1 if the Lua code running in this goroutine may yield, 0 if not; -1 if
 * not known here (no goroutine, or the probe found nothing): then ask
 * coroutine.isyieldable. Called through the FFI. */
int weft_lua_can_yield(void);

#endif
