// fibershim-carriers: 1 2
/* A signal handler that runs in a thread waiting on a semaphore ends the
 * wait with EINTR, as the kernel ends glibc's futex wait: sem_wait,
 * sem_timedwait and sem_clockwait always without SA_RESTART; with it,
 * sem_wait is restarted (and takes the unit posted after the signal),
 * the timed waits still fail with EINTR (a timed futex wait is never
 * restarted). On a semaphore of the process and on a process-shared one;
 * a unit posted after an interrupted wait is still there. */
#include "common.h"

#include <semaphore.h>
#include <sys/mman.h>
#include <stdatomic.h>

static __thread int in_target;
static atomic_int handled, handled_in_target;

static void handler(int sig)
{
    (void)sig;
    atomic_fetch_add(&handled, 1);
    if (in_target)
        atomic_fetch_add(&handled_in_target, 1);
}

enum how { WAIT, TIMEDWAIT, CLOCKWAIT };
static const char *const how_name[] = {"sem_wait", "sem_timedwait", "sem_clockwait"};

struct job {
    sem_t *sem;
    enum how how;
    atomic_int ready;
    int rc, err;
};

static void *waiter(void *p)
{
    struct job *j = p;
    in_target = 1;
    struct timespec abs;
    clockid_t clock = j->how == CLOCKWAIT ? CLOCK_MONOTONIC : CLOCK_REALTIME;
    clock_gettime(clock, &abs);
    abs.tv_sec += 10;
    atomic_store(&j->ready, 1);
    errno = 0;
    j->rc = j->how == WAIT        ? sem_wait(j->sem)
            : j->how == TIMEDWAIT ? sem_timedwait(j->sem, &abs)
                                  : sem_clockwait(j->sem, clock, &abs);
    j->err = errno;
    return NULL;
}

/* Starts a waiter on sem, signals it with sig once it waits, reports. */
static void run(const char *what, sem_t *sem, enum how how, int sig)
{
    struct job j = {.sem = sem, .how = how};
    int before = atomic_load(&handled_in_target);
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, waiter, &j));
    while (!atomic_load(&j.ready))
        usleep(1000);
    usleep(100000); /* into the wait */
    CHECK_RC(pthread_kill(t, sig));
    usleep(100000); /* the handler ran, the wait ended or was restarted */
    CHECK_SYS(sem_post(sem));
    CHECK_RC(pthread_join(t, NULL));
    int left = sem_trywait(sem) == 0;
    printf("%s %s, %s: rc %d %s, handler in it %s, unit left %s\n", what, how_name[how],
           sig == SIGUSR1 ? "no SA_RESTART" : "SA_RESTART", j.rc, errname(j.rc ? j.err : 0),
           yesno(atomic_load(&handled_in_target) == before + 1), yesno(left));
}

/* A plain wait that a post ends, after the interrupted ones. */
static void *taker(void *p)
{
    return (void *)(intptr_t)sem_wait(p);
}

int main(void)
{
    tp_setup(60);
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
    sa.sa_flags = SA_RESTART;
    CHECK_SYS(sigaction(SIGUSR2, &sa, NULL));

    sem_t local;
    CHECK_SYS(sem_init(&local, 0, 0));
    sem_t *shared = mmap(NULL, sizeof(sem_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                         -1, 0);
    CHECK(shared != MAP_FAILED);
    CHECK_SYS(sem_init(shared, 1, 0));

    for (int how = WAIT; how <= CLOCKWAIT; how++) {
        run("private", &local, how, SIGUSR1);
        run("private", &local, how, SIGUSR2);
    }
    run("pshared", shared, WAIT, SIGUSR1);
    run("pshared", shared, WAIT, SIGUSR2);
    run("pshared", shared, TIMEDWAIT, SIGUSR2);

    int v;
    CHECK_SYS(sem_getvalue(&local, &v));
    printf("value after the interrupted waits: %d\n", v);
    pthread_t t;
    void *rc;
    CHECK_RC(pthread_create(&t, NULL, taker, &local));
    usleep(50000);
    CHECK_SYS(sem_post(&local));
    CHECK_RC(pthread_join(t, &rc));
    printf("a wait the post ends: rc %d\n", (int)(intptr_t)rc);
    CHECK_SYS(sem_post(&local));
    CHECK_SYS(sem_getvalue(&local, &v));
    printf("posted once more: value %d, trywait %d\n", v, sem_trywait(&local));
    printf("handlers run: %d\n", atomic_load(&handled));
    return 0;
}
