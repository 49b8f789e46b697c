// fibershim-carriers: 1 2
/* stdio on pipes, sockets and FIFOs keeps glibc's contract: partial reads,
 * ungetc, EOF and error flags, fclose closing the fd, buffering modes and
 * sizes (what reaches the pipe, read with FIONREAD), fileno, ESPIPE,
 * EPIPE with SIGPIPE, a user's O_NONBLOCK (EAGAIN), getline/getdelim/
 * fscanf on a socket, fflush(NULL), flushing at exit, fmemopen, fopen of
 * a FIFO, freopen, wide output, flockfile held across a wait.
 *
 * Then the program runs itself as a child whose stdin and stdout are
 * pipes: the child reads two lines from stdin while a ticker thread runs;
 * the parent writes the second line only after the ticker has ticked 50
 * times, so a child whose fgets on stdin held its carrier would hang. */
#include "common.h"
#include <stdatomic.h>
#include <stdio_ext.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <wchar.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int step;

static void set_step(int s)
{
    pthread_mutex_lock(&mu);
    step = s;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void wait_step(int s)
{
    pthread_mutex_lock(&mu);
    while (step < s)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static int pending(int fd)
{
    int n = -1;
    CHECK_SYS(ioctl(fd, FIONREAD, &n));
    return n;
}

static void drain(int fd)
{
    char buf[4096];
    int n;
    while ((n = pending(fd)) > 0)
        read_full(fd, buf, (size_t)(n < (int)sizeof buf ? n : (int)sizeof buf));
}

/* ---- reads: partial, ungetc, EOF ---- */

static int rp[2];

static void *slow_writer(void *arg)
{
    (void)arg;
    write_all(rp[1], "hello\nwor", 9);
    wait_step(1);
    write_all(rp[1], "ld\nrest", 7);
    wait_step(2);
    close(rp[1]);
    return NULL;
}

static void reads(void)
{
    CHECK_SYS(pipe(rp));
    FILE *in = fdopen(rp[0], "r");
    pthread_t t;
    CHECK_SYS(pthread_create(&t, NULL, slow_writer, NULL));
    char line[64];
    /* Only 9 bytes exist until this fgets returns: a read that waited for
     * a full buffer would never return. */
    if (!fgets(line, sizeof line, in))
        FAIL("fgets");
    printf("partial read: fgets gave \"%.*s\"\n", (int)strlen(line) - 1, line);
    int c = fgetc(in);
    printf("fgetc '%c', ungetc('W') = '%c'", c, ungetc('W', in));
    set_step(1);
    if (!fgets(line, sizeof line, in))
        FAIL("fgets");
    printf(", then fgets \"%.*s\"\n", (int)strlen(line) - 1, line);
    set_step(2);
    char buf[100];
    errno = 0; /* a read that waits, then succeeds, leaves errno alone */
    size_t n = fread(buf, 1, sizeof buf, in);
    int e = errno;
    printf("fread of 100 at EOF: %zu \"%.*s\" feof %d ferror %d errno %s\n", n, (int)n, buf,
           feof(in), ferror(in), errname(e));
    c = fgetc(in);
    printf("fgetc after EOF: %s, clearerr -> feof %d\n", c == EOF ? "EOF" : "char",
           (clearerr(in), feof(in)));
    pthread_join(t, NULL);
    int fd = fileno(in);
    printf("fileno is the fd: %s; fclose %d; ", yesno(fd == rp[0]), fclose(in));
    errno = 0;
    int r = fcntl(fd, F_GETFD);
    printf("fd after fclose: %d %s\n", r, errname(errno));

    /* A read error: the fd closed behind the stream's back. */
    CHECK_SYS(pipe(rp));
    in = fdopen(rp[0], "r");
    close(rp[0]);
    errno = 0;
    c = fgetc(in);
    printf("fgetc on a closed fd: %s ferror %d errno %s\n", c == EOF ? "EOF" : "char", ferror(in),
           errname(errno));
    errno = 0;
    fclose(in); /* closes nothing that is open */
    close(rp[1]);
}

/* ---- writes: buffering, sizes, seeks, errors ---- */

static void writes(void)
{
    int p[2];
    CHECK_SYS(pipe(p));
    FILE *out = fdopen(p[1], "w");
    fputs("abc", out);
    printf("full buffering: after fputs %d, ", pending(p[0]));
    fflush(out);
    printf("after fflush %d\n", pending(p[0]));
    drain(p[0]);
    char big[5000];
    memset(big, 'x', sizeof big);
    fwrite(big, 1, sizeof big, out);
    printf("fwrite 5000: %d in the pipe, buffer size %zu\n", pending(p[0]), __fbufsize(out));
    fflush(out);
    drain(p[0]);
    errno = 0;
    long pos = ftell(out);
    printf("ftell %ld %s, ", pos, errname(errno));
    errno = 0;
    int sr = fseek(out, 0, SEEK_SET);
    printf("fseek %d %s\n", sr, errname(errno));
    clearerr(out);

    setvbuf(out, NULL, _IOLBF, 0);
    fputs("ab", out);
    printf("line buffering: after \"ab\" %d, ", pending(p[0]));
    fputs("\n", out);
    printf("after newline %d\n", pending(p[0]));
    drain(p[0]);
    setvbuf(out, NULL, _IONBF, 0);
    fputc('z', out);
    printf("unbuffered: after fputc %d\n", pending(p[0]));
    drain(p[0]);
    char mybuf[100];
    setvbuf(out, mybuf, _IOFBF, sizeof mybuf);
    fwrite(big, 1, 150, out);
    printf("user buffer of 100: after 150 bytes %d\n", pending(p[0]));
    fclose(out);
    drain(p[0]);
    close(p[0]);

    /* EPIPE and SIGPIPE. */
    CHECK_SYS(pipe(p));
    close(p[0]);
    sigset_t s, old;
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    signal(SIGPIPE, SIG_DFL);
    pthread_sigmask(SIG_BLOCK, &s, &old);
    out = fdopen(p[1], "w");
    fputs("to nobody\n", out);
    errno = 0;
    int r = fflush(out);
    int e = errno;
    sigset_t pend;
    sigpending(&pend);
    int sig = 0;
    if (sigismember(&pend, SIGPIPE))
        sigwait(&s, &sig);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    signal(SIGPIPE, SIG_IGN);
    printf("write to a closed pipe: fflush %d %s ferror %d, SIGPIPE %s\n", r, errname(e),
           ferror(out), yesno(sig == SIGPIPE));
    fclose(out);

    /* O_NONBLOCK chosen by the program: EAGAIN, as glibc reports it. */
    CHECK_SYS(pipe2(p, O_NONBLOCK));
    FILE *in = fdopen(p[0], "r");
    errno = 0;
    int c = fgetc(in);
    printf("O_NONBLOCK read: %s ferror %d %s\n", c == EOF ? "EOF" : "char", ferror(in),
           errname(errno));
    out = fdopen(p[1], "w");
    static char huge[100000];
    errno = 0;
    size_t n = fwrite(huge, 1, sizeof huge, out);
    printf("O_NONBLOCK write of 100000: fwrite %zu ferror %d %s\n", n, ferror(out), errname(errno));
    fclose(in);
    fclose(out);
}

/* ---- sockets: getline, getdelim, fscanf, fprintf; fflush(NULL) ---- */

static void sockets(void)
{
    int sv[2];
    CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    FILE *a = fdopen(sv[0], "r+");
    FILE *b_in = fdopen(sv[1], "r"), *b_out = fdopen(dup(sv[1]), "w");
    fprintf(a, "42 forty-two\nfirst line\nx;y;");
    fflush(a);
    shutdown(sv[0], SHUT_WR);
    int num;
    char word[32];
    int k = fscanf(b_in, "%d %31s ", &num, word);
    char *l = NULL;
    size_t cap = 0;
    ssize_t len = getline(&l, &cap, b_in);
    printf("socket: fscanf %d (%d %s), getline %zd \"%.*s\"", k, num, word, len, (int)len - 1, l);
    len = getdelim(&l, &cap, ';', b_in);
    printf(", getdelim %zd \"%s\"", len, l);
    len = getdelim(&l, &cap, ';', b_in);
    printf(" \"%s\"", l);
    len = getdelim(&l, &cap, ';', b_in);
    printf(", then %zd feof %d\n", len, feof(b_in));
    free(l);
    fprintf(b_out, "reply %d\n", num + 1);
    fflush(b_out);
    char line[32];
    printf("reply on the r+ stream: %s", fgets(line, sizeof line, a) ? line : "none\n");
    fclose(a);
    fclose(b_in);
    fclose(b_out);

    int p[2], q[2];
    CHECK_SYS(pipe(p));
    CHECK_SYS(pipe(q));
    FILE *x = fdopen(p[1], "w"), *y = fdopen(q[1], "w");
    fputs("one", x);
    fputs("two", y);
    printf("fflush(NULL): before %d %d, ", pending(p[0]), pending(q[0]));
    fflush(NULL);
    printf("after %d %d\n", pending(p[0]), pending(q[0]));

    /* Streams are flushed at exit. */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        fputs(" and at exit", x);
        exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
    fclose(x);
    fclose(y);
    char buf[64] = {0};
    read_full(p[0], buf, (size_t)pending(p[0]));
    printf("a child's exit flushed: \"%s\"\n", buf);
    close(p[0]);
    close(q[0]);
}

/* ---- fmemopen, FIFOs, freopen, wide, regular files ---- */

static char fifo[64];

static void *fifo_writer(void *arg)
{
    (void)arg;
    FILE *w = fopen(fifo, "w");
    if (!w)
        FAIL("fopen fifo w: %s", errname(errno));
    for (int i = 0; i < 3; i++)
        fprintf(w, "fifo line %d\n", i);
    fclose(w);
    return NULL;
}

static int late_fd;

static void *late_writer(void *arg)
{
    (void)arg;
    wait_step(5);
    write_all(late_fd, "late\n", 5);
    return NULL;
}

static void others(void)
{
    char mem[64] = {0};
    FILE *m = fmemopen(mem, sizeof mem, "w");
    fprintf(m, "in memory %d", 7);
    fflush(m);
    errno = 0;
    int fd = fileno(m);
    printf("fmemopen: \"%s\", fileno %d %s\n", mem, fd, errname(errno));
    fclose(m);

    char dir[] = "/tmp/stdio_semantics.XXXXXX";
    if (!mkdtemp(dir))
        FAIL("mkdtemp");
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    CHECK_SYS(mkfifo(fifo, 0600));
    pthread_t t;
    CHECK_SYS(pthread_create(&t, NULL, fifo_writer, NULL));
    FILE *r = fopen(fifo, "r");
    if (!r)
        FAIL("fopen fifo r: %s", errname(errno));
    char line[64];
    int lines = 0;
    while (fgets(line, sizeof line, r))
        lines++;
    errno = 0;
    long pos = ftell(r);
    printf("FIFO: %d lines then EOF %d, fileno valid %s, ftell %ld %s\n", lines, feof(r),
           yesno(fileno(r) >= 0), pos, errname(errno));
    pthread_join(t, NULL);
    fclose(r);
    errno = 0;
    r = fopen(fifo, "wx");
    printf("fopen(fifo, \"wx\"): %s %s\n", r ? "stream" : "NULL", errname(errno));
    unlink(fifo);

    char file[80];
    snprintf(file, sizeof file, "%s/file", dir);
    int p[2];
    CHECK_SYS(pipe(p));
    FILE *s = fdopen(p[1], "w");
    fputs("lost? no: flushed by freopen\n", s);
    FILE *f = freopen(file, "w+", s);
    char got[64] = {0};
    read_full(p[0], got, (size_t)pending(p[0]));
    printf("freopen onto a file: same FILE %s, same fd %s; the pipe got \"%.*s\"\n", yesno(f == s),
           yesno(f && fileno(f) == p[1]), (int)strlen(got) - 1, got);
    fprintf(f, "now in a file");
    printf("  ftell %ld, ", ftell(f));
    rewind(f);
    printf("read back \"%s\"\n", fgets(got, sizeof got, f) ? got : "nothing");
    fclose(f);
    unlink(file);
    close(p[0]);
    rmdir(dir);

    /* freopen(NULL, ...) of a pipe stream: a stream on the pipe again,
     * whose read waits for a writer that runs only while it waits. */
    CHECK_SYS(pipe(p));
    late_fd = p[1];
    s = fdopen(p[0], "r");
    f = freopen(NULL, "r", s);
    pthread_t lw;
    CHECK_SYS(pthread_create(&lw, NULL, late_writer, NULL));
    set_step(5);
    printf("freopen(NULL, \"r\") of a pipe stream: same FILE %s, same fd %s, read %s",
           yesno(f == s), yesno(f && fileno(f) == p[0]),
           f && fgets(got, sizeof got, f) ? got : "nothing\n");
    pthread_join(lw, NULL);
    fclose(f);
    close(p[1]);

    CHECK_SYS(pipe(p));
    FILE *w = fdopen(p[1], "w");
    printf("fdopen'ed pipe: orientation %d, ", fwide(w, 0));
    fwprintf(w, L"wide %ls %d", L"text", 42);
    printf("after fwprintf %d\n", fwide(w, 0) > 0);
    fclose(w);
    char wbuf[64] = {0};
    read_full(p[0], wbuf, (size_t)pending(p[0]));
    printf("  the pipe got \"%s\"\n", wbuf);
    close(p[0]);
}

/* ---- flockfile across a wait ---- */

static FILE *locked_in;

static void *lock_holder(void *arg)
{
    (void)arg;
    flockfile(locked_in);
    set_step(11);
    char line[32];
    char *r = fgets_unlocked(line, sizeof line, locked_in); /* waits, holding the lock */
    funlockfile(locked_in);
    return r ? (void *)1 : NULL;
}

static void locking(void)
{
    int p[2];
    CHECK_SYS(pipe(p));
    locked_in = fdopen(p[0], "r");
    set_step(10);
    pthread_t t;
    CHECK_SYS(pthread_create(&t, NULL, lock_holder, NULL));
    wait_step(11);
    int busy = ftrylockfile(locked_in);
    write_all(p[1], "wake\n", 5);
    void *v;
    pthread_join(t, &v);
    int free_now = ftrylockfile(locked_in);
    if (free_now == 0)
        funlockfile(locked_in);
    printf("flockfile held across a wait: other thread's ftrylockfile %s; after: %s; line %s\n",
           busy ? "fails" : "succeeds", free_now ? "fails" : "succeeds", v ? "read" : "missing");
    fclose(locked_in);
    close(p[1]);
}

/* ---- stdin and stdout as pipes (the child) ---- */

static atomic_int ticks;
static int tick_fd;

static void *ticker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 50; i++) {
        usleep(1000);
        atomic_fetch_add(&ticks, 1);
    }
    write_all(tick_fd, "t", 1);
    return NULL;
}

