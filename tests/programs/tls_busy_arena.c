/*
 * tls_busy_arena.c - __thread variables stay per thread when the main
 * arena already holds free chunks of the size a new thread's first malloc
 * asks for (a busy heap, as CPython's is by the time it starts threads).
 *
 * glibc's malloc then fills the new thread's tcache from the arena's
 * fastbins, and the chunk it frees next goes to a fastbin, not to the
 * tcache. The shim's probe for glibc's per-thread malloc words once took
 * that for a malloc it did not know and turned per-fiber TLS off: threads
 * sharing a kernel thread then shared their __thread variables. So did
 * the tcache tunables (an empty tcache). The program runs once as it is,
 * then again, by exec, with GLIBC_TUNABLES=glibc.malloc.tcache_count=0
 * and again with glibc.malloc.tcache_max=16.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { NTHREADS = 16, ROUNDS = 20, NCHUNKS = 256 };

static __thread int mine = -1;
static __thread char name[32];
static pthread_barrier_t bar;

static void *worker(void *arg)
{
    int id = (int)(long)arg, bad = 0;
    mine = id;
    snprintf(name, sizeof name, "thread %d", id);
    for (int r = 0; r < ROUNDS; r++) {
        pthread_barrier_wait(&bar); /* every thread has run since */
        usleep(100);
        char want[32];
        snprintf(want, sizeof want, "thread %d", id);
        for (int i = 0; want[i] || name[i]; i++)
            bad |= want[i] != name[i];
        bad |= mine != id;
        mine = id;
        snprintf(name, sizeof name, "thread %d", id);
    }
    return (void *)(long)bad;
}

int main(int argc, char **argv)
{
    /* Free chunks of 48 bytes in the main arena, each between two chunks
     * in use so that they cannot coalesce: seven fill main's own tcache,
     * the rest wait in a fastbin, or in the small bin of their size once
     * a large request consolidated the fastbins. Either is where a new
     * thread's first malloc(40) draws from, filling its tcache. */
    static void *chunks[NCHUNKS], *keep[NCHUNKS];
    for (int i = 0; i < NCHUNKS; i++) {
        chunks[i] = malloc(40);
        keep[i] = malloc(40);
    }
    for (int i = 0; i < NCHUNKS; i++)
        free(chunks[i]);

    pthread_barrier_init(&bar, NULL, NTHREADS);
    pthread_t t[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i) != 0) {
            perror("pthread_create");
            return 1;
        }
    int bad = 0;
    for (int i = 0; i < NTHREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        if (r) {
            printf("thread %d saw another thread's __thread variables\n", i);
            bad = 1;
        }
    }
    printf("%s: %d threads, %d rounds: __thread variables %s\n",
           argc > 1 ? argv[1] : "default malloc", NTHREADS, ROUNDS, bad ? "shared" : "per thread");
    for (int i = 0; i < NCHUNKS; i++)
        free(keep[i]);
    fflush(stdout);

    static const char *const next[][2] = {
        {"default malloc", "glibc.malloc.tcache_count=0"},
        {"glibc.malloc.tcache_count=0", "glibc.malloc.tcache_max=16"},
    };
    const char *me = argc > 1 ? argv[1] : "default malloc";
    for (size_t i = 0; i < sizeof next / sizeof next[0]; i++) {
        if (strcmp(me, next[i][0]) != 0)
            continue;
        setenv("GLIBC_TUNABLES", next[i][1], 1);
        execl("/proc/self/exe", argv[0], next[i][1], (char *)NULL);
        perror("exec");
        return 1;
    }
    return 0;
}
