/* C11 <threads.h>: thrd_create/join/detach/exit/current/equal/sleep/yield,
 * mtx_* (plain, timed with mtx_timedlock -> thrd_timedout not early,
 * recursive, trylock -> thrd_busy), cnd_* (signal, broadcast, timedwait ->
 * thrd_timedout), tss_* with destructors, call_once from many threads. */
#include "common.h"
#include <stdatomic.h>
#include <threads.h>

static const char *tr(int r)
{
    switch (r) {
    case thrd_success: return "thrd_success";
    case thrd_busy: return "thrd_busy";
    case thrd_error: return "thrd_error";
    case thrd_nomem: return "thrd_nomem";
    case thrd_timedout: return "thrd_timedout";
    default: return "?";
    }
}

#define CHECK_T(expr)                                                          \
    do {                                                                       \
        int r_ = (expr);                                                       \
        if (r_ != thrd_success)                                                \
            FAIL("%s returned %s", #expr, tr(r_));                             \
    } while (0)

static struct timespec utc_deadline_ms(long ms)
{
    struct timespec ts;
    CHECK(timespec_get(&ts, TIME_UTC) == TIME_UTC);
    return ns_to_ts(ts_to_ns(ts) + ms * 1000000LL);
}

/* ---- threads ---- */

static int ret_value(void *arg) { return (int)(long)arg * 2; }
static int exits_early(void *arg)
{
    thrd_exit(77);
    return 0;
}

static thrd_t seen_self;
static int record_self(void *arg)
{
    seen_self = thrd_current();
    thrd_yield();
    return thrd_equal(seen_self, thrd_current()) ? 1 : 0;
}

static atomic_int detached_ran;
static int detached_fn(void *arg)
{
    atomic_store(&detached_ran, 1);
    return 0;
}

/* ---- mutex / condition ---- */

static mtx_t m_plain, m_timed, m_rec;
static cnd_t cv;
static long counter;
static int flag, generation, waiting;
static atomic_int woken;

static int incr(void *arg)
{
    for (int i = 0; i < 20000; i++) {
        CHECK_T(mtx_lock(&m_plain));
        counter++;
        CHECK_T(mtx_unlock(&m_plain));
    }
    return 0;
}

static int try_other(void *arg) { return mtx_trylock((mtx_t *)arg) == thrd_success ? (mtx_unlock((mtx_t *)arg), 0) : 1; }

static int hold_timed(void *arg)
{
    CHECK_T(mtx_lock(&m_timed));
    CHECK_T(mtx_lock(&m_plain));
    flag = 1;
    CHECK_T(cnd_signal(&cv));
    CHECK_T(mtx_unlock(&m_plain));
    thrd_sleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
    CHECK_T(mtx_unlock(&m_timed));
    return 0;
}

static int gen_waiter(void *arg)
{
    CHECK_T(mtx_lock(&m_plain));
    int g = generation;
    waiting++;
    while (g == generation)
        CHECK_T(cnd_wait(&cv, &m_plain));
    waiting--;
    CHECK_T(mtx_unlock(&m_plain));
    atomic_fetch_add(&woken, 1);
    return 0;
}

/* ---- tss ---- */

static tss_t key;
static atomic_int dtor_calls, dtor_value_ok;
static int tss_val = 5;
static void dtor(void *v)
{
    atomic_fetch_add(&dtor_calls, 1);
    atomic_fetch_add(&dtor_value_ok, v == &tss_val);
}
static int tss_thread(void *arg)
{
    if (tss_get(key) != NULL)
        return 1;
    CHECK_T(tss_set(key, &tss_val));
    thrd_sleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    return tss_get(key) == &tss_val ? 0 : 1;
}

/* ---- call_once ---- */

static once_flag oflag = ONCE_FLAG_INIT;
static atomic_int once_runs, once_done, once_saw_done;
static void once_fn(void)
{
    atomic_fetch_add(&once_runs, 1);
    thrd_sleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    atomic_store(&once_done, 1);
}
static int once_thread(void *arg)
{
    call_once(&oflag, once_fn);
    atomic_fetch_add(&once_saw_done, atomic_load(&once_done));
    return 0;
}

int main(void)
{
    tp_setup(60);
    thrd_t t, ts[20];
    int res;

    /* threads */
    CHECK_T(thrd_create(&t, ret_value, (void *)21L));
    CHECK_T(thrd_join(t, &res));
    printf("thrd_join result: %d\n", res);
    CHECK_T(thrd_create(&t, exits_early, NULL));
    CHECK_T(thrd_join(t, &res));
    printf("thrd_exit(77) via join: %d\n", res);
    CHECK_T(thrd_create(&t, record_self, NULL));
    CHECK_T(thrd_join(t, &res));
    printf("thrd_current stable: %s, equals the id from thrd_create: %s, differs from main: %s\n",
           yesno(res == 1), yesno(thrd_equal(t, seen_self)),
           yesno(!thrd_equal(thrd_current(), seen_self)));
    CHECK_T(thrd_create(&t, detached_fn, NULL));
    CHECK_T(thrd_detach(t));
    for (int i = 0; i < 1000 && !atomic_load(&detached_ran); i++)
        thrd_sleep(&(struct timespec){0, 1000 * 1000}, NULL);
    printf("detached thread ran: %s\n", yesno(atomic_load(&detached_ran)));

    struct timespec rem = {9, 9};
    int64_t s = now_ns();
    int sr = thrd_sleep(&(struct timespec){0, 50 * 1000 * 1000}, &rem);
    double el = ms_since(s);
    printf("thrd_sleep 50ms: %d, not early: %s, late < %.0fms: %s\n", sr, yesno(el >= 50.0),
           LATE_TOLERANCE_MS, yesno(el < 50.0 + LATE_TOLERANCE_MS));
    printf("thrd_sleep bad tv_nsec: %d\n",
           thrd_sleep(&(struct timespec){0, 1000000000L}, NULL));
    thrd_yield();

    /* mutexes */
    CHECK_T(mtx_init(&m_plain, mtx_plain));
    CHECK_T(mtx_init(&m_timed, mtx_timed));
    CHECK_T(mtx_init(&m_rec, mtx_plain | mtx_recursive));
    for (int i = 0; i < 8; i++)
        CHECK_T(thrd_create(&ts[i], incr, NULL));
    for (int i = 0; i < 8; i++)
        CHECK_T(thrd_join(ts[i], NULL));
    printf("mtx counter 8 x 20000: %ld\n", counter);

    CHECK_T(mtx_lock(&m_plain));
    printf("mtx_trylock while held: owner %s\n", tr(mtx_trylock(&m_plain)));
    CHECK_T(thrd_create(&t, try_other, &m_plain));
    CHECK_T(thrd_join(t, &res));
    printf("mtx_trylock while held: other thread busy: %s\n", yesno(res == 1));
    CHECK_T(mtx_unlock(&m_plain));

    CHECK_T(mtx_lock(&m_rec));
    CHECK_T(mtx_lock(&m_rec));
    printf("recursive mtx: trylock by owner: %s\n", tr(mtx_trylock(&m_rec)));
    CHECK_T(mtx_unlock(&m_rec));
    CHECK_T(mtx_unlock(&m_rec));
    CHECK_T(thrd_create(&t, try_other, &m_rec));
    CHECK_T(thrd_join(t, &res));
    printf("recursive mtx after 2 of 3 unlocks: other thread busy: %s\n", yesno(res == 1));
    CHECK_T(mtx_unlock(&m_rec));
    CHECK_T(thrd_create(&t, try_other, &m_rec));
    CHECK_T(thrd_join(t, &res));
    printf("recursive mtx after 3 unlocks: other thread busy: %s\n", yesno(res == 1));

    /* timed mutex: another thread holds it for 300 ms */
    CHECK_T(cnd_init(&cv));
    CHECK_T(mtx_lock(&m_plain));
    flag = 0;
    CHECK_T(thrd_create(&t, hold_timed, NULL));
    while (!flag)
        CHECK_T(cnd_wait(&cv, &m_plain));
    CHECK_T(mtx_unlock(&m_plain));
    struct timespec dl = utc_deadline_ms(100);
    s = now_ns();
    int r = mtx_timedlock(&m_timed, &dl);
    el = ms_since(s);
    printf("mtx_timedlock 100ms on a held mutex: %s, not early: %s, late < %.0fms: %s\n", tr(r),
           yesno(el >= 100.0), LATE_TOLERANCE_MS, yesno(el < 100.0 + LATE_TOLERANCE_MS));
    dl = utc_deadline_ms(5000);
    r = mtx_timedlock(&m_timed, &dl);
    printf("mtx_timedlock 5s, released at ~300ms: %s\n", tr(r));
    CHECK_T(mtx_unlock(&m_timed));
    CHECK_T(thrd_join(t, NULL));

    /* condition variables */
    CHECK_T(mtx_lock(&m_plain));
    dl = utc_deadline_ms(100);
    s = now_ns();
    r = cnd_timedwait(&cv, &m_plain, &dl);
    el = ms_since(s);
    printf("cnd_timedwait 100ms: %s, not early: %s\n", tr(r), yesno(el >= 100.0));
    CHECK_T(thrd_create(&t, try_other, &m_plain));
    CHECK_T(thrd_join(t, &res));
    printf("after cnd_timedwait timeout, other thread sees the mutex busy: %s\n",
           yesno(res == 1));
    CHECK_T(mtx_unlock(&m_plain));

    for (int i = 0; i < 20; i++)
        CHECK_T(thrd_create(&ts[i], gen_waiter, NULL));
    for (;;) {
        CHECK_T(mtx_lock(&m_plain));
        int w = waiting;
        CHECK_T(mtx_unlock(&m_plain));
        if (w == 20)
            break;
        thrd_sleep(&(struct timespec){0, 2 * 1000 * 1000}, NULL);
    }
    CHECK_T(mtx_lock(&m_plain));
    generation++;
    CHECK_T(cnd_broadcast(&cv));
    CHECK_T(mtx_unlock(&m_plain));
    for (int i = 0; i < 20; i++)
        CHECK_T(thrd_join(ts[i], NULL));
    printf("cnd_broadcast woke %d of 20\n", (int)woken);

    /* tss */
    CHECK_T(tss_create(&key, dtor));
    for (int i = 0; i < 10; i++)
        CHECK_T(thrd_create(&ts[i], tss_thread, NULL));
    int tss_ok = 0;
    for (int i = 0; i < 10; i++) {
        CHECK_T(thrd_join(ts[i], &res));
        tss_ok += res == 0;
    }
    printf("tss: per-thread values ok %d/10, destructor calls %d with the value %d\n", tss_ok,
           (int)dtor_calls, (int)dtor_value_ok);
    printf("main's tss value untouched: %s\n", yesno(tss_get(key) == NULL));
    tss_delete(key);

    /* call_once */
    for (int i = 0; i < 20; i++)
        CHECK_T(thrd_create(&ts[i], once_thread, NULL));
    for (int i = 0; i < 20; i++)
        CHECK_T(thrd_join(ts[i], NULL));
    printf("call_once from 20 threads: ran %d time(s), callers after completion %d/20\n",
           (int)once_runs, (int)once_saw_done);

    mtx_destroy(&m_plain);
    mtx_destroy(&m_timed);
    mtx_destroy(&m_rec);
    cnd_destroy(&cv);
    printf("c11_threads: ok\n");
    return 0;
}
