/*
 * test_sched.c — goroutines and processors: creation, completion, yield,
 * sleeping, migration and stealing between processors, engine restarts,
 * foreign threads, stack guard pages.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ctest.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- many goroutines all run, each exactly once ---------------------------- */

typedef struct {
    atomic_int done;
    atomic_int ran_on[64];
    atomic_llong sum;
    weft_chan *finished;
    int n;
} many_t;

static many_t many;

static void many_child(void *arg) {
    intptr_t i = (intptr_t)arg;
    atomic_fetch_add(&many.sum, (long long)i);
    int p = weft_proc_id();
    if (p >= 0 && p < 64)
        atomic_fetch_add(&many.ran_on[p], 1);
    if (atomic_fetch_add(&many.done, 1) + 1 == many.n)
        weft_chan_send(many.finished, weft_val_int(1));
}

static void many_main(void *arg) {
    (void)arg;
    many.finished = weft_chan_new(0);
    for (intptr_t i = 1; i <= many.n; i++)
        CHECK(weft_go(many_child, (void *)i) > 0);
    weft_val v;
    CHECK_EQ(weft_chan_recv(many.finished, &v), 1);
    CHECK_EQ(atomic_load(&many.done), many.n);
    CHECK_EQ(atomic_load(&many.sum), (long long)many.n * (many.n + 1) / 2);
    weft_chan_release(many.finished);
}

/* Waves of 5000 goroutines all alive at once, then all exiting (on either
 * processor): their structs go through the processors' free stacks and the
 * global one, past the 4096 stacks it keeps, and the next wave reuses them,
 * with their stacks or with new ones. Every goroutine of every wave runs
 * exactly once. */
enum { WAVE = 5000, WAVES = 3 };
static weft_chan *wave_gate, *wave_done;
static atomic_llong wave_sum;

static void wave_child(void *arg) {
    weft_val v;
    CHECK_EQ(weft_chan_recv(wave_gate, &v), 0); /* until the gate closes */
    atomic_fetch_add(&wave_sum, (long long)(intptr_t)arg);
    CHECK_EQ(weft_chan_send(wave_done, weft_val_int(1)), WEFT_OK);
}

static void waves_main(void *arg) {
    (void)arg;
    for (int w = 0; w < WAVES; w++) {
        wave_gate = weft_chan_new(0);
        wave_done = weft_chan_new(WAVE);
        atomic_store(&wave_sum, 0);
        for (intptr_t i = 1; i <= WAVE; i++)
            CHECK(weft_go(wave_child, (void *)i) > 0);
        weft_chan_close(wave_gate);
        weft_val v;
        for (int i = 0; i < WAVE; i++)
            CHECK_EQ(weft_chan_recv(wave_done, &v), 1);
        CHECK_EQ(atomic_load(&wave_sum), (long long)WAVE * (WAVE + 1) / 2);
        while (weft_count() > 1)
            weft_yield();
        weft_chan_release(wave_gate);
        weft_chan_release(wave_done);
    }
}

static void test_recycled_goroutines(void) {
    ctest_run(2, waves_main, NULL);
}

static void test_many_goroutines(void) {
    for (int rep = 0; rep < 5; rep++) {
        memset(&many, 0, sizeof many);
        many.n = 20000;
        ctest_run(2, many_main, NULL);
    }
}

/* ---- no two live goroutines share a stack ------------------------------------ */

/* Stacks are taken when a goroutine is made and exchanged, when it starts,
 * for one its processor ran on last (gfree.c). Two spawners, on both
 * processors, make goroutines that stay alive, mixed with short ones that
 * end at once so that the processors' caches of recently used stacks are
 * never empty for long: most of the long ones start with an exchange, on
 * the processor that made them or on a thief. Every long one fills a buffer
 * on its stack with its number and reports where the buffer is; while they
 * are all alive, no two buffers are closer than the smallest stack, and
 * after they are released each finds its buffer intact. */
