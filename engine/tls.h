/*
 * tls.h — WEFT_TLS_FAST, for thread-locals read on hot paths.
 *
 * In a shared object (weft_core.so, which LuaJIT loads) the default TLS
 * model calls __tls_get_addr on every read. initial-exec reads at a fixed
 * offset from the thread pointer instead, at the cost of a few bytes of the
 * static TLS that the C library keeps for modules loaded later (the engine
 * has three such pointers). Other compilers get the default model.
 */
#ifndef WEFT_TLS_H
#define WEFT_TLS_H

#if defined(__GNUC__) || defined(__clang__)
#define WEFT_TLS_FAST __attribute__((tls_model("initial-exec")))
#else
#define WEFT_TLS_FAST
#endif

#endif
