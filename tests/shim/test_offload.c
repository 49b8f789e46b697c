/*
 * test_offload.c - shim/offload.c and the wrappers that use it (file.c,
 * resolve.c, wait.c, futex.c): a fiber blocked in a call the netpoller
 * cannot wait for leaves its carrier free for other fibers, gets the
 * call's result and errno back exactly, and the spare pool stays within
 * FIBERSHIM_MAX_SPARES.
 *
 * Every test runs ONE carrier: a wrapper that blocked its carrier would
 * stop the ticker fiber (and in the futex, FIFO and lock tests deadlock,
 * since the fiber that ends the wait shares that carrier).
 *
 * The blocked calls are ended by the ticker's progress, not by a clock:
 * after RELEASE_TICKS ticks the ticker (or a fiber watching it) releases
 * them. So "more than 100 ticks during the call" holds on any loaded
 * machine, and fails only when the carrier was really blocked.
 */
#include "offload_util.h"
#include "fd.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <linux/magic.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

SHIM_DECL(read)
SHIM_DECL(write)
SHIM_DECL(readv)
SHIM_DECL(writev)
SHIM_DECL(pread)
SHIM_DECL(pwrite)
SHIM_DECL(fsync)
SHIM_DECL(fdatasync)
SHIM_DECL(open)
SHIM_DECL(openat)
SHIM_DECL(flock)
SHIM_DECL(fcntl)
SHIM_DECL(getaddrinfo)
SHIM_DECL(getnameinfo)
SHIM_DECL(gethostbyname)
SHIM_DECL(gethostbyname_r)
SHIM_DECL(waitpid)
SHIM_DECL(waitid)
SHIM_DECL(system)
SHIM_DECL(pclose)
SHIM_DECL(syscall)
SHIM_DECL(close)
SHIM_DECL(dup)

#define MS 1000000LL
#define RELEASE_TICKS 150

/* ---- a ticker fiber next to the blocked one ------------------------------------ */

static atomic_bool ticking;
static atomic_long ticks;
static atomic_int release_fd = -1; /* closed by the ticker at RELEASE_TICKS */

static void *ticker(void *arg)
{
    while (atomic_load(&ticking)) {
        fs_sleep_until(fs_now() + MS);
        if (atomic_fetch_add(&ticks, 1) + 1 == RELEASE_TICKS) {
            int fd = atomic_exchange(&release_fd, -1);
            if (fd >= 0)
                close(fd);
        }
    }
    return NULL;
}

/* A fiber's wait until the ticker has released the blocked call. */
static void wait_for_release(void)
{
    while (atomic_load(&ticks) < RELEASE_TICKS)
        fs_sleep_until(fs_now() + MS);
}

/* A pipe whose write end the ticker closes at RELEASE_TICKS; children
 * (which do not inherit the write end) wait for EOF on *rd. */
static void release_pipe(int *rd)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(fcntl(p[1], F_SETFD, FD_CLOEXEC), 0);
    atomic_store(&release_fd, p[1]);
    *rd = p[0];
}

/* Runs fn(arg) in a fiber on the one carrier, next to the ticker, and
 * returns how many 1 ms ticks the ticker made while fn ran. */
struct timed_call {
    void *(*fn)(void *);
    void *arg;
    void *ret;  /* fn's */
    long ticks; /* ticker's ticks while fn ran */
    int64_t ns; /* fn's duration */
};

static void *timed_call_main(void *p)
{
    struct timed_call *c = p;
    long t0 = atomic_load(&ticks);
    int64_t s = fs_now();
    c->ret = c->fn(c->arg);
    c->ns = fs_now() - s;
    c->ticks = atomic_load(&ticks) - t0;
    return NULL;
}

static void start_ticker(fs_fiber **t)
{
    atomic_store(&ticking, true);
    *t = spawn(ticker, NULL);
}

static void stop_ticker(fs_fiber *t)
{
    atomic_store(&ticking, false);
    join(t);
}

static struct timed_call run_beside_ticker(void *(*fn)(void *), void *arg)
{
    fs_fiber *t;
    start_ticker(&t);
    struct timed_call c = {fn, arg, NULL, 0, 0};
    join(spawn(timed_call_main, &c));
    stop_ticker(t);
    return c;
}

static void assert_carrier_kept_running(const struct timed_call *c)
{
    cr_assert_gt(c->ticks, 100, "the ticker made %ld ticks in %lld ms: the carrier was blocked",
                 c->ticks, (long long)(c->ns / MS));
}

