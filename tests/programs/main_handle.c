// fibershim-carriers: 1 2
// fibershim-no-fiber-tls: 2
/* main's pthread_t, saved before the first pthread_create, used from other
 * threads afterwards (issue 12: under the shim the first pthread_create
 * turns main into a fiber; the value glibc gave main must go on naming it).
 *  - pthread_equal with pthread_self() in main (yes) and in a thread (no);
 *  - pthread_kill(main, 0), then pthread_kill(main, SIGUSR1) while main
 *    sleeps: the handler runs in main (its pthread_self() is the saved
 *    value), and
 *    pthread_sigqueue(main, SIGUSR2, 42): the handler gets the value;
 *  - pthread_getattr_np(main): the stack main itself saw before any thread
 *    (same top and size), and joinable;
 *  - pthread_setname_np / pthread_getname_np on main, from a thread;
 *  - pthread_getschedparam and pthread_getcpuclockid on main (its clock
 *    reads a positive time);
 *  - the id pthread_create stores is the new thread's pthread_self(),
 *    already when the thread first runs (read from the shared variable);
 *  - at last main calls pthread_exit(77) and a thread joins it by the
 *    saved value, getting 77, then ends the process.
 */
#include "common.h"

#include <semaphore.h>

static pthread_t main_id;
static volatile sig_atomic_t usr1_in_main, usr1_runs, usr2_value, usr2_runs, uses_main_done;
static void *main_lo;
static size_t main_size;
static pthread_t created_id;
static sem_t started;

static void on_usr1(int sig)
{
    (void)sig;
    usr1_in_main = pthread_equal(pthread_self(), main_id);
    usr1_runs++;
}

static void on_usr2(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    if (pthread_equal(pthread_self(), main_id) && si->si_code == SI_QUEUE)
        usr2_value = si->si_value.sival_int;
    usr2_runs++;
}

static void wait_for(volatile sig_atomic_t *v)
{
    int64_t start = now_ns();
    while (!*v && ms_since(start) < 10000)
        sleep_ms(1);
}

static void *reads_its_id(void *arg)
{
    /* created_id was stored before this thread could run. */
    printf("new thread: its id is stored before it runs: %s\n",
           pthread_equal(created_id, pthread_self()) ? "yes" : "no");
    CHECK(sem_post(&started) == 0);
    return arg;
}

static void *uses_main(void *arg)
{
    printf("thread: pthread_equal(main, self) = %d\n", pthread_equal(main_id, pthread_self()));
    printf("thread: pthread_kill(main, 0) = %s\n", errname(pthread_kill(main_id, 0)));

    CHECK_RC(pthread_kill(main_id, SIGUSR1));
    wait_for(&usr1_runs);
    printf("thread: SIGUSR1 to main: handler ran %d time(s), in main: %s\n", (int)usr1_runs,
           usr1_in_main ? "yes" : "no");

    union sigval v = {.sival_int = 42};
    CHECK_RC(pthread_sigqueue(main_id, SIGUSR2, v));
    wait_for(&usr2_runs);
    printf("thread: SIGUSR2 queued to main: handler ran %d time(s), value %d\n", (int)usr2_runs,
           (int)usr2_value);

    pthread_attr_t a;
    CHECK_RC(pthread_getattr_np(main_id, &a));
    void *lo;
    size_t size;
    int ds;
    CHECK_RC(pthread_attr_getstack(&a, &lo, &size));
    CHECK_RC(pthread_attr_getdetachstate(&a, &ds));
    pthread_attr_destroy(&a);
    printf("thread: getattr_np(main): same stack top %s, same size %s, %s\n",
           (char *)lo + size == (char *)main_lo + main_size ? "yes" : "no",
           size == main_size ? "yes" : "no",
           ds == PTHREAD_CREATE_JOINABLE ? "joinable" : "detached");

    char name[16];
    CHECK_RC(pthread_setname_np(main_id, "main-renamed"));
    CHECK_RC(pthread_getname_np(main_id, name, sizeof name));
    printf("thread: main's name after setname_np: %s\n", name);

    int policy;
    struct sched_param sp;
    CHECK_RC(pthread_getschedparam(main_id, &policy, &sp));
    printf("thread: getschedparam(main): %s, priority %d\n",
           policy == SCHED_OTHER ? "SCHED_OTHER" : "other", sp.sched_priority);

    clockid_t c;
    struct timespec ts;
    CHECK_RC(pthread_getcpuclockid(main_id, &c));
    CHECK(clock_gettime(c, &ts) == 0);
    printf("thread: main's CPU clock reads a positive time: %s\n",
           ts.tv_sec > 0 || ts.tv_nsec > 0 ? "yes" : "no");
    uses_main_done = 1;
    return arg;
}

static void *joins_main(void *arg)
{
    void *r = NULL;
    int rc = pthread_join(main_id, &r);
    printf("last thread: pthread_join(main) = %s, value %ld\n", errname(rc), (long)r);
    printf("main_handle: ok\n");
    fflush(stdout);
    return arg; /* the last thread: the process exits 0 */
}

int main(void)
{
    tp_setup(60);
    main_id = pthread_self(); /* before any thread exists */
    pthread_attr_t a;
    CHECK_RC(pthread_getattr_np(main_id, &a));
    CHECK_RC(pthread_attr_getstack(&a, &main_lo, &main_size));
    pthread_attr_destroy(&a);
    /* Use some CPU, so that main's CPU clock is past 0. */
    volatile unsigned long x = 0;
    for (unsigned long i = 0; i < 1000000; i++)
        x += i;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
    sa.sa_sigaction = on_usr2;
    sa.sa_flags = SA_SIGINFO;
    CHECK(sigaction(SIGUSR2, &sa, NULL) == 0);
    CHECK(sem_init(&started, 0, 0) == 0);

    CHECK_RC(pthread_create(&created_id, NULL, reads_its_id, NULL));
    while (sem_wait(&started) != 0) {
    }
    CHECK_RC(pthread_join(created_id, NULL));
    printf("main: pthread_equal(saved, self) after pthread_create = %d\n",
           pthread_equal(main_id, pthread_self()));

    /* main sleeps while the thread signals it: a sleep is cut short by a
     * handler, with or without the shim. */
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, uses_main, NULL));
    int64_t start = now_ns();
    while (!uses_main_done && ms_since(start) < 20000)
        sleep_ms(1);
    CHECK_RC(pthread_join(t, NULL));

    fflush(stdout);
    CHECK_RC(pthread_create(&t, NULL, joins_main, NULL));
    pthread_exit((void *)77L);
}