enum { DIST_N = 3000, DIST_SHORT = 4, DIST_ROUNDS = 4, DIST_BUF = 64 };
static weft_chan *dist_gate, *dist_in, *dist_out;
static uintptr_t dist_addr[DIST_N];
static atomic_int dist_short_ran;

static void dist_short(void *arg) {
    (void)arg;
    atomic_fetch_add(&dist_short_ran, 1);
}

static void dist_long(void *arg) {
    intptr_t i = (intptr_t)arg;
    volatile int64_t buf[DIST_BUF];
    for (int k = 0; k < DIST_BUF; k++)
        buf[k] = i * DIST_BUF + k;
    dist_addr[i] = (uintptr_t)&buf[0];
    CHECK_EQ(weft_chan_send(dist_in, weft_val_int(i)), WEFT_OK);
    weft_val v;
    CHECK_EQ(weft_chan_recv(dist_gate, &v), 0); /* until the gate closes */
    int bad = 0;
    for (int k = 0; k < DIST_BUF; k++)
        bad += buf[k] != i * DIST_BUF + k;
    CHECKF(bad == 0, "goroutine %ld: %d of %d words on its stack changed", (long)i, bad, DIST_BUF);
    CHECK_EQ(weft_chan_send(dist_out, weft_val_int(i)), WEFT_OK);
}

static void dist_spawner(void *arg) {
    intptr_t half = (intptr_t)arg;
    for (intptr_t i = half; i < DIST_N; i += 2) {
        for (int k = 0; k < DIST_SHORT; k++)
            CHECK(weft_go(dist_short, NULL) > 0);
        CHECK(weft_go(dist_long, (void *)i) > 0);
        if (i % 64 < 2)
            weft_yield(); /* let the short ones end and the thief steal */
    }
}

