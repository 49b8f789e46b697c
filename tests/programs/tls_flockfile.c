/* flockfile() makes a thread the owner of a FILE's lock: while it holds
 * the lock across a blocking call, another thread's ftrylockfile() fails;
 * once it unlocks, ftrylockfile() succeeds. stdio's lock is recursive by
 * owner (glibc records the owner's thread descriptor), so this fails when
 * two threads look like one owner. The holder's recursion is checked too.
 * The other thread polls with ftrylockfile and sleeps rather than blocking
 * in flockfile (a fiber blocked in glibc's lock holds its carrier). */
// fibershim-carriers: 1 2
#include "common.h"
#include <stdatomic.h>

#define NROUNDS 5

static FILE *fp;
static int go[2], release[2];
static atomic_int held;

static void *holder(void *arg)
{
    (void)arg;
    for (int r = 0; r < NROUNDS; r++) {
        char c;
        read_full(go[0], &c, 1);
        flockfile(fp);
        if (ftrylockfile(fp) != 0) /* recursive for its owner */
            FAIL("the owner's own ftrylockfile failed");
        funlockfile(fp);
        atomic_store(&held, 1);
        read_full(release[0], &c, 1); /* blocks, holding the lock */
        atomic_store(&held, 0);
        funlockfile(fp);
    }
    return NULL;
}

int main(void)
{
    tp_setup(60);
    fp = fopen("/dev/null", "w");
    CHECK(fp != NULL);
    CHECK_SYS(pipe2(go, O_CLOEXEC));
    CHECK_SYS(pipe2(release, O_CLOEXEC));
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, holder, NULL));
    int busy = 0, free_after = 0;
    for (int r = 0; r < NROUNDS; r++) {
        write_all(go[1], "g", 1);
        while (!atomic_load(&held))
            sleep_ms(1);
        /* The holder is blocked in read() with the lock held. */
        if (ftrylockfile(fp) != 0)
            busy++;
        else
            funlockfile(fp);
        write_all(release[1], "r", 1);
        int tries = 0;
        while (ftrylockfile(fp) != 0) {
            if (++tries > 5000)
                FAIL("the lock was never released");
            sleep_ms(1);
        }
        funlockfile(fp);
        free_after++;
    }
    CHECK_RC(pthread_join(t, NULL));
    printf("ftrylockfile while another thread holds the FILE lock across a blocking read: busy "
           "%d/%d\n",
           busy, NROUNDS);
    printf("ftrylockfile after it unlocked: succeeded %d/%d\n", free_after, NROUNDS);
    fclose(fp);
    printf("tls_flockfile: ok\n");
    return 0;
}