/* A shell command that waits (at most 60 s) for the release of fd, then
 * exits with status rc. */
static void release_command(char *buf, size_t len, int fd, int rc)
{
    snprintf(buf, len, "timeout 60 cat <&%d >/dev/null; exit %d", fd, rc);
}

/* ---- waiting for children ------------------------------------------------------ */

static void *call_system(void *arg)
{
    return (void *)(intptr_t)shim__system(arg);
}

Test(offload, system_runs_off_the_carrier)
{
    start_runtime(1);
    int rd;
    char cmd[128];
    release_pipe(&rd);
    release_command(cmd, sizeof cmd, rd, 3);
    struct timed_call c = run_beside_ticker(call_system, cmd);
    assert_carrier_kept_running(&c);
    int st = (int)(intptr_t)c.ret;
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 3, "status %#x", st);
}

struct waitpid_args {
    pid_t pid;
    int status;
    pid_t ret;
};

static void *call_waitpid(void *p)
{
    struct waitpid_args *w = p;
    w->ret = shim__waitpid(w->pid, &w->status, 0);
    return NULL;
}

Test(offload, waitpid_runs_off_the_carrier)
{
    start_runtime(1);
    int rd;
    release_pipe(&rd);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        char ch;
        close(atomic_load(&release_fd));
        alarm(60);
        (void)!read(rd, &ch, 1);
        _exit(7);
    }
    struct waitpid_args w = {pid, 0, 0};
    struct timed_call c = run_beside_ticker(call_waitpid, &w);
    assert_carrier_kept_running(&c);
    cr_assert_eq(w.ret, pid);
    cr_assert(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 7, "status %#x", w.status);
}

static void *call_pclose(void *p)
{
    return (void *)(intptr_t)shim__pclose(p);
}

Test(offload, pclose_runs_off_the_carrier)
{
    start_runtime(1);
    int rd;
    char cmd[128];
    release_pipe(&rd);
    release_command(cmd, sizeof cmd, rd, 5);
    FILE *f = popen(cmd, "r");
    cr_assert(f);
    struct timed_call c = run_beside_ticker(call_pclose, f);
    assert_carrier_kept_running(&c);
    int st = (int)(intptr_t)c.ret;
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 5, "status %#x", st);
}

static void *errno_cases(void *unused)
{
    (void)unused;
    int status;
    siginfo_t si;
    /* Offloaded calls: the result and errno come back from the spare. */
    errno = 0;
    FCHECK_EQ(shim__fsync(-1), -1);
    FCHECK_EQ(errno, EBADF);
    errno = 0;
    FCHECK_EQ(shim__waitid(P_PID, 1, &si, WEXITED), -1);
    FCHECK_EQ(errno, ECHILD);
    errno = 0;
    FCHECK_EQ(shim__waitpid(1, &status, 0), -1);
    FCHECK_EQ(errno, ECHILD);
    /* errno goes to the spare too: a call that succeeds without touching
     * it leaves the caller's value. */
    char path[] = "/tmp/fibershim-errno-XXXXXX";
    int fd = mkstemp(path);
    FCHECK(fd >= 0);
    unlink(path);
    errno = 1234;
    FCHECK_EQ(shim__fsync(fd), 0);
    FCHECK_EQ(errno, 1234);
    errno = 4321;
    FCHECK_EQ(shim__fdatasync(fd), 0);
    FCHECK_EQ(errno, 4321);
    close(fd);
    FCHECK_EQ(WEXITSTATUS(shim__system("exit 9")), 9);
    return NULL;
}

Test(offload, results_and_errno_come_back)
{
    start_runtime(1);
    join(spawn(errno_cases, NULL));
}

Test(offload, plain_threads_call_straight_through)
{
    start_runtime(1);
    errno = 0;
    cr_assert_eq(shim__waitpid(-1, NULL, 0), -1);
    cr_assert_eq(errno, ECHILD);
    cr_assert_eq(WEXITSTATUS(shim__system("exit 4")), 4);
    int base = task_count();
    cr_assert_eq(shim__fsync(-1), -1);
    cr_assert_eq(task_count(), base, "a plain thread's call started a spare");
}

/* ---- raw futex waits ------------------------------------------------------------ */

static _Atomic uint32_t futex_word;

static void *futex_waiter(void *unused)
{
    (void)unused;
    while (atomic_load(&futex_word) == 0) {
        long rc = shim__syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
        FCHECK(rc == 0 || errno == EAGAIN, "rc %ld errno %d", rc, errno);
    }
    return NULL;
}