static int cmp_addr(const void *a, const void *b) {
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static void dist_main(void *arg) {
    (void)arg;
    static uintptr_t sorted[DIST_N];
    for (int r = 0; r < DIST_ROUNDS; r++) {
        dist_gate = weft_chan_new(0);
        dist_in = weft_chan_new(DIST_N);
        dist_out = weft_chan_new(DIST_N);
        atomic_store(&dist_short_ran, 0);
        memset(dist_addr, 0, sizeof dist_addr);
        CHECK(weft_go(dist_spawner, (void *)(intptr_t)0) > 0);
        CHECK(weft_go(dist_spawner, (void *)(intptr_t)1) > 0);
        static char seen[DIST_N];
        memset(seen, 0, sizeof seen);
        weft_val v;
        for (int i = 0; i < DIST_N; i++) {
            CHECK_EQ(weft_chan_recv(dist_in, &v), 1);
            seen[v.u.i]++;
        }
        int missing = 0;
        for (int i = 0; i < DIST_N; i++)
            missing += seen[i] != 1;
        CHECK_EQ(missing, 0);
        memcpy(sorted, dist_addr, sizeof sorted);
        qsort(sorted, DIST_N, sizeof *sorted, cmp_addr);
        int close = 0;
        for (int i = 1; i < DIST_N; i++)
            close += sorted[i] - sorted[i - 1] < 16 * 1024;
        CHECKF(close == 0, "round %d: %d pairs of live goroutines less than a stack apart", r, close);
        weft_chan_close(dist_gate);
        for (int i = 0; i < DIST_N; i++)
            CHECK_EQ(weft_chan_recv(dist_out, &v), 1);
        while (weft_count() > 1)
            weft_yield();
        CHECK_EQ(atomic_load(&dist_short_ran), DIST_N * DIST_SHORT);
        weft_chan_release(dist_gate);
        weft_chan_release(dist_in);
        weft_chan_release(dist_out);
    }
}

static void test_live_stacks_distinct(void) {
    ctest_run(2, dist_main, NULL);
}

/* ---- work moves between processors (steal counters) ------------------------ */

static atomic_int spin_done;

static void busy_child(void *arg) {
    (void)arg;
    double x = 0;
    for (int i = 0; i < 200000; i++)
        x += sqrt((double)i);
    CHECK(x > 0);
    int p = weft_proc_id();
    atomic_fetch_add(&many.ran_on[p], 1);
    atomic_fetch_add(&spin_done, 1);
}

static void steal_main(void *arg) {
    (void)arg;
    atomic_store(&spin_done, 0);
    /* All goroutines are created on this processor, fewer than its ring
     * holds (so none spills to the global queue): the other processor can
     * only get them by stealing. */
    for (int i = 0; i < 200; i++)
        weft_go(busy_child, NULL);
    while (atomic_load(&spin_done) < 200)
        weft_yield();
    weft_stats st;
    CHECK_EQ(weft_stats_get(&st), WEFT_OK);
    CHECKF(st.steals > 0, "steals=%llu", (unsigned long long)st.steals);
    CHECKF(st.stolen > 0, "stolen=%llu", (unsigned long long)st.stolen);
    weft_proc_stats p1;
    CHECK_EQ(weft_proc_stats_get(1, &p1), WEFT_OK);
    CHECKF(p1.stolen > 0, "processor 1 stole %llu", (unsigned long long)p1.stolen);
}

static void test_work_stealing(void) {
    memset(&many, 0, sizeof many);
    ctest_run(2, steal_main, NULL);
    CHECKF(atomic_load(&many.ran_on[0]) > 0, "on p0: %d", atomic_load(&many.ran_on[0]));
    CHECKF(atomic_load(&many.ran_on[1]) > 0, "on p1: %d", atomic_load(&many.ran_on[1]));
    CHECK_EQ(atomic_load(&many.ran_on[0]) + atomic_load(&many.ran_on[1]), 200);
}

/* ---- yield interleaves ----------------------------------------------------- */

static atomic_int turn_log[64];
static atomic_int turn_n;

static void yielder(void *arg) {
    intptr_t id = (intptr_t)arg;
    for (int i = 0; i < 4; i++) {
        int k = atomic_fetch_add(&turn_n, 1);
        if (k < 64)
            atomic_store(&turn_log[k], (int)id);
        weft_yield();
    }
}

static void yield_main(void *arg) {
    (void)arg;
    atomic_store(&turn_n, 0);
    weft_go(yielder, (void *)1);
    weft_go(yielder, (void *)2);
    while (weft_count() > 1)
        weft_yield();
    CHECK_EQ(atomic_load(&turn_n), 8);
    /* On one processor, yielding alternates the two goroutines. */
    int switches = 0;
    for (int k = 1; k < 8; k++)
        switches += atomic_load(&turn_log[k]) != atomic_load(&turn_log[k - 1]);
    CHECKF(switches >= 6, "switches=%d", switches);
}

static void test_yield(void) {
    ctest_run(1, yield_main, NULL);
}

/* ---- ids, counts, restarts -------------------------------------------------- */

static weft_chan *gate;
static void close_it(void *c) {
    weft_val v;
    weft_chan_recv(gate, &v); /* held until main has counted */
    weft_chan_close(c);
}

static void ids_main(void *arg) {
    int procs = *(int *)arg;
    CHECK(weft_id() > 0);
    CHECK_EQ(weft_count(), 1);
    CHECK_EQ(weft_procs(), procs);
    CHECK(weft_proc_id() >= 0 && weft_proc_id() < procs);
    weft_chan *c = weft_chan_new(0);
    gate = weft_chan_new(0);
    weft_go(close_it, c);
    CHECK_EQ(weft_count(), 2);
    weft_chan_close(gate);
    weft_val v;
    CHECK_EQ(weft_chan_recv(c, &v), 0);
    weft_chan_release(gate);
    weft_chan_release(c);
}

static void test_ids_and_restart(void) {
    CHECK_EQ(weft_procs(), 0);
    CHECK_EQ(weft_id(), 0);
    for (int procs = 1; procs <= 4; procs++)
        ctest_run(procs, ids_main, &procs);
    CHECK_EQ(weft_procs(), 0);
}

/* main returning ends the engine even with goroutines blocked forever */
static weft_chan *leak_chan;
static void blocked_forever(void *arg) {
    (void)arg;
    weft_val v;
    weft_chan_recv(leak_chan, &v);
    CHECK(0); /* never reached */
}
static void sleeper_forever(void *arg) {
    (void)arg;
    weft_sleep(3600);
    CHECK(0);
}
static void leak_main(void *arg) {
    (void)arg;
    for (int i = 0; i < 100; i++) {
        weft_go(blocked_forever, NULL);
        weft_go(sleeper_forever, NULL);
    }
    while (weft_chan_len(leak_chan) == 0 && weft_count() < 201)
        weft_yield();
    weft_sleep(0.01);
}

static void test_main_return_discards_blocked(void) {
    leak_chan = weft_chan_new(0);
    ctest_run(2, leak_main, NULL);
    /* The blocked receivers' waits were withdrawn: the channel is usable
     * outside the engine and has nobody waiting on it. */
    CHECK_EQ(weft_chan_trysend(leak_chan, weft_val_int(1)), WEFT_EAGAIN);
    CHECK_EQ(weft_chan_close(leak_chan), WEFT_OK);
    weft_chan_release(leak_chan);
}

/* ---- foreign threads and weft_start/weft_stop ------------------------------- */

static atomic_int foreign_sum;
static void add_child(void *arg) {
    atomic_fetch_add(&foreign_sum, (int)(intptr_t)arg);
}

static void *foreign_thread(void *arg) {
    weft_chan *c = arg;
    for (int i = 1; i <= 1000; i++)
        CHECK(weft_go(add_child, (void *)(intptr_t)i) > 0);
    /* Non-blocking channel use from a thread that is no goroutine. */
    int sent = 0;
    while (sent < 100) {
        int rc = weft_chan_trysend(c, weft_val_int(sent + 1));
        CHECK(rc == WEFT_OK || rc == WEFT_EAGAIN);
        if (rc == WEFT_OK)
            sent++;
        else
            sched_yield();
    }
    /* A blocking call that would have to wait refuses, outside goroutines. */
    weft_chan *empty = weft_chan_new(0);
    weft_val v = weft_val_int(0);
    CHECK_EQ(weft_chan_recv(empty, &v), WEFT_ENOTG);
    CHECK_EQ(weft_chan_send(empty, v), WEFT_ENOTG);
    weft_chan_release(empty);
    return NULL;
}

static atomic_llong got_sum;
static void receiver(void *arg) {
    weft_chan *c = arg;
    for (int i = 0; i < 100; i++) {
        weft_val v;
        CHECK_EQ(weft_chan_recv(c, &v), 1);
        atomic_fetch_add(&got_sum, v.u.i);
    }
}

static void test_foreign_threads(void) {
    weft_config cfg = {2, 0};
    atomic_store(&foreign_sum, 0);
    atomic_store(&got_sum, 0);
    CHECK_EQ(weft_start(&cfg), WEFT_OK);
    CHECK_EQ(weft_start(&cfg), WEFT_ESTATE);
    weft_chan *c = weft_chan_new(4);
    CHECK(weft_go(receiver, c) > 0);
    pthread_t t;
    pthread_create(&t, NULL, foreign_thread, c);
    pthread_join(t, NULL);
    CHECK(weft_wait_idle(30));
    CHECK_EQ(atomic_load(&foreign_sum), 1000 * 1001 / 2);
    CHECK_EQ(atomic_load(&got_sum), 100 * 101 / 2);
    CHECK_EQ(weft_stop(), WEFT_OK);
    CHECK_EQ(weft_stop(), WEFT_ESTATE);
    weft_chan_release(c);
}

/* ---- floating point state and deep stacks ----------------------------------- */

static double recurse(int depth, double x) {
    volatile char pad[512];
    pad[0] = (char)depth;
    if (depth == 0)
        return x + pad[0];
    return recurse(depth - 1, x * 1.0000001) + 1.0;
}

static void deep_child(void *arg) {
    weft_chan *c = arg;
    /* ~40 KiB of frames on a 64 KiB stack, with switches in between. */
    double r = recurse(60, 1.0);
    weft_yield();
    r += recurse(60, 1.0);
    weft_chan_send(c, weft_val_num(r));
}

static void deep_main(void *arg) {
    (void)arg;
    weft_chan *c = weft_chan_new(0);
    double want = 2 * recurse(60, 1.0);
    for (int i = 0; i < 50; i++)
        weft_go(deep_child, c);
    for (int i = 0; i < 50; i++) {
        weft_val v;
        CHECK_EQ(weft_chan_recv(c, &v), 1);
        CHECK(v.u.d == want);
    }
    weft_chan_release(c);
}

static void test_deep_stacks(void) {
    ctest_run(2, deep_main, NULL);
}

/* ---- a stack overflow hits the guard page ----------------------------------- */

static volatile int overflow_forever = 1;
static int overflow(int n) {
    volatile char buf[1024];
    buf[0] = (char)n;
    if (!overflow_forever)
        return buf[0];
    return overflow(n + 1) + buf[0];
}
static void overflow_child(void *arg) {
    (void)arg;
    overflow(0);
}
static void overflow_main(void *arg) {
    (void)arg;
    weft_go(overflow_child, NULL);
    weft_sleep(5);
}

static void test_stack_guard_page(void) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* Quiet the child's report; its death is what is checked. */
        freopen("/dev/null", "w", stderr);
        weft_config cfg = {1, 0};
        weft_run(&cfg, overflow_main, NULL);
        _exit(0); /* reaching here means the overflow went unnoticed */
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
#if WEFT_ASAN || WEFT_TSAN
    /* The sanitizer's SEGV handler reports the overflow and exits non-zero. */
    CHECKF(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0), "status=%d", status);
