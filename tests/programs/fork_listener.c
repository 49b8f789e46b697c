// fibershim-carriers: 1 2
/* One listening socket shared by several processes, as a pre-forking server
 * (Apache's prefork and worker MPMs) shares it. O_NONBLOCK belongs to the
 * open file description, which fork() and exec() share, so whatever one
 * process sees there, every other sees too: a runtime that sets O_NONBLOCK
 * underneath must never let a sibling mistake it for the program's choice.
 *
 * 1. Pre-forked children: the parent opens a blocking listener and forks
 *    two children with three accepting threads each, and one
 *    single-threaded child (prefork-style); then the parent itself accepts
 *    the first connection on two threads of its own, and only then are the
 *    children told to start. Clients make 60 more connections. Every one is
 *    served, no blocking accept anywhere returns EAGAIN (an acceptor counts
 *    them and naps 1 ms, so a regression reports instead of spinning), and
 *    F_GETFL shows no O_NONBLOCK on the listener or a connection in any
 *    process. The threaded children stop when their stop pipe closes, the
 *    single-threaded one on a signal whose handler lacks SA_RESTART (its
 *    accept fails with EINTR), all within 3 s.
 * 2. A child that execs this program again (--exec-child), once with
 *    LD_PRELOAD removed from its environment, once with the environment as
 *    it is, and once started by posix_spawn without LD_PRELOAD: after the
 *    parent has accepted on the listener, the new image accepts on the
 *    inherited listener in blocking mode, first alone, then with the parent
 *    accepting too, and after it stops the parent serves alone again.
 * 3. A program that chooses O_NONBLOCK itself keeps it: after the parent
 *    has accepted in blocking mode it sets O_NONBLOCK, and accept fails with
 *    EAGAIN in the parent and in a child, which sees the flag; the child
 *    clears it again, and the parent's accept then blocks until a
 *    connection arrives. */
#include "common.h"
#include <poll.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/wait.h>

extern char **environ;

#define NCHILD 2
#define NTHREADS 3
#define NCONN 60
#define NCLIENTS 4
#define NEXEC 20

/* What a child process reports to the parent through its result pipe. */
struct report {
    int served;
    int eagain;
    int nonblock_seen;
};

static int g_port;
static atomic_int served, eagain, nonblock_seen;

static void note_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        FAIL("F_GETFL: %s", errname(errno));
    if (fl & O_NONBLOCK)
        atomic_fetch_add(&nonblock_seen, 1);
}

/* Answers one "q<6 digits>\n" request with "a<same digits>\n". */
static void serve(int lfd, int c)
{
    char req[8];
    if (read_full(c, req, sizeof req) != sizeof req || req[0] != 'q')
        FAIL("bad request");
    note_flags(lfd);
    note_flags(c);
    atomic_fetch_add(&served, 1); /* before the answer: the client's count implies ours */
    req[0] = 'a';
    write_all(c, req, sizeof req);
    close(c);
}

/* Blocking accept, forever, as a worker thread of a pre-forking server. */
static void *acceptor(void *arg)
{
    int lfd = (int)(long)arg;
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                atomic_fetch_add(&eagain, 1);
                sleep_ms(1);
                continue;
            }
            if (errno == EINTR)
                continue;
            FAIL("accept: %s", errname(errno));
        }
        serve(lfd, c);
    }
    return NULL;
}

static void start_acceptors(int lfd, int n)
{
    for (int i = 0; i < n; i++) {
        pthread_t t;
        CHECK_RC(pthread_create(&t, NULL, acceptor, (void *)(long)lfd));
        CHECK_RC(pthread_detach(t));
    }
}

/* Accepts and serves exactly one connection. */
static void *serve_once(void *arg)
{
    int lfd = (int)(long)arg;
    int c = accept(lfd, NULL, NULL);
    if (c < 0)
        FAIL("accept: %s", errname(errno));
    serve(lfd, c);
    return NULL;
}

/* One connection: returns 1 if it was answered correctly. */
static int request(int port, int id)
{
    int fd = connect_local(port);
    char req[9], resp[8];
    snprintf(req, sizeof req, "q%06d\n", id);
    write_all(fd, req, 8);
    int ok = read_full(fd, resp, sizeof resp) == sizeof resp && resp[0] == 'a' &&
             memcmp(resp + 1, req + 1, 7) == 0;
    close(fd);
    return ok;
}

struct clients {
    int port, first, count;
    atomic_int ok;
};

static void *client_run(void *arg)
{
    struct clients *c = arg;
    for (int i = 0; i < c->count; i++)
        atomic_fetch_add(&c->ok, request(c->port, c->first + i));
    return NULL;
}

