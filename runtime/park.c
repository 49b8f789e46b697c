/*
 * park.c - parking: the one mechanism every blocking operation uses.
 *
 * A park goes through the fiber's park word (token << 2 | state):
 *
 *   fs_park_prepare:  token+1, PREPARED       (fiber running)
 *   fs_park:          arms the deadline timer, switches out
 *   after the switch: PREPARED -> PARKED, then commit(arg)
 *   waker:            PARKED -> WOKEN    and readies the fiber
 *   timer:            PARKED -> TIMEDOUT and readies the fiber
 *
 * Exactly one transition out of PARKED succeeds, and whoever makes it owns
 * the fiber's wake-up; all other wakers get false and must wake someone
 * else. A waker that comes while the fiber is still PREPARED (it published
 * itself before calling fs_park) moves it to WOKEN without readying it;
 * the parker sees that at its PREPARED -> PARKED step and readies itself.
 * The token makes an unpark aimed at an old park fail.
 *
 * PARKED is entered only after the switch, never before: with migration
 * on, a fiber readied while its registers were still being saved could be
 * resumed by another carrier on a half-saved stack.
 */
#include "internal.h"
#include "sys.h"

#include <errno.h>
#include <time.h>

#define PW(tok, st) (((uint64_t)(tok) << 2) | (uint64_t)(st))
#define PW_TOK(w) ((w) >> 2)
#define PW_ST(w) ((int)((w)&3))

/* Set in fiber.why once fs_park is over (see fs__hook_gate): why keeps
 * the reason of the last park, for dumps, in the other bits. */
#define FS_WHY_DONE 0x80