#else
    CHECKF(WIFSIGNALED(status) && (WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS),
           "status=%d", status);
#endif
}

/* ---- idle processors are woken for new work, also amid timer wake-ups ---- */

/* Two goroutines that each raise a flag and then spin, without yielding,
 * until they see the other's: they finish only if both run at the same time,
 * on different processors. A processor left asleep while work waits (a lost
 * wake-up, or a stale spinning count that stops wakep) shows as a timeout.
 * Main waits parked on a channel, so it never hogs a processor. */
static atomic_int hs_flag[2];
static atomic_int hs_failed;
static weft_chan *hs_done;

static void handshake(void *arg) {
    int me = (int)(intptr_t)arg;
    atomic_store(&hs_flag[me], 1);
    int64_t deadline = weft_nanotime() + 2000000000;
    while (!atomic_load(&hs_flag[!me])) {
        if (weft_nanotime() > deadline) {
            atomic_store(&hs_failed, 1);
            break;
        }
    }
    weft_chan_send(hs_done, weft_val_int(me));
}

static void ticking(void *arg) {
    weft_chan *stop = arg;
    weft_timer *tk = weft_ticker_new(0.0003);
    for (;;) {
        weft_case cs[2] = {weft_case_recv(weft_timer_chan(tk)), weft_case_recv(stop)};
        if (weft_select(cs, 2, 0) == 1)
            break;
    }
    weft_timer_free(tk);
    weft_chan_release(stop);
}