/* n connections from NCLIENTS threads; returns how many were answered. */
static int run_clients(int port, int n)
{
    static int next_id;
    struct clients c[NCLIENTS];
    pthread_t t[NCLIENTS];
    for (int i = 0; i < NCLIENTS; i++) {
        c[i].port = port;
        c[i].first = next_id + i * n;
        c[i].count = n / NCLIENTS + (i < n % NCLIENTS);
        atomic_init(&c[i].ok, 0);
        CHECK_RC(pthread_create(&t[i], NULL, client_run, &c[i]));
    }
    int ok = 0;
    for (int i = 0; i < NCLIENTS; i++) {
        CHECK_RC(pthread_join(t[i], NULL));
        ok += atomic_load(&c[i].ok);
    }
    next_id += NCLIENTS * n;
    return ok;
}

static void send_report(int fd)
{
    struct report r = {atomic_load(&served), atomic_load(&eagain), atomic_load(&nonblock_seen)};
    write_all(fd, &r, sizeof r);
}

static struct report read_report(int fd)
{
    struct report r;
    if (read_full(fd, &r, sizeof r) != sizeof r)
        FAIL("a child exited without its report");
    close(fd);
    return r;
}

/* A child must not outlive a parent that failed. */
static void child_setup(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(60);
}

static void wait_byte(int fd)
{
    char b;
    if (read_full(fd, &b, 1) != 1)
        FAIL("the parent went away");
    close(fd);
}

static void wait_byte_keep(int fd)
{
    char b;
    if (read_full(fd, &b, 1) != 1)
        FAIL("a child went away");
}

static void wait_eof(int fd)
{
    char b;
    while (read(fd, &b, 1) != 0) {
        if (errno != EINTR)
            FAIL("stop pipe: %s", errname(errno));
    }
}

/* ---- 1. pre-forked children -------------------------------------------------- */

static void threaded_child(int lfd, int go, int stop, int res)
{
    child_setup();
    write_all(res, "r", 1);
    wait_byte(go);
    note_flags(lfd);
    start_acceptors(lfd, NTHREADS);
    wait_eof(stop);
    send_report(res);
    _exit(0);
}

static volatile sig_atomic_t single_stop;

static void on_usr1(int sig)
{
    (void)sig;
    single_stop = 1;
}

/* Prefork-style: one thread, blocking accept, stops on SIGUSR1. */
static void single_child(int lfd, int go, int res)
{
    child_setup();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1; /* no SA_RESTART: accept fails with EINTR */
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
    write_all(res, "r", 1); /* ready: the parent may signal from now on */
    wait_byte(go);
    note_flags(lfd);
    while (!single_stop) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                atomic_fetch_add(&eagain, 1);
                sleep_ms(1);
                continue;
            }
            FAIL("accept: %s", errname(errno));
        }
        serve(lfd, c);
    }
    send_report(res);
    _exit(0);
}

static void preforked(void)
{
    int lfd = listen_local(128, &g_port);
    printf("listener F_GETFL in the parent: %#x\n", (unsigned)CHECK_SYS(fcntl(lfd, F_GETFL)));
    int go[NCHILD + 1][2], stop[NCHILD][2], res[NCHILD + 1][2];
    pid_t pid[NCHILD + 1];
    fflush(stdout);
    for (int i = 0; i <= NCHILD; i++) {
        CHECK_SYS(pipe2(go[i], O_CLOEXEC));
        CHECK_SYS(pipe2(res[i], O_CLOEXEC));
        if (i < NCHILD)
            CHECK_SYS(pipe2(stop[i], O_CLOEXEC));
        pid[i] = (pid_t)CHECK_SYS(fork());
        if (pid[i] == 0) {
            close(go[i][1]);
            close(res[i][0]);
            if (i < NCHILD) {
                close(stop[i][1]);
                threaded_child(lfd, go[i][0], stop[i][0], res[i][1]);
            }
            single_child(lfd, go[i][0], res[i][1]);
        }
        close(go[i][0]);
        close(res[i][1]);
        if (i < NCHILD)
            close(stop[i][0]);
    }
    printf("pre-forked children: %d with %d threads each, 1 single-threaded\n", NCHILD, NTHREADS);

    /* The parent accepts first, while the children wait. */
    note_flags(lfd);
    start_acceptors(lfd, 2);
    printf("first connection served by the parent: %s\n",
           yesno(request(g_port, 999999) && atomic_load(&served) == 1));
    for (int i = 0; i <= NCHILD; i++) {
        wait_byte_keep(res[i][0]);
        write_all(go[i][1], "g", 1);
        close(go[i][1]);
    }
    int ok = 1 + run_clients(g_port, NCONN);

    int64_t t0 = now_ns();
    for (int i = 0; i < NCHILD; i++)
        close(stop[i][1]);
    int left = NCHILD + 1;
    bool reaped[NCHILD + 1] = {false};
    while (left > 0 && ms_since(t0) < 3000) {
        if (!reaped[NCHILD])
            kill(pid[NCHILD], SIGUSR1); /* again and again: it may be between two accepts */
        for (int i = 0; i <= NCHILD; i++) {
            int st;
            if (!reaped[i] && waitpid(pid[i], &st, WNOHANG) == pid[i]) {
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                    FAIL("child %d ended with status %#x", i, st);
                reaped[i] = true;
                left--;
            }
        }
        sleep_ms(20);
    }
    printf("children stopped within 3 s of the pipe close or the signal: %s\n", yesno(left == 0));
    if (left)
        FAIL("%d children did not stop", left);
    int total = atomic_load(&served), again = atomic_load(&eagain),
        nb = atomic_load(&nonblock_seen);
    for (int i = 0; i <= NCHILD; i++) {
        struct report r = read_report(res[i][0]);
        total += r.served;
        again += r.eagain;
        nb += r.nonblock_seen;
    }
    printf("connections answered: %d/%d, served: %d\n", ok, NCONN + 1, total);
    printf("accept calls that returned EAGAIN: %d\n", again);
    printf("F_GETFL showed O_NONBLOCK on the listener or a connection: %d times\n", nb);
}

