/*
 * sched.c - carriers: run queues, choosing the next fiber, stealing, and
 * sleeping without burning CPU.
 *
 * Where a runnable fiber waits (see runq.h for the structures):
 *  - runnext: the fiber this carrier woke or spawned last. Ping-pong between
 *    two fibers on one carrier costs no queue traffic and no syscall. Capped
 *    at 3 picks in a row so a ping-pong pair cannot starve the rest.
 *  - local FIFO: pinned fibers readied by this carrier.
 *  - ring: fibers that may move (never run yet, or migration on). Idle
 *    carriers steal half of it.
 *  - inbox: pinned fibers readied by other threads, sent home.
 *  - the global queue: fibers spawned by plain threads, and ring overflow.
 *    Checked every 61 schedules so it cannot starve.
 *
 * Switching: a fiber that blocks picks the next fiber itself and switches
 * to it directly (one switch). Only when nothing is runnable does it
 * switch to the carrier's idle loop, which polls, steals and sleeps on its
 * own stack: sleeping on the parked fiber's stack would be unsafe, since the
 * fiber could be woken and (with migration) resumed elsewhere meanwhile.
 * Whatever must happen after the old stack is no longer in use (commit of
 * a park, re-queueing a yielder, freeing a dead fiber) is recorded in
 * sched.after_fn and run by the context that runs next.
 *
 * Waking carriers is frugal, as in Go: a sleeping carrier is woken only
 * when work it can run appears and no carrier is already spinning, and
 * each sleeping carrier gets at most one wake in flight (sched.notified).
 */
#include "internal.h"
#include "sys.h"

#include <errno.h>
#include <string.h>
#include <time.h>

__thread struct fs_sched *fs__tls_sched __attribute__((tls_model("initial-exec")));

/* ---- queue placement --------------------------------------------------- */

/* A retired spare, or an adopted thread's exclusive sched: no new work. */
static inline bool fs__retired(struct fs_sched *s)
{
    return (s->extra && atomic_load_explicit(&s->retired, memory_order_relaxed)) || s->exclusive;
}

/* The pinning rule (internal.h). pins is read after the park word's
 * acquire (or by the fiber itself), so a pin taken before a park is seen. */
static inline bool fs__movable(const struct fs_fiber *f)
{
    return f->home == NULL ||
           (fs__g.migrate && !f->is_adopted &&
            atomic_load_explicit(&f->pins, memory_order_relaxed) == 0);
}

void fs__global_push(struct fs_fiber *f)
{
    fs__spin_lock(&fs__g.global_lock);
    fs__fifo_push(&fs__g.global, f);
    atomic_store_explicit(&fs__g.global_len, fs__fifo_len(&fs__g.global), memory_order_release);
    fs__spin_unlock(&fs__g.global_lock);
}

static struct fs_fiber *fs__global_pop(struct fs_sched *s, uint32_t max)
{
    if (atomic_load_explicit(&fs__g.global_len, memory_order_acquire) == 0)
        return NULL;
    fs__spin_lock(&fs__g.global_lock);
    struct fs_fiber *f = fs__fifo_pop(&fs__g.global);
    /* Take a few more into the ring so the next schedules stay local. */
    while (f && max-- > 1 && fs__fifo_len(&fs__g.global)) {
        struct fs_fiber *g = fs__g.global.head;
        if (!fs__ring_push(&s->ring, g))
            break;
        fs__fifo_pop(&fs__g.global);
    }
    atomic_store_explicit(&fs__g.global_len, fs__fifo_len(&fs__g.global), memory_order_release);
    fs__spin_unlock(&fs__g.global_lock);
    return f;
}

/* Queues a movable fiber on s's ring, or behind the global queue.
 *
 * Fairness under overload: the ring holds FS_RING_SIZE fibers and spills
 * into the global queue, which a busy carrier visits only one schedule in
 * 61. If a newcomer could take the ring slot each pop frees while spilled
 * fibers wait in the global queue, those would wait for those rare turns:
 * Apache at one carrier with 500 keep-alive connections per child kept a
 * few hundred fibers there and answered 1% of requests after 1.2-1.7 s
 * (wrk -c1000; plain Apache: under 0.5 s). So while the global queue holds
 * anything, newcomers queue behind it; the ring drains, and an empty ring
 * takes a batch from the global queue's head (fs__find_runnable): one FIFO
 * in all. The global_len read is a racy hint: a fiber pushed to the ring
 * just as another carrier spills is at worst one batch early. */
static void fs__queue_movable(struct fs_sched *s, struct fs_fiber *f)
{
    if (atomic_load_explicit(&fs__g.global_len, memory_order_relaxed) != 0 ||
        !fs__ring_push(&s->ring, f))
        fs__global_push(f);
}