static void parallel_main(void *arg) {
    (void)arg;
    weft_chan *stop = weft_chan_new(0);
    hs_done = weft_chan_new(0);
    weft_go(ticking, weft_chan_retain(stop)); /* ticking's reference: released when it ends */
    for (int i = 0; i < 300 && !atomic_load(&hs_failed); i++) {
        atomic_store(&hs_flag[0], 0);
        atomic_store(&hs_flag[1], 0);
        weft_go(handshake, (void *)0);
        weft_go(handshake, (void *)1);
        weft_val v;
        weft_chan_recv(hs_done, &v);
        weft_chan_recv(hs_done, &v);
        weft_sleep(0.0002 * (double)(i % 4)); /* let processors go idle, timers wake them */
    }
    weft_chan_close(stop);
    /* Quiet now but for main, which keeps running without parking (so it
     * readies nobody and wakes no processor): the other processor must end
     * up idle, and none may still be counted as spinning (a leaked count
     * keeps wakep from ever waking anyone again). */
    weft_stats st;
    int64_t deadline = weft_nanotime() + 2000000000;
    do
        weft_stats_get(&st);
    while ((st.spinning != 0 || st.idle_procs != st.procs - 1) && weft_nanotime() < deadline);
    CHECKF(st.spinning == 0 && st.idle_procs == st.procs - 1, "spinning=%d idle=%d", st.spinning,
           st.idle_procs);
    weft_chan_release(stop);
    weft_chan_release(hs_done);
}

