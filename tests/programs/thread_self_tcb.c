// fibershim-carriers: 1 2
// fibershim-migrate: 2
/* pthread_t is the address of the thread's control block, as glibc makes
 * it on x86-64: in every thread, pthread_self() equals the thread pointer
 * (%fs:0, the TCB's self pointer) and glibc's THREAD_SELF (%fs:0x10, the
 * struct pthread's header.self), before and after blocking calls (under
 * the shim a fiber may move to another carrier meanwhile), and equals the
 * id pthread_create stored for it; thrd_current() is the same value; the
 * thread pointer lies inside the stack pthread_getattr_np reports (glibc
 * carves the TCB from the top of the thread's stack). Also for a detached
 * thread and for one on a stack the program provides.
 * And as glibc reuses a joined thread's cached stack, and so its struct
 * pthread, for the next thread, the next thread created after a join gets
 * the joined one's id.
 */
#include "common.h"

#include <threads.h>

static pthread_t fs0(void)
{
    pthread_t v;
    __asm__ volatile("movq %%fs:0, %0" : "=r"(v));
    return v;
}

static pthread_t fs16(void)
{
    pthread_t v;
    __asm__ volatile("movq %%fs:0x10, %0" : "=r"(v));
    return v;
}

/* 1 when pthread_self(), %fs:0, %fs:0x10 and thrd_current() agree. */
static int self_is_tcb(void)
{
    pthread_t s = pthread_self();
    return s == fs0() && s == fs16() && (thrd_t)s == thrd_current();
}

enum { N = 40 };
static pthread_t ids[N];
static _Atomic int agree, agree_after_sleep, id_is_self, tp_in_stack;

static void *worker(void *arg)
{
    long i = (long)arg;
    agree += self_is_tcb();
    id_is_self += pthread_equal(ids[i], pthread_self()) != 0;
    for (int k = 0; k < 5; k++)
        sleep_ms(1 + i % 3);
    agree_after_sleep += self_is_tcb() && pthread_equal(ids[i], pthread_self());
    pthread_attr_t a;
    void *lo;
    size_t size;
    CHECK_RC(pthread_getattr_np(pthread_self(), &a));
    CHECK_RC(pthread_attr_getstack(&a, &lo, &size));
    pthread_attr_destroy(&a);
    char *tp = (char *)fs0();
    tp_in_stack += tp >= (char *)lo && tp < (char *)lo + size;
    return arg;
}

static pthread_t detached_id;
static _Atomic int detached_done, detached_ok;

static void *detached(void *arg)
{
    while (!detached_id) /* stored before this thread could run: never spins */
        sleep_ms(1);
    detached_ok = self_is_tcb() && pthread_equal(detached_id, pthread_self());
    detached_done = 1;
    return arg;
}

static void *nop(void *arg)
{
    return arg;
}

static void *own_stack(void *arg)
{
    return (void *)(long)self_is_tcb();
}

int main(void)
{
    tp_setup(60);
    printf("main before any thread: %s\n", self_is_tcb() ? "yes" : "no");
    for (long i = 0; i < N; i++)
        CHECK_RC(pthread_create(&ids[i], NULL, worker, (void *)i));
    for (long i = 0; i < N; i++)
        CHECK_RC(pthread_join(ids[i], NULL));
    printf("main after threads started: %s\n", self_is_tcb() ? "yes" : "no");
    printf("threads whose pthread_self() is their TCB: %d of %d\n", (int)agree, N);
    printf("threads whose stored id is their pthread_self(): %d of %d\n", (int)id_is_self, N);
    printf("the same after blocking calls: %d of %d\n", (int)agree_after_sleep, N);
    printf("threads whose TCB lies in their reported stack: %d of %d\n", (int)tp_in_stack, N);

    pthread_attr_t a;
    CHECK_RC(pthread_attr_init(&a));
    CHECK_RC(pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED));
    pthread_t d;
    CHECK_RC(pthread_create(&d, &a, detached, NULL));
    detached_id = d;
    pthread_attr_destroy(&a);
    int64_t start = now_ns();
    while (!detached_done && ms_since(start) < 10000)
        sleep_ms(1);
    printf("detached thread: %s\n", detached_ok ? "yes" : "no");

    size_t sz = 256 * 1024;
    void *stack = aligned_alloc(4096, sz);
    CHECK(stack != NULL);
    CHECK_RC(pthread_attr_init(&a));
    CHECK_RC(pthread_attr_setstack(&a, stack, sz));
    pthread_t o;
    void *r;
    CHECK_RC(pthread_create(&o, &a, own_stack, NULL));
    CHECK_RC(pthread_join(o, &r));
    pthread_attr_destroy(&a);
    free(stack);
    printf("thread on the program's own stack: %s\n", r ? "yes" : "no");

    /* glibc hands a joined thread's stack, TCB included, to the next. */
    pthread_t t1, t2;
    CHECK_RC(pthread_create(&t1, NULL, nop, NULL));
    CHECK_RC(pthread_join(t1, NULL));
    CHECK_RC(pthread_create(&t2, NULL, nop, NULL));
    CHECK_RC(pthread_join(t2, NULL));
    printf("the next thread after a join gets the joined one's id: %s\n",
           pthread_equal(t1, t2) ? "yes" : "no");
    printf("thread_self_tcb: ok\n");
    return 0;
}
