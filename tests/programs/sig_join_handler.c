// fibershim-carriers: 1 2
// join_handler.c - SBCL's GC deadlock in pthread_join (issue #15): SBCL
// joins the OS thread of a Lisp thread that ended, and a GC that starts
// meanwhile sends the joiner SIGUSR2 and waits for its handler. A thread
// waiting in pthread_join runs a handler for a signal sent to it (then goes
// on waiting); under the shim a join park is not interrupted and the
// handler waits until the join ends. Plain pthread program; same output
// with and without the shim. It failed under the shim before every park
// let a handler run (issue 13).
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static sem_t handled, finish;

static void on_usr2(int sig) { sem_post(&handled); }

static void *sleeper(void *a)
{
    while (sem_wait(&finish) != 0 && errno == EINTR) {
    }
    return a;
}

static void *joiner(void *a)
{
    pthread_join(*(pthread_t *)a, NULL);
    return NULL;
}

int main(void)
{
    sem_init(&handled, 0, 0);
    sem_init(&finish, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR2, &sa, NULL);
    pthread_t s, j;
    pthread_create(&s, NULL, sleeper, NULL);
    pthread_create(&j, NULL, joiner, &s);
    nanosleep(&(struct timespec){0, 50000000}, NULL); /* j is in pthread_join */
    pthread_kill(j, SIGUSR2);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 3;
    int rc;
    while ((rc = sem_timedwait(&handled, &dl)) != 0 && errno == EINTR) {
    }
    printf("handler ran while the thread waited in pthread_join: %s\n", rc == 0 ? "yes" : "no");
    sem_post(&finish);
    pthread_join(j, NULL);
    return 0;
}