static void *futex_waker(void *unused)
{
    (void)unused;
    wait_for_release();
    atomic_store(&futex_word, 1);
    FCHECK(shim__syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) >= 0);
    return NULL;
}

Test(offload, futex_wait_woken_by_a_fiber_on_the_same_carrier)
{
    start_runtime(1);
    fs_fiber *t, *waker;
    start_ticker(&t);
    struct timed_call c = {futex_waiter, NULL, NULL, 0, 0};
    fs_fiber *w = spawn(timed_call_main, &c);
    waker = spawn(futex_waker, NULL);
    join(w);
    join(waker);
    stop_ticker(t);
    assert_carrier_kept_running(&c);
}

static void *futex_errors(void *unused)
{
    (void)unused;
    uint32_t word = 5;
    struct timespec rel = {0, 50 * MS};
    int64_t s = fs_now();
    errno = 0;
    FCHECK_EQ(shim__syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 5, &rel, NULL, 0), -1);
    FCHECK_EQ(errno, ETIMEDOUT);
    FCHECK(fs_now() - s >= 50 * MS);
    errno = 0;
    FCHECK_EQ(shim__syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 6, NULL, NULL, 0), -1);
    FCHECK_EQ(errno, EAGAIN);
    struct timespec abs;
    clock_gettime(CLOCK_MONOTONIC, &abs);
    abs.tv_nsec += 20 * MS;
    if (abs.tv_nsec >= 1000000000) {
        abs.tv_sec++;
        abs.tv_nsec -= 1000000000;
    }
    errno = 0;
    FCHECK_EQ(shim__syscall(SYS_futex, &word, FUTEX_WAIT_BITSET_PRIVATE, 5, &abs, NULL,
                            FUTEX_BITSET_MATCH_ANY),
              -1);
    FCHECK_EQ(errno, ETIMEDOUT);
    struct timespec bad = {0, 1000000000};
    errno = 0;
    FCHECK_EQ(shim__syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 5, &bad, NULL, 0), -1);
    FCHECK_EQ(errno, EINVAL);
    /* Not a wait: straight through. */
    FCHECK_EQ(shim__syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0), 0);
    FCHECK_EQ(shim__syscall(SYS_getpid), getpid());
    return NULL;
}

Test(offload, futex_results_and_errno)
{
    start_runtime(1);
    join(spawn(futex_errors, NULL));
}

/* ---- the pool's bound ------------------------------------------------------------ */

static atomic_bool sampling;
static atomic_int max_tasks;

static void *task_sampler(void *unused)
{
    (void)unused;
    while (atomic_load(&sampling)) {
        int n = task_count();
        if (n > atomic_load(&max_tasks))
            atomic_store(&max_tasks, n);
        fs_sleep_until(fs_now() + 2 * MS);
    }
    return NULL;
}

static void *sleep_100ms(void *unused)
{
    (void)unused;
    FCHECK_EQ(shim__system("sleep 0.1"), 0);
    return NULL;
}

Test(offload, spares_stay_within_the_bound)
{
    setenv("FIBERSHIM_MAX_SPARES", "2", 1);
    char err[256];
    cr_assert_eq(shim__offload_init(err, sizeof err), 0);
    start_runtime(1);
    join(spawn(ticker, NULL)); /* the carrier is up; ticking is false */
    int base = task_count();
    atomic_store(&sampling, true);
    fs_fiber *s = spawn(task_sampler, NULL);
    int64_t t0 = fs_now();
    run_fibers(8, sleep_100ms, NULL);
    int64_t ns = fs_now() - t0;
    atomic_store(&sampling, false);
    join(s);
    int extra = atomic_load(&max_tasks) - base;
    cr_assert(extra >= 1 && extra <= 2, "%d spare threads seen (bound 2)", extra);
    /* Eight 100 ms calls on two spares take four rounds. */
    cr_assert_geq(ns, 400 * MS);
}

static void *sequential_calls(void *unused)
{
    (void)unused;
    for (int i = 0; i < 20; i++)
        FCHECK_EQ(shim__fsync(-1), -1);
    return NULL;
}

Test(offload, one_fiber_calling_again_reuses_its_spare)
{
    start_runtime(1);
    join(spawn(ticker, NULL)); /* the carrier is up; ticking is false */
    int base = task_count();
    join(spawn(sequential_calls, NULL));
    cr_assert_eq(task_count() - base, 1);
}

