/*
 * timer_watch.c - idle carriers fire the due timers of busy ones (Go's
 * timer stealing: findrunnable's checkTimers on other Ps, and the
 * netpoller's sleep bounded by timeSleepUntil).
 *
 * A fiber's deadline sits in the heap of the carrier it parked on, and
 * that carrier fires it between two fibers (fs__find_runnable). A carrier
 * running one fiber that computes for 20 ms fires nothing for 20 ms, and
 * before this file only the monitor, once it judged the carrier stuck
 * (10 ms without a switch, plus up to a 5 ms sample), fired them. With
 * plain threads the kernel wakes a timed-out thread on any idle CPU at
 * once. CPython's GIL is the case that shows it: waiters time out every
 * 5 ms to ask the holder, computing on its carrier, to let go; their
 * requests came 10-15 ms late, in a burst just as the holder let go, and
 * main, back from a 1 ms sleep, lost the GIL to them round after round
 * (bench/sync_bench gil: 7.2 s against 1.4 s with plain threads; with
 * this file and sched.c's strands, 0.77 s).
 *
 * So an idle carrier, before it sleeps:
 *  - fires the due timers of every busy carrier (fs__timers_steal). The
 *    fibers they wake come to it (its runnext) if they may move, else go
 *    home through the inbox, as the monitor's do;
 *  - one of the sleeping carriers, the watcher, bounds its sleep by the
 *    earliest deadline of the busy carriers (fs__timers_watch_begin).
 *    One, not all: sixteen idle carriers woken for the same deadline
 *    would be fifteen wasted wakes.
 * A deadline that becomes earlier than the watched one while the watcher
 * sleeps (a timer armed on a busy carrier, a carrier that leaves its
 * sleep with timers of its own) kicks the watcher, which looks again
 * (fs__timers_watch_note). With no watcher at all (the others went to
 * sleep while nobody was busy), a timer armed by a carrier busy for 1 ms
 * in one stretch wakes a sleeping carrier, which becomes the watcher.
 *
 * Sleeping carriers are left alone: they wake for their own deadlines.
 * Exclusive scheds (an adopted thread's) are left alone too: they run only
 * the adopted fiber, which has no timer while it runs.
 *
 * Not covered (the monitor still fires them, 10 to 15 ms late): a busy
 * carrier's deadlines while no carrier sleeps (there is no idle carrier
 * to run the fibers anyway), and while the watcher itself is busy: when
 * it wakes for work it gives the watch up and hands it to no one, as
 * handing it over would cost a wake for every wake; the next carrier to
 * sleep while another is busy takes it.
 */
#include "internal.h"

/* 0: no watcher; else the watcher's sched id + 1. */
static _Atomic unsigned fs__watcher;
/* The deadline the watcher sleeps until, INT64_MAX without a watcher. */
static _Atomic int64_t fs__watch_dl = INT64_MAX;

/* Whether v's timers are ours to watch and fire: another carrier, busy. */
static bool fs__watchable(struct fs_sched *s, struct fs_sched *v)
{
    return v != s && !v->exclusive && !atomic_load_explicit(&v->sleeping, memory_order_relaxed);
}

/* Fires the due timers of every busy carrier but s. Owner of s, from its
 * idle loop (s->cur NULL: what the timers wake comes to s's runnext).
 * Returns whether it fired any. */
bool fs__timers_steal(struct fs_sched *s)
{
    unsigned n = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
    int64_t now = 0;
    bool fired = false;
    for (unsigned i = 0; i < n; i++) {
        struct fs_sched *v = fs__g.scheds[i];
        if (!fs__watchable(s, v))
            continue;
        if (atomic_load_explicit(&v->next_deadline, memory_order_relaxed) == INT64_MAX)
            continue;
        if (!now)
            now = fs_now();
        if (atomic_load_explicit(&v->next_deadline, memory_order_relaxed) <= now) {
            unsigned k = fs__timers_run(v, now);
            if (k) {
                fs__stat_add(&s->st.timers_stolen, k);
                fired = true;
            }
        }
    }
    return fired;
}

/* The earliest deadline of the busy carriers but s; *busy: whether there
 * is one. */
