/* glibc's per-thread state and buffers belong to their thread: h_errno;
 * the buffer strerror() and strsignal() format an unknown number into;
 * inet_ntoa()'s result. Each thread sets h_errno and fills each buffer
 * with its own values, blocks while the others do the same, then checks
 * that nothing changed; strerror_r() into the caller's buffer is checked
 * alongside. */
// fibershim-carriers: 1 2
#include "common.h"
#include <netdb.h>

#define NTHREADS 16
#define NROUNDS 10

static void *buffers_thread(void *arg)
{
    long id = (long)arg;
    for (int r = 0; r < NROUNDS; r++) {
        int n = 4000 + (int)id * 100 + r;
        h_errno = n;
        const char *err = strerror(n); /* "Unknown error <n>", in a per-thread buffer */
        const char *sig = strsignal(100 + (int)id); /* "Unknown signal <id + 100>" */
        struct in_addr in = {htonl(0x0a000000u | (uint32_t)id << 8 | (uint32_t)r)};
        const char *ip = inet_ntoa(in);
        char mine[64];
        const char *rr = strerror_r(n, mine, sizeof mine);
        sleep_ms(1 + (id + r) % 3); /* blocking: the others overwrite theirs meanwhile */
        char want_err[64], want_sig[64], want_ip[32];
        snprintf(want_err, sizeof want_err, "Unknown error %d", n);
        snprintf(want_sig, sizeof want_sig, "Unknown signal %ld", 100 + id);
        snprintf(want_ip, sizeof want_ip, "10.0.%ld.%d", id, r);
        if (h_errno != n)
            FAIL("thread %ld: h_errno %d, expected %d", id, h_errno, n);
        if (strcmp(err, want_err) != 0)
            FAIL("thread %ld: strerror's buffer says \"%s\", expected \"%s\"", id, err, want_err);
        if (strcmp(sig, want_sig) != 0)
            FAIL("thread %ld: strsignal's buffer says \"%s\", expected \"%s\"", id, sig, want_sig);
        if (strcmp(ip, want_ip) != 0)
            FAIL("thread %ld: inet_ntoa's buffer says \"%s\", expected \"%s\"", id, ip, want_ip);
        if (strcmp(rr, want_err) != 0)
            FAIL("thread %ld: strerror_r gave \"%s\"", id, rr);
    }
    return NULL;
}

int main(void)
{
    tp_setup(60);
    h_errno = 7;
    pthread_t tt[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_create(&tt[i], NULL, buffers_thread, (void *)i));
    for (int i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_join(tt[i], NULL));
    printf("%d threads, %d blocking calls each: h_errno, strerror, strsignal, inet_ntoa and "
           "strerror_r results kept: yes\n",
           NTHREADS, NROUNDS);
    printf("main's h_errno untouched: %s\n", yesno(h_errno == 7));
    printf("tls_libc_buffers: ok\n");
    return 0;
}