/* ---- 2. a child that execs ------------------------------------------------------ */

static int exec_child_main(int lfd, int stop, int res)
{
    child_setup();
    note_flags(lfd);
    start_acceptors(lfd, 2);
    wait_eof(stop);
    send_report(res);
    _exit(0);
}

/* environ without LD_PRELOAD (keep: the environment as it is). */
static char **child_env(bool keep)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 1, sizeof *env);
    CHECK(env != NULL);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (keep || strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
            env[k++] = environ[i];
    return env;
}

enum start { EXEC_NO_PRELOAD, EXEC_AS_IS, SPAWN_NO_PRELOAD };

static void exec_phase(enum start how)
{
    static const char *const names[] = {"exec without LD_PRELOAD",
                                        "exec with the environment as it is",
                                        "posix_spawn without LD_PRELOAD"};
    const char *what = names[how];
    int port;
    int lfd = listen_local(128, &port);
    CHECK_SYS(fcntl(lfd, F_SETFD, 0)); /* inherited across exec */

    /* The parent accepts one connection first, in blocking mode. */
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, serve_once, (void *)(long)lfd));
    int before = atomic_load(&served);
    int first = request(port, 777777);
    CHECK_RC(pthread_join(t, NULL));
    printf("%s: first connection served by the parent: %s\n", what,
           yesno(first && atomic_load(&served) == before + 1));
    int stop[2], res[2];
    CHECK_SYS(pipe(stop));
    CHECK_SYS(pipe2(res, 0));
    char a_lfd[16], a_stop[16], a_res[16];
    snprintf(a_lfd, sizeof a_lfd, "%d", lfd);
    snprintf(a_stop, sizeof a_stop, "%d", stop[0]);
    snprintf(a_res, sizeof a_res, "%d", res[1]);
    char *argv[] = {"fork_listener", "--exec-child", a_lfd, a_stop, a_res, NULL};
    char **env = child_env(how == EXEC_AS_IS);
    fflush(stdout);
    pid_t pid;
    if (how == SPAWN_NO_PRELOAD) {
        posix_spawn_file_actions_t fa;
        CHECK_RC(posix_spawn_file_actions_init(&fa));
        CHECK_RC(posix_spawn_file_actions_addclose(&fa, stop[1]));
        CHECK_RC(posix_spawn_file_actions_addclose(&fa, res[0]));
        CHECK_RC(posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, env));
        posix_spawn_file_actions_destroy(&fa);
    } else {
        pid = (pid_t)CHECK_SYS(fork());
        if (pid == 0) {
            close(stop[1]);
            close(res[0]);
            execve("/proc/self/exe", argv, env);
            _exit(127);
        }
    }
    free(env);
    close(stop[0]);
    close(res[1]);
    int ok1 = run_clients(port, NEXEC); /* the child alone */
    start_acceptors(lfd, 1);
    int ok2 = run_clients(port, NEXEC); /* the child and the parent */
    close(stop[1]);
    int st;
    CHECK_SYS(waitpid(pid, &st, 0));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("exec child ended with status %#x", st);
    struct report r = read_report(res[0]);
    printf("%s: connections answered: %d/%d by the child alone, %d/%d with the parent, "
           "child served the first round: %s\n",
           what, ok1, NEXEC, ok2, NEXEC, yesno(r.served >= NEXEC));
    printf("%s: child's accept calls that returned EAGAIN: %d, O_NONBLOCK seen: %d\n", what,
           r.eagain, r.nonblock_seen);
    before = atomic_load(&served);
    int ok3 = run_clients(port, 8);
    printf("%s: after the child stopped the parent served %d/8: %s\n", what, ok3,
           yesno(atomic_load(&served) == before + 8));
}

