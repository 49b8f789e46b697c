// fibershim-carriers: 1 2
/* What a cancelled or exiting thread runs, and when.
 *  - cleanup handlers pushed in several frames run innermost first, at
 *    cancellation and at pthread_exit, then TSD destructors; a handler
 *    popped with 0 does not run;
 *  - PTHREAD_CANCEL_DISABLE holds a cancel back (blocking calls return
 *    normally) until re-enabled; the next cancellation point acts;
 *  - a thread that cancels itself goes on until a cancellation point;
 *  - PTHREAD_CANCEL_ASYNCHRONOUS: switching to it with a cancel pending
 *    acts at once; a thread spinning in a loop without any call is
 *    cancelled (its handlers run), several of them at once;
 *  - a cancellation point inside a cleanup handler of a cancelled thread
 *    does not act again;
 *  - pthread_cancel of a thread that ended returns 0.
 */
#include "common.h" /* FAIL */

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char order[512];
static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t key1, key2;
static atomic_int ready, go;

static void note(const char *s)
{
    pthread_mutex_lock(&order_mu);
    if (order[0])
        strcat(order, " ");
    strcat(order, s);
    pthread_mutex_unlock(&order_mu);
}

static void handler(void *arg)
{
    note(arg);
}

static void dtor(void *v)
{
    note(v);
}

static void report(const char *name, void *ret)
{
    printf("%-18s %-9s %s\n", name,
           ret == PTHREAD_CANCELED ? "canceled"
           : ret == (void *)7      ? "exit(7)"
                                   : "returned",
           order);
    order[0] = '\0';
    fflush(stdout);
}

/* Frames with handlers: level 3 blocks in read (cancel) or exits. */
static int blockfd[2];

static void level3(int exit)
{
    pthread_cleanup_push(handler, "h3");
    pthread_cleanup_push(handler, "h3-popped");
    pthread_cleanup_pop(0);
    atomic_store(&ready, 1);
    if (exit)
        pthread_exit((void *)7);
    char c;
    read(blockfd[0], &c, 1);
    pthread_cleanup_pop(0);
}

static void level2(int exit)
{
    pthread_cleanup_push(handler, "h2");
    level3(exit);
    pthread_cleanup_pop(0);
}

static void *nested(void *exit)
{
    pthread_setspecific(key1, "tsd1");
    pthread_setspecific(key2, "tsd2");
    pthread_cleanup_push(handler, "h1");
    level2(exit != NULL);
    pthread_cleanup_pop(0);
    return NULL;
}

static void *disabled(void *arg)
{
    (void)arg;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    pthread_cleanup_push(handler, "h");
    atomic_store(&ready, 1);
    while (!atomic_load(&go))
        usleep(1000);
    /* Cancellation points with cancellation disabled: they return. */
    usleep(1000);
    note("usleep-returned");
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
    note("nanosleep-returned");
    pthread_testcancel();
    note("testcancel-returned");
    int old;
    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
    note(old == PTHREAD_CANCEL_DISABLE ? "enabled" : "?");
    usleep(1000);
    note("not-reached");
    pthread_cleanup_pop(0);
    return NULL;
}

static void *self_cancel(void *arg)
{
    (void)arg;
    pthread_cleanup_push(handler, "h");
    if (pthread_cancel(pthread_self()) != 0)
        FAIL("self cancel");
    note("after-cancel");
    pthread_testcancel();
    note("not-reached");
    pthread_cleanup_pop(0);
    return NULL;
}

static void *to_async(void *arg)
{
    (void)arg;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    pthread_cleanup_push(handler, "h");
    atomic_store(&ready, 1);
    while (!atomic_load(&go))
        usleep(1000);
    int old;
    pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, &old);
    note("async-pending-disabled");
    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL); /* acts here */
    note("not-reached");
    pthread_cleanup_pop(0);
    return NULL;
}

static atomic_int spinning;

static void *spin(void *arg)
{
    pthread_cleanup_push(handler, arg);
    pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL);
    atomic_fetch_add(&spinning, 1);
    volatile unsigned long n = 0;
    for (;;)
        n++; /* no call at all */
    pthread_cleanup_pop(0);
    return NULL;
}

static void cancel_point_in_handler(void *arg)
{
    (void)arg;
    usleep(1000); /* a cancellation point: does not act again */
    note("handler-slept");
}

static void *handler_sleeps(void *arg)
{
    (void)arg;
    pthread_cleanup_push(cancel_point_in_handler, NULL);
    atomic_store(&ready, 1);
    for (;;)
        pause();
    pthread_cleanup_pop(0);
    return NULL;
}

static void run(const char *name, void *(*fn)(void *), void *arg, int wait_ready, int set_go)
{
    atomic_store(&ready, 0);
    atomic_store(&go, 0);
    pthread_t t;
    if (pthread_create(&t, NULL, fn, arg) != 0)
        FAIL("create");
    if (wait_ready)
        while (!atomic_load(&ready))
            usleep(1000);
    usleep(10000);
    if (pthread_cancel(t) != 0)
        FAIL("cancel");
    if (set_go)
        atomic_store(&go, 1);
    void *ret;
    if (pthread_join(t, &ret) != 0)
        FAIL("join");
    report(name, ret);
}

int main(void)
{
    pthread_key_create(&key1, dtor);
    pthread_key_create(&key2, dtor);
    if (pipe(blockfd))
        FAIL("pipe");

    run("nested-cancel", nested, NULL, 1, 0);

    pthread_t t;
    void *ret;
    atomic_store(&ready, 0);
    pthread_create(&t, NULL, nested, (void *)1);
    pthread_join(t, &ret);
    report("nested-exit", ret);

    run("disabled", disabled, NULL, 1, 1);
    run("self-cancel", self_cancel, NULL, 0, 0);
    run("async-on-enable", to_async, NULL, 1, 1);
    run("handler-sleeps", handler_sleeps, NULL, 1, 0);

    /* Asynchronous cancellation of threads spinning without any call:
     * more spinners than carriers. */
    enum { N = 4 };
    pthread_t sp[N];
    static const char *names[N] = {"spin0", "spin1", "spin2", "spin3"};
    for (int i = 0; i < N; i++)
        pthread_create(&sp[i], NULL, spin, (void *)names[i]);
    while (atomic_load(&spinning) < N)
        usleep(1000);
    for (int i = 0; i < N; i++)
        pthread_cancel(sp[i]);
    int canceled = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(sp[i], &ret);
        canceled += ret == PTHREAD_CANCELED;
    }
    /* Handlers ran in any order: count them. */
    int handlers = 0;
    for (char *p = order; (p = strstr(p, "spin")); p++)
        handlers++;
    printf("spinning           %d canceled, %d handlers\n", canceled, handlers);
    order[0] = '\0';

    /* Cancel of an ended, not yet joined thread: 0. */
    pthread_create(&t, NULL, self_cancel, NULL);
    usleep(20000);
    printf("cancel-ended       %d\n", pthread_cancel(t));
    pthread_join(t, NULL);
    order[0] = '\0';
    printf("done\n");
    return 0;
}
