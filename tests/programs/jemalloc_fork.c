// fibershim-carriers: 1 2
/* A program linked with jemalloc (as redis-server is) forks, before and
 * after it has threads, and its children allocate. jemalloc's fork
 * handlers take every one of its mutexes in the parent and re-create
 * them in the child. Under the shim jemalloc once registered them twice
 * (the shim's first allocation reached it before its own constructor),
 * so its second prepare handler relocked what the first took: every
 * fork hung, redis-server's BGSAVE among them. Built only where
 * libjemalloc.so.2 is installed (Debian: libjemalloc2). */
#include "common.h"

#include <sys/wait.h>

static void fork_and_check(const char *when)
{
    void *keep = malloc(1000);
    CHECK(keep != NULL);
    pid_t c = CHECK_SYS(fork());
    if (c == 0) {
        /* The child allocates and frees with jemalloc's re-created locks. */
        for (int i = 0; i < 1000; i++)
            free(malloc(16 + (size_t)i));
        _exit(7);
    }
    int st;
    CHECK_SYS(waitpid(c, &st, 0));
    free(keep);
    printf("%s: child exited %d\n", when, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

static void *churn(void *p)
{
    for (int i = 0; i < 20000; i++)
        free(malloc(32 + (size_t)(i % 512)));
    return p;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    fork_and_check("before any thread");
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK_RC(pthread_create(&t[i], NULL, churn, NULL));
    for (int round = 0; round < 3; round++)
        fork_and_check("while threads allocate");
    for (int i = 0; i < 4; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    fork_and_check("after they ended");
    return 0;
}
