// fibershim-carriers: 1 2
// process_signal.c - SBCL ignoring SIGTERM under the shim (issue #15),
// reduced. Like SBCL, the handler knows the program's own threads by a
// thread-local flag: taken by any other thread (one a library created), it
// blocks the signal there (through uc_sigmask) and sends it to the process
// again, for one of the program's threads. Every thread of this program is
// its own and waits (main on a semaphore, a worker in read), so plain, the
// first delivery is handled. Under the shim the signal lands on a kernel
// thread that runs no fiber (an idle carrier, an offload spare) and is
// passed on until every kernel thread blocks it: never handled.
// Plain pthread program; same output with and without the shim.
// It failed under the shim before issue 13's delivery model.
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

static __thread int mine;
static sem_t handled;
static int fds[2];

static void on_term(int sig, siginfo_t *si, void *ctx)
{
    if (!mine) {
        sigaddset(&((ucontext_t *)ctx)->uc_sigmask, sig);
        kill(getpid(), sig);
        return;
    }
    sem_post(&handled);
}

static void *worker(void *a)
{
    mine = 1;
    char c;
    while (read(fds[0], &c, 1) < 0 && errno == EINTR) {
    }
    return a;
}

int main(void)
{
    mine = 1;
    sem_init(&handled, 0, 0);
    if (pipe(fds) != 0)
        return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_term;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    /* Sent from outside while every thread waits, as `kill PID` is. */
    pid_t child = fork();
    if (child == 0) {
        nanosleep(&(struct timespec){0, 100000000}, NULL);
        kill(getppid(), SIGTERM);
        _exit(0);
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 3;
    int rc;
    while ((rc = sem_timedwait(&handled, &dl)) != 0 && errno == EINTR) {
    }
    printf("SIGTERM handled by one of the program's threads: %s\n", rc == 0 ? "yes" : "no");
    if (write(fds[1], "x", 1) != 1)
        return 1;
    pthread_join(t, NULL);
    waitpid(child, NULL, 0);
    return 0;
}