Test(offload, max_spares_is_validated)
{
    char err[256];
    const char *bad[] = {"0", "4097", "-1", "x", "2k"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("FIBERSHIM_MAX_SPARES", bad[i], 1);
        err[0] = 0;
        cr_assert_eq(shim__offload_init(err, sizeof err), -1, "%s accepted", bad[i]);
        char want[64];
        snprintf(want, sizeof want, "FIBERSHIM_MAX_SPARES=\"%s\" is invalid", bad[i]);
        cr_assert(strstr(err, want) && strstr(err, "1 to 4096") && !strchr(err, '\n'), "%s",
                  err);
    }
    setenv("FIBERSHIM_MAX_SPARES", "4096", 1);
    cr_assert_eq(shim__offload_init(err, sizeof err), 0);
    setenv("FIBERSHIM_MAX_SPARES", "", 1);
    cr_assert_eq(shim__offload_init(err, sizeof err), 0);
    unsetenv("FIBERSHIM_MAX_SPARES");
    cr_assert_eq(shim__offload_init(err, sizeof err), 0);
}

/* ---- regular files ------------------------------------------------------------- */

#define FILE_LEN (1 << 20)

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 7 + i / 4096);
}

static void *file_io(void *unused)
{
    (void)unused;
    char path[] = "/tmp/fibershim-offload-XXXXXX";
    int fd = mkstemp(path);
    FCHECK(fd >= 0);
    unlink(path);
    unsigned char *data = malloc(FILE_LEN), *back = malloc(FILE_LEN);
    FCHECK(data && back);
    for (size_t i = 0; i < FILE_LEN; i++)
        data[i] = pattern(i);

    /* write advances the file position. */
    FCHECK_EQ(shim__write(fd, data, FILE_LEN), FILE_LEN);
    FCHECK_EQ(lseek(fd, 0, SEEK_CUR), FILE_LEN);
    FCHECK_EQ(shim__fdatasync(fd), 0);

    /* Drop the pages (ext4 honours this for clean pages), cache only the
     * first one: read then has a cached head and an uncached rest. */
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    FCHECK_EQ(shim__pread(fd, back, 4096, 0), 4096);
    FCHECK_EQ(lseek(fd, 0, SEEK_CUR), FILE_LEN); /* pread leaves it */
    FCHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
    memset(back, 0, FILE_LEN);
    FCHECK_EQ(shim__read(fd, back, FILE_LEN), FILE_LEN);
    FCHECK(memcmp(back, data, FILE_LEN) == 0);
    FCHECK_EQ(lseek(fd, 0, SEEK_CUR), FILE_LEN);
    FCHECK_EQ(shim__read(fd, back, 16), 0); /* EOF */

    /* pwrite/pread at an offset, position untouched. */
    FCHECK_EQ(shim__pwrite(fd, "abc", 3, 10), 3);
    char three[3];
    FCHECK_EQ(shim__pread(fd, three, 3, 10), 3);
    FCHECK(memcmp(three, "abc", 3) == 0);
    FCHECK_EQ(lseek(fd, 0, SEEK_CUR), FILE_LEN);
    FCHECK_EQ(shim__pread(fd, three, 3, FILE_LEN + 5), 0);
    errno = 0;
    FCHECK_EQ(shim__pread(fd, three, 3, -1), -1);
    FCHECK_EQ(errno, EINVAL);

    /* writev/readv across several buffers, from the position. */
    FCHECK_EQ(lseek(fd, 100, SEEK_SET), 100);
    struct iovec w[3] = {{"one", 3}, {"", 0}, {"-two", 4}};
    FCHECK_EQ(shim__writev(fd, w, 3), 7);
    FCHECK_EQ(lseek(fd, 0, SEEK_CUR), 107);
    char a[2], b[5];
    struct iovec r[2] = {{a, 2}, {b, 5}};
    FCHECK_EQ(lseek(fd, 100, SEEK_SET), 100);
    FCHECK_EQ(shim__readv(fd, r, 2), 7);
    FCHECK(memcmp(a, "on", 2) == 0 && memcmp(b, "e-two", 5) == 0);

    /* Dropped again: readv with many buffers over uncached pages. */
    FCHECK_EQ(shim__fsync(fd), 0);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    FCHECK_EQ(shim__pread(fd, back, 1, 8192), 1); /* one cached page in the middle */
    struct iovec many[16];
    for (int i = 0; i < 16; i++)
        many[i] = (struct iovec){back + (size_t)i * 4000, 4000};
    FCHECK_EQ(lseek(fd, 200000, SEEK_SET), 200000);
    FCHECK_EQ(shim__readv(fd, many, 16), 64000);
    FCHECK(memcmp(back, data + 200000, 64000) == 0);
    FCHECK_EQ(lseek(fd, 0, SEEK_CUR), 264000);

    /* A directory is a SHIM_FD_FILE too: the kernel's error comes back. */
    int dfd = shim__open("/tmp", O_RDONLY | O_DIRECTORY);
    FCHECK(dfd >= 0);
    errno = 0;
    FCHECK_EQ(shim__read(dfd, back, 16), -1);
    FCHECK_EQ(errno, EISDIR);
    close(dfd);

    errno = 0;
    FCHECK_EQ(shim__open("/nonexistent/fibershim", O_RDONLY), -1);
    FCHECK_EQ(errno, ENOENT);
    close(fd);
    free(data);
    free(back);
    return NULL;
}

