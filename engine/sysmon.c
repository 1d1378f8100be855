/*
 * sysmon.c — the watchdog thread (Go's sysmon) and the binary's signal
 * thread.
 *
 * The watchdog wakes every 10 ms while the engine runs. It notes
 * processors that have been running the same goroutine since its last
 * looks (p->st_switches unchanged while p->running): a JIT-compiled Lua
 * loop cannot be preempted. Past 10 ms such a run is published (since/gid,
 * read by dumps and schedtrace); past `longrun` (1 s, WEFT_DEBUG=longrun=MS)
 * it is reported once on stderr. It also prints WEFT_DEBUG's schedtrace
 * lines and enforces weft.run's timeout. It reads only atomics of the
 * engine (and, for scheddetail, racy snapshots of goroutine states), and
 * takes no engine lock but alllock (scheddetail) and what a dump takes.
 *
 * Invariants: started after the processors (weft_diag_start), stopped and
 * joined at teardown before anything is freed (weft_diag_stop); `mu`
 * guards `stop` only; since[i] is written with release after gid[i].
 *
 * Signals (the weft binary only): the handler of SIGQUIT and SIGUSR1 writes
 * the signal's number to a pipe; a thread of their own reads it and asks
 * for a dump like any other thread; no handler ever runs engine code.
 */
#include "diag.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { TICK_NS = 10 * 1000 * 1000, LONGRUN_NOTE_NS = 10 * 1000 * 1000 };

static struct {
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    _Atomic int64_t timeout_ns, deadline; /* weft.run's timeout (set by any thread) */
    _Atomic int64_t since[WEFT_MAX_PROCS], gid[WEFT_MAX_PROCS];
    /* the watchdog's own */
    uint64_t lastsw[WEFT_MAX_PROCS];
    int64_t first[WEFT_MAX_PROCS];
    bool told[WEFT_MAX_PROCS];
    int64_t trace_ns, longrun_ns, start, next_trace;
    bool detail;
} M = {.mu = PTHREAD_MUTEX_INITIALIZER};

int64_t weft_diag_longrun(int pid, int64_t *gid) {
    int64_t since = atomic_load_explicit(&M.since[pid], memory_order_acquire);
    *gid = atomic_load_explicit(&M.gid[pid], memory_order_relaxed);
    return since;
}

void weft_diag_set_timeout(double seconds) {
    int64_t ns = seconds > 0 ? (int64_t)(seconds > 9e9 ? 9e18 : seconds * 1e9) : 0;
    atomic_store(&M.timeout_ns, ns);
    atomic_store(&M.deadline, ns ? weft_nanotime() + ns : 0);
}

/* WEFT_DEBUG=schedtrace=MS,scheddetail=1,longrun=MS */
static void parse_debug(void) {
    M.trace_ns = 0;
    M.detail = false;
    M.longrun_ns = 1000 * 1000 * 1000;
    const char *s = getenv("WEFT_DEBUG");
    while (s && *s) {
        long v;
        int n = 0;
        if (sscanf(s, "schedtrace=%ld%n", &v, &n) == 1 && n)
            M.trace_ns = v > 0 ? v * 1000000 : 0;
        else if (sscanf(s, "scheddetail=%ld%n", &v, &n) == 1 && n)
            M.detail = v != 0;
        else if (sscanf(s, "longrun=%ld%n", &v, &n) == 1 && n)
            M.longrun_ns = v > 0 ? v * 1000000 : 0;
        else
            fprintf(stderr, "weft: ignoring WEFT_DEBUG item at '%s' (want schedtrace=MS, "
                            "scheddetail=1 or longrun=MS)\n", s);
        s = strchr(s, ',');
        if (s)
            s++;
    }
}

/* Reports the fatal text msg (malloc'd) as the engine's error. */
static void fail(char *msg) {
    if (weft_diag_host.fail && weft_S.host.run) {
        weft_diag_host.fail(msg);
    } else {
        fprintf(stderr, "%s\n", msg);
        free(msg);
        weft_shutdown();
    }
}

static void timed_out(void) {
    char *dump = weft_diag_dump(0);
    weft_dbuf b = {0};
    weft_dbuf_printf(&b, "weft.run: timeout: main has not returned after %gs\n\n",
                     (double)atomic_load(&M.timeout_ns) / 1e9);
    weft_dbuf_puts(&b, dump ? dump : "");
    free(dump);
    fail(weft_dbuf_take(&b));
}

