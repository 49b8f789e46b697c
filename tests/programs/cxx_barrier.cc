// fibershim-carriers: 1 2
/* C++20 waits on 500 threads: std::latch to start together, std::barrier
 * phases with a completion step that checks each phase's sum, and a ring
 * of std::atomic<int>::wait/notify_one hand-offs. libstdc++ waits for all
 * three with syscall(SYS_futex, FUTEX_WAIT_PRIVATE) (its __platform_wait)
 * after a short spin, so under a thread-per-waiter scheme 500 waiters
 * need 500 kernel threads at once. */
#include <atomic>
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <latch>
#include <pthread.h>
#include <unistd.h>

#define FAIL(...)                                                                          \
    do {                                                                                   \
        fflush(stdout);                                                                    \
        printf("FAIL %s:%d ", __FILE__, __LINE__);                                         \
        printf(__VA_ARGS__);                                                               \
        printf("\n");                                                                      \
        fflush(stdout);                                                                    \
        _exit(1);                                                                          \
    } while (0)

static const int kThreads = 500;
static const int kPhases = 20;
static const int kLaps = 10;

static std::atomic<long> phase_sum;
static long phases_checked;
static int phase_no;

struct on_phase {
    void operator()() noexcept
    {
        /* Runs once per phase, after every thread arrived and before any
         * leaves: the sum of this phase is complete. */
        long want = 0;
        for (int i = 0; i < kThreads; i++)
            want += (long)(i + 1) * (phase_no + 1);
        long got = phase_sum.exchange(0);
        if (got != want)
            FAIL("phase %d: sum %ld, expected %ld", phase_no, got, want);
        phase_no++;
        phases_checked++;
    }
};

static std::latch start_line(kThreads + 1);
static std::latch done_line(kThreads);
static std::barrier<on_phase> phase_barrier(kThreads, on_phase{});
static std::atomic<int> ring[kThreads];
static std::atomic<long> ring_passes;

static void *worker(void *arg)
{
    int me = (int)(long)arg;
    start_line.arrive_and_wait();

    for (int p = 0; p < kPhases; p++) {
        phase_sum.fetch_add((long)(me + 1) * (p + 1));
        phase_barrier.arrive_and_wait();
    }

    /* The ring: wait for my slot to reach lap l + 1, then pass it on. */
    for (int l = 0; l < kLaps; l++) {
        int want = l + 1;
        for (int v = ring[me].load(); v < want; v = ring[me].load())
            ring[me].wait(v);
        ring_passes.fetch_add(1);
        int next = (me + 1) % kThreads;
        if (next == 0)
            want++; /* thread 0 starts the next lap */
        ring[next].store(want);
        ring[next].notify_one();
    }
    done_line.count_down();
    return nullptr;
}

int main()
{
    static pthread_t t[kThreads];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    for (long i = 0; i < kThreads; i++)
        if (pthread_create(&t[i], &attr, worker, (void *)i) != 0)
            FAIL("pthread_create %ld", i);
    pthread_attr_destroy(&attr);
    start_line.arrive_and_wait();
    /* Thread 0 holds the token first. */
    ring[0].store(1);
    ring[0].notify_one();
    done_line.wait();
    for (int i = 0; i < kThreads; i++)
        pthread_join(t[i], nullptr);
    printf("latch: %d threads started together\n", kThreads);
    printf("barrier: %ld phases checked\n", phases_checked);
    printf("atomic wait ring: %ld hand-offs, last lap %d\n", ring_passes.load(), ring[0].load());
    return 0;
}
