// fibershim-carriers: 1 2
/* main keeps a kernel thread of its own, as with plain pthreads.
 *
 * A thread blocks in a read of a pipe made with an inline syscall
 * instruction, which no wrapper can see: under the shim it holds whatever
 * kernel thread runs it until the read returns. Only main writes that
 * pipe, after sleeping (a blocking call: main must be run again after it).
 * If main shared a kernel thread with the blocked thread, main could never
 * run again to write, and the program would hang (the shim's run is made
 * with FIBERSHIM_HANDOFF_MAX=0, so no spare carrier rescues anything).
 * Also: main's thread id is the process id before and after threads
 * start, and a thread's is not. */
#include "common.h"

#include <sys/syscall.h>

static int pipe_fd[2];

static void *blocker(void *arg)
{
    (void)arg;
    printf("thread: tid is the pid %s\n", yesno(syscall(SYS_gettid) == getpid()));
    fflush(stdout);
    char c = 0;
    long n = inline_read(pipe_fd[0], &c, 1);
    printf("thread: inline read returned %ld '%c'\n", n, c);
    return NULL;
}

int main(void)
{
    printf("main: tid is the pid %s\n", yesno(syscall(SYS_gettid) == getpid()));
    CHECK_SYS(pipe(pipe_fd));
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, blocker, NULL));
    for (int i = 0; i < 20; i++)
        usleep(5000); /* parks main 20 times while the thread is blocked */
    printf("main: ran again while the thread blocked, tid is the pid %s\n",
           yesno(syscall(SYS_gettid) == getpid()));
    fflush(stdout);
    CHECK_SYS(write(pipe_fd[1], "x", 1));
    CHECK_RC(pthread_join(t, NULL));
    printf("main: joined, tid is the pid %s\n", yesno(syscall(SYS_gettid) == getpid()));
    return 0;
}
