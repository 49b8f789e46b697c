/* Thread exit machinery and per-thread state.
 *
 *  - pthread_cleanup_push/pop: pop(0) removes without running, pop(1) runs;
 *    pthread_exit runs the remaining handlers in LIFO order, before any
 *    thread-specific-data destructor.
 *  - TSD keys: destructors get the thread's value, only for non-NULL
 *    values, with the value already reset to NULL; a destructor that sets
 *    the value again is called again, at most PTHREAD_DESTRUCTOR_ITERATIONS
 *    (4 in glibc) times in all; a deleted key's destructor is not called;
 *    destructors also run when the start routine returns, and for detached
 *    threads.
 *  - pthread_exit's value comes back through pthread_join.
 *  - pthread_self is stable within a thread, pthread_equal to the id
 *    pthread_create returned; __thread variables and errno are per thread
 *    (and survive blocking calls).
 *  - pthread_setname_np/getname_np (ERANGE for > 15 chars or a short
 *    buffer); pthread_getattr_np reports the requested stack size and a
 *    stack that contains the thread's locals, and the detach state.
 *  - main ends with pthread_exit while another thread is still running: the
 *    process lives on until that thread finishes, then exits with status 0;
 *    main's own TSD destructors run at its pthread_exit.
 */
#include "common.h"
#include <limits.h>
#include <semaphore.h>
#include <stdatomic.h>

/* ---------- cleanup handlers + destructors order ---------- */

static char order[256];
static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;

static void note(const char *s)
{
    pthread_mutex_lock(&order_mu);
    if (order[0])
        strcat(order, " ");
    strcat(order, s);
    pthread_mutex_unlock(&order_mu);
}

static void handler(void *arg) { note((const char *)arg); }

static pthread_key_t k_order;
static void order_dtor(void *v) { note((const char *)v); }

static void *cleanup_thread(void *unused)
{
    CHECK_RC(pthread_setspecific(k_order, "dtor"));
    pthread_cleanup_push(handler, "h1");
    pthread_cleanup_push(handler, "h2");
    pthread_cleanup_push(handler, "h3");
    pthread_cleanup_pop(0); /* h3 removed, not run */
    pthread_cleanup_push(handler, "h4");
    pthread_cleanup_pop(1); /* h4 runs now */
    note("exit");
    pthread_exit((void *)42);
    pthread_cleanup_pop(0);
    pthread_cleanup_pop(0);
    return NULL;
}

/* ---------- destructors ---------- */

static pthread_key_t k1, k2, k3, k_reset, k_reset2, k_deleted, k_nullcheck;
static int v1 = 1, v2 = 2;
static atomic_int d1_ok, d2_ok, d3_calls, reset_calls, reset2_calls, deleted_calls;
static atomic_int null_inside = -1;

static void dtor1(void *v) { atomic_fetch_add(&d1_ok, v == &v1); }
static void dtor2(void *v) { atomic_fetch_add(&d2_ok, v == &v2); }
static void dtor3(void *v) { atomic_fetch_add(&d3_calls, 1); }
static void dtor_reset(void *v)
{
    atomic_fetch_add(&reset_calls, 1);
    pthread_setspecific(k_reset, v); /* always sets it again */
}
static void dtor_reset2(void *v)
{
    /* sets it again only the first time */
    if (atomic_fetch_add(&reset2_calls, 1) == 0)
        pthread_setspecific(k_reset2, v);
}
static void dtor_deleted(void *v) { atomic_fetch_add(&deleted_calls, 1); }
static void dtor_nullcheck(void *v)
{
    atomic_store(&null_inside, pthread_getspecific(k_nullcheck) == NULL);
}

static sem_t keys_set, key_deleted;

static void *key_thread(void *unused)
{
    CHECK(pthread_getspecific(k1) == NULL);
    CHECK_RC(pthread_setspecific(k1, &v1));
    CHECK_RC(pthread_setspecific(k2, &v2));
    CHECK_RC(pthread_setspecific(k3, &v1));
    CHECK_RC(pthread_setspecific(k3, NULL)); /* NULL: no destructor call */
    CHECK_RC(pthread_setspecific(k_reset, &v1));
    CHECK_RC(pthread_setspecific(k_reset2, &v1));
    CHECK_RC(pthread_setspecific(k_deleted, &v1));
    CHECK_RC(pthread_setspecific(k_nullcheck, &v2));
    sem_post(&keys_set);
    sem_wait(&key_deleted); /* main deletes k_deleted meanwhile */
    sleep_ms(20);
    CHECK(pthread_getspecific(k1) == &v1); /* kept across a blocking call */
    return NULL;                           /* returning runs destructors too */
}

