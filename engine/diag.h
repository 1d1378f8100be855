/*
 * diag.h — diagnostics: goroutine dumps, deadlock detection, the watchdog
 * (engine/sysmon.c: long runs, schedtrace, weft.run's timeout), and the
 * hooks through which the host (bindings/diag.c) adds what only it knows:
 * Lua tracebacks, names, creation sites, VM memory.
 */
#ifndef WEFT_DIAG_H
#define WEFT_DIAG_H

#include "core.h"

#include <stdarg.h>
#include <stddef.h>

/* A growing text buffer (out of memory: the text is cut short). */
typedef struct weft_dbuf {
    char *s;
    size_t len, cap;
} weft_dbuf;

void weft_dbuf_printf(weft_dbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void weft_dbuf_puts(weft_dbuf *b, const char *s);
/* The text (malloc'd, never NULL); b is empty again. */
char *weft_dbuf_take(weft_dbuf *b);

/* What the host adds (all optional; set once by the host). */
typedef struct weft_diag_hooks {
    /* On g's own processor's thread, between two goroutine runs (or g is
     * the calling goroutine, self): g's lines after its header (name,
     * traceback, "created by"). */
    void (*describe)(weft_g *g, bool self, weft_dbuf *b);
    /* Any thread: the name and creation site of the goroutine `gid` that
     * processor p is running now ("" if it no longer runs it). */
    void (*label)(weft_proc *p, int64_t gid, weft_dbuf *b);
    /* On p's own thread between runs: its VM's memory in KiB (-1: none). */
    double (*vm_kb)(weft_proc *p);
    /* Any thread: a fatal report (malloc'd, taken over); the host keeps it
     * as the engine's error and stops the engine. */
    void (*fail)(char *msg);
} weft_diag_hooks;

extern weft_diag_hooks weft_diag_host;

/* The dump of every goroutine but `exclude` (0: none), Go-style, sorted by
 * id; malloc'd. Any thread; from a goroutine, its own entry shows it
 * running. NULL when the engine is not running. */
char *weft_diag_dump(int64_t exclude);

/* Runs fn(p, arg) on every processor's thread between two goroutine runs
 * (the caller's own processor at once); answered[i] tells which did within
 * the time limit (a processor busy in a goroutine that does not yield
 * cannot). False when the engine is not running. */
bool weft_diag_onall(void (*fn)(weft_proc *p, void *arg), void *arg, bool *answered);

/* proc.c: a processor with p->diagreq set answers it (its own thread). */
void weft_diag_poll(weft_proc *p);

/* proc.c, with sched.lock held, by the processor that just made every
 * processor idle: true if nothing can ever run again. */
bool weft_diag_deadlocked_locked(void);
/* ... then, without the lock: reports the deadlock and stops the engine. */
void weft_diag_deadlock(void);
/* Whether the engine that just stopped did so on a deadlock. */
bool weft_diag_was_deadlock(void);

/* Engine lifecycle (proc.c): after the processors started; at teardown,
 * before anything is freed. */
void weft_diag_start(void);
void weft_diag_stop(void);

/* weft.run's timeout: after `seconds` from now the watchdog reports a
 * timeout with a dump and stops the engine (<= 0: none). Set before the
 * engine starts (any thread may cancel it with 0 while it runs); cleared at
 * stop. */
void weft_diag_set_timeout(double seconds);

/* The watchdog's view of processor p: nonzero when it has been running the
 * same goroutine (its id in *gid) for over 10 ms, the time (coarse clock)
 * it was first seen running it. */
int64_t weft_diag_longrun(int pid, int64_t *gid);

/* Goroutines by state (enum weft_gstate), over every goroutine struct. */
void weft_diag_gcounts(int64_t counts[5]);

/* A goroutine's state as a dump shows it: "running", "runnable", its wait
 * reason... */
const char *weft_diag_state(weft_g *g);

/* sysmon.c */
void weft_sysmon_start(void);
void weft_sysmon_stop(void);
/* The weft binary: SIGQUIT (dump, exit 2) and SIGUSR1 (dump, go on) are
 * handed to a thread of their own. 0 or -1. */
int weft_sysmon_signals(void);

#endif
