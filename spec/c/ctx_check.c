/*
 * ctx_check.c — standalone check of the native context switch: engine/ctx.c
 * plus engine/ctx_<arch>.S, nothing else from the engine, no test framework.
 *
 *   x86-64:  gcc -std=c11 -Wall -Wextra -Werror -O2 -o ctx_check \
 *                spec/c/ctx_check.c engine/ctx.c engine/ctx_x86_64.S -lm
 *   aarch64: aarch64-linux-gnu-gcc -std=c11 -Wall -Wextra -Werror -O2 -static \
 *                -o ctx_check spec/c/ctx_check.c engine/ctx.c \
 *                engine/ctx_aarch64.S -lm && qemu-aarch64 ./ctx_check
 *   (spec/c/ctx_cross.sh does the aarch64 one.)
 *
 * -lm is for fesetround/fegetround (in libm on glibc). The unwinder check
 * needs unwind tables, which gcc and clang emit by default on both targets.
 *
 * Each check prints "ok - name" or "FAIL - name" (details on stderr); the
 * last line is "N passed, N failed" and the exit status is 1 on failure.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "../../engine/ctx.h"

#include <fenv.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <ucontext.h>
#include <unistd.h>
#include <unwind.h>

#if defined(__SANITIZE_ADDRESS__)
#define CHECK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHECK_ASAN 1
#endif
#endif
#ifndef CHECK_ASAN
#define CHECK_ASAN 0
#endif
#if CHECK_ASAN
#include <sanitizer/asan_interface.h>
#endif

#if !defined(__x86_64__) && !defined(__aarch64__)
#error "ctx_check: x86-64 or aarch64 only"
#endif

#define NOINLINE __attribute__((noinline))

#define STACK_BYTES (64 * 1024)
#define CANARY_BYTES 256 /* below each stack */
#define ABOVE_BYTES 64   /* and above it */
#define CANARY_BYTE 0x5A

/* ---------------------------------------------------------------- results */

static int n_passed, n_failed;
static unsigned errors; /* errors of the running check, from any context */

