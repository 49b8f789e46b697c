// fibershim-carriers: 1 2
/* cond_held_mutex.c - condition waits woken while the mutex is held (the
 * usual "lock, change, signal or broadcast, unlock"), the case where the
 * woken waiter must go on to wait for the mutex. What a program can see:
 *  1. a handler for a signal sent to a waiter woken by a broadcast runs
 *     while the broadcaster still holds the mutex, and the wait then
 *     returns with the mutex held;
 *  2. a waiter cancelled after a condition signal picked it, before it got
 *     the mutex, does not swallow the signal: another waiter takes it;
 *  3. a pool of consumers fed with broadcasts under the mutex gets every
 *     item exactly once.
 * (Written for the wait-morphing experiment of issue #16, which moved
 * such waiters to the mutex's queue; it was measured slower and not kept,
 * but these are the contract any change there must keep.)
 * Plain pthread program; same output with and without the shim. */
#include "common.h"

#include <semaphore.h>

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static int go, waiting; /* under m */
static sem_t handled;

static void on_usr2(int sig) { sem_post(&handled); }

static void wait_waiting(int n)
{
    for (;;) {
        pthread_mutex_lock(&m);
        int w = waiting;
        pthread_mutex_unlock(&m);
        if (w >= n)
            break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    nanosleep(&(struct timespec){0, 20000000}, NULL); /* inside cond_wait by now */
}

static void *waiter(void *arg)
{
    pthread_mutex_lock(&m);
    waiting++;
    while (!go)
        pthread_cond_wait(&c, &m);
    go--;
    /* Returned holding the mutex: a normal mutex's trylock by its holder
     * fails with EBUSY. */
    int held = pthread_mutex_trylock(&m) == EBUSY;
    pthread_mutex_unlock(&m);
    return (void *)(intptr_t)held;
}

static struct timespec in_secs(int s)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += s;
    return t;
}

static void handler_while_moved(void)
{
    go = waiting = 0;
    pthread_t t;
    pthread_create(&t, NULL, waiter, NULL);
    wait_waiting(1);
    pthread_mutex_lock(&m);
    go = 1;
    pthread_cond_broadcast(&c);
    pthread_kill(t, SIGUSR2);
    struct timespec dl = in_secs(3);
    int rc;
    while ((rc = sem_timedwait(&handled, &dl)) != 0 && errno == EINTR)
        ;
    printf("1. handler ran while the broadcaster held the mutex: %s\n", rc == 0 ? "yes" : "no");
    pthread_mutex_unlock(&m);
    void *held;
    pthread_join(t, &held);
    printf("1. the wait returned with the mutex held: %s\n", held ? "yes" : "no");
}

static void unlock_m(void *arg) { pthread_mutex_unlock(&m); }

static void *cancellable_waiter(void *arg)
{
    pthread_mutex_lock(&m);
    pthread_cleanup_push(unlock_m, NULL);
    waiting++;
    while (!go)
        pthread_cond_wait(&c, &m);
    go--;
    pthread_cleanup_pop(1);
    return NULL;
}

static void cancel_while_moved(void)
{
    go = waiting = 0;
    pthread_t t1, t2;
    pthread_create(&t1, NULL, cancellable_waiter, NULL);
    wait_waiting(1);
    pthread_create(&t2, NULL, cancellable_waiter, NULL);
    wait_waiting(2);
    pthread_mutex_lock(&m);
    go = 1;
    pthread_cond_signal(&c); /* the oldest waiter, t1, is picked */
    pthread_cancel(t1);
    pthread_mutex_unlock(&m);
    pthread_join(t1, NULL);
    /* Either t1 took the go before the cancel acted, or t2 must get it. */
    int consumed = 0;
    for (int i = 0; i < 300 && !consumed; i++) {
        pthread_mutex_lock(&m);
        consumed = go == 0;
        pthread_mutex_unlock(&m);
        if (!consumed)
            nanosleep(&(struct timespec){0, 10000000}, NULL);
    }
    printf("2. the signal reached a waiter although the one it picked was cancelled: %s\n",
           consumed ? "yes" : "no");
    pthread_mutex_lock(&m);
    go = 1; /* releases t2 if t1 had taken the first */
    pthread_cond_broadcast(&c);
    pthread_mutex_unlock(&m);
    pthread_join(t2, NULL);
}

#define CONSUMERS 16
#define ITEMS 20000
static int queue[64], qlen, closed;
static long sum, taken;

static void *consumer(void *arg)
{
    long mine = 0, n = 0;
    pthread_mutex_lock(&m);
    for (;;) {
        while (qlen == 0 && !closed)
            pthread_cond_wait(&c, &m);
        if (qlen == 0)
            break;
        mine += queue[--qlen];
        n++;
        pthread_cond_broadcast(&c); /* room for the producer, under the mutex */
    }
    sum += mine;
    taken += n;
    pthread_mutex_unlock(&m);
    return NULL;
}

static void pool_with_broadcasts(void)
{
    pthread_t t[CONSUMERS];
    for (int i = 0; i < CONSUMERS; i++)
        pthread_create(&t[i], NULL, consumer, NULL);
    for (int i = 1; i <= ITEMS; i++) {
        pthread_mutex_lock(&m);
        while (qlen == 64)
            pthread_cond_wait(&c, &m);
        queue[qlen++] = i;
        pthread_cond_broadcast(&c);
        pthread_mutex_unlock(&m);
    }
    pthread_mutex_lock(&m);
    closed = 1;
    pthread_cond_broadcast(&c);
    pthread_mutex_unlock(&m);
    for (int i = 0; i < CONSUMERS; i++)
        pthread_join(t[i], NULL);
    printf("3. %ld items taken, sum %ld (want %d, %ld)\n", taken, sum, ITEMS,
           (long)ITEMS * (ITEMS + 1) / 2);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    sem_init(&handled, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR2, &sa, NULL);
    handler_while_moved();
    cancel_while_moved();
    pool_with_broadcasts();
    return 0;
}