static void tell_longrun(weft_proc *p, int64_t gid, int64_t ran) {
    weft_dbuf b = {0};
    weft_dbuf_printf(&b,
                     "weft: goroutine %lld has been running for %.1fs on processor %d without "
                     "yielding (it cannot be preempted, and where it runs cannot be read while "
                     "it runs; what is known:)\n",
                     (long long)gid, (double)ran / 1e9, p->id);
    if (weft_diag_host.label && weft_S.host.run)
        weft_diag_host.label(p, gid, &b);
    else
        weft_dbuf_puts(&b, "\t(native goroutine)\n");
    char *s = weft_dbuf_take(&b);
    fputs(s, stderr);
    free(s);
}

static void watch_procs(int64_t now) {
    for (int i = 0; i < weft_S.nprocs; i++) {
        weft_proc *p = weft_S.procs[i];
        uint64_t sw = atomic_load_explicit(&p->st_switches, memory_order_relaxed);
        bool run = atomic_load_explicit(&p->running, memory_order_relaxed);
        if (!run || sw != M.lastsw[i] || !M.first[i]) {
            M.lastsw[i] = sw;
            M.first[i] = run ? now : 0;
            M.told[i] = false;
            atomic_store_explicit(&M.since[i], 0, memory_order_relaxed);
            continue;
        }
        int64_t ran = now - M.first[i];
        if (ran < LONGRUN_NOTE_NS)
            continue;
        int64_t gid = atomic_load_explicit(&p->curgid, memory_order_relaxed);
        if (!atomic_load_explicit(&M.since[i], memory_order_relaxed)) {
            atomic_store_explicit(&M.gid[i], gid, memory_order_relaxed);
            atomic_store_explicit(&M.since[i], M.first[i], memory_order_release);
        }
        if (M.longrun_ns && ran >= M.longrun_ns && !M.told[i]) {
            M.told[i] = true;
            tell_longrun(p, gid, ran);
        }
    }
}

static void schedtrace(int64_t now) {
    weft_dbuf b = {0};
    int n = weft_S.nprocs;
    weft_dbuf_printf(&b,
                     "SCHED %lldms: procs=%d idleprocs=%d threads=%d spinning=%d goroutines=%lld "
                     "runqueue=%d [",
                     (long long)((now - M.start) / 1000000), n, atomic_load(&weft_S.npidle), n + 1,
                     atomic_load(&weft_S.nspinning), (long long)weft_count(),
                     atomic_load(&weft_S.runqsize));
    for (int i = 0; i < n; i++)
        weft_dbuf_printf(&b, "%s%u", i ? " " : "",
                         weft_runq_len(weft_S.procs[i]) +
                             (unsigned)atomic_load(&weft_S.procs[i]->inboxn));
    weft_dbuf_puts(&b, "]\n"); /* the SCHED line is exactly Go's: what we add goes below */
    for (int i = 0; i < n; i++) {
        int64_t gid, since = weft_diag_longrun(i, &gid);
        if (since)
            weft_dbuf_printf(&b, "  nonyielding: G%lld on P%d for %lldms\n", (long long)gid, i,
                             (long long)((weft_coarse_now() - since) / 1000000));
    }
    for (int i = 0; M.detail && i < n; i++) {
        weft_proc *p = weft_S.procs[i];
        bool run = atomic_load(&p->running);
        weft_dbuf_printf(&b, "  P%d: status=%s switches=%llu steals=%llu runqsize=%u inbox=%d "
                             "timers=%s curg=%lld\n",
                         i, run ? "running" : atomic_load(&p->idle) ? "idle" : "scheduling",
                         (unsigned long long)atomic_load(&p->st_switches),
                         (unsigned long long)atomic_load(&p->st_steals), weft_runq_len(p),
                         atomic_load(&p->inboxn), atomic_load(&p->timer0) ? "yes" : "no",
                         run ? (long long)atomic_load(&p->curgid) : -1LL);
    }
    if (M.detail) {
        weft_mutex_lock(&weft_S.alllock);
        for (size_t k = 0; k < weft_S.nallgs; k++) {
            weft_g *g = weft_S.allgs[k];
            int st = atomic_load_explicit(&g->state, memory_order_relaxed);
            if (st == WEFT_G_IDLE || st == WEFT_G_DEAD)
                continue;
            weft_dbuf_printf(&b, "  G%lld: status=%s kind=%s proc=%d\n", (long long)g->id,
                             weft_diag_state(g), g->kind == WEFT_G_NATIVE ? "native" : "lua",
                             g->bound ? g->bound->id : -1);
        }
        weft_mutex_unlock(&weft_S.alllock);
    }
    char *s = weft_dbuf_take(&b);
    fputs(s, stderr);
    free(s);
}