/* ---------- identity, TLS, errno ---------- */

#define NTLS 8
static pthread_t self_seen[NTLS];
static atomic_int tls_ok, errno_ok, self_stable;

static void *tls_thread(void *arg)
{
    long id = (long)arg;
    self_seen[id] = pthread_self();
    errno = 1000 + (int)id;
    for (int i = 0; i < 5; i++)
        sleep_ms(5 + id); /* blocking: a runtime may move us */
    atomic_fetch_add(&tls_ok, 1);
    atomic_fetch_add(&errno_ok, errno == 1000 + (int)id);
    atomic_fetch_add(&self_stable, pthread_equal(self_seen[id], pthread_self()) != 0);
    return NULL; /* __thread variables: see tls_per_thread.c */
}

/* ---------- names and attributes ---------- */

static sem_t name_set, name_checked;
static char name_seen[32];
static int getname_short_rc;

static void *named_thread(void *unused)
{
    sem_wait(&name_set);
    CHECK_RC(pthread_getname_np(pthread_self(), name_seen, sizeof name_seen));
    char small[4];
    getname_short_rc = pthread_getname_np(pthread_self(), small, sizeof small);
    sem_post(&name_checked);
    return NULL;
}

static size_t attr_stack, attr_in_stack;
static volatile int attr_detach = -1;

static void *attr_thread(void *unused)
{
    pthread_attr_t a;
    CHECK_RC(pthread_getattr_np(pthread_self(), &a));
    void *addr;
    size_t size;
    CHECK_RC(pthread_attr_getstack(&a, &addr, &size));
    CHECK_RC(pthread_attr_getstacksize(&a, &attr_stack));
    int ds;
    CHECK_RC(pthread_attr_getdetachstate(&a, &ds));
    int local;
    attr_in_stack = (char *)&local >= (char *)addr && (char *)&local < (char *)addr + size;
    pthread_attr_destroy(&a);
    attr_detach = ds; /* last: main polls this for the detached case */
    return NULL;
}

/* ---------- detached thread ---------- */

static sem_t detached_done;
static pthread_key_t k_detached;
static void dtor_detached(void *v) { sem_post(&detached_done); }

static void *detached_thread(void *unused)
{
    CHECK_RC(pthread_detach(pthread_self()));
    CHECK_RC(pthread_setspecific(k_detached, &v1));
    pthread_exit(NULL);
}

/* ---------- main's exit ---------- */

static sem_t main_gone;
static pthread_key_t k_main;
static void dtor_main(void *v)
{
    printf("main's TSD destructor ran at its pthread_exit\n");
    sem_post(&main_gone);
}

static void *last_thread(void *unused)
{
    sem_wait(&main_gone);
    sleep_ms(50);
    printf("last thread finished after main's pthread_exit\n");
    printf("pthread_exit_keys: ok\n");
    fflush(stdout);
    return NULL; /* the process exits 0 now */
}

