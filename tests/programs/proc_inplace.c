// fibershim-carriers: 1 2
/* Files that never block, read by many threads at once.
 *  - 50 threads, each 2,000 times: open, read and close
 *    /proc/sys/kernel/pid_max; pread /proc/self/stat, a sysfs file
 *    (/sys/devices/system/cpu/possible) and a tmpfs file (/dev/shm) at
 *    changing offsets, and read the tmpfs file on through its position.
 *    Every answer must be the one main read first (for /proc/self/stat,
 *    whose times change, the pid and the closing newline).
 *  - One thread checks what a program sees of positions, short reads and
 *    EOF: read, readv, pread, write, pwrite, writev and lseek on procfs
 *    and tmpfs files; /proc/self/stat read 7 bytes at a time; /dev/zero,
 *    /dev/null, /dev/full, /dev/urandom; and the errors (EBADF, EISDIR,
 *    EINVAL, ENOSPC). A successful read leaves errno alone.
 * usage: proc_inplace [reads-per-thread]   (default 2000; another count
 * prints other numbers: for measuring, e.g. with FIBERSHIM_STATS)
 */
#include "common.h"
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/uio.h>

#define NTHREADS 50
#define PID_MAX "/proc/sys/kernel/pid_max"
#define SELF_STAT "/proc/self/stat"
#define SYSFS_FILE "/sys/devices/system/cpu/possible"
#define TMP_LEN 10000

static long reads = 2000;
static char tmp_path[64];
static char pid_max[64], sysfs[64], stat_prefix[32];
static size_t pid_max_len, sysfs_len, stat_prefix_len;
static atomic_long bad_pid_max, bad_stat, bad_sysfs, bad_tmp, bad_seq;

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 7 + i / 251);
}

static int pattern_at(const void *buf, size_t off, size_t len)
{
    const unsigned char *b = buf;
    for (size_t i = 0; i < len; i++)
        if (b[i] != pattern(off + i))
            return 0;
    return 1;
}

/* The whole content of a small file, by one read; its length. */
static size_t slurp(const char *path, char *buf, size_t cap)
{
    int fd = CHECK_SYS(open(path, O_RDONLY | O_CLOEXEC));
    ssize_t n = CHECK_SYS(read(fd, buf, cap));
    CHECK(n > 0 && (size_t)n < cap);
    CHECK_SYS(close(fd));
    return (size_t)n;
}

/* ---- many threads ---- */

static void *reader(void *arg)
{
    long tid = (long)(intptr_t)arg;
    char buf[512];
    int stat_fd = CHECK_SYS(open(SELF_STAT, O_RDONLY | O_CLOEXEC));
    int sys_fd = CHECK_SYS(open(SYSFS_FILE, O_RDONLY | O_CLOEXEC));
    int tmp_fd = CHECK_SYS(open(tmp_path, O_RDONLY | O_CLOEXEC));
    int seq_fd = CHECK_SYS(open(tmp_path, O_RDONLY | O_CLOEXEC));
    size_t seq_pos = 0;
    for (long i = 0; i < reads; i++) {
        int fd = CHECK_SYS(open(PID_MAX, O_RDONLY | O_CLOEXEC));
        ssize_t n = read(fd, buf, sizeof buf);
        if (n != (ssize_t)pid_max_len || memcmp(buf, pid_max, pid_max_len) != 0)
            atomic_fetch_add(&bad_pid_max, 1);
        CHECK_SYS(close(fd));

        n = pread(stat_fd, buf, sizeof buf, 0);
        if (n <= (ssize_t)stat_prefix_len || memcmp(buf, stat_prefix, stat_prefix_len) != 0 ||
            buf[n - 1] != '\n')
            atomic_fetch_add(&bad_stat, 1);

        n = pread(sys_fd, buf, sizeof buf, 0);
        if (n != (ssize_t)sysfs_len || memcmp(buf, sysfs, sysfs_len) != 0)
            atomic_fetch_add(&bad_sysfs, 1);

        size_t off = (size_t)(tid * 131 + i * 37) % TMP_LEN;
        size_t want = TMP_LEN - off < 200 ? TMP_LEN - off : 200;
        n = pread(tmp_fd, buf, 200, (off_t)off);
        if (n != (ssize_t)want || !pattern_at(buf, off, want))
            atomic_fetch_add(&bad_tmp, 1);

        /* On through the file position: 20 reads of 500 bytes,
         * then EOF, then back to the start. */
        n = read(seq_fd, buf, 500);
        size_t seq_want = TMP_LEN - seq_pos < 500 ? TMP_LEN - seq_pos : 500;
        if (n != (ssize_t)seq_want || !pattern_at(buf, seq_pos, seq_want))
            atomic_fetch_add(&bad_seq, 1);
        seq_pos += n > 0 ? (size_t)n : 0;
        if (lseek(seq_fd, 0, SEEK_CUR) != (off_t)seq_pos)
            atomic_fetch_add(&bad_seq, 1);
        if (n == 0) {
            CHECK(lseek(seq_fd, 0, SEEK_SET) == 0);
            seq_pos = 0;
        }
    }
    CHECK_SYS(close(stat_fd));
    CHECK_SYS(close(sys_fd));
    CHECK_SYS(close(tmp_fd));
    CHECK_SYS(close(seq_fd));
    return NULL;
}

