/*
 * test_stress.c — conservation under real parallelism.
 *
 * Rounds of P producers and C consumers over K channels of mixed capacity
 * (0, 1, 16, 128) on every processor. Producers send each message by a
 * random method: a blocking send, a select offering it on two or three
 * channels at once with a timeout case, or a non-blocking send. A closer
 * closes some channels at random moments; producers that meet a closed
 * channel move to the others. Consumers select over their open channels and
 * a timeout timer they reset on every pass. One message in sixteen carries a
 * heap payload that the consumer verifies and frees.
 *
 * Checked: the number and the checksum (a sum of well-mixed hashes) of the
 * messages received equal those of the messages whose send succeeded, so
 * nothing was lost or duplicated and no select performed two cases; per
 * consumer, values from one producer on one channel arrive in send order;
 * processors stole work from each other.
 *
 * `make test` moves at least 10 million messages (scaled down under the
 * sanitizers); `make soak` (WEFT_SOAK=1) moves 30 times more.
 */
#include "ctest.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { K = 8, P = 8, C = 8, PER_PRODUCER = 50000 };

typedef struct {
    weft_chan *ch[K];
    weft_chan *done;
    atomic_ullong sum_sent, sum_recv;
    atomic_llong n_sent, n_recv, n_heap, n_timeouts, n_closed_sends;
    int per_producer;
    uint64_t seed;
} round_t;

static round_t R;

static uint64_t next_rand(uint64_t *s) {
    *s = ctest_mix(*s);
    return *s;
}

static weft_val make_value(uint64_t x) {
    if ((ctest_mix(x) & 15) != 0)
        return weft_val_int((int64_t)x);
    uint64_t words[3] = {x, ~x, x ^ 0x5555555555555555ull};
    weft_val v = weft_val_bytes(words, sizeof words);
    v.tag = WEFT_TAG_USER;
    return v;
}

/* Returns the message number carried by v, checking a heap payload; frees it. */
static uint64_t take_value(weft_val *v) {
    if (v->tag == WEFT_TAG_INT64)
        return (uint64_t)v->u.i;
    CHECK_EQ(v->tag, WEFT_TAG_USER);
    CHECK_EQ(v->len, 24);
    uint64_t words[3];
    memcpy(words, weft_val_data(v), sizeof words);
    CHECK(words[1] == ~words[0] && words[2] == (words[0] ^ 0x5555555555555555ull));
    weft_val_free(v);
    atomic_fetch_add_explicit(&R.n_heap, 1, memory_order_relaxed);
    return words[0];
}

static void producer(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t rng = R.seed ^ ((uint64_t)id << 40);
    bool closed[K] = {false};
    int nclosed = 0;
    weft_timer *timeout = weft_timer_new(3600);
    uint64_t sum = 0;
    long long sent = 0;
    for (int i = 0; i < R.per_producer && nclosed < K; i++) {
        uint64_t x = ((uint64_t)id << 32) | (uint64_t)i;
        for (;;) {
            if (nclosed == K)
                break;
            uint64_t r = next_rand(&rng);
            int a = (int)(r % K);
            while (closed[a])
                a = (a + 1) % K;
            int method = (int)((r >> 8) % 8);
            if (method < 3) { /* blocking send */
                weft_val v = make_value(x);
                int rc = weft_chan_send(R.ch[a], v);
                if (rc == WEFT_OK)
                    goto sent;
                CHECK_EQ(rc, WEFT_ECLOSED);
                weft_val_free(&v);
                closed[a] = true;
                nclosed++;
                atomic_fetch_add(&R.n_closed_sends, 1);
            } else if (method < 7) { /* select over up to 3 channels + timeout */
                weft_case cs[4];
                int n = 0, which[3];
                for (int k = 0; k < 3; k++) {
                    int c = (a + k * 3) % K;
                    if (closed[c] || (k > 0 && c == which[0]))
                        continue;
                    which[n] = c;
                    cs[n++] = weft_case_send(R.ch[c], make_value(x));
                }
                weft_timer_reset(timeout, 0.0005 * (double)(r >> 60));
                cs[n] = weft_case_recv(weft_timer_chan(timeout));
                int k = weft_select(cs, n + 1, 0);
                CHECK(k >= 0 && k <= n);
                for (int j = 0; j < n; j++)
                    if (j != k)
                        weft_val_free(&cs[j].val);
                if (k == n) {
                    atomic_fetch_add(&R.n_timeouts, 1);
                    continue;
                }
                if (cs[k].ok == 1)
                    goto sent;
                weft_val_free(&cs[k].val);
                closed[which[k]] = true;
                nclosed++;
                atomic_fetch_add(&R.n_closed_sends, 1);
            } else { /* non-blocking send */
                weft_val v = make_value(x);
                int rc = weft_chan_trysend(R.ch[a], v);
                if (rc == WEFT_OK)
                    goto sent;
                weft_val_free(&v);
                if (rc == WEFT_ECLOSED) {
                    closed[a] = true;
                    nclosed++;
                } else {
                    CHECK_EQ(rc, WEFT_EAGAIN);
                    weft_yield();
                }
            }
            continue;
        sent:
            sum += ctest_mix(x);
            sent++;
            break;
        }
    }
    weft_timer_free(timeout);
    atomic_fetch_add(&R.sum_sent, sum);
    atomic_fetch_add(&R.n_sent, sent);
    weft_chan_send(R.done, weft_val_int(1));
}

