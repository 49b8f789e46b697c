/* A thread-per-connection server that runs a child process per request,
 * CGI-style, under load: 8 client threads each send 25 requests; for each
 * one the server thread forks, the child (with the request on stdin through
 * a pipe and the connection's pipe as stdout) execs /bin/sh to transform the
 * request, and the server thread relays the answer and reaps the child.
 * Also: a child forked by a thread keeps working threads of its own, the
 * program's pthread_atfork handlers run in the parent and the child,
 * posix_spawn, system and popen work, and vfork+exec works. */
#include "common.h"
#include <fcntl.h>
#include <spawn.h>
#include <stdatomic.h>
#include <sys/wait.h>

extern char **environ;

#define NCLIENTS 8
#define NREQ 25

static int port;
static atomic_int prepare_calls, parent_calls, child_calls_seen;

static void at_prepare(void) { atomic_fetch_add(&prepare_calls, 1); }
static void at_parent(void) { atomic_fetch_add(&parent_calls, 1); }
static void at_child(void) { atomic_store(&child_calls_seen, 1); }

/* Runs "sh -c 'tr a-z A-Z'" on req, CGI-style; returns its output. */
static size_t run_cgi(const char *req, size_t len, char *out, size_t cap)
{
    int in[2], outp[2];
    /* O_CLOEXEC: another thread's child, forked meanwhile, must not keep
     * our pipe ends open past its exec (our tr would never see EOF). */
    CHECK_SYS(pipe2(in, O_CLOEXEC));
    CHECK_SYS(pipe2(outp, O_CLOEXEC));
    pid_t pid = fork();
    if (pid < 0)
        FAIL("fork: %s", errname(errno));
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(outp[1], 1);
        close(in[0]);
        close(in[1]);
        close(outp[0]);
        close(outp[1]);
        execl("/bin/sh", "sh", "-c", "tr a-z A-Z", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(outp[1]);
    write_all(in[1], req, len);
    close(in[1]);
    size_t got = 0;
    ssize_t n;
    while (got < cap && (n = read(outp[0], out + got, cap - got)) > 0)
        got += (size_t)n;
    close(outp[0]);
    int st;
    CHECK_SYS(waitpid(pid, &st, 0));
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("cgi child status %#x", st);
    return got;
}

static void *serve(void *arg)
{
    int fd = (int)(long)arg;
    char req[64], out[64];
    for (;;) {
        uint8_t len;
        if (read_full(fd, &len, 1) != 1)
            break;
        if (read_full(fd, req, len) != len)
            FAIL("short request");
        size_t n = run_cgi(req, len, out, sizeof out);
        uint8_t olen = (uint8_t)n;
        write_all(fd, &olen, 1);
        write_all(fd, out, n);
    }
    close(fd);
    return NULL;
}

static void *acceptor(void *arg)
{
    int lfd = (int)(long)arg;
    for (int i = 0; i < NCLIENTS; i++) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            FAIL("accept: %s", errname(errno));
        pthread_t t;
        CHECK_RC(pthread_create(&t, NULL, serve, (void *)(long)fd));
        CHECK_RC(pthread_detach(t));
    }
    return NULL;
}

static atomic_int answers_ok;

static void *client(void *arg)
{
    long id = (long)arg;
    int fd = connect_local(port);
    for (int i = 0; i < NREQ; i++) {
        char req[32], want[32], got[64];
        int len = snprintf(req, sizeof req, "client %ld req %d", id, i);
        for (int k = 0; k <= len; k++)
            want[k] = (char)(req[k] >= 'a' && req[k] <= 'z' ? req[k] - 32 : req[k]);
        uint8_t l = (uint8_t)len;
        write_all(fd, &l, 1);
        write_all(fd, req, (size_t)len);
        uint8_t ol;
        if (read_full(fd, &ol, 1) != 1 || read_full(fd, got, ol) != ol)
            FAIL("client %ld: short answer", id);
        if (ol == len && memcmp(got, want, (size_t)len) == 0)
            atomic_fetch_add(&answers_ok, 1);
    }
    close(fd);
    return NULL;
}

/* A forked child that keeps threads of its own. */
static void *child_worker(void *arg) { return (void *)((long)arg * 2); }

static void fork_with_threads(void)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        pthread_t t[4];
        long sum = 0;
        for (long i = 0; i < 4; i++)
            if (pthread_create(&t[i], NULL, child_worker, (void *)i))
                _exit(2);
        for (int i = 0; i < 4; i++) {
            void *r;
            pthread_join(t[i], &r);
            sum += (long)r;
        }
        _exit(sum == 12 && atomic_load(&child_calls_seen) ? 0 : 3);
    }
    int st;
    CHECK_SYS(waitpid(pid, &st, 0));
    printf("forked child with its own threads: exit %d\n", WEXITSTATUS(st));
}

static void *spawn_family(void *arg)
{
    pid_t pid;
    char *argv[] = {"sh", "-c", "exit 7", NULL};
    CHECK_RC(posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ));
    int st;
    CHECK_SYS(waitpid(pid, &st, 0));
    printf("posix_spawn: exit %d\n", WEXITSTATUS(st));
    int rc = system("exit 5");
    printf("system: exit %d\n", WEXITSTATUS(rc));
    FILE *p = popen("echo popen-ok", "r");
    char line[32] = "";
    if (!p || !fgets(line, sizeof line, p))
        FAIL("popen");
    printf("popen: %s", line);
    printf("pclose: %d\n", pclose(p));
    pid = vfork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", "exit 9", (char *)NULL);
        _exit(127);
    }
    CHECK_SYS(waitpid(pid, &st, 0));
    printf("vfork+exec: exit %d\n", WEXITSTATUS(st));
    return NULL;
}

int main(void)
{
    tp_setup(120);
    CHECK_RC(pthread_atfork(at_prepare, at_parent, at_child));
    int lfd = listen_local(64, &port);
    pthread_t acc, cl[NCLIENTS], sp;
    CHECK_RC(pthread_create(&acc, NULL, acceptor, (void *)(long)lfd));
    for (long i = 0; i < NCLIENTS; i++)
        CHECK_RC(pthread_create(&cl[i], NULL, client, (void *)i));
    for (int i = 0; i < NCLIENTS; i++)
        CHECK_RC(pthread_join(cl[i], NULL));
    CHECK_RC(pthread_join(acc, NULL));
    printf("cgi requests answered correctly: %d/%d\n", (int)answers_ok, NCLIENTS * NREQ);
    printf("atfork prepare and parent handlers ran for every fork: %s\n",
           yesno(prepare_calls >= NCLIENTS * NREQ && parent_calls == prepare_calls));
    fork_with_threads();
    CHECK_RC(pthread_create(&sp, NULL, spawn_family, NULL));
    CHECK_RC(pthread_join(sp, NULL));
    printf("cgi_fork: ok\n");
    return 0;
}
