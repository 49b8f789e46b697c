// fibershim-carriers: 1 2
/* A thread whose signal mask blocks SIGPIPE (as MariaDB's threads do: it
 * inherits main's) waits, as its very first blocking call, for something
 * that comes 50 ms later: a nanosleep, a read of a pipe, a raw FUTEX_WAIT
 * on shared memory (which the shim hands to a spare thread). No signal is
 * sent at all, so each call must simply succeed, and not before its
 * event: a nanosleep that returned 0 slept its time, the read got the
 * bytes written, the futex wait returned after the wake.
 *
 * Under the shim, once some fiber blocks SIGPIPE the interrupt hook runs
 * at every switch, and at a new fiber's first start it used to take the
 * fiber for one resumed inside a park (its park word starts as WOKEN) and
 * leave an interrupt pending, which ended its first interruptible wait at
 * once as if a signal handler had run: nanosleep failed with EINTR, and a
 * handed-off call returned 0 at once while its spare thread went on and
 * later wrote into the caller's dead stack frame (MariaDB: "16384 bytes
 * should have been read at 0 ... but got only 0", then SIGSEGV in the
 * hand-off queue). */
#include "common.h"

#include <linux/futex.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static int pipefd[2];
static uint32_t *shared_word; /* MAP_SHARED: the wait goes to the kernel */
static _Atomic int woken;     /* set just before the futex wake */

static void *sleeper(void *arg)
{
    (void)arg;
    int64_t t0 = now_ns();
    struct timespec ts = {0, 50 * 1000000};
    int rc = nanosleep(&ts, NULL);
    int e = errno;
    printf("nanosleep: %s, slept 50 ms: %s\n", rc == 0 ? "0" : errname(e),
           yesno(now_ns() - t0 >= 50 * 1000000));
    return NULL;
}

static void *reader(void *arg)
{
    (void)arg;
    char buf[16] = {0};
    ssize_t n = read(pipefd[0], buf, sizeof buf - 1);
    int e = errno;
    if (n < 0)
        printf("read: -1 %s\n", errname(e));
    else
        printf("read: %zd bytes \"%s\"\n", n, buf);
    return NULL;
}

static void *futex_waiter(void *arg)
{
    (void)arg;
    /* Woken by the wake (0), or started after it (EAGAIN, on a loaded
     * machine): either way the wake was sent by the time it returns. */
    long rc = syscall(SYS_futex, shared_word, FUTEX_WAIT, 0, NULL, NULL, 0);
    int e = errno;
    bool ok = rc == 0 || e == EAGAIN;
    printf("futex wait: %s, after the wake: %s\n", ok ? "0 or EAGAIN" : errname(e),
           yesno(atomic_load(&woken)));
    return NULL;
}

static void run(void *(*fn)(void *), void *arg, void (*then)(void))
{
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, fn, arg));
    sleep_ms(50);
    if (then)
        then();
    CHECK_RC(pthread_join(t, NULL));
    fflush(stdout);
}

static void write_pipe(void)
{
    CHECK(write(pipefd[1], "hello", 5) == 5);
}

static void wake_futex(void)
{
    atomic_store(&woken, 1);
    __atomic_store_n(shared_word, 1, __ATOMIC_SEQ_CST);
    CHECK_SYS(syscall(SYS_futex, shared_word, FUTEX_WAKE, 1, NULL, NULL, 0));
}

int main(void)
{
    tp_setup(30);
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    CHECK_RC(pthread_sigmask(SIG_BLOCK, &pipe_only, NULL));

    CHECK_SYS(pipe(pipefd));
    shared_word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(shared_word != MAP_FAILED);

    for (int round = 0; round < 3; round++) {
        run(sleeper, NULL, NULL);
        run(reader, NULL, write_pipe);
        *shared_word = 0;
        atomic_store(&woken, 0);
        run(futex_waiter, NULL, wake_futex);
    }
    printf("done\n");
    return 0;
}
