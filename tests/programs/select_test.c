/* select() and pselect().
 *
 * Linux facts checked here:
 *  - select() modifies *timeout to the time not slept: {0,0} after a full
 *    timeout, 0 < remaining <= original when an fd became ready first.
 *  - pselect() (glibc) leaves the timespec unchanged.
 *  - the fd sets are rewritten to hold only ready descriptors; on timeout
 *    they are all cleared.
 *  - a closed descriptor in a set: -1 EBADF; nfds < 0: EINVAL; a bad
 *    tv_usec: EINVAL.
 *  - select(0, NULL, NULL, NULL, &tv) is a sleep; timeouts never early.
 */
#include "common.h"
#include <sys/select.h>

struct delayed {
    int fd;
    int ms;
};

static void *delayed_write(void *arg)
{
    struct delayed *d = arg;
    sleep_ms(d->ms);
    write_all(d->fd, "x", 1);
    return NULL;
}

static void timing(const char *what, double el, double want)
{
    printf("%s: not early: %s, late < %.0fms: %s\n", what, yesno(el >= want),
           LATE_TOLERANCE_MS, yesno(el < want + LATE_TOLERANCE_MS));
}

int main(void)
{
    tp_setup(60);
    int p[2], sp[2];
    CHECK_SYS(pipe(p));
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sp));
    int maxfd = p[0];
    if (p[1] > maxfd) maxfd = p[1];
    if (sp[0] > maxfd) maxfd = sp[0];
    if (sp[1] > maxfd) maxfd = sp[1];
    fd_set r, w;
    char c;

    /* 1. readable after a writer thread writes at 50 ms; timeout updated */
    struct delayed d = {p[1], 50};
    pthread_t t;
    int64_t start = now_ns();
    CHECK_RC(pthread_create(&t, NULL, delayed_write, &d));
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    FD_SET(sp[0], &r);
    struct timeval tv = {2, 0};
    int n = select(maxfd + 1, &r, NULL, NULL, &tv);
    double el = ms_since(start);
    CHECK_RC(pthread_join(t, NULL));
    long rem_us = (long)tv.tv_sec * 1000000 + tv.tv_usec;
    printf("pipe written at 50ms: select returned %d, pipe set: %s, idle socket set: %s, "
           "waited: %s\n",
           n, yesno(FD_ISSET(p[0], &r)), yesno(FD_ISSET(sp[0], &r)), yesno(el >= 50.0));
    printf("timeout updated: 0 < remaining < 2s: %s\n", yesno(rem_us > 0 && rem_us < 2000000));
    CHECK(read(p[0], &c, 1) == 1);

    /* 2. read and write sets together */
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_SET(p[0], &r);
    FD_SET(sp[0], &r);
    FD_SET(sp[0], &w);
    FD_SET(p[1], &w);
    tv = (struct timeval){1, 0};
    n = select(maxfd + 1, &r, &w, NULL, &tv);
    printf("read+write sets: returned %d, pipe r %s, socket r %s, socket w %s, pipe w %s\n",
           n, yesno(FD_ISSET(p[0], &r)), yesno(FD_ISSET(sp[0], &r)),
           yesno(FD_ISSET(sp[0], &w)), yesno(FD_ISSET(p[1], &w)));

    /* 3. nothing ready: full timeout, sets cleared, tv zeroed */
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    FD_SET(sp[0], &r);
    tv = (struct timeval){0, 100000};
    start = now_ns();
    n = select(maxfd + 1, &r, NULL, NULL, &tv);
    el = ms_since(start);
    printf("nothing ready, 100ms: returned %d, sets cleared: %s, timeval after: %ld.%06ld\n",
           n, yesno(!FD_ISSET(p[0], &r) && !FD_ISSET(sp[0], &r)), (long)tv.tv_sec,
           (long)tv.tv_usec);
    timing("select 100ms timeout", el, 100.0);

    /* 4. timeout {0,0}: poll and return */
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    tv = (struct timeval){0, 0};
    n = select(maxfd + 1, &r, NULL, NULL, &tv);
    printf("timeout 0: returned %d\n", n);

    /* 5. select as a sleep */
    tv = (struct timeval){0, 150000};
    start = now_ns();
    n = select(0, NULL, NULL, NULL, &tv);
    el = ms_since(start);
    printf("select(0, NULL, NULL, NULL, 150ms): returned %d\n", n);
    timing("select sleep 150ms", el, 150.0);

    /* 6. errors */
    int closed = (int)CHECK_SYS(dup(0));
    close(closed);
    FD_ZERO(&r);
    FD_SET(closed, &r);
    tv = (struct timeval){0, 0};
    errno = 0;
    n = select(closed + 1, &r, NULL, NULL, &tv);
    printf("closed fd in set: %d %s\n", n, errname(errno));
    errno = 0;
    n = select(-1, NULL, NULL, NULL, &tv);
    printf("nfds -1: %d %s\n", n, errname(errno));
    tv = (struct timeval){0, -1};
    errno = 0;
    n = select(0, NULL, NULL, NULL, &tv);
    printf("tv_usec -1: %d %s\n", n, errname(errno));

    /* 7. pselect: timespec not modified, sigmask */
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    struct timespec ts = {0, 100 * 1000 * 1000};
    sigset_t mask;
    sigemptyset(&mask);
    start = now_ns();
    n = pselect(maxfd + 1, &r, NULL, NULL, &ts, &mask);
    el = ms_since(start);
    printf("pselect 100ms: returned %d, timespec unchanged: %s\n", n,
           yesno(ts.tv_sec == 0 && ts.tv_nsec == 100 * 1000 * 1000));
    timing("pselect 100ms timeout", el, 100.0);
    d.ms = 50;
    start = now_ns();
    CHECK_RC(pthread_create(&t, NULL, delayed_write, &d));
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    n = pselect(maxfd + 1, &r, NULL, NULL, NULL, NULL);
    el = ms_since(start);
    CHECK_RC(pthread_join(t, NULL));
    printf("pselect no timeout, pipe written at 50ms: returned %d, set: %s, waited: %s\n", n,
           yesno(FD_ISSET(p[0], &r)), yesno(el >= 50.0));
    CHECK(read(p[0], &c, 1) == 1);

    /* 8. exceptfds with nothing exceptional */
    fd_set x;
    FD_ZERO(&x);
    FD_SET(sp[0], &x);
    tv = (struct timeval){0, 0};
    n = select(maxfd + 1, NULL, NULL, &x, &tv);
    printf("exceptfds, nothing: %d\n", n);

    /* 9. EOF makes the fd readable */
    close(p[1]);
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    tv = (struct timeval){1, 0};
    n = select(maxfd + 1, &r, NULL, NULL, &tv);
    printf("pipe with writer closed: returned %d, readable: %s, read: %zd\n", n,
           yesno(FD_ISSET(p[0], &r)), read(p[0], &c, 1));

    /* 10. a high-numbered descriptor */
    int high = (int)CHECK_SYS(dup2(sp[0], 1000));
    write_all(sp[1], "h", 1);
    FD_ZERO(&r);
    FD_SET(high, &r);
    tv = (struct timeval){1, 0};
    n = select(high + 1, &r, NULL, NULL, &tv);
    printf("fd 1000 readable: returned %d, set: %s\n", n, yesno(FD_ISSET(high, &r)));
    close(high);
    close(p[0]);
    close(sp[0]);
    close(sp[1]);

    printf("select_test: ok\n");
    return 0;
}