Test(offload, regular_file_io_keeps_positions_and_data)
{
    start_runtime(1);
    join(spawn(file_io, NULL));
}

/* ---- files that never block ------------------------------------------------------ */

/* Whether the kernel refuses RWF_NOWAIT reads of path: then the shim must
 * decide between the carrier and a spare itself. */
static bool refuses_nowait(const char *path)
{
    int fd = open(path, O_RDONLY);
    FCHECK(fd >= 0, "%s", path);
    char c;
    struct iovec v = {&c, 1};
    bool refused = preadv2(fd, &v, 1, 0, RWF_NOWAIT) < 0 && errno == EOPNOTSUPP;
    close(fd);
    return refused;
}

static uint8_t read_way(int fd)
{
    struct shim_fd *e = shim__fd_peek(fd);
    FCHECK(e);
    return atomic_load(&e->file_read);
}

/* Opens path, reads it whole with read, then with pread, closes it;
 * `times` times. Returns the in-place calls this should make: two per
 * round where the kernel refuses RWF_NOWAIT, none where it takes it. */
static uint64_t read_small(const char *path, int times)
{
    char buf[4096];
    for (int i = 0; i < times; i++) {
        int fd = shim__open(path, O_RDONLY);
        FCHECK(fd >= 0, "%s", path);
        ssize_t n = shim__read(fd, buf, sizeof buf);
        FCHECK(n > 0, "%s: %zd", path, n);
        FCHECK_EQ(shim__pread(fd, buf, sizeof buf, 0), n);
        FCHECK_EQ(shim__close(fd), 0);
    }
    return refuses_nowait(path) ? 2 * (uint64_t)times : 0;
}

static void *never_blocking_reads(void *unused)
{
    (void)unused;
    uint64_t off0 = shim__offload_count(), in0 = shim__file_inplace_count();
    uint64_t inplace = read_small("/proc/sys/kernel/pid_max", 100);
    inplace += read_small("/proc/self/stat", 100);
    inplace += read_small("/sys/devices/system/cpu/possible", 100);
    char shm[] = "/dev/shm/fibershim-inplace-XXXXXX";
    int fd = mkstemp(shm);
    FCHECK(fd >= 0);
    FCHECK_EQ(write(fd, "hello\n", 6), 6);
    close(fd);
    inplace += read_small(shm, 100);
    unlink(shm);
    /* /dev/full refuses RWF_NOWAIT and answers at once. */
    fd = shim__open("/dev/full", O_RDONLY);
    FCHECK(fd >= 0);
    char buf[64];
    for (int i = 0; i < 100; i++)
        FCHECK_EQ(shim__pread(fd, buf, sizeof buf, 0), sizeof buf);
    inplace += refuses_nowait("/dev/full") ? 100 : 0;
    FCHECK_EQ(shim__close(fd), 0);
    FCHECK_EQ(shim__offload_count() - off0, 0);
    FCHECK_EQ(shim__file_inplace_count() - in0, inplace);
    FCHECK(inplace > 0, "the kernel takes RWF_NOWAIT everywhere: nothing was tested");

    /* The answer is kept per fd, and a dup shares it. */
    fd = shim__open("/proc/sys/kernel/pid_max", O_RDONLY);
    FCHECK(fd >= 0);
    FCHECK_EQ(read_way(fd), SHIM_FILE_NOWAIT);
    FCHECK(shim__read(fd, buf, sizeof buf) > 0);
    FCHECK_EQ(read_way(fd), SHIM_FILE_INPLACE);
    int fd2 = shim__dup(fd);
    FCHECK(fd2 >= 0);
    FCHECK_EQ(read_way(fd2), SHIM_FILE_INPLACE);
    FCHECK(shim__pread(fd2, buf, sizeof buf, 0) > 0);
    FCHECK_EQ(shim__close(fd2), 0);
    FCHECK_EQ(shim__close(fd), 0);
    FCHECK_EQ(shim__offload_count() - off0, 0);
    return NULL;
}

