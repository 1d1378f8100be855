/*
 * ring.h — a buffered channel's ring of slots, which senders and receivers
 * claim without a lock (after D. Vyukov's bounded multi-producer,
 * multi-consumer queue). chan.c builds its parking protocol on top.
 *
 * Invariants
 *  - Positions only grow. sendx is the next position to fill and recvx the
 *    next to take (without sendx's CLOSED bit): recvx <= sendx, and
 *    sendx <= recvx + cap as seen by a sender about to reserve.
 *  - Slot i serves positions i, i + cap, i + 2 cap, ...; its seq says whose
 *    turn it is:
 *      seq == 2 pos              free for the sender of position pos;
 *      seq == 2 pos + 1          holds the value of pos, for its receiver;
 *      seq == 2 (pos + cap)      taken: free for the sender of pos + cap.
 *    (Doubled so that "holds pos" and "free for pos + cap" differ even when
 *    cap is 1.)
 *  - A sender owns its slot from winning the CAS on sendx to its release
 *    store of seq = 2 pos + 1; a receiver from winning the CAS on recvx to
 *    its release store of seq = 2 (pos + cap). Only the owner touches the
 *    value, and the release/acquire pair on seq carries it to the next
 *    owner.
 *  - CLOSED in sendx is set once (by close, under the channel's lock) and
 *    never cleared: after it no sender reserves a position, so every value
 *    still to come was reserved before it.
 *
 * Each side works in two halves, reserve (the CAS on its index) and commit
 * (the value moved, then seq), so that chan.c can read the waiter counts in
 * between. A failed reserve tells EMPTY (nothing reserved) from BUSY (the
 * head was reserved by a sender that has not yet published it) and FULL
 * (the value of the lap before is still there) from BUSY (a receiver has
 * reserved it and is taking it): BUSY is done within a few instructions.
 *
 * Layout: sendx and recvx each have a cache line, so that a sender and a
 * receiver on two processors write different lines; the slots are 32 bytes,
 * two to a line.
 *
 * Locks: none. The owner of a reserved slot takes no lock before it
 * commits, so a holder of the channel's lock may wait out BUSY.
 */
#ifndef WEFT_RING_H
#define WEFT_RING_H

#include "core.h"
#include "lock.h"

#include <sched.h>
#include <stdint.h>

#define WEFT_RING_CLOSED ((uint64_t)1 << 63)

enum { WEFT_RING_OK = 0, WEFT_RING_FULL, WEFT_RING_SHUT, WEFT_RING_EMPTY, WEFT_RING_BUSY };

typedef struct weft_ring_slot {
    _Atomic uint64_t seq;
    weft_val val;
    uint64_t pad_; /* 32 bytes: a slot never straddles two lines */
} weft_ring_slot;

typedef struct weft_ring {
    _Alignas(WEFT_CACHE_LINE) _Atomic uint64_t sendx; /* | WEFT_RING_CLOSED */
    _Alignas(WEFT_CACHE_LINE) _Atomic uint64_t recvx;
    /* Written once, at creation. */
    _Alignas(WEFT_CACHE_LINE) uint64_t cap;
    uint64_t mask; /* cap - 1 when cap is a power of two */
    bool pow2;
    weft_ring_slot *slots;
} weft_ring;

static inline weft_ring_slot *weft_ring_slot_at(const weft_ring *r, uint64_t pos) {
    return &r->slots[r->pow2 ? pos & r->mask : pos % r->cap];
}

/* Reserves the next position for a sender: WEFT_RING_OK with *pos and *slot,
 * WEFT_RING_FULL (the slot still holds the value of the lap before),
 * WEFT_RING_BUSY (a receiver has reserved that value and is taking it) or
 * WEFT_RING_SHUT (CLOSED is set). The winning CAS is seq_cst: chan.c's
 * handshake orders it before the sender's read of the waiter counts. */
static inline int weft_ring_reserve_send(weft_ring *r, uint64_t *posp, weft_ring_slot **slot) {
    uint64_t pos = atomic_load_explicit(&r->sendx, memory_order_relaxed);
    for (;;) {
        if (pos & WEFT_RING_CLOSED)
            return WEFT_RING_SHUT;
        weft_ring_slot *s = weft_ring_slot_at(r, pos);
        int64_t d = (int64_t)(atomic_load_explicit(&s->seq, memory_order_acquire) - 2 * pos);
        if (d == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->sendx, &pos, pos + 1,
                                                      memory_order_seq_cst, memory_order_relaxed)) {
                *posp = pos;
                *slot = s;
                return WEFT_RING_OK;
            }
        } else if (d < 0) {
            uint64_t rx = atomic_load_explicit(&r->recvx, memory_order_acquire);
            return rx > pos - r->cap ? WEFT_RING_BUSY : WEFT_RING_FULL;
        } else {
            pos = atomic_load_explicit(&r->sendx, memory_order_relaxed);
        }
    }
}

