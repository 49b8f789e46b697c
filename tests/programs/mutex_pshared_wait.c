// fibershim-carriers: 1 2
/* Process-shared mutexes (normal, robust, priority-inheritance, and
 * robust priority-inheritance as Apache's APR makes its accept mutex)
 * contended by threads of two processes, each thread waiting for the
 * other process's holder:
 *  - mutual exclusion: threads of a parent and a forked child increment a
 *    counter in shared memory under the mutex, some holding it across a
 *    sleep, and the count comes out exact;
 *  - a waiter sleeps until the other process unlocks, and takes no more
 *    than a few wakeups meanwhile: the waiting process's voluntary
 *    context switches, all threads together, over a one-second hold
 *    (under 100; blocked in the kernel it makes a handful, one polling
 *    the lock every millisecond makes hundreds);
 *  - timedlock and clocklock time out while the other process holds the
 *    mutex, and succeed when it unlocks before the deadline;
 *  - robust: a thread of the other process exits holding the mutex, and
 *    the waiter, already asleep, gets EOWNERDEAD; a whole process dies
 *    holding it, likewise; an owner that unlocks without
 *    pthread_mutex_consistent makes the waiter get ENOTRECOVERABLE.
 */
#include "common.h"

#include <stdbool.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define THREADS 6
#define ROUNDS 3000

struct shared {
    pthread_mutex_t m;
    long counter;
};
static struct shared *sh;

static void mutex_setup(int robust, int pi)
{
    pthread_mutexattr_t a;
    CHECK_RC(pthread_mutexattr_init(&a));
    CHECK_RC(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
    if (robust)
        CHECK_RC(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST));
    if (pi)
        CHECK_RC(pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT));
    CHECK_RC(pthread_mutex_init(&sh->m, &a));
    CHECK_RC(pthread_mutexattr_destroy(&a));
    sh->counter = 0;
}

/* A one-byte message on a pipe: the two processes take turns. */
static void say(int fd, char c)
{
    CHECK(write(fd, &c, 1) == 1);
}
static void hear(int fd, char want)
{
    char c = 0;
    CHECK(read(fd, &c, 1) == 1);
    if (c != want)
        FAIL("heard '%c', expected '%c'", c, want);
}

static long voluntary_switches(void)
{
    struct rusage ru;
    CHECK(getrusage(RUSAGE_SELF, &ru) == 0);
    return ru.ru_nvcsw;
}

static void *incrementer(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < ROUNDS; i++) {
        CHECK_RC(pthread_mutex_lock(&sh->m));
        long v = sh->counter;
        /* Now and then hold it across a sleep or a yield, so that the
         * other process's threads find it held and wait. */
        if ((i + id) % 97 == 0)
            usleep(200);
        else if ((i + id) % 7 == 0)
            sched_yield();
        sh->counter = v + 1;
        CHECK_RC(pthread_mutex_unlock(&sh->m));
    }
    return NULL;
}

static void run_incrementers(long base)
{
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        CHECK_RC(pthread_create(&t[i], NULL, incrementer, (void *)(base + i)));
    for (int i = 0; i < THREADS; i++)
        CHECK_RC(pthread_join(t[i], NULL));
}

static void contention(const char *name)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        run_incrementers(THREADS);
        _exit(0);
    }
    run_incrementers(0);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    printf("%s: %d threads in 2 processes, counter %s\n", name, 2 * THREADS,
           sh->counter == 2L * THREADS * ROUNDS ? "exact" : "WRONG");
}

/* ---- a long hold by the other process -------------------------------- */

struct waiter {
    int to_parent, from_parent;
    long switches;
};

static void *long_waiter(void *arg)
{
    struct waiter *w = arg;
    hear(w->from_parent, 'L'); /* the parent holds it */
    long before = voluntary_switches();
    CHECK_RC(pthread_mutex_lock(&sh->m)); /* about one second */
    w->switches = voluntary_switches() - before;
    CHECK_RC(pthread_mutex_unlock(&sh->m));
    return NULL;
}

static void *timed_waiter(void *arg)
{
    struct waiter *w = arg;
    hear(w->from_parent, 'L');
    struct timespec abs = ns_to_ts(clock_ns(CLOCK_REALTIME) + 100 * 1000000LL);
    EXPECT_RC(pthread_mutex_timedlock(&sh->m, &abs), ETIMEDOUT);
    abs = ns_to_ts(clock_ns(CLOCK_MONOTONIC) + 100 * 1000000LL);
    EXPECT_RC(pthread_mutex_clocklock(&sh->m, CLOCK_MONOTONIC, &abs), ETIMEDOUT);
    say(w->to_parent, 'T'); /* the parent unlocks 200 ms later */
    abs = ns_to_ts(clock_ns(CLOCK_MONOTONIC) + 30 * 1000000000LL);
    CHECK_RC(pthread_mutex_clocklock(&sh->m, CLOCK_MONOTONIC, &abs));
    CHECK_RC(pthread_mutex_unlock(&sh->m));
    hear(w->from_parent, 'L');
    abs = ns_to_ts(clock_ns(CLOCK_REALTIME) + 30 * 1000000000LL);
    CHECK_RC(pthread_mutex_timedlock(&sh->m, &abs));
    CHECK_RC(pthread_mutex_unlock(&sh->m));
    return NULL;
}

/* Runs fn in a thread of a child process. The parent holds the mutex
 * `holds` times, saying 'L' once it has it; the first time, if until_told,
 * it waits for the child's 'T' first; then it lets hold_us pass and
 * unlocks. */
