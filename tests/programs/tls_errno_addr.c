/* errno's address, taken once (as compilers do: __errno_location() is
 * declared const, so &errno is computed once per function) and used after
 * blocking calls, still names the calling thread's errno. Under the shim
 * with FIBERSHIM_MIGRATE=1 the blocked threads resume on whichever carrier
 * is free, so this also checks a thread that moved between kernel threads
 * (the test suite runs it with and without migration). */
// fibershim-carriers: 1 2
// fibershim-migrate: 1 2
#include "common.h"
#include <stdatomic.h>

#define NTHREADS 64
#define NROUNDS 20

static int rd[NTHREADS], wr[NTHREADS];
static atomic_int ready, round_done;

/* Some work after each wake-up, so that woken threads queue up and an
 * idle carrier takes some (with migration: a thread that moves). */
static void work(long id)
{
    volatile uint64_t h = (uint64_t)id;
    for (int i = 0; i < 20000; i++)
        h = h * 6364136223846793005ULL + 1;
}

static void *errno_thread(void *arg)
{
    long id = (long)arg;
    int *volatile ep = &errno; /* once, kept in memory across the calls */
    /* A fresh &errno: through a volatile pointer, since the compiler may
     * reuse the first answer of the const __errno_location(). */
    int *(*volatile errno_location)(void) = __errno_location;
    atomic_fetch_add(&ready, 1);
    for (int r = 0; r < NROUNDS; r++) {
        char c;
        if (read(rd[id], &c, 1) != 1) /* blocking */
            FAIL("thread %ld: read: %s", id, errname(errno));
        work(id);
        if (ep != errno_location())
            FAIL("thread %ld: errno moved across a blocking call (round %d)", id, r);
        /* A failed call sets this thread's errno: seen through the address
         * saved before the blocking call. */
        if (read(-1, &c, 1) != -1 || *ep != EBADF)
            FAIL("thread %ld: after a failed call, errno through its saved address is %s, "
                 "expected EBADF (round %d)",
                 id, errname(*ep), r);
        *ep = (int)(id * 1000 + r);
        if (*errno_location() != id * 1000 + r)
            FAIL("thread %ld: a store through errno's saved address missed errno (round %d)", id,
                 r);
        atomic_fetch_add(&round_done, 1);
    }
    return NULL;
}

int main(void)
{
    tp_setup(60);
    for (int i = 0; i < NTHREADS; i++) {
        int p[2];
        CHECK_SYS(pipe2(p, O_CLOEXEC));
        rd[i] = p[0];
        wr[i] = p[1];
    }
    pthread_t tt[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_create(&tt[i], NULL, errno_thread, (void *)i));
    while (atomic_load(&ready) < NTHREADS)
        sleep_ms(1);
    /* Each round, every thread is blocked in read() before its byte comes. */
    for (int r = 0; r < NROUNDS; r++) {
        for (int i = 0; i < NTHREADS; i++)
            write_all(wr[i], "x", 1);
        while (atomic_load(&round_done) < (r + 1) * NTHREADS)
            sleep_ms(1);
    }
    for (int i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_join(tt[i], NULL));
    printf("%d threads, errno's address taken once, used after %d blocking reads each: own "
           "errno every time: yes\n",
           NTHREADS, NROUNDS);
    printf("tls_errno_addr: ok\n");
    return 0;
}