int64_t fs_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A cheap clock (vDSO, no TSC read) for "parked since", shown in dumps. */
int64_t fs__now_coarse(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

fs_park_token fs_park_prepare(void)
{
    fs_fiber *f = fs_self();
    if (!f)
        return 0;
    uint64_t w = atomic_load_explicit(&f->park, memory_order_relaxed);
    fs_park_token tok = PW_TOK(w) + 1;
    /* release: a waker that reads the token from wherever we publish it
     * sees this state */
    atomic_store_explicit(&f->park, PW(tok, FS_PW_PREPARED), memory_order_release);
    return tok;
}

/* Moves f out of the park named by tok into state `how` (WOKEN or
 * TIMEDOUT). Returns true if the caller must ready f. *won tells whether
 * the transition happened at all (false: another waker or the timer won). */
static bool fs__park_transition(struct fs_fiber *f, fs_park_token tok, int how, bool *won)
{
    uint64_t w = atomic_load_explicit(&f->park, memory_order_acquire);
    for (;;) {
        if (PW_TOK(w) != tok || PW_ST(w) >= FS_PW_WOKEN) {
            *won = false;
            return false;
        }
        /* acq_rel: the woken fiber must see what the waker wrote before
         * waking it (e.g. a handed-off lock), and we must see its state */
        if (atomic_compare_exchange_weak_explicit(&f->park, &w, PW(tok, how),
                                                  memory_order_acq_rel, memory_order_acquire)) {
            *won = true;
            return PW_ST(w) == FS_PW_PARKED;
        }
    }
}

bool fs__unpark_as(struct fs_fiber *f, fs_park_token tok, int how)
{
    bool won;
    if (fs__park_transition(f, tok, how, &won))
        fs__ready(f);
    return won;
}

bool fs_unpark(fs_fiber *f, fs_park_token tok)
{
    return fs__unpark_as(f, tok, FS_PW_WOKEN);
}

/* ---- timers ------------------------------------------------------------ */

/* Every live fiber may park with a deadline on any sched, so each heap
 * keeps room for all live fibers: growing happens at spawn, where running
 * out of memory is an EAGAIN for the spawner, never in fs_park, where it
 * could only abort. */
static _Atomic uint64_t fs__timers_reserved;

static unsigned fs__nscheds_made(void)
{
    unsigned n = atomic_load(&fs__g.nstarted);
    return n > fs__g.nsched ? n : fs__g.nsched;
}

static int fs__heap_reserve(struct fs_sched *s, uint64_t want)
{
    fs__spin_lock(&s->timer_lock);
    int rc = fs__timer_heap_reserve(&s->timers, (uint32_t)want);
    fs__spin_unlock(&s->timer_lock);
    return rc;
}

/* Every sched made so far (configured ones exist from init; handoff
 * carriers are appended, see fs__start_extra for the race with them). */
int fs__timers_reserve(uint64_t live)
{
    if (live <= atomic_load_explicit(&fs__timers_reserved, memory_order_relaxed))
        return 0;
    uint64_t want = live < 32 ? 64 : live * 2;
    if (want > UINT32_MAX)
        return -ENOMEM;
    unsigned done = 0, n;
    for (;;) {
        n = fs__nscheds_made();
        for (unsigned i = done; i < n; i++) {
            int rc = fs__heap_reserve(fs__g.scheds[i], want);
            if (rc)
                return rc;
        }
        done = n;
        uint64_t cur = atomic_load(&fs__timers_reserved);
        while (cur < want && !atomic_compare_exchange_weak(&fs__timers_reserved, &cur, want))
            ;
        if (fs__nscheds_made() == done) /* seq_cst reread: see fs__start_extra */
            return 0;
    }
}

/* A handoff carrier's heap, after it was published: until the reservation
 * we read is still the current one. Allocation failure leaves the heap
 * smaller, so the sched is retired and defunct: it never runs a fiber. */
void fs__timers_reserve_sched(struct fs_sched *s)
{
    for (;;) {
        uint64_t r = atomic_load(&fs__timers_reserved);
        if (fs__heap_reserve(s, r < 64 ? 64 : r) != 0) {
            atomic_store(&s->retired, 1);
            atomic_store(&s->defunct, 1);
            return;
        }
        if (atomic_load(&fs__timers_reserved) == r)
            return;
    }
}

/* fork child: the scheds are new, with empty heaps. */
void fs__timers_reserve_reset(void)
{
    atomic_store(&fs__timers_reserved, 0);
}

static void fs__timer_arm(struct fs_sched *s, struct fs_fiber *f, fs_park_token tok, int64_t dl)
{
    f->timer.deadline = dl;
    f->timer_tok = tok;
    f->timer_sched = s;
    fs__spin_lock(&s->timer_lock);
    int rc = fs__timer_heap_insert(&s->timers, &f->timer);
    FS_CHECK(rc == 0); /* room was reserved at spawn (fs__timers_reserve) */
    int64_t min = fs__timer_heap_min(&s->timers)->deadline;
    /* seq_cst: read by a watcher after it published its deadline (timer_watch.c) */
    atomic_store_explicit(&s->next_deadline, min, memory_order_seq_cst);
    fs__spin_unlock(&s->timer_lock);
    fs__stat_inc(&s->st.timers_armed);
    /* s is busy (its fiber is parking): a sleeping carrier watches its
     * deadlines, in case the next fiber here computes for long. */
    if (min == dl && !s->exclusive)
        fs__timers_watch_note(s, dl);
}

static void fs__timer_disarm(struct fs_fiber *f)
{
    struct fs_sched *s = f->timer_sched;
    if (!s)
        return;
    f->timer_sched = NULL;
    fs__spin_lock(&s->timer_lock);
    fs__timer_heap_remove(&s->timers, &f->timer);
    struct fs_timer *m = fs__timer_heap_min(&s->timers);
    atomic_store_explicit(&s->next_deadline, m ? m->deadline : INT64_MAX, memory_order_relaxed);
    fs__spin_unlock(&s->timer_lock);
}

/* Fires every due timer of s; returns how many fibers it woke. Any
 * thread: s's carrier, an idle carrier (timer_watch.c), the monitor. The
 * park-word transition happens under the timer lock: once a fiber has
 * disarmed its timer (also under the lock) no timer of ours can touch it,
 * even if it then exits and is freed. */
unsigned fs__timers_run(struct fs_sched *s, int64_t now)
{
    struct fs_fiber *wake = NULL;
    unsigned n = 0;
    fs__spin_lock(&s->timer_lock);
    for (;;) {
        struct fs_timer *t = fs__timer_heap_min(&s->timers);
        if (!t || t->deadline > now)
            break;
        fs__timer_heap_pop(&s->timers);
        struct fs_fiber *f = FS_CONTAINER_OF(t, struct fs_fiber, timer);
        bool won;
        if (fs__park_transition(f, f->timer_tok, FS_PW_TIMEDOUT, &won)) {
            f->next = wake;
            wake = f;
        }
        if (won)
            fs__stat_inc(&s->st.timers_fired);
    }
    struct fs_timer *m = fs__timer_heap_min(&s->timers);
    atomic_store_explicit(&s->next_deadline, m ? m->deadline : INT64_MAX, memory_order_relaxed);
    fs__spin_unlock(&s->timer_lock);
    while (wake) {
        struct fs_fiber *f = wake;
        wake = f->next;
        fs__ready(f);
        n++;
    }
    return n;
}

/* ---- parking ----------------------------------------------------------- */

static void fs__interrupt_parked(struct fs_fiber *f, fs_park_token tok);

/* After-switch step of a park: runs on the next context of the carrier,
 * once the parked fiber's stack is no longer in use. */
static void fs__after_park(struct fs_sched *s, struct fs_fiber *f)
{
    fs_park_token tok = s->commit_tok;
    bool (*commit)(void *) = s->commit_fn;
    void *arg = s->commit_arg;
    uint64_t w = PW(tok, FS_PW_PREPARED);
    atomic_store_explicit(&f->state, FS_F_PARKED, memory_order_relaxed);
    /* seq_cst: the interrupt flag is read after it (below) */
    if (!atomic_compare_exchange_strong_explicit(&f->park, &w, PW(tok, FS_PW_PARKED),
                                                 memory_order_seq_cst, memory_order_acquire)) {
        /* Woken (or timed out) before it was even switched out: whoever
         * did it left the readying to us. Still run commit, which releases
         * the caller's lock. */
        if (commit)
            commit(arg);
        fs__ready(f);
        return;
    }
    if (commit && !commit(arg)) {
        bool won;
        if (fs__park_transition(f, tok, FS_PW_WOKEN, &won))
            fs__ready(f);
        return;
    }
    /* An interrupt that found this park still PREPARED, or came before
     * it was prepared, left it to us (see fs_interrupt). Dekker: it sets the flag, then reads the park
     * word; we moved the word to PARKED, then read the flag (both sides
     * seq_cst), so one of us sees the other. */
    if (FS_UNLIKELY(atomic_load_explicit(&f->interrupt, memory_order_seq_cst)))
        fs__interrupt_parked(f, tok);
}

int fs_park(fs_park_token tok, enum fs_park_reason why, const void *wait_obj, int64_t deadline,
            bool (*commit)(void *arg), void *arg)
{
    struct fs_sched *s = fs__cur_sched();
    struct fs_fiber *self = s ? s->cur : NULL;
    if (!self)
        return -EPERM;
    FS_CHECK(PW_TOK(atomic_load(&self->park)) == tok);

    if (deadline != FS_NO_DEADLINE && deadline <= fs_now()) {
        /* Already due: do not switch at all. */
        bool won;
        fs__park_transition(self, tok, FS_PW_TIMEDOUT, &won);
        atomic_store_explicit(&self->why, (uint8_t)(why | FS_WHY_DONE), memory_order_relaxed);
        if (commit)
            commit(arg);
        return won ? -ETIMEDOUT : 0;
    }
    /* Clears FS_WHY_DONE: from here until the end of this function the
     * interrupt hook is held back (fs__hook_gate). */
    atomic_store_explicit(&self->why, (uint8_t)why, memory_order_relaxed);
    self->wait_obj = wait_obj;
    self->park_since = fs__now_coarse();
    fs__stat_inc(&s->st.parks[why]);
    if (deadline != FS_NO_DEADLINE)
        fs__timer_arm(s, self, tok, deadline);

    s->after_fn = fs__after_park;
    s->after_prev = self;
    s->commit_fn = commit;
    s->commit_arg = arg;
    s->commit_tok = tok;
    fs__switch_out(s, self, false); /* commit() may still have a lock to release */

    self->wait_obj = NULL;
    if (self->timer_sched)
        fs__timer_disarm(self);
    uint64_t w = atomic_load_explicit(&self->park, memory_order_acquire);
    FS_CHECK(PW_TOK(w) == tok && PW_ST(w) >= FS_PW_WOKEN);
    int rc = PW_ST(w) == FS_PW_TIMEDOUT ? -ETIMEDOUT : 0;
    if (rc && atomic_exchange(&self->interrupted, 0))
        rc = -EINTR;
    /* The park is over (timer disarmed, outcome read): a signal handler
     * the hook runs now may park in turn. */
    atomic_store_explicit(&self->why, (uint8_t)(why | FS_WHY_DONE), memory_order_relaxed);
    if (FS_UNLIKELY(fs__hook_due(self)))
        fs__run_interrupt_hook(self);
    return rc;
}

int fs_sleep_until(int64_t deadline)
{
    if (!fs_self())
        return -EPERM;
    while (fs_now() < deadline) {
        fs_park_token tok = fs_park_prepare();
        if (fs_park(tok, FS_PARK_SLEEP, NULL, deadline, NULL, NULL) == -EINTR)
            return -EINTR;
    }
    return 0;
}

/* ---- interrupts ---------------------------------------------------------- */

void (*fs__interrupt_hook)(struct fs_fiber *f);
_Atomic bool fs__hook_always;
static void (*fs__user_hook)(struct fs_fiber *f);

/* The hook the scheduler calls (fs__switch_out, a fiber's first start).
 * A fiber resumed inside fs_park has not finished its park yet: its
 * timer may still be armed and its outcome is in the park word, and a
 * signal handler run by the hook may park again (sleep() in a handler),
 * which would rearm that timer and overwrite that word. So inside
 * fs_park (why without FS_WHY_DONE, after a first park) the hook is held
 * back: the interrupt flag is set again, and fs_park runs the hook once
 * it is done. Only a park that ended (WOKEN, TIMEDOUT) can be one whose
 * fs_park has not returned. A fiber that never parked is in none, though
 * its word reads WOKEN (fs__fiber_init starts it at token id << 24) and
 * its why lacks FS_WHY_DONE: at its first start (or a yield before its
 * first park) it gets the hook. Held back there, the flag would stay set
 * with no fs_park to run the hook, and end the fiber's first
 * interruptible park at once as if a handler had run: a spurious EINTR,
 * or a handed-off call returning while its spare still runs it. */
static void fs__hook_gate(struct fs_fiber *f)
{
    uint64_t w = atomic_load_explicit(&f->park, memory_order_relaxed);
    if (PW_ST(w) >= FS_PW_WOKEN && PW_TOK(w) != (uint64_t)f->id << 24 &&
        !(atomic_load_explicit(&f->why, memory_order_relaxed) & FS_WHY_DONE)) {
        atomic_store(&f->interrupt, 1);
        return;
    }
    if (fs__user_hook)
        fs__user_hook(f);
}

void fs_hook_every_switch(void)
{
    atomic_store(&fs__hook_always, true);
}

void fs_set_interrupt_hook(void (*hook)(fs_fiber *f))
{
    fs__user_hook = hook;
    fs__interrupt_hook = fs__hook_gate;
}

/* Ends f's park tok as interrupted, if that park is interruptible and
 * still PARKED. Only the caller that moves the word to TIMEDOUT sets
 * `interrupted`, and before readying f, which publishes it: fs_park then
 * tells an interrupt from its deadline, and a timer or a second
 * interrupter that lost the race cannot clear or fake it. Any thread. */
static void fs__interrupt_parked(struct fs_fiber *f, fs_park_token tok)
{
    /* why belongs to park tok while that park lasts: if f has moved on to
     * another park since, the transition fails on the token. */
    uint8_t why = atomic_load_explicit(&f->why, memory_order_relaxed) & ~FS_WHY_DONE;
    /* Every wait a signal handler may run in is ended: I/O, poll and
     * sleeps fail with EINTR (or restart), semaphore waits too (POSIX ends
     * sem_wait with EINTR when a handler runs), and so do raw futex waits
     * (the kernel ends FUTEX_WAIT for a handler). Lock waits (mutex, cond,
     * rwlock, barrier, once) end too, so that the handler runs during the
     * wait as POSIX has it; their wait loop (shim/waitq.c) then waits
     * again, in its place in the queue; a join (fs_join) returns -EINTR
     * to its caller, which waits again or acts on a cancel.
     * Handed-off calls (FS_PARK_OTHER) are not cut short: the call goes on
     * on its spare thread. */
    if (why == FS_PARK_YIELD || why == FS_PARK_OTHER || why >= FS_PARK_NREASONS)
        return;
    bool won;
    if (fs__park_transition(f, tok, FS_PW_TIMEDOUT, &won)) {
        atomic_store_explicit(&f->interrupted, 1, memory_order_relaxed);
        fs__ready(f);
    }
}

/* Who ends an interrupted park depends on the park word fs_interrupt
 * reads after setting the flag (both seq_cst):
 *  - PARKED: the park is committed, and its why was written before the
 *    switch that preceded the PARKED store: fs_interrupt ends it, if the
 *    flag is still set. f may have taken this interrupt already (ended
 *    an earlier park with it, and run the hook, which clears the flag)
 *    and parked again since; that park is not ours to end. If the flag
 *    is set, no hook has run since we set it.
 *  - PREPARED: the parker is still switching out, and why may still be
 *    the previous park's. The parker ends it: fs__after_park reads the
 *    flag after its PREPARED -> PARKED exchange.
 *  - WOKEN or TIMEDOUT (no park now): the next interruptible park ends
 *    at once, in fs__after_park too, so a signal sent just before a
 *    blocking call does not wait for the call to end. No extra fence in
 *    fs_park: the exchange to PARKED is the barrier. */
void fs_interrupt(fs_fiber *f)
{
    /* The flag first: whatever happens next, f runs the hook when it
     * resumes (fs__switch_out checks it after every switch). */
    atomic_store(&f->interrupt, 1);
    uint64_t w = atomic_load_explicit(&f->park, memory_order_seq_cst);
    if (PW_ST(w) == FS_PW_PARKED && atomic_load_explicit(&f->interrupt, memory_order_seq_cst))
        fs__interrupt_parked(f, PW_TOK(w));
}

/* ---- waiters: parking that also works on plain threads ----------------- */

void fs_waiter_prepare(struct fs_waiter *w)
{
    w->fiber = fs_self();
    w->tok = w->fiber ? fs_park_prepare() : 0;
    atomic_store_explicit((_Atomic uint32_t *)&w->futex, 0, memory_order_relaxed);
    w->next = w->prev = NULL;
}

int fs_waiter_wait(struct fs_waiter *w, enum fs_park_reason why, const void *wait_obj,
                   int64_t deadline, bool (*commit)(void *arg), void *arg)
{
    if (w->fiber)
        return fs_park(w->tok, why, wait_obj, deadline, commit, arg);

    _Atomic uint32_t *word = (_Atomic uint32_t *)&w->futex;
    if (commit && !commit(arg)) {
        uint32_t z = 0;
        atomic_compare_exchange_strong(word, &z, 1);
        return 0;
    }
    for (;;) {
        if (atomic_load_explicit(word, memory_order_acquire) == 1)
            return 0;
        struct timespec ts, *tsp = NULL;
        if (deadline != FS_NO_DEADLINE) {
            /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time. */
            ts.tv_sec = deadline / 1000000000;
            ts.tv_nsec = deadline % 1000000000;
            tsp = &ts;
        }
        long rc = fs__sys6(SYS_futex, word, FS_FUTEX_WAIT_BITSET_PRIVATE, 0, tsp, NULL,
                           0xffffffffu);
        if (rc == -ETIMEDOUT) {
            /* Claim the timeout unless a wake got there first. */
            uint32_t z = 0;
            if (atomic_compare_exchange_strong(word, &z, 2))
                return -ETIMEDOUT;
            return 0;
        }
        if (rc == -EINTR && why == FS_PARK_SEM) {
            /* A semaphore wait also ends for a signal handler, as glibc's
             * sem_wait does on the same futex call: the kernel restarts
             * it by itself under SA_RESTART (untimed), so -EINTR here is
             * the program's to see. Even when a wake came meanwhile (the
             * handler may have posted the unit itself): glibc returns
             * EINTR and leaves the unit; the caller passes the wake on
             * (fs_waiter_woken). Other waits go on, as glibc's lock
             * waits do. */
            uint32_t z = 0;
            atomic_compare_exchange_strong(word, &z, 2);
            return -EINTR;
        }
    }
}

bool fs_waiter_wake(struct fs_waiter *w)
{
    if (w->fiber)
        return fs_unpark(w->fiber, w->tok);
    _Atomic uint32_t *word = (_Atomic uint32_t *)&w->futex;
    uint32_t z = 0;
    if (!atomic_compare_exchange_strong(word, &z, 1))
        return false; /* it timed out */
    /* The waiter may return and free w as soon as it sees 1; the futex
     * wake on a dead address is harmless (it wakes nobody or, if the
     * memory was reused as another futex word, causes a spurious wake,
     * which every futex user tolerates). */
    fs__sys3(SYS_futex, word, FS_FUTEX_WAKE_PRIVATE, 1);
    return true;
}

bool fs_waiter_woken(const struct fs_waiter *w)
{
    if (w->fiber) {
        uint64_t pw = atomic_load((_Atomic uint64_t *)&w->fiber->park);
        return PW_TOK(pw) == w->tok && PW_ST(pw) == FS_PW_WOKEN;
    }
    return atomic_load((_Atomic uint32_t *)&w->futex) == 1;
}

const char *fs_park_reason_name(enum fs_park_reason why)
{
    static const char *const names[FS_PARK_NREASONS] = {
        "read", "write", "accept", "connect", "poll", "sleep", "mutex", "cond",
        "rwlock", "sem", "barrier", "once", "join", "yield", "other", "futex"};
    why &= ~FS_WHY_DONE;
    return (unsigned)why < FS_PARK_NREASONS ? names[why] : "?";
}
