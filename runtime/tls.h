/*
 * tls.h - a fiber's thread control block (tls.c): what the switch path
 * needs inline, and the calls fiber.c, sched.c and runtime.c make.
 *
 * With per-fiber TLS on (fs__tls.on), every context the runtime switches
 * to has a thread pointer of its own (struct fs_fiber.tp, struct
 * fs_sched.idle_tp): the address of a glibc struct pthread whose static
 * TLS blocks lie below it. fs__tls_switch() loads it into the fs base
 * right before the stack switch. With it off, tp is NULL and the fs base
 * is the carrier's, as it always was.
 */
#ifndef FS_TLS_H
#define FS_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sys.h"

struct fs_fiber;
struct fs_sched;
struct fs_config;

/* Process-wide, written once by fs__tls_init() before any fiber exists
 * (the runtime's start is ordered before every spawn by fs__g.state), and
 * read-only afterwards. */
struct fs_tls_info {
    bool on;               /* fibers have their own TCB and TLS */
    bool fsgsbase;         /* wrfsbase is usable (else arch_prctl) */
    uint32_t tid_off;      /* struct pthread.tid */
    size_t tcb_size;       /* sizeof (struct pthread) */
    size_t block_size;     /* TCB + static TLS, as glibc carves from a stack */
    size_t align;          /* alignment of the TCB (static TLS alignment) */
    ptrdiff_t sched_tpoff; /* fs__tls_sched, from the thread pointer */
    /* glibc malloc's tcache and thread_arena words, from the thread
     * pointer; 0 when malloc is not glibc's (see "malloc" in tls.c). */
    ptrdiff_t tcache_tpoff, arena_tpoff;
};

extern struct fs_tls_info fs__tls;

/* The calling thread's thread pointer (its fs base): the first word of
 * every x86-64 TCB points to the TCB itself. */
static inline void *fs__tls_tp(void)
{
    void *tp;
    __asm__ volatile("movq %%fs:0, %0" : "=r"(tp));
    return tp;
}

/* Loads tp into the fs base. "memory": no TLS access may be moved across
 * it by the compiler (one before it reads the old block, one after it the
 * new one). */
static inline void fs__tls_load(void *tp)
{
    if (__builtin_expect(fs__tls.fsgsbase, 1))
        __asm__ volatile("wrfsbase %0" : : "r"(tp) : "memory");
    else
        fs__sys2(SYS_arch_prctl, 0x1002 /* ARCH_SET_FS */, tp);
}

/* Makes `to` the thread pointer of s's kernel thread, which runs with
 * `from` now; call right before the stack switch. The context coming in
 * gets what glibc and the runtime read through its thread pointer about
 * the kernel thread it now runs on: the thread id, the sched
 * (fs__tls_sched), and the kernel thread's malloc tcache and arena, which
 * travel with the kernel thread from TCB to TCB so that glibc's malloc
 * sees one thread per carrier, as it did before per-fiber TLS (tls.c
 * explains why). All of it is written before the fs base changes, so a
 * signal handler that runs in between sees a consistent block either
 * way. No-op with per-fiber TLS off. Owner (s's carrier) only. */
static inline void fs__tls_switch(struct fs_sched *s, int tid, void *from, void *to)
{
    if (!fs__tls.on)
        return;
    char *f = from, *t = to;
    *(int *)(void *)(t + fs__tls.tid_off) = tid;
    *(struct fs_sched **)(void *)(t + fs__tls.sched_tpoff) = s;
    if (fs__tls.tcache_tpoff) {
        *(void **)(void *)(t + fs__tls.tcache_tpoff) = *(void **)(void *)(f + fs__tls.tcache_tpoff);
        *(void **)(void *)(t + fs__tls.arena_tpoff) = *(void **)(void *)(f + fs__tls.arena_tpoff);
    }
    fs__tls_load(to);
}

/* Decides, once, whether fibers get their own TLS (cfg->fiber_tls_off,
 * sanitizers, glibc's layout, the CPU), and probes what the switch needs.
 * Prints one line on stderr when per-fiber TLS was wanted but cannot be
 * had. Never fails: the fallback is per-carrier TLS. The thread that
 * starts the runtime, before any fiber exists. */
void fs__tls_init(const struct fs_config *cfg);

/* The stack size to reserve for a fiber that asked for `size`: size,
 * or more when the TCB and static TLS would leave less than glibc's
 * minimum below them (only a program with huge __thread arrays). */
size_t fs__tls_stack_size(size_t size);

/* Gives f its TCB and static TLS and initialises them as glibc does for
 * a new thread (tls.c). If *top is not 0 they are carved from the stack
 * just below *top, which is lowered to where the fiber's frames start;
 * otherwise (a caller-owned stack) they get a block of their own. f->stack
 * must be set. Returns 0 or -EAGAIN (no memory for the dtv). With
 * per-fiber TLS off does nothing. Any thread. */
int fs__tls_fiber_setup(struct fs_fiber *f, uintptr_t *top);

/* The first code of a new fiber or idle loop, on its own TCB: what glibc's
 * start_thread does before the start routine (locale tables). */
void fs__tls_first_run(void);

/* On the fiber, just before it ends: its C++ thread_local destructors and
 * the per-thread state glibc frees at thread exit. */
void fs__tls_fiber_exit(struct fs_fiber *f);

/* Frees the dtv and dynamic TLS of a fiber that will never run again
 * (exited, or never started), and a caller-owned stack's TCB block. Any
 * context but the fiber's own. Idempotent. */
void fs__tls_fiber_release(struct fs_fiber *f);

/* Wraps glibc's SIGSETXID handler (see "setuid()" in tls.c) if glibc has
 * installed it and it is not wrapped yet. Call after the runtime started a
 * kernel thread with glibc's pthread_create (glibc installs the handler at
 * its first). No-op with per-fiber TLS off. Any thread. */
void fs__tls_wrap_setxid(void);

/* In a fork child, on the forking fiber (NULL: a plain thread forked):
 * takes its TCB off the thread list glibc's fork put it on. */
void fs__tls_atfork_child(struct fs_fiber *self);

/* A TCB for the idle loop of a sched whose kernel thread's own TCB
 * belongs to an adopted fiber (main, a fork child), carved below *top of
 * the idle stack. Returns 0 or -EAGAIN. */
int fs__tls_idle_setup(struct fs_sched *s, uintptr_t *top);

#endif