static int64_t fs__watch_scan(struct fs_sched *s, bool *busy)
{
    unsigned n = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
    int64_t min = INT64_MAX;
    *busy = false;
    for (unsigned i = 0; i < n; i++) {
        struct fs_sched *v = fs__g.scheds[i];
        if (!fs__watchable(s, v))
            continue;
        *busy = true;
        int64_t dl = atomic_load_explicit(&v->next_deadline, memory_order_seq_cst);
        if (dl < min)
            min = dl;
    }
    return min;
}

/* Called by s just before it sleeps, with s->sleeping already set:
 * returns the earliest deadline of the busy carriers if s is (or becomes)
 * the watcher, else INT64_MAX. s watches while some carrier is busy, even
 * one without timers yet: its first timer kicks s (a busy carrier arms
 * timers as its fibers park), and s then sleeps until it. A retired
 * handoff carrier never watches.
 *
 * Race with a carrier arming an earlier timer: we publish fs__watch_dl
 * and then read the deadlines; it publishes its deadline and then reads
 * fs__watch_dl (fs__timers_watch_note), both seq_cst. So it sees our
 * deadline and kicks us (s->sleeping is set, so the kick writes the
 * eventfd and our epoll_wait returns at once), or we see its deadline.
 *
 * Cost: the watcher wakes about once per distinct earliest deadline of
 * the busy carriers, even when their owners fire them in time (a server
 * whose reads time out after 5 s: one wake in 5 s). */
int64_t fs__timers_watch_begin(struct fs_sched *s)
{
    if (atomic_load_explicit(&s->retired, memory_order_relaxed) || s->exclusive)
        return INT64_MAX;
    bool busy;
    int64_t first = fs__watch_scan(s, &busy);
    if (!busy)
        return INT64_MAX;
    unsigned me = s->id + 1, w = 0;
    if (!atomic_compare_exchange_strong(&fs__watcher, &w, me) && w != me)
        return INT64_MAX;
    /* We sleep until the earlier of the two scans, so no later deadline
     * needs a kick: a timer armed after the publication, at or after the
     * published deadline, is seen when we wake at it and look again; one
     * armed before it, the second scan sees. */
    atomic_store_explicit(&fs__watch_dl, first, memory_order_seq_cst);
    int64_t again = fs__watch_scan(s, &busy);
    return again < first ? again : first;
}

/* s is awake again: it gives the watch up, if it had it. */
void fs__timers_watch_end(struct fs_sched *s)
{
    unsigned me = s->id + 1;
    if (atomic_load_explicit(&fs__watcher, memory_order_relaxed) != me)
        return;
    atomic_store_explicit(&fs__watch_dl, INT64_MAX, memory_order_relaxed);
    atomic_store_explicit(&fs__watcher, 0, memory_order_release);
}

/* fork child: no carrier sleeps yet. */
void fs__timers_watch_reset(void)
{
    atomic_store(&fs__watch_dl, INT64_MAX);
    atomic_store(&fs__watcher, 0);
}

/* s, busy, just published dl (seq_cst) in its next_deadline. Kicks the
 * watcher if it sleeps until later. Without a watcher (every other
 * carrier went to sleep while none was busy, so none watches), wakes a
 * sleeping carrier if s has been busy for FS_WATCH_BUSY_NS already: a
 * carrier that long in one stretch is computing, and the carrier woken
 * finds nothing to run and sleeps as the watcher. A carrier with short
 * stretches, a server's, fires its own timers and costs no wake. */
#define FS_WATCH_BUSY_NS (1000 * 1000)

void fs__timers_watch_note(struct fs_sched *s, int64_t dl)
{
    if (dl >= atomic_load_explicit(&fs__watch_dl, memory_order_seq_cst))
        return;
    unsigned w = atomic_load_explicit(&fs__watcher, memory_order_acquire);
    unsigned n = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
    if (w && w - 1 < n)
        fs__sched_kick(fs__g.scheds[w - 1]);
    else if (!w && fs_now() - atomic_load_explicit(&s->busy_since, memory_order_relaxed) >= FS_WATCH_BUSY_NS)
        fs__wakep();
}