/* Queues f on s's own queues (s is the calling carrier's sched). */
static void fs__queue_local(struct fs_sched *s, struct fs_fiber *f)
{
    if (fs__movable(f)) {
        fs__queue_movable(s, f);
        fs__wakep();
    } else {
        fs__fifo_push(&s->local, f);
    }
}

/* Makes f runnable. f must be owned by the caller (just spawned, or just
 * won through the park word). Any thread. */
void fs__ready(struct fs_fiber *f)
{
    struct fs_sched *s = fs__cur_sched();
    atomic_store_explicit(&f->state, FS_F_RUNNABLE, memory_order_relaxed);
    /* An exclusive sched keeps only its own pinned fibers; what it wakes
     * or spawns goes to the others, through the global queue. So does what
     * a fiber wakes while its carrier is judged stuck: a fiber that loops
     * between an unseen blocking call and waking others (InnoDB's io_uring
     * completion thread signalling a worker, then back in io_uring_enter)
     * would otherwise leave each woken fiber in runnext until the monitor
     * takes it, up to a 5 ms sample later. */
    if (s && atomic_load_explicit(&s->mon_stuck, memory_order_relaxed) && fs__movable(f)) {
        fs__global_push(f);
        fs__wakep();
        return;
    }
    if (s && (s->exclusive ? f->home == s && !fs__movable(f) : fs__movable(f) || f->home == s)) {
        struct fs_fiber *old =
            atomic_exchange_explicit(&s->runnext, f, memory_order_acq_rel);
        /* No wakep for f itself: runnext is taken only by its owner (and
         * by the monitor when the owner is stuck), so a woken carrier
         * could not take f and would go back to sleep. That kick cost
         * spawn+join an eventfd write on a good share of spawns. The
         * displaced fiber does become stealable: queue_local wakes. */
        if (old)
            fs__queue_local(s, old);
        return;
    }
    if (!fs__movable(f)) {
        /* Read home before the push: once in the inbox, f is its home
         * carrier's, which may run it, and it may exit and be freed. */
        struct fs_sched *home = f->home;
        fs__inbox_push(&home->inbox, f);
        fs__sched_kick(home);
        return;
    }
    fs__global_push(f);
    fs__wakep();
}

/* ---- waking carriers ---------------------------------------------------- */

/* Wakes s if it sleeps. Any thread. The caller has already published the
 * work (inbox push, ring push...). Race: s sets sleeping, then rechecks
 * its queues; we publish, then check sleeping. With a full fence on both
 * sides (Dekker), at least one of us sees the other, so a wake is never
 * lost, and `notified` makes duplicate eventfd writes rare. */
void fs__sched_kick(struct fs_sched *s)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (!atomic_load_explicit(&s->sleeping, memory_order_relaxed))
        return;
    if (atomic_exchange_explicit(&s->notified, 1, memory_order_acq_rel))
        return; /* a wake is already in flight */
    uint64_t one = 1;
    fs__sys3(SYS_write, s->wakefd, &one, sizeof one);
    struct fs_sched *me = fs__cur_sched();
    fs__stat_inc(me ? &me->st.wakes_sent : &s->st.wakes_sent);
}

/* Wakes one sleeping carrier to look for stealable work, unless one is
 * already spinning (it will find the work, and wake another if it finds
 * more: see fs__found_work). Go rejects "one wake per ready fiber" because
 * it thrashes threads; so do we. */
void fs__wakep(void)
{
    if (atomic_load_explicit(&fs__g.nsleeping, memory_order_relaxed) == 0)
        return;
    if (atomic_load_explicit(&fs__g.nspinning, memory_order_relaxed) != 0)
        return;
    int zero = 0;
    if (!atomic_compare_exchange_strong(&fs__g.nspinning, &zero, 1))
        return;
    unsigned n = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
    struct fs_sched *me = fs__cur_sched();
    unsigned start = me ? me->id + 1 : 0;
    for (unsigned i = 0; i < n; i++) {
        struct fs_sched *v = fs__g.scheds[(start + i) % n];
        if (v == me || v->exclusive || !atomic_load_explicit(&v->sleeping, memory_order_acquire) ||
            atomic_load_explicit(&v->notified, memory_order_relaxed) ||
            atomic_load_explicit(&v->retired, memory_order_relaxed))
            continue;
        int nz = 0;
        /* Hand our spinning token to v; if v already spins, keep looking. */
        if (!atomic_compare_exchange_strong(&v->spinning, &nz, 1))
            continue;
        fs__sched_kick(v);
        return;
    }
    atomic_fetch_sub(&fs__g.nspinning, 1);
}

/* A spinning carrier found work: it stops spinning, and if it was the last
 * spinner, wakes another so that more queued work is picked up. */
static void fs__found_work(struct fs_sched *s)
{
    if (atomic_load_explicit(&s->spinning, memory_order_relaxed)) {
        atomic_store_explicit(&s->spinning, 0, memory_order_relaxed);
        if (atomic_fetch_sub(&fs__g.nspinning, 1) == 1)
            fs__wakep();
    }
}

