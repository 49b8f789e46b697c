// fibershim-carriers: 1 2
/* A stop-the-world protocol, as SBCL's garbage collector runs it: main
 * signals every thread and waits until each handler has acknowledged
 * (posting a semaphore), then releases them. The threads are parked in a
 * condition wait, a mutex lock, a semaphore wait, a barrier wait, a read
 * lock, a timed write lock and pthread_join (of a thread of its own); POSIX runs the handler
 * during the wait, which then goes on (a condition wait may return: the
 * program's loop copes, as it must with spurious wake-ups). The handler
 * for the timed write lock blocks itself (nanosleep) before it
 * acknowledges. Two rounds. */
#include "common.h"

#include <semaphore.h>
#include <stdatomic.h>

#define PER_KIND 7
enum kind { COND, MUTEX, SEM, BARRIER, RDLOCK, TIMEDWRLOCK, JOIN, NKINDS };
static const char *const kind_name[] = {"cond", "mutex", "sem",   "barrier",
                                        "rdlock", "timedwrlock", "join"};
#define NTHREADS (PER_KIND * NKINDS)

static sem_t acks;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;   /* the cond's */
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int released;
static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER; /* main holds it */
static sem_t gate;
static pthread_barrier_t bar;
static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER; /* main write-locks it */
static pthread_rwlock_t rw2 = PTHREAD_RWLOCK_INITIALIZER; /* main read-locks it */
static atomic_int sleeper_go;

static __thread pthread_t me;
static __thread int my_kind = -1;
static atomic_int wrong_thread, acked_by[NKINDS];

static void on_stop(int sig)
{
    (void)sig;
    int e = errno;
    if (!pthread_equal(me, pthread_self()))
        atomic_fetch_add(&wrong_thread, 1);
    if (my_kind >= 0)
        atomic_fetch_add(&acked_by[my_kind], 1);
    if (my_kind == TIMEDWRLOCK) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    sem_post(&acks);
    errno = e;
}

static void *sleeper_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&sleeper_go))
        usleep(1000);
    return NULL;
}

static void *thread_main(void *arg)
{
    my_kind = (int)(intptr_t)arg;
    me = pthread_self();
    switch (my_kind) {
    case COND:
        pthread_mutex_lock(&mu);
        while (!released)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        break;
    case MUTEX:
        CHECK_RC(pthread_mutex_lock(&held));
        CHECK_RC(pthread_mutex_unlock(&held));
        break;
    case SEM:
        while (sem_wait(&gate) != 0)
            CHECK(errno == EINTR);
        break;
    case BARRIER: {
        int rc = pthread_barrier_wait(&bar);
        CHECK(rc == 0 || rc == PTHREAD_BARRIER_SERIAL_THREAD);
        break;
    }
    case RDLOCK:
        CHECK_RC(pthread_rwlock_rdlock(&rw));
        CHECK_RC(pthread_rwlock_unlock(&rw));
        break;
    case TIMEDWRLOCK: {
        struct timespec abs;
        clock_gettime(CLOCK_REALTIME, &abs);
        abs.tv_sec += 60;
        CHECK_RC(pthread_rwlock_timedwrlock(&rw2, &abs));
        CHECK_RC(pthread_rwlock_unlock(&rw2));
        break;
    }
    case JOIN: {
        pthread_t child;
        CHECK_RC(pthread_create(&child, NULL, sleeper_main, NULL));
        CHECK_RC(pthread_join(child, NULL));
        break;
    }
    }
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
    CHECK_SYS(sem_init(&acks, 0, 0));
    CHECK_SYS(sem_init(&gate, 0, 0));
    CHECK_RC(pthread_barrier_init(&bar, NULL, PER_KIND + 1));
    CHECK_RC(pthread_mutex_lock(&held));
    CHECK_RC(pthread_rwlock_wrlock(&rw));
    CHECK_RC(pthread_rwlock_rdlock(&rw2));

    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)(i % NKINDS)));
    usleep(300000); /* everyone is in its wait */

    for (int round = 1; round <= 2; round++) {
        for (int i = 0; i < NTHREADS; i++)
            CHECK_RC(pthread_kill(t[i], SIGUSR1));
        for (int i = 0; i < NTHREADS; i++)
            while (sem_wait(&acks) != 0)
                CHECK(errno == EINTR);
        printf("round %d: %d acknowledgements\n", round, NTHREADS);
        usleep(50000); /* the waits go on */
    }
    for (int k = 0; k < NKINDS; k++)
        printf("%s: %d handler runs\n", kind_name[k], atomic_load(&acked_by[k]));
    printf("handlers in the wrong thread: %d\n", atomic_load(&wrong_thread));

    /* Release everyone. */
    pthread_mutex_lock(&mu);
    released = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    CHECK_RC(pthread_mutex_unlock(&held));
    for (int i = 0; i < PER_KIND; i++)
        CHECK_SYS(sem_post(&gate));
    int rc = pthread_barrier_wait(&bar);
    CHECK(rc == 0 || rc == PTHREAD_BARRIER_SERIAL_THREAD);
    CHECK_RC(pthread_rwlock_unlock(&rw));
    CHECK_RC(pthread_rwlock_unlock(&rw2));
    atomic_store(&sleeper_go, 1);
    for (int i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    printf("all released\n");
    return 0;
}