static void hold_against_child(const char *name, void *(*fn)(void *), int holds, bool until_told,
                               long hold_us)
{
    int down[2], up[2];
    CHECK(pipe(down) == 0 && pipe(up) == 0);
    struct waiter *w = mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                            -1, 0);
    CHECK(w != MAP_FAILED);
    w->to_parent = up[1];
    w->from_parent = down[0];
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        pthread_t t;
        CHECK_RC(pthread_create(&t, NULL, fn, w));
        CHECK_RC(pthread_join(t, NULL));
        _exit(0);
    }
    for (int i = 0; i < holds; i++) {
        CHECK_RC(pthread_mutex_lock(&sh->m));
        say(down[1], 'L');
        if (until_told)
            hear(up[0], 'T');
        /* Long enough for the child to be waiting: its wait is what the
         * child checks, not how long it waited. */
        usleep(hold_us);
        CHECK_RC(pthread_mutex_unlock(&sh->m));
        until_told = false;
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (fn == long_waiter) {
        printf("%s: a waiter for a 1 s hold by another process: few wakeups (< 100): %s\n",
               name, yesno(w->switches < 100));
        if (w->switches >= 100)
            fprintf(stderr, "  (%ld voluntary context switches)\n", w->switches);
    }
    munmap(w, sizeof *w);
    close(down[0]), close(down[1]), close(up[0]), close(up[1]);
}

/* ---- robust: owner death -------------------------------------------- */

static int death_fd; /* the child's end of the pipe to the parent */

/* The parent's side: a thread that locks (asleep in the lock well before
 * the child's owner goes away), makes the mutex consistent again if told
 * its owner died, and unlocks. */
static void *parent_locker(void *arg)
{
    int *rc = arg;
    *rc = pthread_mutex_lock(&sh->m);
    if (*rc == EOWNERDEAD)
        CHECK_RC(pthread_mutex_consistent(&sh->m));
    if (*rc == 0 || *rc == EOWNERDEAD)
        CHECK_RC(pthread_mutex_unlock(&sh->m));
    return NULL;
}

static void *hold_and_exit(void *arg)
{
    (void)arg;
    CHECK_RC(pthread_mutex_lock(&sh->m));
    say(death_fd, 'H');
    usleep(200000);
    return NULL; /* ends holding it */
}

/* In the child: a thread ends holding the mutex; the process lives on. */
static void child_thread_dies(void)
{
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, hold_and_exit, NULL));
    CHECK_RC(pthread_join(t, NULL));
    usleep(200000);
}

/* In the child: the process dies while one of its threads holds it. */
static void *hold_and_die(void *arg)
{
    (void)arg;
    CHECK_RC(pthread_mutex_lock(&sh->m));
    say(death_fd, 'H');
    usleep(200000);
    _exit(0);
}
static void child_process_dies(void)
{
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, hold_and_die, NULL));
    pthread_join(t, NULL);
}

/* In the child: a thread ends holding it; the next owner gets EOWNERDEAD
 * and unlocks without making it consistent. */
static void *end_holding(void *arg)
{
    (void)arg;
    CHECK_RC(pthread_mutex_lock(&sh->m));
    return NULL;
}
static void *inherit_and_drop(void *arg)
{
    (void)arg;
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, end_holding, NULL));
    CHECK_RC(pthread_join(t, NULL));
    EXPECT_RC(pthread_mutex_lock(&sh->m), EOWNERDEAD);
    say(death_fd, 'H');
    usleep(200000);
    CHECK_RC(pthread_mutex_unlock(&sh->m));
    return NULL;
}
static void child_drops_inconsistent(void)
{
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, inherit_and_drop, NULL));
    CHECK_RC(pthread_join(t, NULL));
}

static void owner_death(const char *name, const char *what, void (*child)(void))
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        death_fd = fds[1];
        child();
        _exit(0);
    }
    hear(fds[0], 'H'); /* the child's thread holds it */
    int rc = -1;
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, parent_locker, &rc));
    CHECK_RC(pthread_join(t, NULL));
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(fds[0]), close(fds[1]);
    printf("%s: %s: the waiter's lock returns %s\n", name, what, errname(rc));
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED);
    static const struct {
        const char *name;
        int robust, pi;
    } kinds[] = {{"normal", 0, 0}, {"robust", 1, 0}, {"pi", 0, 1}, {"robust pi", 1, 1}};
    for (unsigned k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        const char *name = kinds[k].name;
        mutex_setup(kinds[k].robust, kinds[k].pi);
        contention(name);
        hold_against_child(name, long_waiter, 1, false, 1000000);
        hold_against_child(name, timed_waiter, 2, true, 200000);
        printf("%s: timedlock and clocklock time out while the other process holds it, "
               "succeed when it unlocks\n",
               name);
        if (!kinds[k].robust)
            continue;
        owner_death(name, "a thread of the other process ends holding it", child_thread_dies);
        owner_death(name, "the other process dies holding it", child_process_dies);
        owner_death(name, "its next owner unlocks it without making it consistent",
                    child_drops_inconsistent);
        int rc = -1;
        pthread_t t;
        CHECK_RC(pthread_create(&t, NULL, parent_locker, &rc));
        CHECK_RC(pthread_join(t, NULL));
        printf("%s: afterwards, lock returns %s\n", name, errname(rc));
    }
    return 0;
}