/* ---- choosing the next fiber ------------------------------------------- */

/* Owner: empties runnext. The load first keeps the common empty case free
 * of a locked instruction. */
static inline struct fs_fiber *fs__runnext_take(struct fs_sched *s)
{
    if (!atomic_load_explicit(&s->runnext, memory_order_relaxed))
        return NULL;
    return atomic_exchange_explicit(&s->runnext, NULL, memory_order_acq_rel);
}

/* Monitor: takes s's runnext fiber if it may move. s is stuck, so the
 * slot rarely changes meanwhile; if it does, the compare-and-swap fails
 * and the fiber stays. A fiber taken here was runnable in the slot, so
 * it is ours to ready: a movable one goes to the global queue (the
 * caller's job), a pinned one back to s, through its inbox. Its home may
 * be read only once the compare-and-swap has made it ours: until then s's
 * carrier may be taking it to run it, writing home (fs__run_prepare). */
struct fs_fiber *fs__runnext_steal(struct fs_sched *s)
{
    struct fs_fiber *f = atomic_load_explicit(&s->runnext, memory_order_relaxed);
    /* acquire: pairs with the owner's exchange that put f in the slot */
    if (!f || !atomic_compare_exchange_strong_explicit(&s->runnext, &f, NULL, memory_order_acq_rel,
                                                       memory_order_relaxed))
        return NULL;
    if (fs__movable(f))
        return f;
    fs__inbox_push(&s->inbox, f);
    fs__sched_kick(s);
    return NULL;
}

static struct fs_fiber *fs__steal(struct fs_sched *s)
{
    unsigned n = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
    s->rng = s->rng * 1664525u + 1013904223u;
    unsigned start = (s->rng >> 8) % (n ? n : 1);
    for (unsigned i = 0; i < n; i++) {
        struct fs_sched *v = fs__g.scheds[(start + i) % n];
        if (v == s || fs__ring_len(&v->ring) == 0)
            continue; /* idle carriers have empty rings: skipped here */
        uint32_t got;
        struct fs_fiber *f = fs__ring_steal(&v->ring, &s->ring, &got);
        if (f) {
            fs__stat_add(&s->st.steals, got);
            return f;
        }
    }
    return fs__global_pop(s, 32);
}

/* Non-blocking search for the next fiber. Owner only.
 *
 * may_poll is false when called by a fiber that is switching out: it may
 * still hold the lock its park's commit() will release (a pollfd lock, a
 * wait-queue lock), and harvesting events could need that very lock. Such
 * a fiber falls back to the idle loop, which polls after the commit. */
static struct fs_fiber *fs__find_runnable(struct fs_sched *s, bool may_poll)
{
    struct fs_fiber *f;
    s->tick++;
    if (FS_UNLIKELY(s->tick % 61 == 0)) {
        /* Fairness: global work and I/O readiness get a turn even while
         * local queues never drain. */
        if (!fs__retired(s) && (f = fs__global_pop(s, 1)))
            return f;
        int64_t now = fs_now();
        if (atomic_load_explicit(&s->next_deadline, memory_order_relaxed) <= now)
            fs__timers_run(s, now);
        if (may_poll && atomic_load_explicit(&s->nfds, memory_order_relaxed) &&
            now - atomic_load_explicit(&s->last_poll, memory_order_relaxed) > 100000)
            fs__netpoll(s, 0);
    } else if (atomic_load_explicit(&s->next_deadline, memory_order_relaxed) != INT64_MAX) {
        int64_t now = fs_now();
        if (atomic_load_explicit(&s->next_deadline, memory_order_relaxed) <= now)
            fs__timers_run(s, now);
    }
    if (s->runnext_streak < 3 && (f = fs__runnext_take(s))) {
        s->runnext_streak++;
        return f;
    }
    s->runnext_streak = 0;
    /* Fairness between the queues: fibers sent home go to the tail of the
     * local FIFO before every pop, and the ring gets every other turn.
     * Otherwise two fibers yielding to each other keep the local FIFO
     * non-empty forever and starve the ring (new fibers) and the inbox
     * (pinned fibers woken by other threads). */
    fs__inbox_drain(&s->inbox, &s->local);
    if ((s->tick & 1) && (f = fs__ring_pop(&s->ring)))
        return f;
    if ((f = fs__fifo_pop(&s->local)))
        return f;
    if ((f = fs__ring_pop(&s->ring)))
        return f;
    if ((f = fs__runnext_take(s)))
        return f;
    if (!fs__retired(s) && (f = fs__global_pop(s, 32)))
        return f;
    /* Last local resort: readiness that arrived since the last poll, if
     * anything is registered to bring some. That system call lies on the
     * path of every wake from another carrier: the parker's carrier makes
     * it on its way to the idle spin, and the wake that comes meanwhile
     * waits for it (runtime_bench --xwake: 535-665 ns a wake with it,
     * 319-326 without, in a process with no fd to poll). Go skips its
     * netpoll(0) the same way when nothing waits on the netpoller. */
    if (may_poll && atomic_load_explicit(&s->nfds, memory_order_relaxed) &&
        fs__netpoll(s, 0) > 0)
        return fs__find_runnable(s, true);
    return NULL;
}

