/*
 * monitor.c - the system monitor (Go's sysmon, in part): watches the
 * carriers for one that is stuck, running the same fiber or blocked in a
 * call the runtime cannot see, and harvests that carrier's epoll instance
 * on its behalf.
 *
 * Why: readiness for an fd is harvested by the carrier whose epoll holds
 * it. While that carrier is stuck (a CPU-bound handler, a blocking call no
 * wrapper covers), fibers of other carriers waiting on such an fd (a
 * listening socket shared by acceptors, or any fiber when migration is on)
 * would wait with it. The monitor takes the events instead: waking a fiber
 * is thread-safe (fs_unpark from any thread), and a woken fiber goes to
 * its own carrier's inbox, or to the global queue if it may move.
 *
 * What it does not do: hand the stuck carrier's run queue to a spare
 * kernel thread. Fibers that already ran are pinned to their kernel thread
 * (internal.h): they wait for it whatever the monitor does. Fibers that
 * never ran sit in the stealable ring, where idle carriers already take
 * them. The README says what this means for a handler stuck in DNS.
 *
 * Cost: the monitor samples every 5 ms while some carrier is busy and
 * backs off to 50 ms when all sleep; a sample reads two counters per
 * carrier. It starts with the carriers, only when there is more than one.
 */
#include "internal.h"
#include "sys.h"

#include <dlfcn.h>
#include <time.h>

#define FS_STUCK_NS (10 * 1000000)   /* no switch for this long: stuck */
#define FS_MON_MIN_NS (5 * 1000000)
#define FS_MON_MAX_NS (50 * 1000000)

struct fs_mon_view {
    uint64_t switches;
    int64_t since; /* when switches last changed */
};

static _Atomic uint64_t fs__mon_harvests;

uint64_t fs__monitor_harvests(void)
{
    return atomic_load_explicit(&fs__mon_harvests, memory_order_relaxed);
}

static void fs__mon_sleep(int64_t ns)
{
    struct timespec ts = {ns / 1000000000, ns % 1000000000};
    fs__sys2(SYS_nanosleep, &ts, NULL);
}

static void *fs__monitor(void *arg)
{
    unsigned n = fs__g.nsched;
    struct fs_mon_view *v = calloc(n, sizeof *v);
    if (!v)
        return NULL;
    int64_t delay = FS_MON_MIN_NS;
    for (;;) {
        fs__mon_sleep(delay);
        int64_t now = fs_now();
        bool busy = false, stuck = false;
        unsigned started = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
        for (unsigned i = 0; i < started && i < n; i++) {
            struct fs_sched *s = fs__g.scheds[i];
            uint64_t sw = atomic_load_explicit(&s->st.switches, memory_order_relaxed);
            bool sleeping = atomic_load_explicit(&s->sleeping, memory_order_relaxed);
            if (sw != v[i].switches || sleeping) {
                v[i].switches = sw;
                v[i].since = now;
                busy |= !sleeping;
                continue;
            }
            busy = true;
            if (now - v[i].since < FS_STUCK_NS)
                continue;
            /* Stuck: take its events. Harvesting is thread-safe (pollfd
             * locks); the counters it bumps are the stuck carrier's, which
             * is not touching them meanwhile. */
            stuck = true;
            if (fs__netpoll_foreign(s) > 0)
                atomic_fetch_add_explicit(&fs__mon_harvests, 1, memory_order_relaxed);
        }
        if (stuck || busy)
            delay = FS_MON_MIN_NS;
        else if (delay < FS_MON_MAX_NS)
            delay *= 2;
    }
    return NULL;
}

typedef int (*fs_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

static _Atomic int started;

void fs__monitor_start(void)
{
    if (fs__g.nsched < 2 || atomic_exchange(&started, 1))
        return;
    fs_create_fn create = (fs_create_fn)dlvsym(RTLD_NEXT, "pthread_create", "GLIBC_2.34");
    if (!create)
        create = (fs_create_fn)dlsym(RTLD_NEXT, "pthread_create");
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 * 1024);
    pthread_t t;
    if (!create || create(&t, &a, fs__monitor, NULL) != 0)
        atomic_store(&started, 0); /* retried at the next carrier start */
    pthread_attr_destroy(&a);
}

/* fork child: the monitor thread did not survive; the next carrier start
 * makes a new one. */
void fs__monitor_atfork_child(void)
{
    atomic_store(&started, 0);
}
