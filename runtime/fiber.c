/*
 * fiber.c - a fiber's life: spawn, first run, exit, join, detach, free.
 *
 * Memory: a fiber on a runtime-allocated stack keeps its struct at the top
 * of that stack (one allocation, and the struct shares the page the fiber
 * touches first, which keeps an idle fiber near one resident page). The
 * struct lies inside the stack reported to the program, as glibc keeps a
 * thread's descriptor and static TLS inside its reported stack: so the
 * reported [lo, lo + size) is exactly the mapping above the guard, size is
 * what was asked for (in whole pages), and lo - 1 faults.
 *
 * Why not records of their own, packed densely: at 8 MiB every stack top
 * needs a page-table page, and with the struct there the spawner faults
 * both in (pthread_create returns the TCB, so it must exist by then).
 * Packed records would leave the stack untouched until the fiber's first
 * run, on another carrier: 1,000,000 fibers from one spawner took 5.1 s
 * against 6.5 s (runtime_bench --child fibers 1000000, 8 alternating
 * runs each, medians; 2026-11-30). But the TCB and the static TLS would
 * then lie outside the reported stack, where glibc never puts them, and
 * code that treats [lo, lo + size) as everything the thread owns (a
 * collector scanning it for roots, __thread variables included; a
 * checker telling stack from TLS) would go wrong; tests/programs/
 * thread_self_tcb and test_tls pin it. Not done.
 *
 * Fibers on caller-owned stacks take their struct from a pool that never returns
 * memory to malloc. Either way a struct stays mapped forever, so a late
 * fs_unpark() on an exited fiber reads harmless memory, and its park token
 * (seeded from the unique fiber id) fails the compare-and-swap.
 *
 * Exit is completed on the next context, after the dying fiber's stack is
 * no longer in use: only then is it marked dead, its joiner woken, and (if
 * detached) its stack freed.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

fs_spinlock fs__pool_lock = FS_SPINLOCK_INIT; /* also held across fork (fork.c) */
static struct fs_fiber *fs__pool; /* structs for caller-owned stacks */

static struct fs_fiber *fs__struct_from_pool(void)
{
    fs__spin_lock(&fs__pool_lock);
    struct fs_fiber *f = fs__pool;
    if (f)
        fs__pool = f->next;
    fs__spin_unlock(&fs__pool_lock);
    /* aligned_alloc wants a multiple of the alignment (C11 7.22.3.1), and
     * the struct's size is not one in every build (TSan adds a field). */
    if (!f)
        f = aligned_alloc(64, (sizeof *f + 63) & ~(size_t)63);
    return f;
}

static void fs__struct_to_pool(struct fs_fiber *f)
{
    fs__spin_lock(&fs__pool_lock);
    f->next = fs__pool;
    fs__pool = f;
    fs__spin_unlock(&fs__pool_lock);
}

