// fibershim-carriers: 1 2
/* A pthread_once routine that does not return leaves the once object as
 * if pthread_once had never been called (POSIX; glibc resets it in a
 * cleanup handler): cancelled in the routine (deferred and asynchronous),
 * or pthread_exit from it. Then the next caller runs the routine, and a
 * caller that was waiting for the first one runs it too.
 *
 * Asynchronous cancellation also reaches a thread blocked in a lock wait
 * that is not a cancellation point, as glibc's SIGCANCEL interrupts a
 * futex wait: a thread that relocks a default mutex it holds (it waits
 * for ever), a writer waiting for a read-locked rwlock, a thread waiting
 * for another's once routine. Its cleanup handlers run, and the lock it
 * waited for works afterwards. (The open POSIX suite's pthread_once/3-1
 * and pthread_mutex_init/1-2 hung under the shim.) Not a writer waiting
 * for an rwlock: glibc's own rwlock then stays writer-pending for ever
 * (the next reader blocks), so there is nothing to compare with. */
#include "common.h"

static volatile int in_routine;

static void routine_sleeps(void)
{
    in_routine = 1;
    sleep(30); /* a cancellation point: cancelled here */
    printf("routine_sleeps: not cancelled\n");
}

static void routine_spins(void)
{
    in_routine = 1;
    for (;;)
        __asm__ volatile("" ::: "memory"); /* asynchronous cancel acts here */
}

static void routine_exits(void)
{
    in_routine = 1;
    pthread_exit((void *)7);
}

static int ran_second;
static void routine_second(void)
{
    ran_second++;
}

struct once_arg {
    pthread_once_t *once;
    void (*routine)(void);
    int async;
};

static void *call_once(void *p)
{
    struct once_arg *a = p;
    if (a->async)
        CHECK_RC(pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL));
    CHECK_RC(pthread_once(a->once, a->routine));
    return (void *)1;
}

static void wait_in_routine(void)
{
    while (!in_routine)
        usleep(1000);
    usleep(20000); /* well inside it */
}

static const char *how(void *ret)
{
    return ret == PTHREAD_CANCELED ? "cancelled" : ret == (void *)7 ? "exited 7" : "returned";
}

/* The first caller is cancelled in (or leaves) the routine; a second
 * caller, if any, was waiting for it meanwhile. */
static void once_case(const char *name, void (*routine)(void), int async, int cancel,
                      int with_waiter)
{
    pthread_once_t once = PTHREAD_ONCE_INIT;
    in_routine = 0;
    ran_second = 0;
    struct once_arg a = {&once, routine, async};
    struct once_arg w = {&once, routine_second, 0};
    pthread_t t, tw;
    CHECK_RC(pthread_create(&t, NULL, call_once, &a));
    wait_in_routine();
    if (with_waiter) {
        CHECK_RC(pthread_create(&tw, NULL, call_once, &w));
        usleep(20000); /* parked on the once */
    }
    if (cancel)
        CHECK_RC(pthread_cancel(t));
    void *ret;
    CHECK_RC(pthread_join(t, &ret));
    if (with_waiter) {
        void *wret;
        CHECK_RC(pthread_join(tw, &wret));
        printf("%s: first %s; waiter %s, ran the routine %d time(s)\n", name, how(ret),
               how(wret), ran_second);
    }
    CHECK_RC(pthread_once(&once, routine_second));
    CHECK_RC(pthread_once(&once, routine_second));
    printf("%s: %s; the routine then ran %d time(s) in all\n", name, how(ret), ran_second);
}

/* ---- asynchronous cancel in lock waits ---- */

static pthread_mutex_t mx = PTHREAD_MUTEX_INITIALIZER;
static volatile int at_wait, cleaned;

static void unlock_mx(void *p)
{
    (void)p;
    cleaned++;
    CHECK_RC(pthread_mutex_unlock(&mx));
}

static void *relock_own(void *p)
{
    (void)p;
    CHECK_RC(pthread_mutex_lock(&mx));
    pthread_cleanup_push(unlock_mx, NULL);
    CHECK_RC(pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL));
    at_wait = 1;
    pthread_mutex_lock(&mx); /* a default mutex: waits for ever */
    printf("relock_own: relocked\n");
    pthread_cleanup_pop(0);
    return NULL;
}

static void cancel_at_wait(pthread_t t)
{
    while (!at_wait)
        usleep(1000);
    usleep(20000); /* parked in the lock */
    CHECK_RC(pthread_cancel(t));
    void *ret;
    CHECK_RC(pthread_join(t, &ret));
    printf("  %s, cleanup handlers run: %d\n", how(ret), cleaned);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    once_case("deferred cancel in the routine", routine_sleeps, 0, 1, 0);
    once_case("asynchronous cancel in the routine", routine_spins, 1, 1, 0);
    once_case("pthread_exit in the routine", routine_exits, 0, 0, 0);
    once_case("deferred cancel, a caller waiting", routine_sleeps, 0, 1, 1);
    once_case("asynchronous cancel, a caller waiting", routine_spins, 1, 1, 1);

    printf("asynchronous cancel of a thread relocking its own mutex:\n");
    at_wait = cleaned = 0;
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, relock_own, NULL));
    cancel_at_wait(t);
    CHECK_RC(pthread_mutex_lock(&mx));
    CHECK_RC(pthread_mutex_unlock(&mx));
    printf("  the mutex works after it: yes\n");

    return 0;
}