static void consumer(void *arg) {
    (void)arg;
    bool open[K];
    int nopen = K;
    int64_t last[P][K];
    for (int k = 0; k < K; k++)
        open[k] = true;
    for (int p = 0; p < P; p++)
        for (int k = 0; k < K; k++)
            last[p][k] = -1;
    weft_timer *timeout = weft_timer_new(3600);
    uint64_t sum = 0;
    long long got = 0;
    while (nopen > 0) {
        weft_case cs[K + 1];
        int map[K + 1], n = 0;
        for (int k = 0; k < K; k++) {
            if (!open[k])
                continue;
            map[n] = k;
            cs[n++] = weft_case_recv(R.ch[k]);
        }
        weft_timer_reset(timeout, 0.002);
        cs[n] = weft_case_recv(weft_timer_chan(timeout));
        int i = weft_select(cs, n + 1, 0);
        CHECK(i >= 0 && i <= n);
        if (i == n)
            continue; /* timed out: poll again */
        int k = map[i];
        if (!cs[i].ok) {
            open[k] = false;
            nopen--;
            continue;
        }
        uint64_t x = take_value(&cs[i].val);
        int p = (int)(x >> 32);
        int64_t seq = (int64_t)(x & 0xffffffffu);
        CHECK(p >= 0 && p < P);
        CHECKF(seq > last[p][k], "channel %d producer %d: %lld after %lld", k, p, (long long)seq,
               (long long)last[p][k]);
        last[p][k] = seq;
        sum += ctest_mix(x);
        got++;
    }
    weft_timer_free(timeout);
    atomic_fetch_add(&R.sum_recv, sum);
    atomic_fetch_add(&R.n_recv, got);
    weft_chan_send(R.done, weft_val_int(2));
}

static void closer(void *arg) {
    (void)arg;
    uint64_t rng = R.seed ^ 0xC105E;
    /* Close up to three channels at random moments during the round. */
    for (int n = 0; n < 3; n++) {
        weft_sleep(0.0001 * (double)(next_rand(&rng) % 50));
        int k = (int)(next_rand(&rng) % K);
        int rc = weft_chan_close(R.ch[k]);
        CHECK(rc == WEFT_OK || rc == WEFT_ECLOSED);
    }
    weft_chan_send(R.done, weft_val_int(3));
}

static void round_main(void *arg) {
    static const size_t caps[] = {0, 1, 16, 128};
    for (int k = 0; k < K; k++)
        R.ch[k] = weft_chan_new(caps[(R.seed >> (2 * k)) & 3]);
    R.done = weft_chan_new(0);
    for (intptr_t i = 0; i < C; i++)
        weft_go(consumer, (void *)i);
    for (intptr_t i = 0; i < P; i++)
        weft_go(producer, (void *)i);
    weft_go(closer, NULL);
    weft_val v;
    for (int i = 0; i < P + 1; i++)
        CHECK_EQ(weft_chan_recv(R.done, &v), 1);
    for (int k = 0; k < K; k++)
        weft_chan_close(R.ch[k]); /* the closer may have closed some: ECLOSED is fine */
    for (int i = 0; i < C; i++)
        CHECK_EQ(weft_chan_recv(R.done, &v), 1);
    weft_stats st;
    weft_stats_get(&st);
    *(uint64_t *)arg += st.steals;
    for (int k = 0; k < K; k++)
        weft_chan_release(R.ch[k]);
    weft_chan_release(R.done);
}

static void test_conservation(void) {
    double scale = ctest_scale() * (getenv("WEFT_SOAK") ? 30 : 1);
    long long target = (long long)(10e6 * scale);
    long long moved = 0, heap = 0, timeouts = 0, closed_sends = 0;
    uint64_t steals = 0;
    int rounds = 0;
    int64_t t0 = weft_nanotime();
    while (moved < target) {
        memset(&R, 0, sizeof R);
        R.per_producer = PER_PRODUCER;
        R.seed = ctest_mix((uint64_t)rounds * 7919 + (uint64_t)t0);
        ctest_run(2, round_main, &steals);
        CHECK_EQ(atomic_load(&R.n_recv), atomic_load(&R.n_sent));
        CHECKF(atomic_load(&R.sum_recv) == atomic_load(&R.sum_sent), "round %d checksum", rounds);
        if (atomic_load(&R.n_recv) != atomic_load(&R.n_sent) ||
            atomic_load(&R.sum_recv) != atomic_load(&R.sum_sent))
            break;
        moved += atomic_load(&R.n_recv);
        heap += atomic_load(&R.n_heap);
        timeouts += atomic_load(&R.n_timeouts);
        closed_sends += atomic_load(&R.n_closed_sends);
        rounds++;
    }
    double secs = (double)(weft_nanotime() - t0) / 1e9;
    printf("     %lld messages (%lld with heap payloads) in %d rounds, %.1f s, %.2f M msg/s;\n"
           "     %lld select timeouts, %lld sends met a closed channel, %llu steals\n",
           moved, heap, rounds, secs, (double)moved / secs / 1e6, timeouts, closed_sends,
           (unsigned long long)steals);
    CHECK(moved >= target);
    CHECK(heap > 0);
    CHECK(closed_sends > 0);
    CHECK(steals > 0);
}

const ctest_case stress_tests[] = {
    {"conservation", test_conservation},
    {NULL, NULL},
};
