/*
 * test_cancel.c - shim/cancel.c: cancellation and pthread_exit of fibers.
 *
 * A thread of the shim blocked in a parked read is cancelled: the read
 * never returns, the setjmp-based C cleanup buffers of two frames run
 * innermost first (the forced unwind's stop function longjmps to each in
 * turn), then its TSD destructor, and join reports PTHREAD_CANCELED. The
 * same frames unwind for pthread_exit, whose value join returns. A cancel
 * with cancellation disabled waits for a cancellation point after it is
 * enabled. Each with and without per-fiber TLS (the sanitizer builds have
 * none). The C buffers are written out as glibc's pthread_cleanup_push
 * macros expand, calling the shim's __pthread_register_cancel (the test is
 * built without the shim's exports).
 */
#include "sync_util.h"

#include <setjmp.h>
#include <string.h>
#include <unistd.h>

SHIM_DECL(pthread_create)
SHIM_DECL(pthread_join)
SHIM_DECL(pthread_cancel)
SHIM_DECL(pthread_exit)
SHIM_DECL(pthread_setcancelstate)
SHIM_DECL(pthread_testcancel)
SHIM_DECL(pthread_key_create)
SHIM_DECL(pthread_setspecific)
SHIM_DECL(read)
SHIM_DECL(usleep)
extern void shim____pthread_register_cancel(__pthread_unwind_buf_t *buf);
extern void shim____pthread_unregister_cancel(__pthread_unwind_buf_t *buf);
extern void shim____pthread_unwind_next(__pthread_unwind_buf_t *buf);

#define C_PUSH(fn, arg)                                                                    \
    do {                                                                                   \
        __pthread_unwind_buf_t b_;                                                         \
        int nf_ = __sigsetjmp_cancel(b_.__cancel_jmp_buf, 0);                              \
        if (__builtin_expect(nf_, 0)) {                                                    \
            fn(arg);                                                                       \
            shim____pthread_unwind_next(&b_);                                              \
        }                                                                                  \
        shim____pthread_register_cancel(&b_);                                              \
        do {
#define C_POP()                                                                            \
        } while (0);                                                                       \
        shim____pthread_unregister_cancel(&b_);                                            \
    } while (0)

static char order[128];
static atomic_int blocked;
static int fds[2];
static pthread_key_t key;

static void note(void *s)
{
    if (order[0])
        strcat(order, " ");
    strcat(order, s);
}

/* Parks until the process ends: the shim ends it with its last thread. */
static void *keeper(void *arg)
{
    for (;;)
        sleep_ns(1000000000);
    return arg;
}

__attribute__((noinline)) static void inner(bool exit)
{
    C_PUSH(note, "inner");
    atomic_store(&blocked, 1);
    if (exit)
        shim__pthread_exit((void *)7);
    char c;
    long n = shim__read(fds[0], &c, 1);
    FCHECK(0, "read returned %ld", n);
    C_POP();
}

__attribute__((noinline)) static void outer(bool exit)
{
    C_PUSH(note, "outer");
    inner(exit);
    C_POP();
}

static void *victim(void *exit)
{
    FCHECK_EQ(shim__pthread_setspecific(key, "tsd"), 0);
    outer(exit != NULL);
    return NULL;
}

static void *disabled(void *arg)
{
    (void)arg;
    int old;
    FCHECK_EQ(shim__pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old), 0);
    C_PUSH(note, "handler");
    atomic_store(&blocked, 1);
    while (atomic_load(&blocked) != 2)
        sleep_ns(1000000);
    FCHECK_EQ(shim__usleep(1000), 0); /* disabled: returns */
    note("slept");
    FCHECK_EQ(shim__pthread_setcancelstate(old, NULL), 0);
    note("enabled");
    shim__pthread_testcancel();
    note("not reached");
    C_POP();
    return NULL;
}

static void *cancel_main(void *unused)
{
    pthread_t k, t;
    void *r;
    FCHECK_EQ(pipe(fds), 0);
    FCHECK_EQ(shim__pthread_key_create(&key, note), 0);
    FCHECK_EQ(shim__pthread_create(&k, NULL, keeper, NULL), 0);

    atomic_store(&blocked, 0);
    FCHECK_EQ(shim__pthread_create(&t, NULL, victim, NULL), 0);
    while (!atomic_load(&blocked))
        sleep_ns(1000000);
    sleep_ns(10000000); /* parked in read */
    FCHECK_EQ(shim__pthread_cancel(t), 0);
    FCHECK_EQ(shim__pthread_join(t, &r), 0);
    FCHECK(r == PTHREAD_CANCELED, "%p", r);
    FCHECK(strcmp(order, "inner outer tsd") == 0, "cancel: %s", order);

    order[0] = '\0';
    FCHECK_EQ(shim__pthread_create(&t, NULL, victim, (void *)1), 0);
    FCHECK_EQ(shim__pthread_join(t, &r), 0);
    FCHECK(r == (void *)7, "%p", r);
    FCHECK(strcmp(order, "inner outer tsd") == 0, "exit: %s", order);

    order[0] = '\0';
    atomic_store(&blocked, 0);
    FCHECK_EQ(shim__pthread_create(&t, NULL, disabled, NULL), 0);
    while (!atomic_load(&blocked))
        sleep_ns(1000000);
    FCHECK_EQ(shim__pthread_cancel(t), 0);
    atomic_store(&blocked, 2);
    FCHECK_EQ(shim__pthread_join(t, &r), 0);
    FCHECK(r == PTHREAD_CANCELED, "%p", r);
    FCHECK(strcmp(order, "slept enabled handler") == 0, "disabled: %s", order);
    return unused;
}

Test(cancel, unwinds_c_cleanup_buffers)
{
    start_runtime(2);
    join(spawn(cancel_main, NULL));
}

Test(cancel, unwinds_without_fiber_tls)
{
    int rc = fs_init(&(struct fs_config){.carriers = 2, .fiber_tls_off = true});
    cr_assert(rc == 0, "fs_init: %d", rc);
    join(spawn(cancel_main, NULL));
}
