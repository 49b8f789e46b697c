// fibershim-carriers: 1 2
/* A signal reaches a thread that runs without ever blocking (a CPU loop
 * with no system call): the kernel interrupts it at once, so the loop,
 * which waits for its own handler to run, ends. Sent to the thread
 * (pthread_kill), then to the process (kill, with every other thread
 * blocking the signal), then as a stop-the-world round over two spinning
 * threads that acknowledge through a semaphore. */
#include "common.h"

#include <semaphore.h>
#include <stdatomic.h>

static __thread volatile sig_atomic_t got;
static __thread int spinning_thread;
static atomic_int in_spinner;
static sem_t acks;
static atomic_int release;

static void handler(int sig)
{
    (void)sig;
    got = 1;
    if (spinning_thread)
        atomic_fetch_add(&in_spinner, 1);
}

static void on_stop(int sig)
{
    (void)sig;
    int e = errno;
    sem_post(&acks);
    errno = e;
}

static void *spinner(void *arg)
{
    atomic_int *ready = arg;
    spinning_thread = 1;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
    atomic_store(ready, 1);
    unsigned long n = 0;
    while (!got)
        n++; /* no system call, no library call */
    return (void *)n;
}

static void *stw_spinner(void *arg)
{
    atomic_int *ready = arg;
    atomic_fetch_add(ready, 1);
    unsigned long n = 0;
    while (!atomic_load_explicit(&release, memory_order_relaxed))
        n++;
    return (void *)n;
}

static void run(const char *how)
{
    atomic_int ready = 0;
    int before = atomic_load(&in_spinner);
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, spinner, &ready));
    while (!atomic_load(&ready))
        usleep(1000);
    usleep(50000);
    if (!strcmp(how, "pthread_kill"))
        CHECK_RC(pthread_kill(t, SIGUSR1));
    else
        CHECK_SYS(kill(getpid(), SIGUSR1));
    CHECK_RC(pthread_join(t, NULL));
    printf("%s: the spinning thread ran its handler and stopped: %s\n", how,
           yesno(atomic_load(&in_spinner) == before + 1));
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
    sa.sa_handler = on_stop;
    sa.sa_flags = SA_RESTART;
    CHECK_SYS(sigaction(SIGUSR2, &sa, NULL));
    CHECK_SYS(sem_init(&acks, 0, 0));
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    CHECK_RC(pthread_sigmask(SIG_BLOCK, &s, NULL));
    run("pthread_kill");
    run("kill");

    enum { N = 2 };
    atomic_int ready = 0;
    pthread_t t[N];
    for (int i = 0; i < N; i++)
        CHECK_RC(pthread_create(&t[i], NULL, stw_spinner, &ready));
    while (atomic_load(&ready) < N)
        usleep(1000);
    usleep(50000);
    for (int i = 0; i < N; i++)
        CHECK_RC(pthread_kill(t[i], SIGUSR2));
    for (int i = 0; i < N; i++)
        while (sem_wait(&acks) != 0)
            CHECK(errno == EINTR);
    printf("stop the world over %d spinning threads: every one acknowledged\n", N);
    atomic_store(&release, 1);
    for (int i = 0; i < N; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    return 0;
}