static void fail(const char *fmt, ...) {
    if (errors++ < 8) {
        va_list ap;
        va_start(ap, fmt);
        fputs("    error: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
}

static const char *volatile current_check = "startup";

static void run(const char *name, void (*check)(void)) {
    errors = 0;
    current_check = name;
    check();
    if (errors == 0) {
        n_passed++;
        printf("ok - %s\n", name);
    } else {
        n_failed++;
        printf("FAIL - %s (%u errors)\n", name, errors);
    }
    fflush(stdout);
}

static uint64_t mix64(uint64_t x) { /* splitmix64 finaliser */
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* --------------------------------------------------------------- contexts */

static weft_ctx main_ctx; /* the thread's own stack */
static weft_ctx ctx_a, ctx_b;
static unsigned char *stack_a, *stack_b;

/* Stack memory: CANARY_BYTES, then the usable stack, then ABOVE_BYTES, all
 * filled with CANARY_BYTE first. Nothing may write above the stack top, and
 * an unwinder that does not stop at the trampoline reads garbage there. */
static unsigned char *stack_alloc(void) {
    unsigned char *mem = malloc(STACK_BYTES + ABOVE_BYTES);
    if (!mem) {
        perror("malloc");
        exit(2);
    }
    memset(mem, CANARY_BYTE, STACK_BYTES + ABOVE_BYTES);
    return mem;
}

/* A's stack top is 16-byte aligned; B's is not (≡ 8 mod 16), so
 * weft_ctx_init has to round it down. */
#define TRIM_A 0
#define TRIM_B 40
static void ctx_make(weft_ctx *c, unsigned char *mem, size_t trim, void (*entry)(void *), void *arg) {
#if CHECK_ASAN
    /* A context that died mid-call left its frames' redzones poisoned;
     * weft_ctx_init does not clear them, so whoever reuses a stack must. */
    __asan_unpoison_memory_region(mem + CANARY_BYTES, STACK_BYTES - CANARY_BYTES);
#endif
    memset(c, 0, sizeof *c);
    c->stack_lo = mem + CANARY_BYTES;
    c->stack_size = STACK_BYTES - CANARY_BYTES - trim;
    weft_ctx_init(c, entry, arg);
}
static void make_a(void (*entry)(void *), void *arg) { ctx_make(&ctx_a, stack_a, TRIM_A, entry, arg); }
static void make_b(void (*entry)(void *), void *arg) { ctx_make(&ctx_b, stack_b, TRIM_B, entry, arg); }

static uintptr_t ctx_top(const weft_ctx *c) {
    return ((uintptr_t)c->stack_lo + c->stack_size) & ~(uintptr_t)15;
}

/* Leaves `self` for good. */
static void die_to_main(weft_ctx *self) {
    weft_ctx_switch(self, &main_ctx, 1);
    fprintf(stderr, "ctx_check: a dead context was resumed\n");
    abort();
}

static void sw(weft_ctx *from, weft_ctx *to) { weft_ctx_switch(from, to, 0); }

/* Swaps from `from` to `to` with every callee-saved register loaded from
 * in[]; when `from` is resumed, stores those registers to out[]. */
#if defined(__x86_64__)
#define PROBE_REGS 6 /* rbx rbp r12 r13 r14 r15 */
#if defined(__CET__)
#define PROBE_LANDING "endbr64\n"
#else
#define PROBE_LANDING ""
#endif
__asm__(".pushsection .text\n"
        ".globl ctx_check_probe\n"
        ".hidden ctx_check_probe\n"
        ".type ctx_check_probe, @function\n"
        ".p2align 4\n"
        "ctx_check_probe:\n" PROBE_LANDING
        "pushq %rbp\n"
        "pushq %rbx\n"
        "pushq %r12\n"
        "pushq %r13\n"
        "pushq %r14\n"
        "pushq %r15\n"
        "pushq %rcx\n" /* out; also makes the call 16-byte aligned */
        "movq 0(%rdx), %rbx\n"
        "movq 8(%rdx), %rbp\n"
        "movq 16(%rdx), %r12\n"
        "movq 24(%rdx), %r13\n"
        "movq 32(%rdx), %r14\n"
        "movq 40(%rdx), %r15\n"
        "xorl %edx, %edx\n"
        "call weft_ctx_switch@PLT\n"
        "popq %rcx\n"
        "movq %rbx, 0(%rcx)\n"
        "movq %rbp, 8(%rcx)\n"
        "movq %r12, 16(%rcx)\n"
        "movq %r13, 24(%rcx)\n"
        "movq %r14, 32(%rcx)\n"
        "movq %r15, 40(%rcx)\n"
        "popq %r15\n"
        "popq %r14\n"
        "popq %r13\n"
        "popq %r12\n"
        "popq %rbx\n"
        "popq %rbp\n"
        "ret\n"
        ".size ctx_check_probe, .-ctx_check_probe\n"
        ".popsection\n");
#else
#define PROBE_REGS 19 /* x19..x28 x29 d8..d15 */
#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define PROBE_LANDING "bti c\n"
#else
#define PROBE_LANDING ""
#endif
__asm__(".pushsection .text\n"
        ".globl ctx_check_probe\n"
        ".hidden ctx_check_probe\n"
        ".type ctx_check_probe, @function\n"
        ".p2align 4\n"
        "ctx_check_probe:\n" PROBE_LANDING
        "stp x29, x30, [sp, #-176]!\n"
        "stp x19, x20, [sp, #16]\n"
        "stp x21, x22, [sp, #32]\n"
        "stp x23, x24, [sp, #48]\n"
        "stp x25, x26, [sp, #64]\n"
        "stp x27, x28, [sp, #80]\n"
        "stp d8, d9, [sp, #96]\n"
        "stp d10, d11, [sp, #112]\n"
        "stp d12, d13, [sp, #128]\n"
        "stp d14, d15, [sp, #144]\n"
        "str x3, [sp, #160]\n"
        "ldp x19, x20, [x2, #0]\n"
        "ldp x21, x22, [x2, #16]\n"
        "ldp x23, x24, [x2, #32]\n"
        "ldp x25, x26, [x2, #48]\n"
        "ldp x27, x28, [x2, #64]\n"
        "ldr x29, [x2, #80]\n"
        "ldp d8, d9, [x2, #88]\n"
        "ldp d10, d11, [x2, #104]\n"
        "ldp d12, d13, [x2, #120]\n"
        "ldp d14, d15, [x2, #136]\n"
        "mov w2, #0\n"
        "bl weft_ctx_switch\n"
        "ldr x3, [sp, #160]\n"
        "stp x19, x20, [x3, #0]\n"
        "stp x21, x22, [x3, #16]\n"
        "stp x23, x24, [x3, #32]\n"
        "stp x25, x26, [x3, #48]\n"
        "stp x27, x28, [x3, #64]\n"
        "str x29, [x3, #80]\n"
        "stp d8, d9, [x3, #88]\n"
        "stp d10, d11, [x3, #104]\n"
        "stp d12, d13, [x3, #120]\n"
        "stp d14, d15, [x3, #136]\n"
        "ldp x19, x20, [sp, #16]\n"
        "ldp x21, x22, [sp, #32]\n"
        "ldp x23, x24, [sp, #48]\n"
        "ldp x25, x26, [sp, #64]\n"
        "ldp x27, x28, [sp, #80]\n"
        "ldp d8, d9, [sp, #96]\n"
        "ldp d10, d11, [sp, #112]\n"
        "ldp d12, d13, [sp, #128]\n"
        "ldp d14, d15, [sp, #144]\n"
        "ldp x29, x30, [sp], #176\n"
        "ret\n"
        ".size ctx_check_probe, .-ctx_check_probe\n"
        ".popsection\n");
#endif
void ctx_check_probe(weft_ctx *from, weft_ctx *to, const uint64_t *in, uint64_t *out);

/* Fills in[] for (context, round) and checks out[] against it. */
static void probe_fill(uint64_t *in, unsigned who, unsigned round) {
    for (unsigned i = 0; i < PROBE_REGS; i++)
        in[i] = mix64(((uint64_t)who << 48) ^ ((uint64_t)round << 8) ^ i);
}
static void probe_cmp(const char *who, unsigned round, const uint64_t *in, const uint64_t *out) {
    for (unsigned i = 0; i < PROBE_REGS; i++)
        if (in[i] != out[i])
            fail("%s round %u: callee-saved register #%u was %#llx, now %#llx", who, round, i,
                 (unsigned long long)in[i], (unsigned long long)out[i]);
}

/* ------------------------------------------------ 1. entry and alignment */

void weft_ctx_trampoline(void); /* hidden, same link unit */

struct entry_info {
    weft_ctx *self;
    void *arg_seen;
    uintptr_t frame, local, nested_local, sp, ra;
    int round_mode;
    int ran;
};

static NOINLINE void nested_aligned_local(uintptr_t *where) {
    _Alignas(16) volatile unsigned char local[16];
    local[0] = 1;
    *where = (uintptr_t)&local[0];
}

static void entry_info_fn(void *arg) {
    struct entry_info *info = arg;
    _Alignas(16) volatile unsigned char local[16];
    weft_ctx_entered(info->self);
    local[0] = 1;
    info->arg_seen = arg;
    info->frame = (uintptr_t)__builtin_frame_address(0);
    info->ra = (uintptr_t)__builtin_return_address(0);
    info->local = (uintptr_t)&local[0];
    nested_aligned_local(&info->nested_local);
#if defined(__aarch64__)
    {
        uintptr_t sp;
        __asm__ volatile("mov %0, sp" : "=r"(sp));
        info->sp = sp;
    }
#else
    info->sp = info->frame + 16; /* rsp before the trampoline's call */
#endif
    info->round_mode = fegetround();
    info->ran = 1;
    die_to_main(info->self);
}

static void check_entry_one(const char *name, weft_ctx *c, struct entry_info *info) {
    uintptr_t lo = (uintptr_t)c->stack_lo, top = ctx_top(c);
    uintptr_t tramp = (uintptr_t)(void *)weft_ctx_trampoline;
    if (!info->ran) {
        fail("%s: entry did not run", name);
        return;
    }
    if (info->arg_seen != info)
        fail("%s: entry got arg %p, expected %p", name, info->arg_seen, (void *)info);
    if (info->local & 15)
        fail("%s: 16-aligned local at %#lx", name, (unsigned long)info->local);
    if (info->nested_local & 15)
        fail("%s: 16-aligned local in a callee at %#lx", name, (unsigned long)info->nested_local);
    if (info->sp & 15)
        fail("%s: stack pointer %#lx not 16-byte aligned", name, (unsigned long)info->sp);
#if defined(__x86_64__)
    if (info->sp != top)
        fail("%s: entry called with rsp %#lx, expected the stack top %#lx", name,
             (unsigned long)info->sp, (unsigned long)top);
#endif
    if (info->frame < lo || info->frame >= top || info->local < lo || info->local >= top)
        fail("%s: frame %#lx / local %#lx outside the stack [%#lx, %#lx)", name, (unsigned long)info->frame,
             (unsigned long)info->local, (unsigned long)lo, (unsigned long)top);
    if (info->ra <= tramp || info->ra >= tramp + 32)
        fail("%s: entry returns to %#lx, not into weft_ctx_trampoline (%#lx)", name, (unsigned long)info->ra,
             (unsigned long)tramp);
    if (info->round_mode != FE_TONEAREST)
        fail("%s: new context starts with rounding mode %d", name, info->round_mode);
}

static void check_entry(void) {
    struct entry_info ia, ib;
    memset(&ia, 0, sizeof ia);
    memset(&ib, 0, sizeof ib);
    ia.self = &ctx_a;
    ib.self = &ctx_b;
    make_a(entry_info_fn, &ia);
    make_b(entry_info_fn, &ib);
    sw(&main_ctx, &ctx_a);
    sw(&main_ctx, &ctx_b);
    check_entry_one("A", &ctx_a, &ia);
    check_entry_one("B (unaligned top)", &ctx_b, &ib);
    weft_ctx_destroy(&ctx_a);
    weft_ctx_destroy(&ctx_b);
}

/* ------------------------------------------------------- 2. ping-pong */

#define PINGPONG_ROUNDS 20000

struct pingpong {
    weft_ctx *self;
    uint64_t salt;
    volatile uint64_t value, reply;
    volatile unsigned seen;
};

static void entry_pingpong(void *arg) {
    struct pingpong *pp = arg;
    weft_ctx_entered(pp->self);
    for (unsigned i = 0; i < PINGPONG_ROUNDS; i++) {
        uint64_t v = pp->value;
        if (v != mix64(i ^ pp->salt))
            fail("ping-pong: context got %#llx in round %u", (unsigned long long)v, i);
        pp->reply = v * 3 + 1;
        pp->seen = i + 1;
        sw(pp->self, &main_ctx);
    }
    die_to_main(pp->self);
}

static void check_pingpong(void) {
    struct pingpong pa = {&ctx_a, 0xAAAA, 0, 0, 0}, pb = {&ctx_b, 0xBBBB, 0, 0, 0};
    make_a(entry_pingpong, &pa);
    make_b(entry_pingpong, &pb);
    for (unsigned i = 0; i < PINGPONG_ROUNDS; i++) {
        struct pingpong *p[2] = {&pa, &pb};
        weft_ctx *c[2] = {&ctx_a, &ctx_b};
        for (int k = 0; k < 2; k++) {
            uint64_t v = mix64(i ^ p[k]->salt);
            p[k]->value = v;
            sw(&main_ctx, c[k]);
            if (p[k]->reply != v * 3 + 1 || p[k]->seen != i + 1)
                fail("ping-pong: round %u ctx %d: reply %#llx, seen %u", i, k, (unsigned long long)p[k]->reply,
                     p[k]->seen);
        }
    }
    sw(&main_ctx, &ctx_a); /* let both finish */
    sw(&main_ctx, &ctx_b);
    weft_ctx_destroy(&ctx_a);
    weft_ctx_destroy(&ctx_b);
}

/* ------------------------------------------- 3. ring main -> A -> B -> main */

#define RING_LAPS 10000

static volatile uint64_t ring_token;

static void entry_ring(void *arg) {
    int who = (int)(intptr_t)arg; /* 1 = A, 2 = B */
    weft_ctx *self = who == 1 ? &ctx_a : &ctx_b, *next = who == 1 ? &ctx_b : &main_ctx;
    weft_ctx_entered(self);
    for (uint64_t lap = 0; lap < RING_LAPS; lap++) {
        if (ring_token != 3 * lap + (uint64_t)who)
            fail("ring: ctx %d lap %llu token %llu", who, (unsigned long long)lap, (unsigned long long)ring_token);
        ring_token = ring_token + 1;
        sw(self, next);
    }
    die_to_main(self);
}

static void check_ring(void) {
    ring_token = 0;
    make_a(entry_ring, (void *)(intptr_t)1);
    make_b(entry_ring, (void *)(intptr_t)2);
    for (uint64_t lap = 0; lap < RING_LAPS; lap++) {
        ring_token = ring_token + 1;
        sw(&main_ctx, &ctx_a);
        if (ring_token != 3 * lap + 3)
            fail("ring: main lap %llu token %llu", (unsigned long long)lap, (unsigned long long)ring_token);
    }
    sw(&main_ctx, &ctx_a);
    sw(&main_ctx, &ctx_b);
    weft_ctx_destroy(&ctx_a);
    weft_ctx_destroy(&ctx_b);
}

/* -------------------------- 4. live locals (integers and doubles) survive */

#define CHURN_ROUNDS 3000

typedef void (*yield_fn)(void);
static void yield_nop(void) {}
static void yield_main(void) { sw(&main_ctx, &ctx_a); }
static void yield_a(void) { sw(&ctx_a, &ctx_b); }
static void yield_b(void) { sw(&ctx_b, &main_ctx); }

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* Twelve integers and eight doubles live across every yield: at -O2 they sit
 * in callee-saved registers (and spill slots) while other contexts run the
 * same code with other values. */
static NOINLINE uint64_t churn(unsigned rounds, uint64_t seed, yield_fn yield, double *dout) {
    uint64_t a = mix64(seed + 1), b = mix64(seed + 2), c = mix64(seed + 3), d = mix64(seed + 4);
    uint64_t e = mix64(seed + 5), f = mix64(seed + 6), g = mix64(seed + 7), h = mix64(seed + 8);
    uint64_t i = mix64(seed + 9), j = mix64(seed + 10), k = mix64(seed + 11), l = mix64(seed + 12);
    double x0 = (double)(a >> 40) / 7.0, x1 = (double)(b >> 40) / 11.0, x2 = (double)(c >> 40) / 13.0;
    double x3 = (double)(d >> 40) / 17.0, x4 = 1.0 / 3.0, x5 = -2.5, x6 = 0.1 * (double)(seed & 1023);
    double x7 = 1e-3;
    for (unsigned r = 0; r < rounds; r++) {
        a = a * 6364136223846793005ull + 1442695040888963407ull;
        b ^= rotl(a, 17);
        c += b * 0x9E3779B97F4A7C15ull;
        d = rotl(d ^ c, 29) + r;
        e -= d >> 3;
        f ^= e * 0xBF58476D1CE4E5B9ull;
        g += rotl(f, 41) ^ a;
        h = h * 31 + g;
        i ^= h >> 7;
        j += i | 1;
        k = rotl(k + j, 5);
        l ^= k * 0x94D049BB133111EBull;
        x0 = x0 * 0.75 + (double)(a & 0xFFFF);
        x1 = x1 * 0.5 + x0 * 0.125;
        x2 = x2 / 1.5 + x1 / 3.0;
        x3 = x3 * 0.9 - x2 * 0.01;
        x4 = x4 * x4 * 0.5 + 0.25 + x3 * 1e-9;
        x5 = x5 * 0.99 + (double)(l >> 54) * 0.001;
        x6 = x6 * 0.5 + x5 * x4;
        x7 = x7 + x6 * 1e-6 - x7 * 1e-3;
        yield();
        a += (uint64_t)(int64_t)x0;
        l ^= (uint64_t)(int64_t)(x7 * 1e6);
        x7 += (double)(a & 7);
    }
    *dout = x0 + x1 * 2 + x2 * 3 + x3 * 4 + x4 * 5 + x5 * 6 + x6 * 7 + x7 * 8;
    return a ^ b ^ c ^ d ^ e ^ f ^ g ^ h ^ i ^ j ^ k ^ l;
}

struct churn_result {
    uint64_t seed, r;
    double d;
};
static struct churn_result churn_a, churn_b;

static void entry_churn(void *arg) {
    struct churn_result *res = arg;
    weft_ctx *self = res == &churn_a ? &ctx_a : &ctx_b;
    weft_ctx_entered(self);
    res->r = churn(CHURN_ROUNDS, res->seed, res == &churn_a ? yield_a : yield_b, &res->d);
    die_to_main(self);
}

static void check_churn(void) {
    const uint64_t seeds[3] = {0x1234, 0xABCDEF, 0x5555AAAA};
    uint64_t ref[3];
    double dref[3], dmain;
    for (int s = 0; s < 3; s++)
        ref[s] = churn(CHURN_ROUNDS, seeds[s], yield_nop, &dref[s]);
    churn_a.seed = seeds[1];
    churn_b.seed = seeds[2];
    make_a(entry_churn, &churn_a);
    make_b(entry_churn, &churn_b);
    uint64_t rmain = churn(CHURN_ROUNDS, seeds[0], yield_main, &dmain);
    sw(&main_ctx, &ctx_a); /* both are parked in their last yield */
    sw(&main_ctx, &ctx_b);
    const uint64_t got[3] = {rmain, churn_a.r, churn_b.r};
    const double dgot[3] = {dmain, churn_a.d, churn_b.d};
    for (int s = 0; s < 3; s++) {
        if (got[s] != ref[s])
            fail("churn %d: integers %#llx, expected %#llx", s, (unsigned long long)got[s],
                 (unsigned long long)ref[s]);
        if (memcmp(&dgot[s], &dref[s], sizeof(double)) != 0)
            fail("churn %d: doubles %.17g, expected %.17g", s, dgot[s], dref[s]);
    }
    weft_ctx_destroy(&ctx_a);
    weft_ctx_destroy(&ctx_b);
}

/* ----------------------- 5. every callee-saved register, loaded by asm */

#define PROBE_ROUNDS 3000

static void entry_probe(void *arg) {
    int who = (int)(intptr_t)arg;
    weft_ctx *self = who == 1 ? &ctx_a : &ctx_b, *next = who == 1 ? &ctx_b : &main_ctx;
    uint64_t in[PROBE_REGS], out[PROBE_REGS];
    weft_ctx_entered(self);
    for (unsigned r = 0; r < PROBE_ROUNDS; r++) {
        probe_fill(in, (unsigned)who, r);
        memset(out, 0, sizeof out);
        ctx_check_probe(self, next, in, out);
        probe_cmp(who == 1 ? "A" : "B", r, in, out);
    }
    die_to_main(self);
}

static void check_probe(void) {
    uint64_t in[PROBE_REGS], out[PROBE_REGS];
    make_a(entry_probe, (void *)(intptr_t)1);
    make_b(entry_probe, (void *)(intptr_t)2);
    for (unsigned r = 0; r < PROBE_ROUNDS; r++) {
        probe_fill(in, 0, r);
        memset(out, 0, sizeof out);
        ctx_check_probe(&main_ctx, &ctx_a, in, out);
        probe_cmp("main", r, in, out);
    }
    sw(&main_ctx, &ctx_a);
    sw(&main_ctx, &ctx_b);
    weft_ctx_destroy(&ctx_a);
    weft_ctx_destroy(&ctx_b);
}

/* ------------------------------------- 6. rounding mode is per context */

static const int modes[4] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
static const char *const mode_names[4] = {"nearest", "upward", "downward", "towardzero"};

/* 1/3 rounds down to nearest, 1/10 up, so these three quotients tell the
 * four modes apart. double goes through SSE/MXCSR on x86-64 and long double
 * through the x87 control word; on aarch64 both obey FPCR (long double is
 * soft-float, which reads FPCR). */
struct fsig {
    double d[3];
    long double l[3];
};
static volatile double v_one = 1.0, v_mone = -1.0, v_three = 3.0, v_ten = 10.0;
static struct fsig mode_sig[4];
static int long_double_distinct;

static NOINLINE void fsig_now(struct fsig *s) {
    s->d[0] = v_one / v_three;
    s->d[1] = v_one / v_ten;
    s->d[2] = v_mone / v_ten;
    s->l[0] = (long double)v_one / (long double)v_three;
    s->l[1] = (long double)v_one / (long double)v_ten;
    s->l[2] = (long double)v_mone / (long double)v_ten;
}

/* By value: x87 long doubles have padding bytes that memcmp would see. */
static int ld_same(const long double *a, const long double *b) {
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2];
}

static int mode_index(int mode) {
    for (int m = 0; m < 4; m++)
        if (modes[m] == mode)
            return m;
    return -1;
}

/* Checks that the running context rounds in `mode` (fegetround and actual
 * arithmetic). */
static void expect_mode(const char *who, unsigned lap, int mode) {
    struct fsig s;
    int got = fegetround(), m = mode_index(mode);
    fsig_now(&s);
    if (got != mode)
        fail("%s lap %u: fegetround() = %d, expected %s", who, lap, got, mode_names[m]);
    if (memcmp(s.d, mode_sig[m].d, sizeof s.d) != 0)
        fail("%s lap %u: double arithmetic does not round %s", who, lap, mode_names[m]);
    if (long_double_distinct && !ld_same(s.l, mode_sig[m].l))
        fail("%s lap %u: long double arithmetic does not round %s", who, lap, mode_names[m]);
}

#define FENV_LAPS 400

static void fenv_turn(const char *who, unsigned lap, int k, int *mine) {
    expect_mode(who, lap, *mine); /* what this context set last time */
    *mine = modes[(lap + (unsigned)k) % 4];
    if (fesetround(*mine) != 0)
        fail("%s: fesetround failed", who);
    expect_mode(who, lap, *mine);
}

static void entry_fenv(void *arg) {
    int who = (int)(intptr_t)arg;
    weft_ctx *self = who == 1 ? &ctx_a : &ctx_b, *next = who == 1 ? &ctx_b : &main_ctx;
    const char *name = who == 1 ? "A" : "B";
    int mine = FE_TONEAREST; /* a new context starts with the default mode */
    weft_ctx_entered(self);
    for (unsigned lap = 0; lap < FENV_LAPS; lap++) {
        fenv_turn(name, lap, who, &mine);
        sw(self, next);
    }
    expect_mode(name, FENV_LAPS, mine);
    die_to_main(self);
}

static void check_fenv(void) {
    for (int m = 0; m < 4; m++) {
        if (fesetround(modes[m]) != 0) {
            fail("fesetround(%s) failed", mode_names[m]);
            fesetround(FE_TONEAREST);
            return;
        }
        fsig_now(&mode_sig[m]);
    }
    fesetround(FE_TONEAREST);
    long_double_distinct = 1;
    for (int m = 0; m < 4; m++)
        for (int n = m + 1; n < 4; n++) {
            if (memcmp(mode_sig[m].d, mode_sig[n].d, sizeof mode_sig[m].d) == 0)
                fail("rounding modes %s and %s give the same doubles", mode_names[m], mode_names[n]);
            if (ld_same(mode_sig[m].l, mode_sig[n].l))
                long_double_distinct = 0;
        }
    if (!long_double_distinct)
        printf("    (long double rounding not distinguishable here; checking double only)\n");

    /* main runs towardzero before the contexts even start: they must still
     * begin with round-to-nearest, and each keeps its own mode. */
    int mine = FE_TOWARDZERO;
    fesetround(mine);
    make_a(entry_fenv, (void *)(intptr_t)1);
    make_b(entry_fenv, (void *)(intptr_t)2);
    for (unsigned lap = 0; lap < FENV_LAPS; lap++) {
        fenv_turn("main", lap, 0, &mine);
        sw(&main_ctx, &ctx_a);
    }
    expect_mode("main", FENV_LAPS, mine);
    sw(&main_ctx, &ctx_a);
    expect_mode("main", FENV_LAPS + 1, mine);
    sw(&main_ctx, &ctx_b);
    expect_mode("main", FENV_LAPS + 2, mine);
    fesetround(FE_TONEAREST);
    weft_ctx_destroy(&ctx_a);
    weft_ctx_destroy(&ctx_b);
}

/* -------------------------------- 7. switching at the bottom of a deep stack */

#define DEEP 150

static NOINLINE uint64_t recurse(unsigned depth, uint64_t acc, weft_ctx *self) {
    volatile uint64_t buf[16];
    uint64_t r;
    for (unsigned n = 0; n < 16; n++)
        buf[n] = acc * (n + 1) + depth;
    if (depth == 0) {
        if (self)
            sw(self, &main_ctx);
        r = acc;
    } else {
        r = recurse(depth - 1, acc * 31 + depth, self);
    }
    for (unsigned n = 0; n < 16; n++)
        r = r * 7 + buf[n];
    return r;
}

static uint64_t deep_result;

static void entry_deep(void *arg) {
    (void)arg;
    weft_ctx_entered(&ctx_a);
    deep_result = recurse(DEEP, 42, &ctx_a);
    die_to_main(&ctx_a);
}

static void check_deep(void) {
    deep_result = 0;
    make_a(entry_deep, NULL);
    sw(&main_ctx, &ctx_a); /* A is now parked DEEP frames down */
    uint64_t ref = recurse(DEEP, 42, NULL);
    sw(&main_ctx, &ctx_a);
    if (deep_result != ref)
        fail("deep recursion: %#llx, expected %#llx", (unsigned long long)deep_result, (unsigned long long)ref);
    weft_ctx_destroy(&ctx_a);
}

/* ------------------------------------ 8. unwinders stop at the trampoline */

struct bt {
    int frames;
    uintptr_t prev_ip, last_ip;
};

static _Unwind_Reason_Code bt_step(struct _Unwind_Context *uc, void *arg) {
    struct bt *b = arg;
    b->prev_ip = b->last_ip;
    b->last_ip = (uintptr_t)_Unwind_GetIP(uc);
    return ++b->frames > 64 ? _URC_NORMAL_STOP : _URC_NO_REASON;
}

static struct bt bt_result;
static _Unwind_Reason_Code bt_rc;

static NOINLINE void backtrace_here(void) {
    memset(&bt_result, 0, sizeof bt_result);
    bt_rc = _Unwind_Backtrace(bt_step, &bt_result);
}

static void entry_unwind(void *arg) {
    (void)arg;
    weft_ctx_entered(&ctx_a);
    backtrace_here();
    die_to_main(&ctx_a);
}

static void check_unwind(void) {
    uintptr_t tramp = (uintptr_t)(void *)weft_ctx_trampoline;
    bt_rc = _URC_FATAL_PHASE1_ERROR;
    make_a(entry_unwind, NULL);
    sw(&main_ctx, &ctx_a);
    if (bt_rc != _URC_END_OF_STACK)
        fail("_Unwind_Backtrace returned %d after %d frames, expected end of stack", (int)bt_rc,
             bt_result.frames);
    /* libgcc reports one more frame, with ip 0, after the outermost one
     * (whose return address is undefined); other unwinders may not. A
     * trampoline without that CFI shows up as a garbage frame after it. */
    uintptr_t outer = bt_result.last_ip ? bt_result.last_ip : bt_result.prev_ip;
    if (outer <= tramp || outer >= tramp + 32)
        fail("outermost frame at %#lx (then %#lx) after %d frames, expected weft_ctx_trampoline (%#lx)",
             (unsigned long)bt_result.prev_ip, (unsigned long)bt_result.last_ip, bt_result.frames,
             (unsigned long)tramp);
    weft_ctx_destroy(&ctx_a);
}

/* ----------------------- 9. switching while signals land on the stacks */

/* The handler runs on the alternate stack (set up in main) and scribbles
 * over the memory just below the interrupted stack pointer, which the ABI
 * lets a signal clobber at any instruction (aarch64 has no red zone; x86-64
 * keeps 128 bytes). A switch that stores its frame before lowering sp loses
 * registers (or its return address) here. Under TSAN, handlers run deferred
 * with a stale sp, so the handler only counts. */
#if defined(__SANITIZE_THREAD__)
#define STORM_SCRIBBLE 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STORM_SCRIBBLE 0
#endif
#endif
#ifndef STORM_SCRIBBLE
#define STORM_SCRIBBLE 1
#endif
#if defined(__x86_64__)
#define RED_ZONE 128
#else
#define RED_ZONE 0
#endif
#define SCRIBBLE_BYTES 512

static volatile sig_atomic_t sig_count;
static volatile int storm_stop;

#if defined(__has_attribute)
#if __has_attribute(no_sanitize_address)
__attribute__((no_sanitize_address))
#endif
#endif
static void on_alarm(int sig, siginfo_t *si, void *uctx) {
    (void)sig;
    (void)si;
#if STORM_SCRIBBLE
    {
        const ucontext_t *uc = uctx;
#if defined(__x86_64__)
        uintptr_t sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
#else
        uintptr_t sp = (uintptr_t)uc->uc_mcontext.sp;
#endif
        volatile unsigned char *p = (volatile unsigned char *)(sp - RED_ZONE - SCRIBBLE_BYTES);
        for (unsigned n = 0; n < SCRIBBLE_BYTES; n++)
            p[n] = (unsigned char)(n ^ 0xA5);
    }
#else
    (void)uctx;
#endif
    sig_count = sig_count + 1;
}

static void entry_storm(void *arg) {
    uint64_t in[PROBE_REGS], out[PROBE_REGS];
    (void)arg;
    weft_ctx_entered(&ctx_a);
    for (unsigned r = 0; !storm_stop; r++) {
        probe_fill(in, 7, r);
        ctx_check_probe(&ctx_a, &main_ctx, in, out);
        probe_cmp("A (signals)", r, in, out);
    }
    die_to_main(&ctx_a);
}

static void check_signals(void) {
    struct sigaction sa, old_sa;
    struct itimerval it;
    uint64_t in[PROBE_REGS], out[PROBE_REGS];
    unsigned r;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGALRM, &sa, &old_sa);
    memset(&it, 0, sizeof it);
    it.it_interval.tv_usec = 50;
    it.it_value.tv_usec = 50;
    sig_count = 0;
    storm_stop = 0;
    make_a(entry_storm, NULL);
    setitimer(ITIMER_REAL, &it, NULL);
    /* At least 100000 round trips and, unless signals are deferred (TSAN),
     * 200 signals. */
    for (r = 0; r < 4000000 && (r < 100000 || (STORM_SCRIBBLE && sig_count < 200)); r++) {
        probe_fill(in, 8, r);
        ctx_check_probe(&main_ctx, &ctx_a, in, out);
        probe_cmp("main (signals)", r, in, out);
        if (errors)
            break;
    }
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_REAL, &it, NULL);
    sigaction(SIGALRM, &old_sa, NULL);
    storm_stop = 1;
    sw(&main_ctx, &ctx_a);
    printf("    (%u round trips, %d signals)\n", r, (int)sig_count);
    weft_ctx_destroy(&ctx_a);
}