static void *sysmon_main(void *arg) {
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    pthread_mutex_lock(&M.mu);
    while (!M.stop) {
        ts.tv_nsec += TICK_NS;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        int rc = 0;
        while (!M.stop && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&M.cv, &M.mu, &ts);
        if (M.stop)
            break;
        pthread_mutex_unlock(&M.mu);
        int64_t now = weft_nanotime();
        if (atomic_load(&weft_S.state) == WEFT_SCHED_RUNNING) {
            int64_t coarse = weft_coarse_now();
            atomic_store_explicit(&weft_S.ticknow, coarse, memory_order_relaxed);
            watch_procs(coarse);
            if (M.trace_ns && now >= M.next_trace) {
                M.next_trace += M.trace_ns;
                schedtrace(now);
            }
            int64_t dl = atomic_load(&M.deadline);
            if (dl && now >= dl && atomic_compare_exchange_strong(&M.deadline, &dl, 0))
                timed_out();
        }
        clock_gettime(CLOCK_MONOTONIC, &ts);
        pthread_mutex_lock(&M.mu);
    }
    pthread_mutex_unlock(&M.mu);
    return NULL;
}

void weft_sysmon_start(void) {
    parse_debug();
    M.start = weft_nanotime();
    M.next_trace = M.start + M.trace_ns;
    for (int i = 0; i < WEFT_MAX_PROCS; i++) {
        M.lastsw[i] = 0;
        M.first[i] = 0;
        M.told[i] = false;
        atomic_store(&M.since[i], 0);
    }
    M.stop = false;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&M.cv, &ca);
    pthread_condattr_destroy(&ca);
    M.started = pthread_create(&M.thread, NULL, sysmon_main, NULL) == 0;
}

void weft_sysmon_stop(void) {
    if (M.started) {
        pthread_mutex_lock(&M.mu);
        M.stop = true;
        pthread_cond_signal(&M.cv);
        pthread_mutex_unlock(&M.mu);
        pthread_join(M.thread, NULL);
        M.started = false;
        pthread_cond_destroy(&M.cv);
    }
    atomic_store(&M.deadline, 0);
    atomic_store(&M.timeout_ns, 0);
}

/* ---- signals (the weft binary) ------------------------------------------------ */

/* The handler only forwards the signal's number to the signal thread
 * through a pipe (write is async-signal-safe). The signals stay unblocked
 * everywhere, so processes started by the script (os.execute, io.popen)
 * inherit no blocked signals, and exec resets the handler. */
static int sigfds[2] = {-1, -1};

static void on_signal(int sig) {
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t n = write(sigfds[1], &b, 1);
    (void)n; /* pipe full: signals already pending will dump */
    errno = saved;
}

static void *signal_main(void *arg) {
    (void)arg;
    for (;;) {
        unsigned char b;
        ssize_t n = read(sigfds[0], &b, 1);
        if (n != 1)
            continue; /* EINTR */
        int sig = b;
        char *dump = weft_diag_dump(0);
        weft_dbuf b2 = {0};
        weft_dbuf_printf(&b2, "%s\n\n", sig == SIGQUIT ? "SIGQUIT: quit" : "SIGUSR1: dump");
        weft_dbuf_puts(&b2, dump ? dump : "(no engine running)\n");
        free(dump);
        char *s = weft_dbuf_take(&b2);
        fputs(s, stderr);
        fflush(stderr);
        free(s);
        if (sig == SIGQUIT)
            _exit(2);
    }
    return NULL;
}

int weft_sysmon_signals(void) {
    if (pipe2(sigfds, O_CLOEXEC) != 0)
        return -1;
    int fl = fcntl(sigfds[1], F_GETFL);
    fcntl(sigfds[1], F_SETFL, fl | O_NONBLOCK);
    pthread_t t;
    if (pthread_create(&t, NULL, signal_main, NULL) != 0)
        return -1;
    pthread_detach(t);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGQUIT, &sa, NULL) != 0 || sigaction(SIGUSR1, &sa, NULL) != 0)
        return -1;
    return 0;
}