Test(offload, files_that_never_block_are_read_on_the_carrier)
{
    start_runtime(1);
    join(spawn(never_blocking_reads, NULL));
}

static void *cannot_tell_reads(void *unused)
{
    (void)unused;
    char buf[64];
    /* A directory refuses RWF_NOWAIT and is none of the known kinds: each
     * read goes to a spare, without asking the kernel again. */
    int fd = shim__open("/tmp", O_RDONLY | O_DIRECTORY);
    FCHECK(fd >= 0);
    uint64_t off0 = shim__offload_count();
    for (int i = 0; i < 3; i++) {
        errno = 0;
        FCHECK_EQ(shim__read(fd, buf, sizeof buf), -1);
        FCHECK_EQ(errno, EISDIR);
        FCHECK_EQ(read_way(fd), SHIM_FILE_OFFLOAD);
    }
    FCHECK_EQ(shim__offload_count() - off0, 3);
    /* Closing forgets it; a procfs file opened next (on the same number,
     * as a rule) reads in place. */
    FCHECK_EQ(shim__close(fd), 0);
    FCHECK_EQ(read_way(fd), SHIM_FILE_NOWAIT);
    int fd2 = shim__open("/proc/sys/kernel/pid_max", O_RDONLY);
    FCHECK(fd2 >= 0);
    FCHECK_EQ(read_way(fd2), SHIM_FILE_NOWAIT);
    FCHECK(shim__read(fd2, buf, sizeof buf) > 0);
    FCHECK_EQ(read_way(fd2), SHIM_FILE_INPLACE);
    FCHECK_EQ(shim__offload_count() - off0, 3);
    FCHECK_EQ(shim__close(fd2), 0);
    return NULL;
}

Test(offload, files_that_cannot_tell_still_go_to_a_spare)
{
    start_runtime(1);
    join(spawn(cannot_tell_reads, NULL));
}

#define DISK_LEN (1 << 20)

static void *disk_reads(void *path)
{
    int fd = shim__open(path, O_RDWR);
    FCHECK(fd >= 0);
    unsigned char *data = malloc(DISK_LEN), *back = malloc(DISK_LEN);
    FCHECK(data && back);
    for (size_t i = 0; i < DISK_LEN; i++)
        data[i] = pattern(i);
    FCHECK_EQ(shim__write(fd, data, DISK_LEN), DISK_LEN);
    FCHECK_EQ(shim__fdatasync(fd), 0);
    /* A page-cache miss still goes to a spare, call by call. */
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    uint64_t off0 = shim__offload_count(), in0 = shim__file_inplace_count();
    FCHECK_EQ(shim__pread(fd, back, DISK_LEN, 0), DISK_LEN);
    FCHECK(memcmp(back, data, DISK_LEN) == 0);
    FCHECK_EQ(shim__offload_count() - off0, 1);
    FCHECK_EQ(read_way(fd), SHIM_FILE_NOWAIT);
    /* Cached now: read without a switch. */
    FCHECK_EQ(shim__pread(fd, back, DISK_LEN, 0), DISK_LEN);
    FCHECK_EQ(shim__offload_count() - off0, 1);
    FCHECK_EQ(shim__file_inplace_count() - in0, 0);
    FCHECK_EQ(shim__close(fd), 0);
    free(data);
    free(back);
    return NULL;
}

Test(offload, disk_file_reads_are_handled_as_before)
{
    /* In the build tree: a disk file system, where /tmp may be tmpfs. */
    char path[] = "fibershim-disk-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    struct statfs sf;
    cr_assert_eq(fstatfs(fd, &sf), 0);
    close(fd);
    if (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC) {
        unlink(path);
        cr_skip_test("the build tree is on tmpfs: no page-cache miss to observe");
    }
    start_runtime(1);
    join(spawn(disk_reads, path));
    unlink(path);
}

