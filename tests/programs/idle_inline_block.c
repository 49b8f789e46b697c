// fibershim-carriers: 1 2
/* An idle process in which one thread is blocked for good in a call no
 * wrapper can see (a read of a pipe made with an inline syscall
 * instruction, as liburing makes io_uring_enter: MariaDB's io_uring
 * completion thread) must stay idle: nobody wakes up meanwhile. Plain
 * threads make a handful of context switches in the second measured here
 * (main's own sleep). Under the shim the blocked thread holds its carrier
 * for good; the monitor judges that carrier stuck, takes what it held,
 * and then must stop looking at it: a monitor that keeps sampling every
 * 5 ms makes about 200 wake-ups a second. The check counts the voluntary
 * context switches of every thread of the process over one idle second
 * (/proc/self/task/{tid}/status) against 50, far from both behaviours. */
#include "common.h"

#include <dirent.h>
#include <stdatomic.h>

static int pipe_fd[2];
static atomic_int entered;

static void *blocker(void *arg)
{
    (void)arg;
    char c = 0;
    atomic_store(&entered, 1);
    long n = inline_read(pipe_fd[0], &c, 1);
    printf("thread: inline read returned %ld '%c'\n", n, c);
    return NULL;
}

/* Voluntary context switches of every thread of this process so far. */
static long switches(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        FAIL("opendir /proc/self/task: %s", strerror(errno));
    long sum = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], line[128];
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* a thread that just exited */
        long v;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1)
                sum += v;
        fclose(f);
    }
    closedir(d);
    return sum;
}

int main(void)
{
    CHECK_SYS(pipe(pipe_fd));
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, blocker, NULL));
    while (!atomic_load(&entered))
        usleep(1000);
    /* Time for the blocked carrier to be judged stuck and rescued, and
     * for the monitor to back off: half a second, while idle. */
    usleep(500000);
    long before = switches();
    sleep(1);
    long after = switches();
    long n = after - before;
    printf("main: under 50 voluntary context switches in 1 s idle: %s\n", yesno(n < 50));
    fprintf(stderr, "main: %ld voluntary context switches in 1 s idle\n", n);
    fflush(stdout);
    CHECK_SYS(write(pipe_fd[1], "x", 1));
    CHECK_RC(pthread_join(t, NULL));
    printf("main: joined\n");
    return 0;
}
