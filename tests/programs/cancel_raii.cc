// fibershim-carriers: 1 2
/* Cancellation and pthread_exit unwind C++ frames, as glibc's do (a forced
 * unwind through _Unwind_ForcedUnwind):
 *  - a std::lock_guard held across a blocking read is released when the
 *    thread is cancelled there, and when it calls pthread_exit;
 *  - destructors of locals in several frames run innermost first;
 *  - catch (abi::__forced_unwind &) and catch (...) blocks that rethrow
 *    see the unwind, and it goes on;
 *  - pthread_cleanup_push in C++ (the destructor-based form) runs in its
 *    place among the destructors; so do the setjmp-based C buffers of
 *    pthread_cleanup_push compiled as C without -fexceptions (written out
 *    here as glibc's C macros expand), between C++ frames;
 *  - after the unwind: thread_local destructors, then TSD destructors.
 * (Asynchronous cancellation is cancel_cleanup.c's: in C++ it unwinds
 * through a call-free region only with -fnon-call-exceptions, glibc or
 * not; otherwise std::terminate.)
 */
#include <atomic>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cxxabi.h>
#include <mutex>
#include <pthread.h>
#include <string>
#include <unistd.h>

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fflush(stdout);                                                                            \
        printf("FAIL %s:%d ", __FILE__, __LINE__);                                                 \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        fflush(stdout);                                                                            \
        _exit(1);                                                                                  \
    } while (0)

/* glibc's C interface of pthread_cleanup_push without exceptions, which
 * <pthread.h> declares only for C. */
extern "C" {
void __pthread_register_cancel(__pthread_unwind_buf_t *buf);
void __pthread_unregister_cancel(__pthread_unwind_buf_t *buf);
[[noreturn]] void __pthread_unwind_next(__pthread_unwind_buf_t *buf);
}
#define C_CLEANUP_PUSH(routine, arg)                                                               \
    do {                                                                                           \
        __pthread_unwind_buf_t cbuf_;                                                              \
        void (*croutine_)(void *) = (routine);                                                     \
        void *carg_ = (arg);                                                                       \
        int not_first_ = __sigsetjmp((struct __jmp_buf_tag *)(void *)cbuf_.__cancel_jmp_buf, 0);   \
        if (__builtin_expect(not_first_, 0)) {                                                     \
            croutine_(carg_);                                                                      \
            __pthread_unwind_next(&cbuf_);                                                         \
        }                                                                                          \
        __pthread_register_cancel(&cbuf_);                                                         \
        do {
#define C_CLEANUP_POP(execute)                                                                     \
    }                                                                                              \
    while (0)                                                                                      \
        ;                                                                                          \
    __pthread_unregister_cancel(&cbuf_);                                                           \
    if (execute)                                                                                   \
        croutine_(carg_);                                                                          \
    }                                                                                              \
    while (0)

static std::string order;
static std::mutex order_mu;

static void note(const char *s)
{
    std::lock_guard<std::mutex> g(order_mu);
    if (!order.empty())
        order += ' ';
    order += s;
}

struct Noisy {
    const char *name;
    explicit Noisy(const char *n) : name(n) {}
    ~Noisy()
    {
        note(name);
    }
};

static std::mutex guarded;
static int blockfd[2];
static std::atomic<int> ready;
static pthread_key_t key;

static void c_handler(void *arg)
{
    note(static_cast<const char *>(arg));
}

static void tsd_dtor(void *v)
{
    note(static_cast<const char *>(v));
}

struct TlsNoisy {
    bool used = false;
    ~TlsNoisy()
    {
        if (used)
            note("thread_local");
    }
};
static thread_local TlsNoisy tls_noisy;

/* Each level is a frame of its own (noinline), as separately compiled C
 * code would be: a setjmp-based C cleanup buffer in the same frame as
 * C++ locals would skip their destructors, with glibc as here. */

/* The innermost frame: holds the lock across a blocking read (cancel) or
 * calls pthread_exit. */
__attribute__((noinline)) static void inner(bool exit)
{
    Noisy n("inner");
    std::lock_guard<std::mutex> g(guarded);
    ready = 1;
    if (exit)
        pthread_exit(reinterpret_cast<void *>(7));
    char c;
    if (read(blockfd[0], &c, 1) >= 0)
        FAIL("read returned");
}

__attribute__((noinline)) static void with_catches(bool exit)
{
    Noisy n("catches");
    try {
        try {
            inner(exit);
        } catch (abi::__forced_unwind &) {
            note("caught-forced-unwind");
            throw;
        }
    } catch (...) {
        note("caught-all");
        throw;
    }
}

__attribute__((noinline)) static void with_c_buffer(bool exit)
{
    Noisy n("c-frame-local");
    C_CLEANUP_PUSH(c_handler, (void *)"c-cleanup");
    with_catches(exit);
    C_CLEANUP_POP(0);
}

__attribute__((noinline)) static void with_cxx_cleanup(bool exit)
{
    Noisy n("outer");
    pthread_cleanup_push(c_handler, (void *)"cxx-cleanup");
    with_c_buffer(exit);
    pthread_cleanup_pop(0);
}

static void *thread_main(void *arg)
{
    tls_noisy.used = true;
    pthread_setspecific(key, "tsd");
    Noisy n("start-routine");
    with_cxx_cleanup(arg != nullptr);
    return nullptr;
}

static void report(const char *name, void *ret)
{
    bool free_now = guarded.try_lock();
    if (free_now)
        guarded.unlock();
    printf("%-10s %-9s lock %s: %s\n", name,
           ret == PTHREAD_CANCELED              ? "canceled"
           : ret == reinterpret_cast<void *>(7) ? "exit(7)"
                                                : "returned",
           free_now ? "released" : "HELD", order.c_str());
    fflush(stdout);
    order.clear();
}

int main()
{
    if (pipe(blockfd) != 0)
        FAIL("pipe");
    pthread_key_create(&key, tsd_dtor);
    void *ret;
    pthread_t t;

    ready = 0;
    pthread_create(&t, nullptr, thread_main, nullptr);
    while (!ready)
        usleep(1000);
    usleep(20000); /* blocked in read with the lock held */
    pthread_cancel(t);
    pthread_join(t, &ret);
    report("cancel", ret);

    ready = 0;
    pthread_create(&t, nullptr, thread_main, reinterpret_cast<void *>(1));
    pthread_join(t, &ret);
    report("exit", ret);

    printf("done\n");
    return 0;
}