/* ---- one thread: positions, short reads, EOF, errors ---- */

static int all_zero(const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

static void *positions(void *unused)
{
    char buf[TMP_LEN + 100];

    /* procfs: a short first read, the position, a whole read, EOF. */
    int fd = CHECK_SYS(open(PID_MAX, O_RDONLY));
    CHECK(read(fd, buf, 3) == 3 && memcmp(buf, pid_max, 3) == 0);
    CHECK(lseek(fd, 0, SEEK_CUR) == 3);
    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    CHECK(read(fd, buf, sizeof buf) == (ssize_t)pid_max_len);
    CHECK(memcmp(buf, pid_max, pid_max_len) == 0);
    CHECK(lseek(fd, 0, SEEK_CUR) == (off_t)pid_max_len);
    CHECK(read(fd, buf, sizeof buf) == 0);
    CHECK(pread(fd, buf, sizeof buf, 0) == (ssize_t)pid_max_len);
    CHECK(lseek(fd, 0, SEEK_CUR) == (off_t)pid_max_len); /* pread leaves it */
    EXPECT_ERRNO(write(fd, "1", 1), EBADF);
    EXPECT_ERRNO(pwrite(fd, "1", 1, 0), EBADF);
    errno = 1234;
    CHECK(pread(fd, buf, sizeof buf, 0) == (ssize_t)pid_max_len);
    int errno_kept = errno == 1234;
    errno = 4321;
    CHECK(lseek(fd, 0, SEEK_SET) == 0);
    CHECK(read(fd, buf, sizeof buf) == (ssize_t)pid_max_len);
    errno_kept &= errno == 4321;
    CHECK_SYS(close(fd));
    printf("procfs: short read, position, EOF, pread: ok; write on read-only: EBADF\n");

    /* /proc/self/stat 7 bytes at a time: seq_file keeps its place. */
    fd = CHECK_SYS(open(SELF_STAT, O_RDONLY));
    size_t got = 0;
    ssize_t n;
    while ((n = CHECK_SYS(read(fd, buf + got, 7))) > 0) {
        CHECK(n <= 7);
        got += (size_t)n;
        CHECK(got + 7 < sizeof buf);
    }
    CHECK(got > stat_prefix_len && memcmp(buf, stat_prefix, stat_prefix_len) == 0);
    CHECK(buf[got - 1] == '\n' && memchr(buf, '\n', got) == buf + got - 1);
    CHECK(lseek(fd, 0, SEEK_CUR) == (off_t)got);
    CHECK_SYS(close(fd));
    printf("/proc/self/stat 7 bytes at a time: one line, pid right: yes\n");

    /* A directory of procfs. */
    fd = CHECK_SYS(open("/proc", O_RDONLY | O_DIRECTORY));
    EXPECT_ERRNO(read(fd, buf, 16), EISDIR);
    CHECK_SYS(close(fd));
    printf("read of /proc itself: EISDIR\n");

    /* tmpfs: the position through read, readv, pread, write, pwrite. */
    fd = CHECK_SYS(open(tmp_path, O_RDWR));
    CHECK(read(fd, buf, 1000) == 1000 && pattern_at(buf, 0, 1000));
    CHECK(lseek(fd, 0, SEEK_CUR) == 1000);
    CHECK(pread(fd, buf, 10, 5000) == 10 && pattern_at(buf, 5000, 10));
    CHECK(lseek(fd, 0, SEEK_CUR) == 1000);
    char a[3], b[7];
    struct iovec v[3] = {{a, 3}, {NULL, 0}, {b, 7}};
    CHECK(readv(fd, v, 3) == 10 && pattern_at(a, 1000, 3) && pattern_at(b, 1003, 7));
    CHECK(lseek(fd, 0, SEEK_CUR) == 1010);
    CHECK(lseek(fd, TMP_LEN - 5, SEEK_SET) == TMP_LEN - 5);
    CHECK(read(fd, buf, 100) == 5 && pattern_at(buf, TMP_LEN - 5, 5)); /* short at EOF */
    CHECK(read(fd, buf, 100) == 0);
    CHECK(pread(fd, buf, 100, TMP_LEN + 10) == 0);
    EXPECT_ERRNO(pread(fd, buf, 10, -1), EINVAL);
    printf("tmpfs read/readv/pread/lseek: positions, short read at EOF, EOF: ok\n");

    unsigned char orig[16];
    for (size_t i = 0; i < sizeof orig; i++)
        orig[i] = pattern(20 + i);
    CHECK(pwrite(fd, "xyz", 3, 20) == 3);
    CHECK(pread(fd, buf, 5, 19) == 5 && memcmp(buf + 1, "xyz", 3) == 0);
    CHECK(lseek(fd, 30, SEEK_SET) == 30);
    CHECK(write(fd, "abc", 3) == 3);
    CHECK(lseek(fd, 0, SEEK_CUR) == 33);
    struct iovec w[2] = {{"de", 2}, {"f", 1}};
    CHECK(writev(fd, w, 2) == 3);
    CHECK(lseek(fd, 0, SEEK_CUR) == 36);
    CHECK(pread(fd, buf, 6, 30) == 6 && memcmp(buf, "abcdef", 6) == 0);
    CHECK(pwrite(fd, orig, sizeof orig, 20) == (ssize_t)sizeof orig);
    CHECK(pread(fd, buf, TMP_LEN + 1, 0) == TMP_LEN && pattern_at(buf, 0, TMP_LEN));
    CHECK_SYS(close(fd));
    fd = CHECK_SYS(open(tmp_path, O_WRONLY));
    EXPECT_ERRNO(read(fd, buf, 1), EBADF);
    EXPECT_ERRNO(pread(fd, buf, 1, 0), EBADF);
    CHECK_SYS(close(fd));
    printf("tmpfs write/pwrite/writev: data and positions: ok; read on write-only: EBADF\n");

    /* The memory devices. */
    fd = CHECK_SYS(open("/dev/zero", O_RDONLY));
    memset(buf, 1, 100);
    CHECK(pread(fd, buf, 100, 0) == 100 && all_zero(buf, 100));
    memset(buf, 1, 100);
    CHECK(read(fd, buf, 100) == 100 && all_zero(buf, 100));
    CHECK_SYS(close(fd));
    fd = CHECK_SYS(open("/dev/null", O_RDWR));
    CHECK(read(fd, buf, 100) == 0 && pread(fd, buf, 100, 0) == 0);
    CHECK(write(fd, buf, 100) == 100 && pwrite(fd, buf, 100, 0) == 100);
    CHECK_SYS(close(fd));
    fd = CHECK_SYS(open("/dev/full", O_RDWR));
    memset(buf, 1, 16);
    CHECK(pread(fd, buf, 16, 0) == 16 && all_zero(buf, 16));
    memset(buf, 1, 16);
    CHECK(read(fd, buf, 16) == 16 && all_zero(buf, 16));
    EXPECT_ERRNO(write(fd, "x", 1), ENOSPC);
    EXPECT_ERRNO(pwrite(fd, "x", 1, 0), ENOSPC);
    CHECK_SYS(close(fd));
    fd = CHECK_SYS(open("/dev/urandom", O_RDONLY));
    CHECK(pread(fd, buf, 32, 0) == 32 && read(fd, buf, 32) == 32);
    CHECK_SYS(close(fd));
    printf("/dev/zero, /dev/null, /dev/urandom: ok; /dev/full: zeros, writes ENOSPC\n");
    printf("errno kept by successful reads: %s\n", yesno(errno_kept));
    return NULL;
}

int main(int argc, char **argv)
{
    tp_setup(argc > 1 ? 3600 : 100); /* a measuring run may take long */
    if (argc > 1 && (reads = strtol(argv[1], NULL, 10)) <= 0) {
        fprintf(stderr, "usage: proc_inplace [reads-per-thread]\n");
        return 2;
    }
    if (access(SYSFS_FILE, R_OK) != 0 || access("/dev/shm", W_OK) != 0) {
        printf("SKIP: needs %s and a writable /dev/shm\n", SYSFS_FILE);
        return 77;
    }
    pid_max_len = slurp(PID_MAX, pid_max, sizeof pid_max);
    sysfs_len = slurp(SYSFS_FILE, sysfs, sizeof sysfs);
    stat_prefix_len = (size_t)snprintf(stat_prefix, sizeof stat_prefix, "%d (", (int)getpid());

    snprintf(tmp_path, sizeof tmp_path, "/dev/shm/fibershim-proc_inplace.%d", (int)getpid());
    int fd = CHECK_SYS(open(tmp_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    static unsigned char data[TMP_LEN];
    for (size_t i = 0; i < TMP_LEN; i++)
        data[i] = pattern(i);
    CHECK(write(fd, data, TMP_LEN) == TMP_LEN);
    CHECK_SYS(close(fd));

    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, positions, NULL));
    CHECK_RC(pthread_join(t, NULL));

    pthread_t th[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_create(&th[i], NULL, reader, (void *)(intptr_t)i));
    for (int i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_join(th[i], NULL));
    CHECK_SYS(unlink(tmp_path));

    printf("%d threads x %ld reads of each file\n", NTHREADS, reads);
    printf("pid_max (open, read, close): all equal: %s\n", yesno(!atomic_load(&bad_pid_max)));
    printf("/proc/self/stat (pread): pid and one line: %s\n", yesno(!atomic_load(&bad_stat)));
    printf("sysfs cpu/possible (pread): all equal: %s\n", yesno(!atomic_load(&bad_sysfs)));
    printf("tmpfs (pread at offsets): data right: %s\n", yesno(!atomic_load(&bad_tmp)));
    printf("tmpfs (read on, lseek): data and positions right: %s\n",
           yesno(!atomic_load(&bad_seq)));
    printf("proc_inplace: ok\n");
    return 0;
}