/* -------------------------------------- 10. many fresh contexts, reused stacks */

#define FRESH 2000

static volatile unsigned fresh_count;

static void entry_fresh(void *arg) {
    weft_ctx *self = arg;
    weft_ctx_entered(self);
    fresh_count = fresh_count + 1;
    die_to_main(self);
}

static void check_fresh(void) {
    fresh_count = 0;
    for (unsigned n = 0; n < FRESH; n++) {
        if (n & 1)
            make_b(entry_fresh, &ctx_b);
        else
            make_a(entry_fresh, &ctx_a);
        sw(&main_ctx, n & 1 ? &ctx_b : &ctx_a);
        weft_ctx_destroy(n & 1 ? &ctx_b : &ctx_a);
        if (fresh_count != n + 1) {
            fail("fresh context %u: count %u", n, fresh_count);
            break;
        }
    }
}

/* ------------------------------------------------ 11. nothing overflowed */

static void check_canaries(void) {
    for (int s = 0; s < 2; s++) {
        const unsigned char *mem = s ? stack_b : stack_a;
        size_t top = (STACK_BYTES - (s ? TRIM_B : TRIM_A)) & ~(size_t)15; /* mem is 16-aligned */
        for (size_t n = 0; n < CANARY_BYTES; n++)
            if (mem[n] != CANARY_BYTE) {
                fail("stack %c: canary byte %zu below the stack overwritten", s ? 'B' : 'A', n);
                break;
            }
        for (size_t n = top; n < STACK_BYTES + ABOVE_BYTES; n++)
            if (mem[n] != CANARY_BYTE) {
                fail("stack %c: byte %zu above the stack top overwritten", s ? 'B' : 'A', n - top);
                break;
            }
    }
}

