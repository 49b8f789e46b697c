// fibershim-carriers: 1 2
/* glibc keeps signals 32 (SIGCANCEL) and 33 (SIGSETXID) for itself:
 * pthread_kill and pthread_sigqueue refuse them with EINVAL, to another
 * thread and to the caller, and the target sees nothing. Signal 0 only
 * checks that the thread exists; 65 is no signal. */
#include "common.h"

#include <semaphore.h>

static sem_t go;

static void *waiter(void *arg)
{
    (void)arg;
    while (sem_wait(&go) != 0)
        CHECK(errno == EINTR);
    return (void *)1;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    CHECK_SYS(sem_init(&go, 0, 0));
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, waiter, NULL));
    usleep(20000);
    union sigval v = {.sival_int = 7};
    for (int sig = 32; sig <= 33; sig++) {
        printf("pthread_kill(thread, %d): %s\n", sig, errname(pthread_kill(t, sig)));
        printf("pthread_kill(self, %d): %s\n", sig, errname(pthread_kill(pthread_self(), sig)));
        printf("pthread_sigqueue(thread, %d): %s\n", sig, errname(pthread_sigqueue(t, sig, v)));
    }
    printf("pthread_kill(thread, 0): %s\n", errname(pthread_kill(t, 0)));
    printf("pthread_kill(thread, 65): %s\n", errname(pthread_kill(t, 65)));
    CHECK_SYS(sem_post(&go));
    void *r;
    CHECK_RC(pthread_join(t, &r));
    printf("the thread ended normally: %s\n", yesno(r == (void *)1));
    return 0;
}