/* Fills a reserved slot with *v and publishes it. */
static inline void weft_ring_commit_send(weft_ring_slot *s, uint64_t pos, const weft_val *v) {
    s->val = *v;
    atomic_store_explicit(&s->seq, 2 * pos + 1, memory_order_release);
}

/* Reserves the value at the head for a receiver: WEFT_RING_OK with *pos and
 * *slot, WEFT_RING_EMPTY or WEFT_RING_BUSY (see above). The winning CAS is
 * seq_cst, as for senders. */
static inline int weft_ring_reserve_recv(weft_ring *r, uint64_t *posp, weft_ring_slot **slot) {
    uint64_t pos = atomic_load_explicit(&r->recvx, memory_order_relaxed);
    for (;;) {
        weft_ring_slot *s = weft_ring_slot_at(r, pos);
        int64_t d = (int64_t)(atomic_load_explicit(&s->seq, memory_order_acquire) - (2 * pos + 1));
        if (d == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->recvx, &pos, pos + 1,
                                                      memory_order_seq_cst, memory_order_relaxed)) {
                *posp = pos;
                *slot = s;
                return WEFT_RING_OK;
            }
        } else if (d < 0) {
            /* seq == 2 pos: the sender of pos has not published; has it reserved? */
            uint64_t sx = atomic_load_explicit(&r->sendx, memory_order_acquire);
            return (sx & ~WEFT_RING_CLOSED) == pos ? WEFT_RING_EMPTY : WEFT_RING_BUSY;
        } else {
            pos = atomic_load_explicit(&r->recvx, memory_order_relaxed);
        }
    }
}

/* Takes the value out of a reserved slot into *out and frees the slot. */
static inline void weft_ring_commit_recv(weft_ring *r, weft_ring_slot *s, uint64_t pos,
                                         weft_val *out) {
    *out = s->val;
    atomic_store_explicit(&s->seq, 2 * (pos + r->cap), memory_order_release);
}

/* A BUSY slot is a few instructions from done, unless its owner's thread was
 * preempted in between: spin a little, then yield the thread. */
static inline void weft_ring_backoff(int *spin) {
    if ((*spin)++ < 64)
        weft_cpu_relax();
    else
        sched_yield();
}

/* Reserves, waiting out BUSY (an operation takes effect when it reserves,
 * and the other side's commit is as good as done): OK, FULL or SHUT for a
 * sender, OK or EMPTY for a receiver. */
static inline int weft_ring_reserve_send_settled(weft_ring *r, uint64_t *pos,
                                                 weft_ring_slot **slot) {
    int rc, spin = 0;
    while ((rc = weft_ring_reserve_send(r, pos, slot)) == WEFT_RING_BUSY)
        weft_ring_backoff(&spin);
    return rc;
}

static inline int weft_ring_reserve_recv_settled(weft_ring *r, uint64_t *pos,
                                                 weft_ring_slot **slot) {
    int rc, spin = 0;
    while ((rc = weft_ring_reserve_recv(r, pos, slot)) == WEFT_RING_BUSY)
        weft_ring_backoff(&spin);
    return rc;
}

/* Both halves at once, for callers that hold the channel's lock and need a
 * definite answer (the owner of a BUSY slot never needs the lock before it
 * commits). */
static inline int weft_ring_push(weft_ring *r, const weft_val *v) {
    uint64_t pos;
    weft_ring_slot *s;
    int rc = weft_ring_reserve_send_settled(r, &pos, &s);
    if (rc == WEFT_RING_OK)
        weft_ring_commit_send(s, pos, v);
    return rc;
}

static inline int weft_ring_pop(weft_ring *r, weft_val *out) {
    uint64_t pos;
    weft_ring_slot *s;
    int rc = weft_ring_reserve_recv_settled(r, &pos, &s);
    if (rc == WEFT_RING_OK)
        weft_ring_commit_recv(r, s, pos, out);
    return rc;
}

/* Hints, read without claiming anything: whether a pop would find no value,
 * whether a push would find no free slot. */
static inline bool weft_ring_looks_empty(weft_ring *r) {
    uint64_t pos = atomic_load_explicit(&r->recvx, memory_order_relaxed);
    return atomic_load_explicit(&weft_ring_slot_at(r, pos)->seq, memory_order_acquire) != 2 * pos + 1;
}

static inline bool weft_ring_looks_full(weft_ring *r) {
    uint64_t pos = atomic_load_explicit(&r->sendx, memory_order_relaxed) & ~WEFT_RING_CLOSED;
    return atomic_load_explicit(&weft_ring_slot_at(r, pos)->seq, memory_order_acquire) != 2 * pos;
}

/* The values in the ring, reserved ones included, as one moment's guess. */
static inline uint64_t weft_ring_len(weft_ring *r) {
    uint64_t rx = atomic_load_explicit(&r->recvx, memory_order_acquire);
    uint64_t sx = atomic_load_explicit(&r->sendx, memory_order_acquire) & ~WEFT_RING_CLOSED;
    uint64_t n = sx - rx; /* sendx was read last, so n >= 0 */
    return n > r->cap ? r->cap : n;
}

#endif
