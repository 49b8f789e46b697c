/* __thread variables are per thread: each new thread starts from the
 * initial value, keeps its own across blocking calls, and has its own
 * address. (Under fibershim each fiber has its own TLS block, runtime/tls.c;
 * with FIBERSHIM_FIBER_TLS=0 fibers share their carrier's and this fails.) */
// fibershim-carriers: 1 2
// fibershim-migrate: 2
#include "common.h"
#include <stdatomic.h>

#define NTLS 8
static __thread long tls_var = -1;
static atomic_int failed;

/* Only the first failing thread reports (and exits the process); another
 * one failing at the same moment waits for that exit, so the output is one
 * line whichever threads see the shared variable. */
#define TLS_FAIL(...)                                                                      \
    do {                                                                                   \
        if (atomic_exchange(&failed, 1))                                                   \
            for (;;)                                                                       \
                sleep(1);                                                                  \
        FAIL(__VA_ARGS__);                                                                 \
    } while (0)

static void *tls_thread(void *arg)
{
    long id = (long)arg;
    if (tls_var != -1)
        TLS_FAIL("__thread initial value %ld", tls_var);
    tls_var = id;
    for (int i = 0; i < 5; i++) {
        sleep_ms(5 + id); /* blocking: other threads run meanwhile */
        if (tls_var != id)
            TLS_FAIL("__thread changed: %ld != %ld", tls_var, id);
    }
    return (void *)&tls_var; /* address of this thread's instance */
}

int main(void)
{
    tp_setup(60);
    pthread_t tt[NTLS];
    void *addrs[NTLS];
    for (long i = 0; i < NTLS; i++)
        CHECK_RC(pthread_create(&tt[i], NULL, tls_thread, (void *)i));
    int distinct = 1;
    for (int i = 0; i < NTLS; i++) {
        CHECK_RC(pthread_join(tt[i], &addrs[i]));
        if (addrs[i] == (void *)&tls_var)
            distinct = 0;
        for (int j = 0; j < i; j++)
            if (addrs[j] == addrs[i])
                distinct = 0;
    }
    printf("__thread kept across blocking calls: %d/%d, main's untouched: %s, distinct "
           "addresses: %s\n",
           NTLS, NTLS, yesno(tls_var == -1), yesno(distinct));
    printf("tls_per_thread: ok\n");
    return 0;
}