static bool fs__has_work(struct fs_sched *s)
{
    return atomic_load_explicit(&s->runnext, memory_order_relaxed) || s->local.head || fs__ring_len(&s->ring) ||
           !fs__inbox_empty(&s->inbox) ||
           (atomic_load_explicit(&fs__g.global_len, memory_order_relaxed) && !fs__retired(s));
}

/* Whether another carrier's ring holds stealable work. Racy hint. */
static bool fs__others_have_work(struct fs_sched *s)
{
    unsigned n = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        struct fs_sched *v = fs__g.scheds[i];
        if (v != s && fs__ring_len(&v->ring))
            return true;
    }
    return false;
}

/* A fiber stranded in the runnext slot of a busy carrier: the fiber that
 * readied it went on running instead of parking (a signal-and-go-on:
 * CPython's GIL hands itself over that way, then computes for 5 ms).
 * With threads the kernel would run it on an idle CPU at once; here it
 * waits for its carrier's next switch. An idle carrier takes it once it
 * has seen the same fiber in the slot, with no switch of that carrier,
 * for FS_STRAND_NS: longer than a server's fiber runs between two
 * switches, so the slot's usual occupant (the peer its waker is about to
 * park for) stays where its data is hot. Owner of s only; what it saw
 * last is kept across its sleeps (a carrier woken by a timer 1 ms later
 * sees that the fiber is still there). Go steals runnext after 3 us;
 * that took 10-20% of the HTTP benchmark's throughput at 100
 * connections here, fibers moving away from their warm carrier. */
#define FS_STRAND_NS (50 * 1000)

/* Whether what s saw last (seen->v's slot holding seen->f, with no switch
 * of seen->v since) still holds. */
static bool fs__strand_still(const struct fs_strand_seen *seen)
{
    struct fs_sched *v = seen->v;
    return v && atomic_load_explicit(&v->runnext, memory_order_relaxed) == seen->f &&
           atomic_load_explicit(&v->st.switches, memory_order_relaxed) == seen->switches &&
           !atomic_load_explicit(&v->sleeping, memory_order_relaxed);
}

static bool fs__runnext_strand(struct fs_sched *s)
{
    struct fs_strand_seen *seen = &s->strand;
    if (seen->v && !fs__strand_still(seen))
        seen->v = NULL; /* taken, or its carrier switched: look again */
    if (seen->v) {
        if (fs_now() - seen->since < FS_STRAND_NS)
            return false;
        struct fs_sched *v = seen->v;
        seen->v = NULL;
        struct fs_fiber *g = fs__runnext_steal(v);
        if (!g)
            return false;
        fs__stat_inc(&s->st.strands_taken);
        struct fs_fiber *old = atomic_exchange_explicit(&s->runnext, g, memory_order_acq_rel);
        if (old)
            fs__queue_local(s, old);
        return true;
    }
    /* Nothing watched: the first busy carrier with an occupied slot. */
    unsigned n = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
    for (unsigned i = 0; i < n; i++) {
        struct fs_sched *v = fs__g.scheds[i];
        if (v == s || v->exclusive || atomic_load_explicit(&v->sleeping, memory_order_relaxed))
            continue;
        struct fs_fiber *f = atomic_load_explicit(&v->runnext, memory_order_relaxed);
        if (f) {
            *seen = (struct fs_strand_seen){v, f, atomic_load_explicit(&v->st.switches, memory_order_relaxed),
                                            fs_now()};
            break;
        }
    }
    return false;
}

/* The deadline until which s, about to sleep, may wait to take a
 * stranded fiber: the one it saw throughout its idle spin (for 5 us or
 * more, no switch of its carrier) is still in the slot. Else INT64_MAX.
 * One short sleep per stretch of idleness at most: when it wakes, the
 * fiber is taken, or its carrier switched and the watch starts over. */
static int64_t fs__runnext_strand_deadline(struct fs_sched *s)
{
    struct fs_strand_seen *seen = &s->strand;
    if (!fs__strand_still(seen) || fs_now() - seen->since < 5000)
        return INT64_MAX;
    return seen->since + FS_STRAND_NS;
}