static int child(int fd)
{
    tick_fd = fd;
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        FAIL("child: no first line");
    printf("child: stdin fileno %d, first line \"%.*s\"\n", fileno(stdin), (int)strlen(line) - 1,
           line);
    pthread_t t;
    CHECK_SYS(pthread_create(&t, NULL, ticker, NULL));
    int c = getchar(); /* waits until the ticker has ticked 50 times */
    ungetc(c, stdin);
    if (!fgets(line, sizeof line, stdin))
        FAIL("child: no second line");
    printf("child: second line \"%.*s\" after ticks >= 50: %s\n", (int)strlen(line) - 1, line,
           yesno(atomic_load(&ticks) >= 50));
    pthread_join(t, NULL);
    errno = 0;
    long pos = ftell(stdin);
    int e = errno;
    errno = 0;
    c = getchar();
    printf("child: ftell(stdin) %ld %s, then getchar at EOF: %s, errno %s\n", pos, errname(e),
           yesno(c == EOF && feof(stdin) && !ferror(stdin)), errname(errno));
    printf("child: stdout fileno %d, line buffered %d, buffer %zu\n", fileno(stdout),
           __flbf(stdout), __fbufsize(stdout));
    return 0;
}

static void std_pipes(void)
{
    char self[256];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
        FAIL("readlink");
    self[n] = 0;
    int tp[2];
    CHECK_SYS(pipe(tp)); /* tp[1] is the child's ticker's, tp[0] stays here */
    CHECK_SYS(fcntl(tp[0], F_SETFD, FD_CLOEXEC));
    char cmd[400];
    snprintf(cmd, sizeof cmd, "'%s' --child %d | cat", self, tp[1]);
    fflush(stdout);
    FILE *to = popen(cmd, "w");
    if (!to)
        FAIL("popen: %s", errname(errno));
    close(tp[1]);
    fputs("line one\n", to);
    fflush(to);
    char c;
    read_full(tp[0], &c, 1); /* the child's ticker ran while it waited on stdin */
    fputs("line two\n", to);
    int st = pclose(to);
    close(tp[0]);
    printf("child exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--child") == 0)
        return child(atoi(argv[2]));
    tp_setup(60);
    reads();
    writes();
    sockets();
    others();
    locking();
    std_pipes();
    return 0;
}
