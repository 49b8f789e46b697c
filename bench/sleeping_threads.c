/*
 * sleeping_threads.c - N threads that all sleep at once (issue #12's
 * "1,000,000 sleeping threads of a plain program"). A plain pthread
 * program: run it as is for kernel threads (which stop far short of a
 * million here: pid_max, stack mappings), and with
 * LD_PRELOAD=libfibershim.so for fibers.
 *
 * Usage: sleeping_threads [N]   (default 1,000,000)
 *
 * Threads have default attributes (glibc's 8 MiB stack, or what
 * FIBERSHIM_STACK_SIZE says under the shim); even ones sleep in timed
 * waits (pthread_cond_timedwait, 60 s: a timer each), odd ones wait on a
 * condition variable without a timeout. Once all have
 * started it prints how long creating them took, then VmRSS, VmHWM (peak
 * resident) and VmPTE (page tables) from /proc/self/status; then it
 * releases them and prints how long joining them took. If pthread_create
 * fails it says at which thread and with what error, and joins the rest.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER, timed_cv = PTHREAD_COND_INITIALIZER;
static int released; /* under mu */
static atomic_int started;

static void *sleeper(void *arg)
{
    pthread_mutex_lock(&mu);
    atomic_fetch_add(&started, 1);
    while (!released) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 60;
        pthread_cond_timedwait(&timed_cv, &mu, &dl);
    }
    pthread_mutex_unlock(&mu);
    return arg;
}

static void *waiter(void *arg)
{
    pthread_mutex_lock(&mu);
    atomic_fetch_add(&started, 1);
    while (!released)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return arg;
}

/* A "Key:   value kB" line of /proc/self/status, in KiB; -1 if absent. */
static long status_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':')
            v = atol(line + n + 1);
    if (f)
        fclose(f);
    return v;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    if (n < 1) {
        fprintf(stderr, "usage: sleeping_threads [N >= 1]\n");
        return 2;
    }
    pthread_t *t = malloc((size_t)n * sizeof *t);
    if (!t) {
        fprintf(stderr, "sleeping_threads: no memory for %ld handles\n", n);
        return 1;
    }
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        int rc = pthread_create(&t[i], NULL, i & 1 ? waiter : sleeper, NULL);
        if (rc) {
            printf("pthread_create failed at thread %ld: %s\n", i, strerror(rc));
            n = i;
            break;
        }
    }
    while (atomic_load(&started) < n)
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    double t1 = now_s();
    const double gib = 1024.0 * 1024.0;
    printf("%ld threads asleep, created in %.1f s; VmRSS %.2f GiB, VmHWM %.2f GiB, VmPTE %.2f GiB\n",
           n, t1 - t0, status_kib("VmRSS") / gib, status_kib("VmHWM") / gib,
           status_kib("VmPTE") / gib);
    pthread_mutex_lock(&mu);
    released = 1;
    pthread_cond_broadcast(&cv);
    pthread_cond_broadcast(&timed_cv);
    pthread_mutex_unlock(&mu);
    for (long i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    printf("joined in %.1f s\n", now_s() - t1);
    free(t);
    return 0;
}
