// fibershim-carriers: 1 2
/* popen beside other threads, and popen/pclose's contract.
 *
 * 1. A reader thread popen()s a child that prints "start", then waits for
 *    one byte on an inherited pipe before printing "late" and exiting 3.
 *    Once the reader has "start", a ticker thread sleeps 1 ms at a time
 *    and sends the byte only after 50 ticks; meanwhile the reader sits in
 *    fgets on the silent child. If that fgets held the carrier, the ticker
 *    would never tick and the program would hang (its alarm fails it).
 *    pclose must return the child's status (exit 3).
 * 2. popen "w": 100,000 bytes through fprintf to `wc -c`; pclose gives 5.
 * 3. Eight threads popen and pclose at once: each gets its own child's
 *    status (pclose waits for the right child).
 * 4. 'e' sets FD_CLOEXEC on the stream's fd, its absence does not; a bad
 *    mode is EINVAL; a popen child does not inherit an earlier popen
 *    stream's fd; fclose of a popen stream also returns the status. */
#include "common.h"
#include <stdatomic.h>
#include <sys/wait.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int got_start;
static atomic_int ticks;
static int go[2];

static void *ticker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    while (!got_start)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < 50; i++) {
        usleep(1000);
        atomic_fetch_add(&ticks, 1);
    }
    write_all(go[1], "g", 1);
    return NULL;
}

static void *reader(void *arg)
{
    (void)arg;
    char cmd[128], line[64];
    snprintf(cmd, sizeof cmd, "echo start; head -c 1 <&%d >/dev/null; echo late; exit 3", go[0]);
    FILE *fp = popen(cmd, "r");
    if (!fp)
        FAIL("popen: %s", errname(errno));
    if (!fgets(line, sizeof line, fp) || strcmp(line, "start\n") != 0)
        FAIL("first line \"%s\"", line);
    pthread_mutex_lock(&mu);
    got_start = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    if (!fgets(line, sizeof line, fp) || strcmp(line, "late\n") != 0)
        FAIL("second line \"%s\"", line);
    int t = atomic_load(&ticks);
    if (fgets(line, sizeof line, fp) || !feof(fp))
        FAIL("no EOF after the last line");
    int st = pclose(fp);
    printf("silent child: ticks before its last line: %s, pclose: exited %d\n",
           t >= 50 ? ">= 50" : "< 50", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return NULL;
}

static void *many(void *arg)
{
    int i = (int)(intptr_t)arg;
    char cmd[64], line[64];
    snprintf(cmd, sizeof cmd, "echo child-%d; exit %d", i, 10 + i);
    FILE *fp = popen(cmd, "r");
    if (!fp)
        FAIL("popen: %s", errname(errno));
    char want[64];
    snprintf(want, sizeof want, "child-%d\n", i);
    if (!fgets(line, sizeof line, fp) || strcmp(line, want) != 0)
        FAIL("child %d said \"%s\"", i, line);
    int st = pclose(fp);
    return (void *)(intptr_t)(WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

int main(void)
{
    tp_setup(60);
    CHECK_SYS(pipe2(go, 0));
    CHECK_SYS(fcntl(go[1], F_SETFD, FD_CLOEXEC));
    pthread_t r, t;
    CHECK_SYS(pthread_create(&t, NULL, ticker, NULL));
    CHECK_SYS(pthread_create(&r, NULL, reader, NULL));
    pthread_join(r, NULL);
    pthread_join(t, NULL);
    close(go[0]);
    close(go[1]);

    fflush(stdout);
    FILE *w = popen("wc -c; exit 5", "w");
    if (!w)
        FAIL("popen w: %s", errname(errno));
    for (int i = 0; i < 10000; i++)
        fprintf(w, "%09d\n", i);
    int st = pclose(w);
    printf("popen w: pclose: exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);

    pthread_t m[8];
    for (int i = 0; i < 8; i++)
        CHECK_SYS(pthread_create(&m[i], NULL, many, (void *)(intptr_t)i));
    int right = 0;
    for (int i = 0; i < 8; i++) {
        void *v;
        pthread_join(m[i], &v);
        right += (int)(intptr_t)v == 10 + i;
    }
    printf("8 concurrent popen/pclose, right status: %d\n", right);

    FILE *a = popen("true", "r"), *b = popen("true", "re");
    printf("'e': FD_CLOEXEC without %d, with %d\n", fcntl(fileno(a), F_GETFD) & FD_CLOEXEC,
           fcntl(fileno(b), F_GETFD) & FD_CLOEXEC);
    pclose(a);
    pclose(b);
    errno = 0;
    FILE *bad = popen("true", "rw");
    printf("mode rw: %s %s\n", bad ? "stream" : "NULL", errname(errno));
    errno = 0;
    bad = popen("true", "rx");
    printf("mode rx: %s %s\n", bad ? "stream" : "NULL", errname(errno));

    FILE *first = popen("cat >/dev/null", "w");
    char cmd[128], line[64];
    snprintf(cmd, sizeof cmd,
             "if [ -e /proc/self/fd/%d ]; then echo inherited; else echo closed; fi",
             fileno(first));
    FILE *second = popen(cmd, "r");
    if (!fgets(line, sizeof line, second))
        FAIL("no answer");
    printf("earlier popen stream's fd in a later child: %s", line);
    pclose(second);
    st = pclose(first);
    printf("cat: exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);

    /* glibc's pclose is its fclose: fclose waits too. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-dealloc"
    st = fclose(popen("exit 7", "r"));
#pragma GCC diagnostic pop
    printf("fclose of a popen stream: exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}