Test(offload, which_files_never_block)
{
    struct stat reg = {.st_mode = S_IFREG | 0644, .st_ino = 12345};
    long memory_fs[] = {PROC_SUPER_MAGIC,   SYSFS_MAGIC,         TMPFS_MAGIC,
                        RAMFS_MAGIC,        CGROUP_SUPER_MAGIC,  CGROUP2_SUPER_MAGIC,
                        SECURITYFS_MAGIC,   HUGETLBFS_MAGIC};
    for (size_t i = 0; i < sizeof memory_fs / sizeof memory_fs[0]; i++)
        cr_assert(shim__file_never_blocks(&reg, memory_fs[i]), "f_type %#lx", memory_fs[i]);
    long other_fs[] = {EXT4_SUPER_MAGIC, FUSE_SUPER_MAGIC, NFS_SUPER_MAGIC, DEBUGFS_MAGIC,
                       TRACEFS_MAGIC,    BTRFS_SUPER_MAGIC};
    for (size_t i = 0; i < sizeof other_fs / sizeof other_fs[0]; i++)
        cr_assert(!shim__file_never_blocks(&reg, other_fs[i]), "f_type %#lx", other_fs[i]);
    /* Only regular files: a FIFO or a directory on tmpfs or procfs is not. */
    struct stat fifo = {.st_mode = S_IFIFO | 0600}, dir = {.st_mode = S_IFDIR | 0755};
    cr_assert(!shim__file_never_blocks(&fifo, TMPFS_MAGIC));
    cr_assert(!shim__file_never_blocks(&dir, PROC_SUPER_MAGIC));
    /* Memory devices, wherever their node lives; not /dev/random, /dev/kmsg,
     * a tty. */
    unsigned yes[] = {3, 5, 7, 9}, no[] = {8, 11};
    for (size_t i = 0; i < 4; i++) {
        struct stat c = {.st_mode = S_IFCHR | 0666, .st_rdev = makedev(1, yes[i])};
        cr_assert(shim__file_never_blocks(&c, TMPFS_MAGIC), "1:%u", yes[i]);
    }
    for (size_t i = 0; i < 2; i++) {
        struct stat c = {.st_mode = S_IFCHR | 0666, .st_rdev = makedev(1, no[i])};
        cr_assert(!shim__file_never_blocks(&c, TMPFS_MAGIC), "1:%u", no[i]);
    }
    struct stat tty = {.st_mode = S_IFCHR | 0620, .st_rdev = makedev(4, 1)};
    cr_assert(!shim__file_never_blocks(&tty, TMPFS_MAGIC));
    /* /proc/kmsg waits for the next kernel message. */
    struct stat kmsg;
    if (stat("/proc/kmsg", &kmsg) == 0 && S_ISREG(kmsg.st_mode))
        cr_assert(!shim__file_never_blocks(&kmsg, PROC_SUPER_MAGIC));
}

/* ---- FIFOs and locks ------------------------------------------------------------ */

static char fifo_path[64];

static void *fifo_reader(void *unused)
{
    (void)unused;
    int fd = shim__open(fifo_path, O_RDONLY); /* waits for the writer */
    FCHECK(fd >= 0);
    char buf[16];
    FCHECK_EQ(shim__read(fd, buf, sizeof buf), 5);
    FCHECK(memcmp(buf, "hello", 5) == 0);
    close(fd);
    return NULL;
}

static void *fifo_writer(void *unused)
{
    (void)unused;
    wait_for_release();
    int fd = shim__openat(AT_FDCWD, fifo_path, O_WRONLY);
    FCHECK(fd >= 0);
    FCHECK_EQ(shim__write(fd, "hello", 5), 5);
    close(fd);
    return NULL;
}

Test(offload, opening_a_fifo_waits_off_the_carrier)
{
    start_runtime(1);
    char dir[] = "/tmp/fibershim-fifo-XXXXXX";
    cr_assert(mkdtemp(dir));
    snprintf(fifo_path, sizeof fifo_path, "%s/f", dir);
    cr_assert_eq(mkfifo(fifo_path, 0600), 0);
    fs_fiber *t;
    start_ticker(&t);
    struct timed_call c = {fifo_reader, NULL, NULL, 0, 0};
    fs_fiber *r = spawn(timed_call_main, &c);
    fs_fiber *w = spawn(fifo_writer, NULL);
    join(r);
    join(w);
    stop_ticker(t);
    unlink(fifo_path);
    rmdir(dir);
    assert_carrier_kept_running(&c);
}