int main(void)
{
    tp_setup(60);
    pthread_t t;
    void *ret;

    /* cleanup handlers, then destructors */
    CHECK_RC(pthread_key_create(&k_order, order_dtor));
    CHECK_RC(pthread_create(&t, NULL, cleanup_thread, NULL));
    CHECK_RC(pthread_join(t, &ret));
    printf("pthread_exit value via join: %ld\n", (long)ret);
    printf("order: %s\n", order);

    /* destructors */
    CHECK_RC(pthread_key_create(&k1, dtor1));
    CHECK_RC(pthread_key_create(&k2, dtor2));
    CHECK_RC(pthread_key_create(&k3, dtor3));
    CHECK_RC(pthread_key_create(&k_reset, dtor_reset));
    CHECK_RC(pthread_key_create(&k_reset2, dtor_reset2));
    CHECK_RC(pthread_key_create(&k_deleted, dtor_deleted));
    CHECK_RC(pthread_key_create(&k_nullcheck, dtor_nullcheck));
    sem_init(&keys_set, 0, 0);
    sem_init(&key_deleted, 0, 0);
    CHECK_RC(pthread_create(&t, NULL, key_thread, NULL));
    sem_wait(&keys_set);
    CHECK_RC(pthread_key_delete(k_deleted)); /* while the thread holds a value */
    sem_post(&key_deleted);
    CHECK(pthread_getspecific(k1) == NULL);   /* main's value untouched */
    CHECK_RC(pthread_join(t, NULL));
    printf("PTHREAD_DESTRUCTOR_ITERATIONS: %d\n", PTHREAD_DESTRUCTOR_ITERATIONS);
    printf("destructor called with the value: k1 %s, k2 %s\n", yesno(d1_ok == 1),
           yesno(d2_ok == 1));
    printf("destructor for a NULL value called: %s\n", yesno(d3_calls != 0));
    printf("destructor that always re-sets its value: called %d times\n", reset_calls);
    printf("destructor that re-sets once: called %d times\n", reset2_calls);
    printf("deleted key's destructor called: %s\n", yesno(deleted_calls != 0));
    printf("value already NULL inside the destructor: %s\n", yesno(null_inside == 1));

    /* identity and TLS */
    pthread_t tt[NTLS];
    void *addrs[NTLS];
    for (long i = 0; i < NTLS; i++)
        CHECK_RC(pthread_create(&tt[i], NULL, tls_thread, (void *)i));
    int equal_ids = 0;
    for (int i = 0; i < NTLS; i++) {
        CHECK_RC(pthread_join(tt[i], &addrs[i]));
        equal_ids += pthread_equal(tt[i], self_seen[i]) != 0;
    }
    printf("pthread_self == id from pthread_create: %d/%d\n", equal_ids, NTLS);
    printf("pthread_self stable across blocking calls: %d/%d\n", (int)self_stable, NTLS);
    printf("main's pthread_self differs from the threads': %s\n",
           yesno(!pthread_equal(pthread_self(), self_seen[0])));
    printf("threads through blocking calls: %d/%d\n", (int)tls_ok, NTLS);
    printf("errno per thread: %d/%d\n", (int)errno_ok, NTLS);

    /* names */
    sem_init(&name_set, 0, 0);
    sem_init(&name_checked, 0, 0);
    CHECK_RC(pthread_create(&t, NULL, named_thread, NULL));
    CHECK_RC(pthread_setname_np(t, "worker-7"));
    int long_rc = pthread_setname_np(t, "a-name-longer-than-15");
    char main_view[32];
    CHECK_RC(pthread_getname_np(t, main_view, sizeof main_view));
    sem_post(&name_set);
    sem_wait(&name_checked);
    CHECK_RC(pthread_join(t, NULL));
    printf("setname_np/getname_np: thread sees \"%s\", main sees \"%s\"\n", name_seen, main_view);
    printf("setname_np with 21 chars: %s, getname_np into 4 bytes: %s\n", errname(long_rc),
           errname(getname_short_rc));
    CHECK_RC(pthread_setname_np(pthread_self(), "main-thread"));
    CHECK_RC(pthread_getname_np(pthread_self(), main_view, sizeof main_view));
    printf("main's own name: \"%s\"\n", main_view);

    /* attributes */
    pthread_attr_t a;
    CHECK_RC(pthread_attr_init(&a));
    CHECK_RC(pthread_attr_setstacksize(&a, 256 * 1024));
    CHECK_RC(pthread_create(&t, &a, attr_thread, NULL));
    CHECK_RC(pthread_join(t, NULL));
    printf("getattr_np: stack size 256 KiB: %s, locals inside the stack: %s, %s\n",
           yesno(attr_stack == 256 * 1024), yesno(attr_in_stack),
           attr_detach == PTHREAD_CREATE_JOINABLE ? "joinable" : "detached");
    CHECK_RC(pthread_attr_setstacksize(&a, 1024 * 1024));
    CHECK_RC(pthread_create(&t, &a, attr_thread, NULL));
    CHECK_RC(pthread_join(t, NULL));
    printf("getattr_np: stack size 1 MiB: %s, locals inside the stack: %s\n",
           yesno(attr_stack == 1024 * 1024), yesno(attr_in_stack));
    CHECK_RC(pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED));
    attr_detach = -1;
    CHECK_RC(pthread_create(&t, &a, attr_thread, NULL));
    for (int i = 0; i < 200 && attr_detach == -1; i++)
        sleep_ms(5);
    printf("getattr_np of a thread created detached: %s\n",
           attr_detach == PTHREAD_CREATE_DETACHED ? "detached" : "joinable");
    pthread_attr_destroy(&a);

    /* detach + exit */
    sem_init(&detached_done, 0, 0);
    CHECK_RC(pthread_key_create(&k_detached, dtor_detached));
    CHECK_RC(pthread_create(&t, NULL, detached_thread, NULL));
    struct timespec dl = deadline_ms(CLOCK_REALTIME, 5000);
    printf("self-detached thread ran its destructor at pthread_exit: %s\n",
           yesno(sem_timedwait(&detached_done, &dl) == 0));

    /* main leaves first */
    sem_init(&main_gone, 0, 0);
    CHECK_RC(pthread_key_create(&k_main, dtor_main));
    CHECK_RC(pthread_setspecific(k_main, &v1));
    CHECK_RC(pthread_create(&t, NULL, last_thread, NULL));
    fflush(stdout);
    pthread_exit(NULL);
}
