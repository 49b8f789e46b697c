/*
 * fork.c - the runtime across fork().
 *
 * Before the fork, the forking thread takes every runtime lock that guards
 * memory the child keeps using (fiber list, global queue, carrier start,
 * stack and struct pools), so the child never inherits one held by a
 * thread that does not exist there. The parent releases them.
 *
 * The child has one kernel thread: the forker. If that thread was running
 * a fiber, the runtime is rebuilt around that fiber: the epoll instances
 * and eventfds inherited from the parent are closed (they are shared
 * files: registering in them would change the parent's interest lists),
 * every fd record is forgotten, new scheds are made, and the thread
 * becomes carrier 0 running the fiber, exactly like an adopted main().
 * The other fibers, like the other threads of a forked pthread program,
 * are gone; their memory is not reclaimed. Other carriers start lazily at
 * the child's next spawn; handoff carriers are forgotten too.
 */
#include "internal.h"
#include "sys.h"

#include <string.h>

extern fs_spinlock fs__pool_lock;
void fs__netpoll_forget_all(void);

void fs_atfork_prepare(void)
{
    if (atomic_load(&fs__g.state) != 2)
        return;
    /* Lock order as in internal.h, pools last. */
    fs__spin_lock(&fs__g.start_lock);
    fs__spin_lock(&fs__g.all_lock);
    fs__spin_lock(&fs__g.global_lock);
    fs__spin_lock(&fs__pool_lock);
    fs__stack_fork_lock();
}

void fs_atfork_parent(void)
{
    if (atomic_load(&fs__g.state) != 2)
        return;
    fs__stack_fork_unlock();
    fs__spin_unlock(&fs__pool_lock);
    fs__spin_unlock(&fs__g.global_lock);
    fs__spin_unlock(&fs__g.all_lock);
    fs__spin_unlock(&fs__g.start_lock);
}

void fs_atfork_child(void)
{
    if (atomic_load(&fs__g.state) != 2)
        return;
    fs__stack_fork_unlock();
    fs__spin_unlock(&fs__pool_lock);
    fs__futex_atfork_child();

    struct fs_sched *old = fs__cur_sched();
    struct fs_fiber *self = old ? old->cur : NULL;
    fs__tls_atfork_child(self);

    unsigned made = atomic_load(&fs__g.nstarted);
    if (made < fs__g.nsched)
        made = fs__g.nsched;
    for (unsigned i = 0; i < made; i++) {
        fs__sys1(SYS_close, fs__g.scheds[i]->epfd);
        fs__sys1(SYS_close, fs__g.scheds[i]->wakefd);
        if (i >= fs__g.nsched)
            fs__g.scheds[i] = NULL; /* handoff carriers: the child starts its own */
    }
    fs__netpoll_forget_all();

    /* Only self survives: the fiber list and counters say so. */
    fs__g.all_fibers = self;
    if (self)
        self->all_prev = self->all_next = NULL;
    atomic_store(&fs__g.live, self ? 1 : 0);
    fs__g.global = (struct fs_fifo){0};
    atomic_store(&fs__g.global_len, 0);
    atomic_store(&fs__g.nsleeping, 0);
    atomic_store(&fs__g.nspinning, 0);
    atomic_store(&fs__g.nstarted, 0);
    atomic_store(&fs__g.nexclusive, 0);
    fs__spin_unlock(&fs__g.global_lock);
    fs__spin_unlock(&fs__g.all_lock);
    fs__spin_unlock(&fs__g.start_lock);

    /* Fresh scheds (the old ones are leaked with the dead fibers). */
    void *fork_alt = old ? old->altstack : NULL;
    for (unsigned i = 0; i < fs__g.nsched; i++) {
        struct fs_sched *s = aligned_alloc(64, sizeof *s);
        if (!s || fs__sched_init(s, i) != 0)
            fs__panic(__FILE__, __LINE__, "cannot rebuild the runtime after fork");
        /* Sched 0 is the forking thread's: its runtime alternate stack
         * came along with the memory. */
        s->altstack = i == 0 ? fork_alt : NULL;
        fs__g.scheds[i] = s;
    }
    fs__tls_sched = NULL;
    fs__timers_reserve_reset();
    fs__timers_watch_reset();
    fs__monitor_atfork_child();
    fs__timers_reserve(atomic_load(&fs__g.live));
    if (!self) {
        /* A plain thread forked: no fiber to carry on. The runtime stays
         * initialised; the next spawn starts carriers as usual. */
        return;
    }
    struct fs_sched *s = fs__g.scheds[0];
    if (fs__sched_make_idle_stack(s) != 0)
        fs__panic(__FILE__, __LINE__, "cannot rebuild the runtime after fork");
    s->thread = pthread_self();
    fs__g.carrier_sigmask = fs__sigmask_set(NULL);
    atomic_store(&s->tid, (int)fs__sys0(SYS_gettid));
    s->busy_since = fs_now();
    self->home = s;
    /* The child's only kernel thread is now this fiber's: pinned to it for
     * good, as an adopted main is, and alone on it when adoption is
     * exclusive (fs_config). */
    atomic_fetch_add(&self->pins, 1);
    s->exclusive = fs__g.cfg.adopt_exclusive;
    atomic_store(&fs__g.nexclusive, s->exclusive ? 1 : 0);
    s->adopted_tp = self->tp; /* glibc's fork listed it as the thread's */
    self->timer_sched = NULL;
    fs__timer_init(&self->timer);
    s->cur = self;
    fs__tls_sched = s;
    atomic_store_explicit(&fs__g.nstarted, 1, memory_order_release);
}
