/*
 * bindings/io.c — fd readiness waits for Lua goroutines (weft.io.wait, and
 * through it weft.net), called from lua/weft/io.lua through ffi.C.
 *
 * Protocol (as for channels, fast.c): weft_lua_io_wait checks its
 * arguments and records the wait in the goroutine's hostg (WEFT_HOSTOP_IO);
 * the Lua side yields OP; host_run starts it with weft_io_wait_start
 * (engine/poll.c), which parks the goroutine with watchers on its own
 * processor's loop; once woken Lua calls weft_lua_io_finish for the result.
 * Where Lua cannot yield, it drops the recorded wait (weft_lua_drop) before
 * anything was started.
 *
 * Like fast.c, these functions never touch a lua_State and never switch
 * stacks. A Lua goroutine is bound to its processor, so a close from any
 * goroutine of the same isolate finds the waiters on the same loop.
 */
#include "host.h"

#include <math.h>

enum { IO_READY = 0, IO_BLOCK = 2, IO_TIMEOUT = 3, IO_CLOSED = 4, IO_NOTG = 5, IO_BAD = 6 };

/* Entry points for the FFI (declared in lua/weft/io.lua, never static). */
int weft_lua_io_wait(int fd, int events, double timeout);
int weft_lua_io_finish(void);
int weft_lua_io_wake_closed(int fd);

/* Records a wait for fd (events: WEFT_IO_READ|WEFT_IO_WRITE) of at most
 * timeout seconds (< 0: none): BLOCK (then yield OP), NOTG or BAD. */
int weft_lua_io_wait(int fd, int events, double timeout) {
    hostg *h = weft_hostg_self();
    if (!h)
        return IO_NOTG;
    if (fd < 0 || events < 1 || events > (WEFT_IO_READ | WEFT_IO_WRITE) || isnan(timeout))
        return IO_BAD;
    h->op = WEFT_HOSTOP_IO;
    h->opdone = false;
    h->opnd.io.fd = fd;
    h->opnd.io.events = events;
    h->opnd.io.timeout = timeout < 0 ? -1 : timeout > 9e9 ? (int64_t)9e18 : (int64_t)(timeout * 1e9);
    return IO_BLOCK;
}

static int io_code(int rc) {
    switch (rc) {
    case WEFT_OK:
        return IO_READY;
    case WEFT_EAGAIN:
        return IO_TIMEOUT;
    case WEFT_ECLOSED:
        return IO_CLOSED;
    case WEFT_ENOTG:
        return IO_NOTG;
    default:
        return IO_BAD;
    }
}

/* After the goroutine was resumed: READY, TIMEOUT or CLOSED. */
int weft_lua_io_finish(void) {
    hostg *h = weft_hostg_self();
    if (!h)
        return IO_NOTG;
    bool early = h->opdone;
    h->op = WEFT_HOSTOP_NONE;
    h->opdone = false;
    return io_code(early ? h->oprc : weft_io_wait_finish());
}

/* Wakes this processor's goroutines waiting on fd with CLOSED (before the
 * caller closes it); how many. */
int weft_lua_io_wake_closed(int fd) {
    return weft_io_wake_closed(fd);
}
