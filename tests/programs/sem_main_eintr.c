/* A semaphore wait of main before it creates any thread (under the shim:
 * a plain thread, not yet a fiber) ends with EINTR when a signal handler
 * runs, as glibc's does: sem_timedwait always, sem_wait unless the
 * handler has SA_RESTART (then it waits on, and gets the unit the
 * handler posted). The same once main has created a thread. (The open
 * POSIX suite's sem_timedwait/9-1: under the shim the wait went on to
 * its timeout.) */
#include "common.h"

#include <semaphore.h>
#include <sys/time.h>

static sem_t s;
static volatile int handled;

static void on_alarm(int sig)
{
    (void)sig;
    handled++;
    sem_post(&s); /* async-signal-safe */
}

static void arm(int restart)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = restart ? SA_RESTART : 0;
    CHECK_SYS(sigaction(SIGALRM, &sa, NULL));
    struct itimerval it = {{0, 0}, {0, 50000}};
    CHECK_SYS(setitimer(ITIMER_REAL, &it, NULL));
}

static void run(const char *when)
{
    for (int timed = 0; timed < 2; timed++) {
        for (int restart = 0; restart < 2; restart++) {
            CHECK_SYS(sem_init(&s, 0, 0));
            handled = 0;
            arm(restart);
            struct timespec dl = ns_to_ts(clock_ns(CLOCK_REALTIME) + 5000000000LL);
            errno = 0;
            int rc = timed ? sem_timedwait(&s, &dl) : sem_wait(&s);
            int e = errno;
            int v = -1;
            CHECK_SYS(sem_getvalue(&s, &v));
            printf("%s: %s, handler %s SA_RESTART: %d %s, handled %d, value left %d\n", when,
                   timed ? "sem_timedwait" : "sem_wait", restart ? "with" : "without", rc,
                   rc ? errname(e) : "ok", handled, v);
            CHECK_SYS(sem_destroy(&s));
        }
    }
}

static void *nothing(void *p)
{
    return p;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    run("before any thread");
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, nothing, NULL));
    CHECK_RC(pthread_join(t, NULL));
    run("after a thread");
    return 0;
}