/* The idle spin: before it sleeps, an idle carrier watches its own queues,
 * the others' rings and the global queue for cfg.idle_spin_ns (ending
 * early at its next timer). Returns true when work showed up: the caller
 * looks again. While it spins its `sleeping` stays clear, so a fiber
 * readied for it (fs__sched_kick) or anywhere (fs__wakep) costs no eventfd
 * write, and the wake costs no kernel round trip: the cross-carrier wake
 * becomes a cache-line transfer. The cost is CPU: up to idle_spin_ns per
 * stretch of idleness, which is why the spin is bounded and why it is not
 * repeated: a carrier that spun and found nothing sleeps until a kick,
 * I/O or a timer. README's idle-policy table has the trade-off as measured.
 * Not on a retired spare or an exclusive sched (no new work comes to
 * them), and not where it is the only sched (nobody else can ready
 * anything for it but I/O and timers, which the spin does not watch). */
/* Whether s may watch its queues at all before it sleeps: the spin is
 * on, and s is neither a retired spare nor the only sched. */
static bool fs__may_watch(struct fs_sched *s)
{
    return fs__g.cfg.idle_spin_ns > 0 && !fs__retired(s) &&
           atomic_load_explicit(&fs__g.nstarted, memory_order_relaxed) >= 2;
}

static bool fs__idle_spin(struct fs_sched *s)
{
    long spin = fs__g.cfg.idle_spin_ns;
    if (!fs__may_watch(s))
        return false;
    int64_t now = fs_now(), end = now + spin, yield_from = now + spin / 2;
    int64_t dl = atomic_load_explicit(&s->next_deadline, memory_order_relaxed);
    if (dl < end)
        end = dl;
    do {
        for (int i = 0; i < 16; i++) {
            if (fs__has_work(s))
                return true;
            __builtin_ia32_pause();
        }
        if (fs__others_have_work(s))
            return true;
        if (fs__runnext_strand(s))
            return true;
        /* The second half yields between rounds: on a machine with more
         * runnable threads than CPUs, the fiber we wait for may be about
         * to run on this very CPU (its carrier preempted by us), and a
         * pause loop would hold it off until our slice ends: measured
         * under a load average of 10, 30 us of pause spin turned a 4 us
         * wake into 48 us, with 0.9 eventfd kicks per wake still; yielding,
         * 3 us and none. The first half does not, because a yield is a
         * system call that a wake arriving meanwhile waits out: with a CPU
         * to spare, the quick wakes come early. */
        now = fs_now();
        if (now >= yield_from)
            fs__sys0(SYS_sched_yield);
    } while (now < end);
    return false;
}

/* How long an idle carrier watches its own queues before its first
 * non-blocking poll. A wake from another carrier that comes meanwhile (a
 * lock, a condition or a futex word handed over, which comes within a
 * few hundred ns of the park when the other side answers at once) is
 * taken without waiting for that system call, a third of a microsecond
 * on this VM; readiness waits at most this long more to be harvested.
 * runtime_bench --xwake-fds (a socket registered on each carrier, as a
 * server has): 638-688 ns a wake without the watch, 231-236 ns with it;
 * the HTTP sweep does not move (README, Idle policy). Not when the idle
 * spin is off (FIBERSHIM_IDLE_SPIN_NS=0: sleep at once), nor on a lone
 * or retired carrier, which nothing wakes but I/O and timers. */
#define FS_PREPOLL_NS 1000

static void fs__watch_before_poll(struct fs_sched *s)
{
    int64_t end = fs_now() + FS_PREPOLL_NS;
    do {
        for (int i = 0; i < 8; i++) {
            if (fs__has_work(s))
                return;
            __builtin_ia32_pause();
        }
    } while (fs_now() < end);
}

/* Blocking search, on the idle loop only: watch, poll, steal, spin a
 * while, then sleep in epoll until I/O, a timer or a kick. */
