/* C++ thread_local objects with constructors and destructors: each thread
 * constructs its own on first use, keeps it across blocking calls, and
 * destroys it when it ends, before its pthread_key destructors run (glibc
 * runs __call_tls_dtors first). main's object is its own too. */
// fibershim-carriers: 1 2
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <atomic>

/* common.h is C; the few helpers this program needs. */
#define FAIL(...)                                                                          \
    do {                                                                                   \
        fflush(stdout);                                                                    \
        printf("FAIL %s:%d ", __FILE__, __LINE__);                                         \
        printf(__VA_ARGS__);                                                               \
        printf("\n");                                                                      \
        fflush(stdout);                                                                    \
        _exit(1);                                                                          \
    } while (0)
#define CHECK_RC(expr)                                                                     \
    do {                                                                                   \
        int rc_ = (expr);                                                                  \
        if (rc_ != 0)                                                                      \
            FAIL("%s returned %d", #expr, rc_);                                            \
    } while (0)

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0) {
    }
}

static constexpr int kThreads = 16;
static constexpr int kRounds = 5;

static std::atomic<int> constructed{0}, destroyed{0}, dtor_order_ok{0}, key_dtors{0};
static pthread_key_t key;
static thread_local bool key_dtor_ran = false;

struct Session {
    long id = -1;
    char name[32] = {0};
    Session() { constructed++; }
    ~Session()
    {
        destroyed++;
        /* glibc: thread_local destructors run before TSD destructors. */
        if (!key_dtor_ran)
            dtor_order_ok++;
    }
};

static thread_local Session session;

static void key_dtor(void *)
{
    key_dtors++;
    key_dtor_ran = true;
}

static void *session_thread(void *arg)
{
    long id = (long)arg;
    if (session.id != -1)
        FAIL("thread %ld: its thread_local is not freshly constructed", id);
    session.id = id;
    snprintf(session.name, sizeof session.name, "session-%ld", id);
    pthread_setspecific(key, (void *)1);
    for (int r = 0; r < kRounds; r++) {
        sleep_ms(1 + (id + r) % 3); /* blocking: the others use theirs meanwhile */
        char want[32];
        snprintf(want, sizeof want, "session-%ld", id);
        if (session.id != id || strcmp(session.name, want) != 0)
            FAIL("thread %ld: its thread_local changed across a blocking call", id);
    }
    return &session;
}

int main()
{
    alarm(60); /* a hang dies of SIGALRM */
    CHECK_RC(pthread_key_create(&key, key_dtor));
    session.id = 1000; /* main's, constructed here */
    pthread_t tt[kThreads];
    void *addr[kThreads];
    for (long i = 0; i < kThreads; i++)
        CHECK_RC(pthread_create(&tt[i], nullptr, session_thread, (void *)i));
    bool distinct = true;
    for (int i = 0; i < kThreads; i++) {
        CHECK_RC(pthread_join(tt[i], &addr[i]));
        distinct = distinct && addr[i] != &session;
        for (int j = 0; j < i; j++)
            distinct = distinct && addr[j] != addr[i];
    }
    printf("%d threads: thread_local constructed %d, destroyed %d (main's: constructed, not yet "
           "destroyed)\n",
           kThreads, constructed.load() - 1, destroyed.load());
    printf("kept across blocking calls, one object per thread: %s\n", distinct ? "yes" : "no");
    printf("destructors before the pthread_key destructors: %d/%d (key destructors %d)\n",
           dtor_order_ok.load(), kThreads, key_dtors.load());
    printf("main's thread_local untouched: %s\n", session.id == 1000 ? "yes" : "no");
    printf("tls_thread_local: ok\n");
    return 0;
}
