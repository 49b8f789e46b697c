/* sleep, usleep, nanosleep, clock_nanosleep (relative and TIMER_ABSTIME,
 * CLOCK_MONOTONIC and CLOCK_REALTIME), run from several threads at once:
 * never early (hrtimer-based, so no slack below the requested time), and
 * late by less than LATE_TOLERANCE_MS (generous: 2-core noisy VM).
 * Then the error cases:
 *  - nanosleep with tv_nsec outside [0, 1e9) or tv_sec < 0: -1 EINVAL.
 *  - clock_nanosleep returns the error number itself (errno untouched):
 *    EINVAL for a bad tv_nsec, for CLOCK_THREAD_CPUTIME_ID and for an
 *    unknown clock.
 *  - TIMER_ABSTIME with a time in the past returns 0 at once.
 */
#include "common.h"

#define NTHREADS 4

enum { K_SLEEP, K_USLEEP, K_NANO, K_MONO_REL, K_MONO_ABS, K_RT_REL, K_RT_ABS, K_SHORT, NK };
static const char *kname[NK] = {
    "sleep(1)",
    "usleep(50000)",
    "nanosleep 50ms",
    "clock_nanosleep MONOTONIC relative 50ms",
    "clock_nanosleep MONOTONIC TIMER_ABSTIME +50ms",
    "clock_nanosleep REALTIME relative 50ms",
    "clock_nanosleep REALTIME TIMER_ABSTIME +50ms",
    "20 x nanosleep 1ms",
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int early[NK], late[NK], bad_ret[NK];

static void record(int k, int ret, double el_ms, double want_ms)
{
    pthread_mutex_lock(&mu);
    if (ret != 0)
        bad_ret[k]++;
    if (el_ms < want_ms)
        early[k]++;
    if (el_ms >= want_ms + LATE_TOLERANCE_MS)
        late[k]++;
    pthread_mutex_unlock(&mu);
    if (el_ms < want_ms || el_ms >= want_ms + LATE_TOLERANCE_MS)
        fprintf(stderr, "note: %s took %.3f ms\n", kname[k], el_ms);
}

static void *worker(void *arg)
{
    long id = (long)arg;
    sleep_ms(id * 7); /* stagger a little */
    int64_t s;
    int r;
    struct timespec ts = {0, 50 * 1000 * 1000}, dl;

    s = now_ns();
    r = (int)sleep(1);
    record(K_SLEEP, r, ms_since(s), 1000.0);

    s = now_ns();
    r = usleep(50000);
    record(K_USLEEP, r, ms_since(s), 50.0);

    s = now_ns();
    r = nanosleep(&ts, NULL);
    record(K_NANO, r, ms_since(s), 50.0);

    s = now_ns();
    r = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
    record(K_MONO_REL, r, ms_since(s), 50.0);

    /* absolute: measured on the same clock against the deadline */
    s = now_ns();
    dl = deadline_ms(CLOCK_MONOTONIC, 50);
    r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &dl, NULL);
    record(K_MONO_ABS, r, (double)(clock_ns(CLOCK_MONOTONIC) - ts_to_ns(dl)) / 1e6 + 50.0, 50.0);

    s = now_ns();
    r = clock_nanosleep(CLOCK_REALTIME, 0, &ts, NULL);
    record(K_RT_REL, r, ms_since(s), 50.0);

    dl = deadline_ms(CLOCK_REALTIME, 50);
    r = clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &dl, NULL);
    record(K_RT_ABS, r, (double)(clock_ns(CLOCK_REALTIME) - ts_to_ns(dl)) / 1e6 + 50.0, 50.0);

    struct timespec one = {0, 1000 * 1000};
    s = now_ns();
    r = 0;
    for (int i = 0; i < 20; i++)
        r |= nanosleep(&one, NULL);
    record(K_SHORT, r, ms_since(s), 20.0);
    return NULL;
}

int main(void)
{
    tp_setup(60);
    pthread_t t[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_create(&t[i], NULL, worker, (void *)i));
    for (int i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    printf("%d threads sleeping concurrently:\n", NTHREADS);
    for (int k = 0; k < NK; k++)
        printf("  %s: returned 0: %s, never early: %s, late < %.0fms: %s\n", kname[k],
               yesno(!bad_ret[k]), yesno(!early[k]), LATE_TOLERANCE_MS, yesno(!late[k]));

    /* error cases */
    struct timespec bad = {0, 1000000000L};
    errno = 0;
    int r = nanosleep(&bad, NULL);
    printf("nanosleep tv_nsec=1000000000: %d %s\n", r, errname(errno));
    bad = (struct timespec){0, -1};
    errno = 0;
    r = nanosleep(&bad, NULL);
    printf("nanosleep tv_nsec=-1: %d %s\n", r, errname(errno));
    bad = (struct timespec){-1, 0};
    errno = 0;
    r = nanosleep(&bad, NULL);
    printf("nanosleep tv_sec=-1: %d %s\n", r, errname(errno));

    bad = (struct timespec){0, 1000000000L};
    errno = 0;
    r = clock_nanosleep(CLOCK_MONOTONIC, 0, &bad, NULL);
    printf("clock_nanosleep tv_nsec=1000000000: returns %s, errno untouched: %s\n", errname(r),
           yesno(errno == 0));
    struct timespec ok = {0, 1000000};
    errno = 0;
    r = clock_nanosleep(CLOCK_THREAD_CPUTIME_ID, 0, &ok, NULL);
    printf("clock_nanosleep CLOCK_THREAD_CPUTIME_ID: returns %s, errno untouched: %s\n",
           errname(r), yesno(errno == 0));
    errno = 0;
    r = clock_nanosleep((clockid_t)12345, 0, &ok, NULL);
    printf("clock_nanosleep unknown clock: returns %s\n", errname(r));

    /* past absolute deadlines and zero sleeps return at once */
    int64_t s = now_ns();
    struct timespec past = deadline_ms(CLOCK_MONOTONIC, -1000);
    r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &past, NULL);
    int r2 = nanosleep(&(struct timespec){0, 0}, NULL);
    int r3 = usleep(0);
    unsigned r4 = sleep(0);
    past = (struct timespec){0, 0};
    int r5 = clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &past, NULL);
    printf("past TIMER_ABSTIME, nanosleep 0, usleep 0, sleep 0, REALTIME abs epoch: %d %d %d %u "
           "%d, immediate: %s\n",
           r, r2, r3, r4, r5, yesno(ms_since(s) < 100.0));
    printf("sleep_accuracy: ok\n");
    return 0;
}
