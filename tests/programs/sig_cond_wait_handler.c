// fibershim-carriers: 1 2
// cond_wait_handler.c - SBCL's stop-the-world GC under the shim (issue
// #15), reduced: a thread waiting in pthread_cond_wait (SBCL's finalizer
// thread) must run a handler for a signal sent to it, as a kernel thread
// does (POSIX: the wait then resumes, or returns 0 as a spurious wake-up).
// SBCL's GC sends SIGUSR2 and waits until every thread's handler ran; under
// the shim the handler waits until the condition is signalled, and the GC
// waits forever. Plain pthread program; same output with and without the
// shim.
// It failed under the shim before issue 13's delivery model.
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int go, waiting;
static sem_t handled;

static void on_usr2(int sig) { sem_post(&handled); } /* async-signal-safe */

static void *waiter(void *a)
{
    pthread_mutex_lock(&mu);
    waiting = 1;
    while (!go)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return a;
}

int main(void)
{
    sem_init(&handled, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR2, &sa, NULL);
    pthread_t t;
    pthread_create(&t, NULL, waiter, NULL);
    for (;;) { /* until it waits */
        pthread_mutex_lock(&mu);
        int w = waiting;
        pthread_mutex_unlock(&mu);
        if (w)
            break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    nanosleep(&(struct timespec){0, 20000000}, NULL); /* inside cond_wait by now */
    pthread_kill(t, SIGUSR2);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 3;
    int rc;
    while ((rc = sem_timedwait(&handled, &dl)) != 0 && errno == EINTR) {
    }
    printf("handler ran while the thread waited on the condition: %s\n", rc == 0 ? "yes" : "no");
    pthread_mutex_lock(&mu);
    go = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(t, NULL);
    return 0;
}