/* ------------------------------------------------------------ crashes */

/* A broken switch usually crashes rather than failing a comparison: report
 * it in the same format (async-signal-safe, on the alternate stack). */
static void put_str(char *buf, size_t *len, const char *str) {
    while (*str && *len < 255)
        buf[(*len)++] = *str++;
}
static void put_uint(char *buf, size_t *len, unsigned v) {
    char tmp[12];
    int n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0 && *len < 255)
        buf[(*len)++] = tmp[--n];
}

static void on_fatal(int sig) {
    char buf[256];
    size_t len = 0;
    put_str(buf, &len, "FAIL - ");
    put_str(buf, &len, current_check);
    put_str(buf, &len, " (fatal signal ");
    put_uint(buf, &len, (unsigned)sig);
    put_str(buf, &len, ")\n");
    put_uint(buf, &len, (unsigned)n_passed);
    put_str(buf, &len, " passed, ");
    put_uint(buf, &len, (unsigned)n_failed + 1);
    put_str(buf, &len, " failed\n");
    if (write(1, buf, len) < 0)
        _exit(3);
    _exit(1);
}

static void setup_signals(void) {
    static const int fatal_sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE, SIGABRT};
    static _Alignas(16) unsigned char alt_mem[256 * 1024];
    stack_t alt;
    struct sigaction sa;
    memset(&alt, 0, sizeof alt);
    alt.ss_size = sizeof alt_mem;
    alt.ss_sp = alt_mem;
    if (sigaltstack(&alt, NULL) != 0) {
        perror("sigaltstack");
        exit(2);
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
    for (size_t n = 0; n < sizeof fatal_sigs / sizeof fatal_sigs[0]; n++)
        sigaction(fatal_sigs[n], &sa, NULL);
}

int main(void) {
    setup_signals();
    weft_ctx_init_thread(&main_ctx);
    stack_a = stack_alloc();
    stack_b = stack_alloc();
#if defined(__x86_64__)
    printf("ctx_check: x86-64\n");
#else
    printf("ctx_check: aarch64\n");
#endif
    run("entry: arg, 16-byte alignment, return into the trampoline", check_entry);
    run("ping-pong main <-> A, B with values in shared memory", check_pingpong);
    run("ring main -> A -> B -> main", check_ring);
    run("integer and double locals live across switches", check_churn);
    run("all callee-saved registers (asm probe)", check_probe);
    run("rounding mode is per context (fesetround)", check_fenv);
    run("switch from a deep stack", check_deep);
    run("unwinder stops at the trampoline", check_unwind);
    run("switches under a signal storm", check_signals);
    run("fresh contexts on reused stacks", check_fresh);
    run("nothing written below or above the stacks", check_canaries);
    free(stack_a);
    free(stack_b);
    weft_ctx_destroy(&main_ctx);
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
