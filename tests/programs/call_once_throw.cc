// fibershim-carriers: 1 2
/* std::call_once with a callable that throws: the exception reaches the
 * caller and the flag stays unset, so the next call runs a callable again
 * ("exceptional execution", [thread.once.callonce]). libstdc++ builds
 * std::call_once on pthread_once, so this is pthread_once's contract that
 * a routine left by an exception leaves the once object as it was. Other
 * threads that wait on the flag meanwhile go on waiting, and one of them
 * runs its callable once the thrower has left. (Under the shim this hung:
 * the flag stayed "running" for ever.) */
#include <atomic>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unistd.h>
#include <vector>

static std::once_flag flag;
static std::atomic<int> attempts{0}, ran{0};

int main()
{
    setvbuf(stdout, nullptr, _IONBF, 0);
    /* One thread: two throws, then a success. */
    std::thread t([] {
        for (int i = 0; i < 3; i++) {
            try {
                std::call_once(flag, [] {
                    if (++attempts < 3)
                        throw std::runtime_error("attempt failed");
                    ran++;
                });
                std::printf("call %d: returned, callable ran %d time(s)\n", i, ran.load());
            } catch (const std::exception &e) {
                std::printf("call %d: threw \"%s\"\n", i, e.what());
            }
        }
    });
    t.join();
    std::call_once(flag, [] { std::printf("not reached: the flag is set\n"); });

    /* Eight threads on a fresh flag: the first callable sleeps, then
     * throws; the others wait on the flag meanwhile, and exactly one of
     * them then runs its callable. */
    static std::once_flag flag2;
    std::atomic<int> threw{0}, done{0}, runs{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < 8; i++) {
        ts.emplace_back([&, i] {
            if (i > 0)
                usleep(20000); /* after the first is inside */
            try {
                std::call_once(flag2, [&, i] {
                    if (i == 0) {
                        usleep(100000);
                        throw std::runtime_error("first");
                    }
                    runs++;
                });
                done++;
            } catch (const std::exception &) {
                threw++;
            }
        });
    }
    for (auto &x : ts)
        x.join();
    std::printf("eight threads: %d threw, %d returned, callable ran %d time(s)\n", threw.load(),
                done.load(), runs.load());
    return 0;
}