/* ---- 3. O_NONBLOCK chosen by the program ------------------------------------------- */

struct delayed_connect {
    int port;
    int fd;
};

static void *connect_later(void *arg)
{
    struct delayed_connect *d = arg;
    sleep_ms(100);
    d->fd = connect_local(d->port);
    return NULL;
}

static void *accept_once(void *arg)
{
    int lfd = (int)(long)arg;
    int c = accept(lfd, NULL, NULL);
    if (c < 0)
        FAIL("accept_once: %s", errname(errno));
    return (void *)(long)c;
}

static void user_nonblock(void)
{
    int port;
    int lfd = listen_local(16, &port);
    int go[2], res[2];
    CHECK_SYS(pipe2(go, O_CLOEXEC));
    CHECK_SYS(pipe2(res, O_CLOEXEC));
    fflush(stdout);
    pid_t pid = (pid_t)CHECK_SYS(fork());
    if (pid == 0) {
        child_setup();
        close(go[1]);
        close(res[0]);
        wait_byte(go[0]);
        int out[3];
        out[0] = (int)CHECK_SYS(fcntl(lfd, F_GETFL));
        errno = 0;
        out[1] = accept(lfd, NULL, NULL) < 0 ? errno : 0;
        CHECK_SYS(fcntl(lfd, F_SETFL, out[0] & ~O_NONBLOCK));
        out[2] = (int)CHECK_SYS(fcntl(lfd, F_GETFL));
        write_all(res[1], out, sizeof out);
        _exit(0);
    }
    close(go[0]);
    close(res[1]);

    /* The parent accepts once in blocking mode, on a thread. */
    pthread_t t;
    struct delayed_connect d = {port, -1};
    pthread_t ct;
    CHECK_RC(pthread_create(&ct, NULL, connect_later, &d));
    CHECK_RC(pthread_create(&t, NULL, accept_once, (void *)(long)lfd));
    void *c;
    CHECK_RC(pthread_join(t, &c));
    CHECK_RC(pthread_join(ct, NULL));
    close((int)(long)c);
    close(d.fd);

    int fl = (int)CHECK_SYS(fcntl(lfd, F_GETFL));
    CHECK_SYS(fcntl(lfd, F_SETFL, fl | O_NONBLOCK));
    printf("user O_NONBLOCK: parent F_GETFL %#x\n", (unsigned)CHECK_SYS(fcntl(lfd, F_GETFL)));
    errno = 0;
    int r = accept(lfd, NULL, NULL);
    printf("user O_NONBLOCK: parent accept: %d %s\n", r, errname(errno));
    write_all(go[1], "g", 1);
    close(go[1]);
    int out[3];
    if (read_full(res[0], out, sizeof out) != sizeof out)
        FAIL("no answer from the child");
    int st;
    CHECK_SYS(waitpid(pid, &st, 0));
    printf("user O_NONBLOCK: child F_GETFL %#x, child accept: %s, after the child cleared it: "
           "%#x\n",
           (unsigned)out[0], errname(out[1]), (unsigned)out[2]);
    printf("user O_NONBLOCK cleared by the child: parent F_GETFL %#x\n",
           (unsigned)CHECK_SYS(fcntl(lfd, F_GETFL)));
    d.fd = -1;
    int64_t t0 = now_ns();
    CHECK_RC(pthread_create(&ct, NULL, connect_later, &d));
    CHECK_RC(pthread_create(&t, NULL, accept_once, (void *)(long)lfd));
    CHECK_RC(pthread_join(t, &c));
    double el = ms_since(t0);
    CHECK_RC(pthread_join(ct, NULL));
    printf("user O_NONBLOCK cleared by the child: parent accept blocked until the connection: "
           "%s\n",
           yesno((long)c >= 0 && el >= 90.0));
    close((int)(long)c);
    close(d.fd);
    close(lfd);
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--exec-child") == 0)
        return exec_child_main(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    tp_setup(60);
    preforked();
    exec_phase(EXEC_NO_PRELOAD);
    exec_phase(EXEC_AS_IS);
    exec_phase(SPAWN_NO_PRELOAD);
    user_nonblock();
    printf("parent's accept calls that returned EAGAIN in blocking mode: %d\n",
           atomic_load(&eagain));
    printf("fork_listener: ok\n");
    return 0;
}