static void fs__fiber_init(struct fs_fiber *f)
{
    memset(f, 0, sizeof *f);
    f->id = atomic_fetch_add(&fs__g.next_id, 1) + 1;
    /* Token space of this incarnation starts at id << 24: see the header. */
    atomic_store_explicit(&f->park, (f->id << 26) | FS_PW_WOKEN, memory_order_relaxed);
    fs__timer_init(&f->timer);
    f->join = FS_J_JOINABLE;

    fs__spin_lock(&fs__g.all_lock);
    f->all_next = fs__g.all_fibers;
    if (f->all_next)
        f->all_next->all_prev = f;
    fs__g.all_fibers = f;
    fs__spin_unlock(&fs__g.all_lock);

    uint64_t live = atomic_fetch_add(&fs__g.live, 1) + 1;
    atomic_fetch_add_explicit(&fs__g.created, 1, memory_order_relaxed);
    uint64_t peak = atomic_load_explicit(&fs__g.peak, memory_order_relaxed);
    while (live > peak &&
           !atomic_compare_exchange_weak_explicit(&fs__g.peak, &peak, live, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

void fs__fiber_free(struct fs_fiber *f)
{
    fs__spin_lock(&fs__g.all_lock);
    if (f->all_prev)
        f->all_prev->all_next = f->all_next;
    else
        fs__g.all_fibers = f->all_next;
    if (f->all_next)
        f->all_next->all_prev = f->all_prev;
    fs__spin_unlock(&fs__g.all_lock);
    atomic_fetch_sub(&fs__g.live, 1);
    if (!f->is_adopted) /* an adopted fiber's TSan state is its thread's */
        fs__tsan_destroy(FS_TSAN_FIBER(f));
    fs__tls_fiber_release(f); /* done at exit, unless it never ran */

    if (f->own_stack) {
        /* Free exactly what fs__stack_alloc handed out: the allocator finds
         * the size class by that size (the reported stack is smaller). */
        struct fs_stack st = f->stack_map; /* f lives inside st */
        if (f->guard_pending) /* it never ran: the free list has guards */
            fs__stack_guard_finish(&st);
        fs__stack_free(&st);
    } else {
        fs__struct_to_pool(f);
    }
}

struct fs_fiber *fs__fiber_alloc_adopted(void)
{
    struct fs_fiber *f = fs__struct_from_pool();
    if (!f)
        return NULL;
    fs__fiber_init(f);
    f->is_adopted = true;
    /* It goes on running on the calling thread's stack, as that thread
     * (tsan.h). */
    FS_TSAN_SET_FIBER(f, fs__tsan_current());
    atomic_store(&f->state, FS_F_RUNNING);
    fs__cpu_start(f, fs__cputicks()); /* it runs from now on, as the fiber */
    return f;
}

void fs__fiber_start_hook(void);

void fs__fiber_entry(void *arg)
{
    struct fs_fiber *f = arg;
    fs__asan_finish(NULL); /* a new context (asan.h) */
    if (f->guard_pending) {
        /* Deferred by fs_spawn to the carrier that runs it first. */
        fs__stack_guard_finish(&f->stack_map);
        f->guard_pending = false;
    }
    if (f->tls_live)
        fs__tls_first_run(); /* before the hook: it may run a signal handler */
    fs__fiber_start_hook();
    fs_exit(f->fn(f->arg));
}

int fs_spawn(fs_fiber **out, void *(*fn)(void *), void *arg, const struct fs_spawn_attr *attr)
{
    int rc = fs__ensure_init();
    if (rc)
        return rc;
    size_t size = attr && attr->stack_size ? attr->stack_size : fs__g.cfg.stack_size;
    size_t guard = attr ? attr->guard_size : 0;
    bool no_guard = attr && attr->no_guard;
    struct fs_fiber *f;
    size_t run_size; /* the part of the stack below the struct, if any */
    if (attr && attr->stack_addr) {
        if (size < FS_MIN_STACK_SIZE / 4)
            return -EINVAL;
        if (!(f = fs__struct_from_pool()))
            return -EAGAIN;
        fs__fiber_init(f);
        f->stack.lo = attr->stack_addr;
        f->stack.size = size; /* guard_size 0, as glibc reports for one */
        run_size = size;
    } else {
        if (size == 0 || (guard == 0 && !no_guard)) {
            /* What glibc would give a thread, read at each spawn so that
             * pthread_setattr_default_np takes effect as it does there. */
            size_t dsize, dguard;
            fs__thread_stack_defaults(&dsize, &dguard);
            if (size == 0)
                size = dsize;
            if (guard == 0 && !no_guard) {
                guard = dguard;
                no_guard = dguard == 0;
            }
        }
        if (no_guard)
            guard = 0;
        struct fs_stack st;
        bool guard_pending;
        if ((rc = fs__stack_alloc_guard_lazy(fs__tls_stack_size(size), guard, &st,
                                             &guard_pending)))
            return rc;
        uintptr_t top = ((uintptr_t)st.lo + st.size - sizeof(struct fs_fiber)) & ~(uintptr_t)63;
        f = (struct fs_fiber *)top;
        fs__fiber_init(f);
        f->own_stack = true;
        f->guard_pending = guard_pending;
        f->stack_map = st;
        f->stack = st;
        /* glibc reports the guard asked for, in whole pages; the runtime
         * may have installed more (FS_STACK_GUARD_MIN). */
        size_t pg = (size_t)sysconf(_SC_PAGESIZE);
        f->stack.guard_size = (guard + pg - 1) / pg * pg;
        f->stack.guard = guard ? (char *)st.lo - f->stack.guard_size : NULL;
        run_size = top - (uintptr_t)st.lo;
    }
    FS_TSAN_SET_FIBER(f, fs__tsan_create());
    f->fn = fn;
    f->arg = arg;
    /* Its TCB and static TLS: below the struct on its own stack (run_size
     * shrinks to what lies below them), in a block of their own on a
     * caller-owned one. */
    uintptr_t run_top = f->own_stack ? (uintptr_t)f->stack.lo + run_size : 0;
    if (fs__tls_fiber_setup(f, &run_top) || fs__timers_reserve(atomic_load(&fs__g.live))) {
        fs__fiber_free(f); /* out of memory for its dtv or timer: as for its stack */
        return -EAGAIN;
    }
    if (run_top)
        run_size = run_top - (uintptr_t)f->stack.lo;
    /* A reused stack still has the shadow of the frames its last fiber
     * left when it switched away for good (asan.h). */
    fs__asan_unpoison(f->stack.lo, run_size);
    if (attr && attr->detached)
        f->join = FS_J_DETACHED;
    if (attr)
        f->local = attr->local;
    /* The first frame in the record: the spawner touches no stack page
     * below the record's (fs__context_make_at). */
    fs__context_make_at(&f->ctx, &f->first_frame, f->stack.lo, run_size, fs__fiber_entry, f);

    struct fs_sched *s = fs__cur_sched();
    bool local = s && s->cur;
    if (local) {
        if (atomic_load_explicit(&fs__g.nstarted, memory_order_acquire) < fs__g.nsched ||
            FS_UNLIKELY(!atomic_load_explicit(&fs__monitor_tried, memory_order_relaxed)))
            fs__start_carriers();
    } else if ((rc = fs__start_carriers()) && atomic_load(&fs__g.nstarted) == 0) {
        fs__fiber_free(f); /* never published: nothing else knows it */
        return rc;
    }
    if (out)
        *out = f;
    if (attr && attr->ready)
        attr->ready(f, attr->ready_arg); /* before anyone can run it */
    if (local) {
        /* Fibers spawned by fibers start local, in runnext: a creator that
         * joins at once pays no cross-core hop. Idle carriers may steal it
         * until it first runs. */
        fs__ready(f);
    } else {
        atomic_store_explicit(&f->state, FS_F_RUNNABLE, memory_order_relaxed);
        fs__global_push(f);
        fs__wakep();
    }
    return 0;
}

/* Completes the exit of prev, on the next context of its carrier. */
static void fs__after_exit(struct fs_sched *s, struct fs_fiber *prev)
{
    /* Its dtv and dynamic TLS, now that nothing runs on its TCB; before
     * it is marked dead, since a joiner then frees the stack they live
     * on. */
    fs__tls_fiber_release(prev);
    fs__spin_lock(&prev->lock);
    atomic_store_explicit(&prev->state, FS_F_DEAD, memory_order_release);
    struct fs_waiter *w = prev->joiner;
    bool detached = prev->join == FS_J_DETACHED;
    prev->joiner = NULL;
    if (w)
        fs_waiter_wake(w); /* under the lock: w lives on the joiner's stack */
    fs__spin_unlock(&prev->lock);
    if (detached)
        fs__fiber_free(prev);
}

void fs_exit(void *ret)
{
    struct fs_fiber *self = fs_self();
    FS_CHECK(self != NULL);
    /* C++ thread_local destructors and glibc's per-thread buffers, on the
     * fiber as at a thread's end. They may block (and so move the fiber
     * to another carrier): the sched is read after them. */
    if (self->tls_live)
        fs__tls_fiber_exit(self);
    struct fs_sched *s = fs__cur_sched();
    self->ret = ret;
    s->after_fn = fs__after_exit;
    s->after_prev = self;
#ifdef FS_ASAN
    self->asan_exiting = true; /* its fake stack goes with it (asan.h) */
#endif
    /* The exit completes after the switch, on the idle loop: it frees the
     * fiber's dtv and dynamic TLS blocks with free(), and the next fiber
     * may be one parked in the middle of malloc (jemalloc's locks are
     * pthread mutexes, which park), whose malloc state a free() on its
     * TLS would corrupt (a crash in jemalloc's free, 1 fork in 50 of
     * programs/jemalloc_fork). One more switch per thread exit. */
    fs__switch_out_idle(s, self);
}

struct fs_join_commit {
    struct fs_fiber *f;
};

static bool fs__join_commit(void *arg)
{
    fs__spin_unlock(&((struct fs_fiber *)arg)->lock);
    return true;
}

int fs_join(fs_fiber *f, void **ret, int64_t deadline)
{
    if (f == fs_self())
        return -EDEADLK;
    fs__spin_lock(&f->lock);
    if (f->join != FS_J_JOINABLE || f->joiner) {
        fs__spin_unlock(&f->lock);
        return -EINVAL;
    }
    if (atomic_load_explicit(&f->state, memory_order_acquire) != FS_F_DEAD) {
        if (deadline == 0) {
            fs__spin_unlock(&f->lock);
            return -EBUSY;
        }
        struct fs_waiter w;
        fs_waiter_prepare(&w);
        f->joiner = &w;
        /* The lock is released in commit, after we are switched out, so
         * the exit path cannot wake us before we are parked. */
        int rc = fs_waiter_wait(&w, FS_PARK_JOIN, f, deadline, fs__join_commit, f);
        fs__spin_lock(&f->lock);
        if (rc < 0 && f->joiner == &w) {
            f->joiner = NULL;
            fs__spin_unlock(&f->lock);
            return rc; /* -ETIMEDOUT, or -EINTR: fs_interrupt ended the wait */
        }
        /* Woken: f is dead (the waker cleared joiner under the lock). */
    }
    FS_CHECK(atomic_load(&f->state) == FS_F_DEAD);
    f->join = FS_J_JOINED;
    fs__spin_unlock(&f->lock);
    if (ret)
        *ret = f->ret;
    fs__fiber_free(f);
    return 0;
}

int fs_detach(fs_fiber *f)
{
    fs__spin_lock(&f->lock);
    if (f->join != FS_J_JOINABLE || f->joiner) {
        fs__spin_unlock(&f->lock);
        return -EINVAL;
    }
    bool dead = atomic_load_explicit(&f->state, memory_order_acquire) == FS_F_DEAD;
    f->join = dead ? FS_J_JOINED : FS_J_DETACHED;
    fs__spin_unlock(&f->lock);
    if (dead)
        fs__fiber_free(f);
    return 0;
}

uint64_t fs_fiber_id(const fs_fiber *f)
{
    return f->id;
}

bool fs_fiber_running(const fs_fiber *f)
{
    return atomic_load_explicit(&f->state, memory_order_relaxed) == FS_F_RUNNING;
}

bool fs_fiber_adopted(const fs_fiber *f)
{
    return f->is_adopted;
}

/* A snapshot: f may switch out at once (shim/signal.c pokes that thread,
 * and the poke finds whatever fiber runs there then). */
int fs_fiber_running_tid(const fs_fiber *f)
{
    if (atomic_load_explicit(&f->state, memory_order_relaxed) != FS_F_RUNNING)
        return 0;
    struct fs_sched *s = __atomic_load_n(&f->home, __ATOMIC_RELAXED);
    return s ? atomic_load_explicit(&s->tid, memory_order_relaxed) : 0;
}

void *fs_fiber_tcb(const fs_fiber *f)
{
    return f->tp;
}

void fs_pin(fs_fiber *f)
{
    atomic_fetch_add_explicit(&f->pins, 1, memory_order_relaxed);
}

void fs_unpin(fs_fiber *f)
{
    uint32_t n = atomic_load_explicit(&f->pins, memory_order_relaxed);
    while (n && !atomic_compare_exchange_weak_explicit(&f->pins, &n, n - 1, memory_order_relaxed,
                                                       memory_order_relaxed))
        ;
}

void fs_fiber_stack(const fs_fiber *f, void **lo, size_t *size)
{
    *lo = f->stack.lo;
    *size = f->stack.size;
}

size_t fs_fiber_stack_guard(const fs_fiber *f)
{
    return f->stack.guard_size;
}

void fs_fiber_set_name(fs_fiber *f, const char *name)
{
    size_t n = strnlen(name, sizeof f->name - 1);
    memcpy(f->name, name, n);
    f->name[n] = 0;
}

void fs_fiber_get_name(const fs_fiber *f, char *buf, size_t len)
{
    if (!len)
        return;
    size_t n = strnlen(f->name, sizeof f->name);
    if (n >= len)
        n = len - 1;
    memcpy(buf, f->name, n);
    buf[n] = 0;
}

void *fs_fiber_local(const fs_fiber *f)
{
    return f->local;
}

void fs_fiber_set_local(fs_fiber *f, void *p)
{
    f->local = p;
}
