/* 9,000 threads, each blocked in read() on its own AF_UNIX socketpair.
 * main waits until every thread has started (and then a little longer, so
 * they are all parked in read), writes one byte to each pair, joins all and
 * prints the sum of the bytes the threads read. Needs ~18,000 descriptors:
 * the soft RLIMIT_NOFILE is raised to the hard limit (SKIP, exit 77, if the
 * hard limit is too low). Thread stacks: 64 KiB. */
#include "common.h"
#include <stdatomic.h>

#define N 9000

static int pairs[N][2];
static atomic_int started;

static void *reader(void *arg)
{
    long i = (long)arg;
    atomic_fetch_add(&started, 1);
    unsigned char c;
    ssize_t r;
    while ((r = read(pairs[i][1], &c, 1)) < 0 && errno == EINTR) {
    }
    if (r != 1)
        FAIL("reader %ld: read returned %zd %s", i, r, errname(errno));
    /* the writer end stays open: a second read would block, so don't */
    return (void *)(long)c;
}

int main(void)
{
    tp_setup(60);
    rlim_t lim = raise_nofile();
    if (lim < 2 * N + 100) {
        printf("SKIP: open-file limit %lu too low (need %d)\n", (unsigned long)lim, 2 * N + 100);
        return 77;
    }
    for (int i = 0; i < N; i++)
        CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pairs[i]));

    static pthread_t t[N];
    for (long i = 0; i < N; i++) {
        int rc = create_thread(&t[i], 64 * 1024, reader, (void *)i);
        if (rc)
            FAIL("pthread_create %ld: %s", i, errname(rc));
    }
    while (atomic_load(&started) < N)
        sleep_ms(5);
    sleep_ms(100);

    long expect = 0;
    for (int i = 0; i < N; i++) {
        unsigned char c = (unsigned char)(1 + i % 251);
        expect += c;
        write_all(pairs[i][0], &c, 1);
    }
    long sum = 0;
    for (int i = 0; i < N; i++) {
        void *ret;
        CHECK_RC(pthread_join(t[i], &ret));
        if ((long)ret != 1 + i % 251)
            FAIL("thread %d read %ld", i, (long)ret);
        sum += (long)ret;
    }
    for (int i = 0; i < N; i++) {
        close(pairs[i][0]);
        close(pairs[i][1]);
    }
    printf("threads: %d\n", N);
    printf("sum: %ld\n", sum);
    printf("sum matches: %s\n", yesno(sum == expect));
    return 0;
}
