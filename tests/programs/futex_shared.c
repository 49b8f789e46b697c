// fibershim-carriers: 1 2
/* Futex operations without FUTEX_PRIVATE_FLAG. On memory shared with
 * another process (shared anonymous memory, a shared file mapping) a
 * wait is woken by a FUTEX_WAKE from the other process; on the process's
 * own memory such waits work as private ones, and a private wake does
 * not reach them (the kernel keys the two apart). */
#include "common.h"

#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static long futex(uint32_t *w, int op, uint32_t val)
{
    return syscall(SYS_futex, w, op, val, NULL, NULL, 0);
}

static void *waiter(void *arg)
{
    uint32_t *w = arg;
    while (__atomic_load_n(w, __ATOMIC_SEQ_CST) == 0)
        if (futex(w, FUTEX_WAIT, 0) != 0 && errno != EAGAIN)
            FAIL("FUTEX_WAIT: %s", errname(errno));
    return NULL;
}

/* A thread waits on *w; a child process sets it and wakes it. */
static void across_processes(const char *what, uint32_t *w)
{
    *w = 0;
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, waiter, w));
    usleep(20000);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        usleep(30000);
        __atomic_store_n(w, 1, __ATOMIC_SEQ_CST);
        futex(w, FUTEX_WAKE, 1);
        _exit(0);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_RC(pthread_join(t, NULL));
    printf("%s: woken by another process\n", what);
}

#define OWN 100
static uint32_t own[OWN];

int main(void)
{
    uint32_t *anon = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(anon != MAP_FAILED);
    across_processes("shared anonymous memory", anon);

    FILE *f = tmpfile();
    CHECK(f);
    CHECK_SYS(ftruncate(fileno(f), 4096));
    uint32_t *file = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fileno(f), 0);
    CHECK(file != MAP_FAILED);
    across_processes("shared file mapping", file);

    /* The process's own memory: 100 waiters at once, one word each. */
    pthread_t t[OWN];
    for (int i = 0; i < OWN; i++)
        CHECK_RC(pthread_create(&t[i], NULL, waiter, &own[i]));
    usleep(50000);
    long private_woke = 0, woke = 0;
    for (int i = 0; i < OWN; i++) {
        /* The private wake is for a different futex: it wakes nobody. */
        private_woke += futex(&own[i], FUTEX_WAKE_PRIVATE, 1);
        __atomic_store_n(&own[i], 1, __ATOMIC_SEQ_CST);
        woke += futex(&own[i], FUTEX_WAKE, 1);
    }
    for (int i = 0; i < OWN; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    printf("own memory: %d waiters done, private wakes woke %ld, at most %d woken: %s\n", OWN,
           private_woke, OWN, yesno(woke <= OWN));
    return 0;
}