static void test_idle_procs_are_woken(void) {
    atomic_store(&hs_failed, 0);
    ctest_run(2, parallel_main, NULL);
    CHECKF(!atomic_load(&hs_failed), "two runnable goroutines did not run in parallel");
}


/* ---- work readied while processors poll reaches one of them --------------- */

/* Four goroutines that each arrive and then spin, without yielding to the
 * scheduler, until all four have arrived: they finish only if all four run
 * at the same time, on the four processors. Between rounds main stays busy
 * for 5 to 45 us, so the other processors, out of work, poll for it (proc.c
 * idle_poll), the first two spinning and the third not. The spinners steal
 * the new goroutines and stop spinning; one still queued behind a spinning
 * goroutine must then reach the third processor, which is not idle, so
 * wakep() does not wake it. Left asleep, the round times out. The spin yields
 * the thread, not the processor: the processors share fewer CPUs. */
enum { BAR_N = 4 };
static atomic_int bar_arrived, bar_failed, bar_round;
static weft_chan *bar_done;

static void bar_child(void *arg) {
    (void)arg;
    atomic_fetch_add(&bar_arrived, 1);
    int64_t deadline = weft_nanotime() + 1000000000;
    while (atomic_load(&bar_arrived) < BAR_N) {
        if (weft_nanotime() > deadline) {
            atomic_store(&bar_failed, 1);
            break;
        }
        sched_yield();
    }
    weft_chan_send(bar_done, weft_val_int(1));
}

static void bar_main(void *arg) {
    int rounds = (int)(intptr_t)arg;
    bar_done = weft_chan_new(BAR_N);
    for (int i = 0; i < rounds && !atomic_load(&bar_failed); i++) {
        atomic_store(&bar_round, i);
        atomic_store(&bar_arrived, 0);
        for (int k = 0; k < BAR_N; k++)
            weft_go(bar_child, NULL);
        weft_val v;
        for (int k = 0; k < BAR_N; k++)
            weft_chan_recv(bar_done, &v);
        int64_t until = weft_nanotime() + 5000 + 10000 * (i % 5);
        while (weft_nanotime() < until)
            ;
    }
    weft_chan_release(bar_done);
}

static void test_work_reaches_polling_procs(void) {
    atomic_store(&bar_failed, 0);
    ctest_run(BAR_N, bar_main, (void *)(intptr_t)(int)(8000 * ctest_scale() + 1));
    CHECKF(!atomic_load(&bar_failed), "round %d: %d runnable goroutines did not all run on %d processors",
           atomic_load(&bar_round), BAR_N, BAR_N);
}

const ctest_case sched_tests[] = {
    {"idle_procs_are_woken", test_idle_procs_are_woken},
    {"work_reaches_polling_procs", test_work_reaches_polling_procs},
    {"many_goroutines", test_many_goroutines},
    {"recycled_goroutines", test_recycled_goroutines},
    {"live_stacks_distinct", test_live_stacks_distinct},
    {"work_stealing", test_work_stealing},
    {"yield", test_yield},
    {"ids_and_restart", test_ids_and_restart},
    {"main_return_discards_blocked", test_main_return_discards_blocked},
    {"foreign_threads", test_foreign_threads},
    {"deep_stacks", test_deep_stacks},
    {"stack_guard_page", test_stack_guard_page},
    {NULL, NULL},
};