static struct fs_fiber *fs__find_runnable_blocking(struct fs_sched *s)
{
    bool spun = false; /* one idle spin per stretch of idleness */
    bool prepoll = false; /* the watch before the first poll is done */
    for (;;) {
        struct fs_fiber *f = fs__find_runnable(s, prepoll);
        if (f) {
            fs__found_work(s);
            return f;
        }
        if (!prepoll) {
            prepoll = true;
            if (fs__may_watch(s))
                fs__watch_before_poll(s);
            continue;
        }
        /* Bounded spinning: only while fewer than half of the busy
         * carriers already spin, so 16 idle carriers do not hammer the
         * few busy ones (the seed's collapse). */
        unsigned n = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
        int busy = (int)n - atomic_load_explicit(&fs__g.nsleeping, memory_order_relaxed);
        bool spinner = atomic_load_explicit(&s->spinning, memory_order_relaxed);
        /* A retired handoff carrier looks for no new work; it only keeps
         * a spinning token wakep handed it just before it retired. */
        if (n > 1 && (spinner || !fs__retired(s)) && (spinner ||
                      2 * atomic_load_explicit(&fs__g.nspinning, memory_order_relaxed) < busy)) {
            if (!spinner) {
                atomic_store_explicit(&s->spinning, 1, memory_order_relaxed);
                atomic_fetch_add(&fs__g.nspinning, 1);
            }
            fs__stat_inc(&s->st.spins);
            for (int round = 0; round < 4; round++) {
                if ((f = fs__steal(s))) {
                    fs__found_work(s);
                    return f;
                }
                __builtin_ia32_pause();
            }
            /* Stop spinning, then look once more: work queued while we
             * still counted as spinning did not wake anyone. */
            atomic_store_explicit(&s->spinning, 0, memory_order_relaxed);
            atomic_fetch_sub(&fs__g.nspinning, 1);
            atomic_thread_fence(memory_order_seq_cst);
            if ((f = fs__steal(s))) {
                fs__wakep();
                return f;
            }
        }

        /* Due timers of carriers that are busy with one fiber
         * (timer_watch.c), and a fiber stranded behind one. */
        if (fs__timers_steal(s) || fs__runnext_strand(s))
            continue;

        if (!spun) {
            spun = true;
            if (fs__idle_spin(s))
                continue;
        }

        /* Sleep. Publish `sleeping` before the final check (see kick).
         * Clear `notified` first: a kick whose eventfd edge was consumed
         * by a non-blocking poll (fs_yield, the idle loop) left it set, and
         * every later kick would then skip the eventfd write and the wake
         * would be lost. */
        atomic_store_explicit(&s->notified, 0, memory_order_relaxed);
        atomic_store_explicit(&s->sleeping, 1, memory_order_seq_cst);
        atomic_fetch_add(&fs__g.nsleeping, 1);
        atomic_thread_fence(memory_order_seq_cst);
        if (!fs__has_work(s) && !atomic_load(&s->spinning)) {
            int64_t dl = atomic_load_explicit(&s->next_deadline, memory_order_relaxed);
            int64_t watched = fs__timers_watch_begin(s);
            if (watched < dl)
                dl = watched;
            int64_t strand = fs__runnext_strand_deadline(s);
            if (strand < dl)
                dl = strand;
            int64_t timeout = -1;
            if (dl != INT64_MAX) {
                timeout = dl - fs_now();
                if (timeout < 0)
                    timeout = 0;
            }
            fs__stat_inc(&s->st.sleeps);
            int64_t t0 = fs_now();
            fs__stat_add(&s->st.busy_ns, (uint64_t)(t0 - s->busy_since));
            fs__netpoll(s, timeout);
            s->busy_since = fs_now();
            fs__timers_watch_end(s);
        }
        atomic_fetch_sub(&fs__g.nsleeping, 1);
        /* release: busy_since is stored before sleeping clears (fs__busy_ns);
         * seq_cst: a watcher's scan reads it before our deadline, and we
         * publish it before reading the watched deadline (timer_watch.c). */
        atomic_store_explicit(&s->sleeping, 0, memory_order_seq_cst);
        atomic_store_explicit(&s->notified, 0, memory_order_release);
        /* Awake, so our deadlines are no longer watched by ourselves (a
         * due one we fire ourselves, next). */
        int64_t mine = atomic_load_explicit(&s->next_deadline, memory_order_relaxed);
        if (mine != INT64_MAX && !s->exclusive && mine > fs_now())
            fs__timers_watch_note(s, mine);
    }
}

/* ---- switching ---------------------------------------------------------- */

/* Runs the action the previous context left behind. */
static inline void fs__after_switch(struct fs_sched *s)
{
    if (s->after_fn) {
        void (*fn)(struct fs_sched *, struct fs_fiber *) = s->after_fn;
        s->after_fn = NULL;
        fn(s, s->after_prev);
    }
}

static inline void fs__run_prepare(struct fs_sched *s, struct fs_fiber *f)
{
    s->cur = f;
    if (!f->home) /* first run: pinned from now on (unless migrating) */
        fs__stat_inc(&s->st.fibers_run);
    f->home = s;
    atomic_store_explicit(&f->state, FS_F_RUNNING, memory_order_relaxed);
    fs__stat_inc(&s->st.switches);
}

/* Where the leaving fiber's fake stack is kept across the switch, or NULL
 * on its last switch (asan.h); the idle loop's stack (asan.h). */
#ifdef FS_ASAN
static inline void **fs__asan_save(struct fs_fiber *self)
{
    return self->asan_exiting ? NULL : &self->asan_fake;
}
static inline const void *fs__asan_idle_lo(struct fs_sched *s)
{
    return s->asan_idle_lo;
}
static inline size_t fs__asan_idle_size(struct fs_sched *s)
{
    return s->asan_idle_size;
}
#else
#define fs__asan_save(self) ((void **)0)
#define fs__asan_idle_lo(s) ((const void *)0)
#define fs__asan_idle_size(s) ((size_t)0)
#endif