struct lock_args {
    int holder_fd, waiter_fd;
    bool ofd;             /* F_OFD_SETLKW, else flock */
    atomic_bool released; /* the holder is about to unlock */
};

static void lock_fd(int fd, bool ofd, bool wait, short type)
{
    if (ofd) {
        struct flock fl = {.l_type = type, .l_whence = SEEK_SET};
        FCHECK_EQ(shim__fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl), 0);
    } else {
        FCHECK_EQ(shim__flock(fd, type == F_UNLCK ? LOCK_UN : LOCK_EX), 0);
    }
}

static void *lock_waiter(void *p)
{
    struct lock_args *a = p;
    lock_fd(a->waiter_fd, a->ofd, true, F_WRLCK);
    FCHECK(atomic_load(&a->released), "the lock was granted while held");
    lock_fd(a->waiter_fd, a->ofd, false, F_UNLCK);
    return NULL;
}

static void *lock_holder(void *p)
{
    struct lock_args *a = p;
    wait_for_release();
    atomic_store(&a->released, true);
    lock_fd(a->holder_fd, a->ofd, false, F_UNLCK);
    return NULL;
}

static void lock_wait_test(bool ofd)
{
    start_runtime(1);
    char path[] = "/tmp/fibershim-lock-XXXXXX";
    int fd1 = mkstemp(path);
    cr_assert_geq(fd1, 0);
    int fd2 = open(path, O_RDWR); /* a second open file description */
    cr_assert_geq(fd2, 0);
    unlink(path);
    struct lock_args a = {fd1, fd2, ofd, false};
    if (ofd) {
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        cr_assert_eq(fcntl(fd1, F_OFD_SETLK, &fl), 0);
    } else {
        cr_assert_eq(flock(fd1, LOCK_EX), 0);
    }
    fs_fiber *t;
    start_ticker(&t);
    struct timed_call c = {lock_waiter, &a, NULL, 0, 0};
    fs_fiber *w = spawn(timed_call_main, &c);
    fs_fiber *h = spawn(lock_holder, &a);
    join(w);
    join(h);
    stop_ticker(t);
    assert_carrier_kept_running(&c);
    close(fd1);
    close(fd2);
}

Test(offload, flock_waits_off_the_carrier)
{
    lock_wait_test(false);
}

Test(offload, ofd_setlkw_waits_off_the_carrier)
{
    lock_wait_test(true);
}

/* ---- name resolution ------------------------------------------------------------ */

static void *resolve(void *unused)
{
    (void)unused;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    FCHECK(shim__getaddrinfo("nonexistent.invalid", "80", &hints, &res) != 0);

    FCHECK_EQ(shim__getaddrinfo("127.0.0.1", "8080", &hints, &res), 0);
    struct sockaddr_in *sin = (struct sockaddr_in *)res->ai_addr;
    FCHECK(ntohs(sin->sin_port) == 8080 && ntohl(sin->sin_addr.s_addr) == INADDR_LOOPBACK);
    char host[64], serv[16];
    FCHECK_EQ(shim__getnameinfo(res->ai_addr, res->ai_addrlen, host, sizeof host, serv,
                                sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV),
              0);
    FCHECK(strcmp(host, "127.0.0.1") == 0 && strcmp(serv, "8080") == 0);
    FCHECK_EQ(shim__getnameinfo(res->ai_addr, res->ai_addrlen, host, sizeof host, NULL, 0, 0),
              0);
    freeaddrinfo(res);

    FCHECK_EQ(shim__getaddrinfo("localhost", "80", &hints, &res), 0);
    freeaddrinfo(res);

    h_errno = 0;
    FCHECK(shim__gethostbyname("nonexistent.invalid") == NULL);
    FCHECK(h_errno == HOST_NOT_FOUND || h_errno == TRY_AGAIN || h_errno == NO_DATA,
           "h_errno %d", h_errno);
    struct hostent *he = shim__gethostbyname("localhost");
    FCHECK(he && he->h_addrtype == AF_INET);

    struct hostent ret, *result = NULL;
    char buf[1024];
    int herr = 0;
    FCHECK_EQ(shim__gethostbyname_r("localhost", &ret, buf, sizeof buf, &result, &herr), 0);
    FCHECK(result == &ret);
    FCHECK_EQ(shim__gethostbyname_r("localhost", &ret, buf, 4, &result, &herr), ERANGE);
    return NULL;
}

Test(offload, name_resolution_results_come_back)
{
    start_runtime(1);
    join(spawn(resolve, NULL));
}