/* Switches the calling fiber out; returns when it is resumed. The caller
 * set s->after_fn to whatever must happen once its stack is free (queue
 * it, commit a park, free it). may_poll: the caller holds no lock that
 * harvesting events could need (false for parks, see fs__find_runnable). */
void fs__switch_out(struct fs_sched *s, struct fs_fiber *self, bool may_poll)
{
    /* errno is per fiber. With per-fiber TLS it lives in the fiber's own
     * TLS block. Without, it is the carrier's: save it here and restore
     * it on resume. glibc's __errno_location() is declared const, so the
     * compiler may reuse &errno from before the switch; after it, we may
     * be on another kernel thread (migration), so fetch it afresh through
     * a volatile pointer. */
    int *(*volatile errloc)(void) = __errno_location;
    bool shared_tls = !fs__tls.on;
    if (shared_tls)
        self->saved_errno = *errloc();

    /* One TSC read charges self and starts next (the search is next's).
     * Read before the search, its latency hides behind it. */
    uint64_t now = fs__cputicks();
    struct fs_fiber *next = fs__find_runnable(s, may_poll);
    fs__cpu_stop(self, now);
    if (next) {
        fs__run_prepare(s, next);
        fs__cpu_start(next, now);
        fs__tsan_switch_to(FS_TSAN_FIBER(next));
        fs__asan_start(fs__asan_save(self), next->stack.lo, next->stack.size);
        fs__tls_switch(s, atomic_load_explicit(&s->tid, memory_order_relaxed), self->tp, next->tp);
        fs__context_switch(&self->ctx, &next->ctx);
    } else {
        s->cur = NULL;
        fs__tsan_switch_to(FS_TSAN_FIBER(s));
        fs__asan_start(fs__asan_save(self), fs__asan_idle_lo(s), fs__asan_idle_size(s));
        fs__tls_switch(s, atomic_load_explicit(&s->tid, memory_order_relaxed), self->tp, s->idle_tp);
        fs__context_switch(&self->ctx, &s->idle_ctx);
    }
    fs__asan_finish(FS_ASAN_SAVED(self));
    /* Resumed: possibly on another sched if migration is on. Whoever
     * switched to us loaded our thread pointer and wrote our copy of
     * fs__tls_sched (tls.h). */
    s = fs__cur_sched();
    fs__after_switch(s);
    if (shared_tls)
        *errloc() = self->saved_errno;
    if (FS_UNLIKELY(fs__hook_due(self)))
        fs__run_interrupt_hook(self);
}

void fs__switch_out_idle(struct fs_sched *s, struct fs_fiber *self)
{
    fs__cpu_stop(self, fs__cputicks());
    s->cur = NULL;
    fs__tsan_switch_to(FS_TSAN_FIBER(s));
    fs__asan_start(fs__asan_save(self), fs__asan_idle_lo(s), fs__asan_idle_size(s));
    fs__tls_switch(s, atomic_load_explicit(&s->tid, memory_order_relaxed), self->tp, s->idle_tp);
    fs__context_switch(&self->ctx, &s->idle_ctx);
    FS_CHECK(!"a dead fiber was resumed");
}

/* Runs the interrupt hook for f, on f's stack, with errno preserved. */
void fs__run_interrupt_hook(struct fs_fiber *f)
{
    atomic_store(&f->interrupt, 0);
    if (fs__interrupt_hook) {
        int e = errno;
        fs__interrupt_hook(f);
        errno = e;
    }
}

/* First code of every new fiber, on its own stack. */
void fs__fiber_start_hook(void)
{
    fs__after_switch(fs__cur_sched());
    /* The sched again: what ran there may have parked this fiber (the
     * exit of the fiber before it frees that one's TLS, and free() may
     * wait for a malloc whose locks are pthread mutexes, jemalloc's, held
     * by a fiber forking), and it may have resumed on another carrier,
     * the old one idle (cur NULL: a crash, 1 fork in 20 of
     * programs/jemalloc_fork). */
    struct fs_fiber *self = fs__cur_sched()->cur;
    if (FS_UNLIKELY(fs__hook_due(self)))
        fs__run_interrupt_hook(self);
}

/* The idle loop: runs on the carrier thread's own stack (or, for an
 * adopted thread, on a small stack of its own). */
static void fs__idle_loop(struct fs_sched *s)
{
    for (;;) {
        fs__after_switch(s);
        struct fs_fiber *f = fs__find_runnable_blocking(s);
        fs__run_prepare(s, f);
        fs__cpu_start(f, fs__cputicks());
        fs__tsan_switch_to(FS_TSAN_FIBER(f));
        fs__asan_start(FS_ASAN_SLOT(s), f->stack.lo, f->stack.size);
        fs__tls_switch(s, atomic_load_explicit(&s->tid, memory_order_relaxed), s->idle_tp, f->tp);
        fs__context_switch(&s->idle_ctx, &f->ctx);
        fs__asan_finish(FS_ASAN_SAVED(s));
        s = fs__cur_sched();
    }
}

/* First code on an adopted thread's idle stack (fs__sched_make_idle_stack),
 * running on the idle loop's own TCB when per-fiber TLS is on. */
static void fs__idle_entry(void *arg)
{
    fs__asan_finish(NULL); /* a new context (asan.h) */
    if (fs__tls.on)
        fs__tls_first_run();
    fs__idle_loop((struct fs_sched *)arg);
}

void fs__carrier_main_loop(struct fs_sched *s)
{
    fs__tls_sched = s;
    if (fs__tls.on)
        s->idle_tp = fs__tls_tp(); /* the idle loop runs as the thread itself */
#ifdef FS_ASAN
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        void *lo;
        pthread_attr_getstack(&a, &lo, &s->asan_idle_size);
        s->asan_idle_lo = lo;
        pthread_attr_destroy(&a);
    }
#endif
    atomic_store(&s->tid, (int)fs__sys0(SYS_gettid));
    s->busy_since = fs_now();
    /* The idle loop runs on this thread's stack: as the thread itself. */
    FS_TSAN_SET_FIBER(s, fs__tsan_current());
    fs__idle_loop(s);
    __builtin_unreachable();
}

/* Gives the idle loop its own stack, for a thread whose stack belongs to
 * its adopted fiber (which keeps the thread's TSan state: the idle loop
 * gets a TSan fiber of its own, see tsan.h). */
int fs__sched_make_idle_stack(struct fs_sched *s)
{
    int rc = fs__stack_alloc(fs__tls_stack_size(64 * 1024), &s->idle_stack);
    if (rc)
        return rc;
    /* With per-fiber TLS, the idle loop's own TCB at the top (the
     * thread's own TCB stays with its fiber). */
    uintptr_t top = (uintptr_t)s->idle_stack.lo + s->idle_stack.size;
    if ((rc = fs__tls_idle_setup(s, &top))) {
        fs__stack_free(&s->idle_stack);
        return rc;
    }
    fs__context_make(&s->idle_ctx, s->idle_stack.lo, top - (uintptr_t)s->idle_stack.lo,
                     fs__idle_entry, s);
#ifdef FS_ASAN
    s->asan_idle_lo = s->idle_stack.lo;
    s->asan_idle_size = top - (uintptr_t)s->idle_stack.lo;
#endif
    FS_TSAN_SET_FIBER(s, fs__tsan_create());
    return 0;
}

int fs__sched_init(struct fs_sched *s, unsigned id)
{
    memset(s, 0, sizeof *s);
    s->id = id;
    s->rng = 0x9e3779b9u * (id + 1);
    fs__timer_heap_init(&s->timers);
    atomic_store(&s->next_deadline, INT64_MAX);
    return fs__netpoll_init(s);
}

/* ---- public ------------------------------------------------------------- */

fs_fiber *fs_self(void)
{
    struct fs_sched *s = fs__cur_sched();
    return s ? s->cur : NULL;
}

static void fs__after_yield(struct fs_sched *s, struct fs_fiber *prev)
{
    atomic_store_explicit(&prev->state, FS_F_RUNNABLE, memory_order_relaxed);
    if (fs__movable(prev)) {
        fs__queue_movable(s, prev);
    } else {
        fs__fifo_push(&s->local, prev);
    }
}

void fs_yield(void)
{
    struct fs_sched *s = fs__cur_sched();
    struct fs_fiber *self = s ? s->cur : NULL;
    if (!self) {
        fs__sys0(SYS_sched_yield);
        return;
    }
    fs__stat_inc(&s->st.parks[FS_PARK_YIELD]);
    if (!fs__has_work(s)) {
        /* Nobody else to run here: fire due timers, look for I/O (at most
         * every 50 us, so a yield loop does not become an epoll_wait
         * loop), else go on. The timers matter: fs__find_runnable, which
         * fires them otherwise, never runs while a lone fiber yields, and
         * the fibers sleeping on this carrier would never wake. */
        int64_t now = fs_now();
        if (atomic_load_explicit(&s->next_deadline, memory_order_relaxed) <= now)
            fs__timers_run(s, now);
        if (!fs__has_work(s) &&
            (now - atomic_load_explicit(&s->last_poll, memory_order_relaxed) < 50000 ||
             !atomic_load_explicit(&s->nfds, memory_order_relaxed) || fs__netpoll(s, 0) == 0))
            return;
    }
    s->after_fn = fs__after_yield;
    s->after_prev = self;
    fs__switch_out(s, self, true); /* a yielder holds no lock: polling is safe */
}
