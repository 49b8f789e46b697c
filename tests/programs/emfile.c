/* A server whose accept loop runs out of file descriptors (EMFILE).
 *
 * The server lowers its soft RLIMIT_NOFILE so that only FREE_FDS descriptor
 * numbers below it are free. 40 clients, in a child process (this executable, spawned
 * with "--client <port>", so that their descriptors do not count), connect
 * at once; each sends its index and waits for an ack and then EOF.
 *
 * Server: an acceptor thread and one thread per accepted connection; a
 * connection thread exchanges hello/ack and then holds its descriptor until
 * the acceptor releases it. So after FREE_FDS accepts, accept() must fail
 * with EMFILE (Linux checks for a free descriptor before taking a connection
 * off the queue, so nothing is lost). The acceptor then waits for the held
 * connections to finish their exchange, releases them (their threads close
 * their descriptors), and accepts again: the pending connections are all
 * still there. Output: yes/no facts and the connection count only. */
#include "common.h"
#include <dirent.h>
#include <spawn.h>
#include <sys/wait.h>

#define NCONN 40
#define FREE_FDS 10
#define HELLO 0x68656c6fU
#define ACK 0x61636b21U

extern char **environ;

static int port;

/* ---------------- client (child process) ---------------- */

static void *client(void *arg)
{
    uint32_t idx = (uint32_t)(long)arg;
    int fd = connect_local(port);
    uint32_t hello[2] = {HELLO, idx};
    write_all(fd, hello, sizeof hello);
    uint32_t ack[2];
    if (read_full(fd, ack, sizeof ack) != sizeof ack || ack[0] != ACK || ack[1] != idx)
        FAIL("client %u: bad ack", idx);
    char c;
    ssize_t r;
    while ((r = read(fd, &c, 1)) < 0 && errno == EINTR) {
    }
    if (r != 0)
        FAIL("client %u: expected EOF, got %zd %s", idx, r, errname(errno));
    close(fd);
    return NULL;
}

static int run_clients(void)
{
    raise_nofile();
    pthread_t t[NCONN];
    for (long i = 0; i < NCONN; i++)
        CHECK_RC(create_thread(&t[i], 64 * 1024, client, (void *)i));
    for (int i = 0; i < NCONN; i++)
        CHECK_RC(pthread_join(t[i], NULL));
    return 0;
}

/* ---------------- server ---------------- */

static int listen_fd;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int held;      /* accepted connections whose descriptor is open */
static int exchanged; /* accepted connections done with hello/ack, still held */
static int release_gen;
static int served;
static unsigned char seen[NCONN];
static pthread_t handlers[NCONN];

struct handler_arg {
    int fd;
    int gen; /* released when release_gen > gen */
};
static struct handler_arg hargs[NCONN];

static void *handler(void *arg)
{
    struct handler_arg *h = arg;
    uint32_t hello[2];
    if (read_full(h->fd, hello, sizeof hello) != sizeof hello || hello[0] != HELLO ||
        hello[1] >= NCONN)
        FAIL("server: bad hello");
    uint32_t ack[2] = {ACK, hello[1]};
    write_all(h->fd, ack, sizeof ack);
    pthread_mutex_lock(&mu);
    if (seen[hello[1]]++)
        FAIL("duplicate client %u", hello[1]);
    exchanged++;
    served++;
    pthread_cond_broadcast(&cv);
    while (release_gen <= h->gen)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);

    close(h->fd);
    pthread_mutex_lock(&mu);
    held--;
    exchanged--;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    return NULL;
}

static int emfile_seen, max_held;

/* Waits until every held connection finished its exchange, releases them
 * and waits until their descriptors are closed. */
static void release_all(void)
{
    pthread_mutex_lock(&mu);
    while (exchanged < held)
        pthread_cond_wait(&cv, &mu);
    release_gen++;
    pthread_cond_broadcast(&cv);
    while (held > 0)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void *acceptor(void *unused)
{
    int n = 0;
    while (n < NCONN) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EMFILE)
                FAIL("accept: %s", errname(errno));
            emfile_seen++;
            pthread_mutex_lock(&mu);
            int h = held;
            pthread_mutex_unlock(&mu);
            if (h == 0)
                FAIL("EMFILE with no connection held");
            release_all();
            continue;
        }
        pthread_mutex_lock(&mu);
        held++;
        if (held > max_held)
            max_held = held;
        hargs[n].fd = fd;
        hargs[n].gen = release_gen;
        pthread_mutex_unlock(&mu);
        CHECK_RC(create_thread(&handlers[n], 64 * 1024, handler, &hargs[n]));
        n++;
    }
    release_all();
    return NULL;
}

static void *nothing(void *unused) { return NULL; }

/* The soft limit that leaves exactly 'nfree' descriptor numbers free below
 * it (descriptors above it, if any, stay open and usable); *nopen gets how
 * many descriptors are open below it. */
static rlim_t limit_for_free(rlim_t hard, int nfree, int *nopen)
{
    size_t n = hard > 1 << 20 ? 1 << 20 : (size_t)hard;
    unsigned char *open_fd = calloc(n, 1);
    CHECK(open_fd);
    DIR *d = opendir("/proc/self/fd");
    CHECK(d);
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd != self && (size_t)fd < n)
            open_fd[fd] = 1;
    }
    closedir(d);
    int seen_free = 0;
    size_t l = 0;
    *nopen = 0;
    for (; l < n && seen_free < nfree; l++) {
        if (open_fd[l])
            (*nopen)++;
        else
            seen_free++;
    }
    free(open_fd);
    if (seen_free < nfree)
        FAIL("not enough descriptor numbers");
    return (rlim_t)l;
}

int main(int argc, char **argv)
{
    tp_setup(60);
    if (argc == 3 && strcmp(argv[1], "--client") == 0) {
        port = atoi(argv[2]);
        return run_clients();
    }

    listen_fd = listen_local(128, &port);
    /* Start and join one thread first: whatever a threads library opens
     * once is open before the descriptors are counted. */
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, nothing, NULL));
    CHECK_RC(pthread_join(t, NULL));

    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    char *cargv[] = {argv[0], "--client", portstr, NULL};
    pid_t child;
    int rc = posix_spawn(&child, "/proc/self/exe", NULL, NULL, cargv, environ);
    if (rc)
        FAIL("posix_spawn: %s", errname(rc));

    struct rlimit rl;
    CHECK_SYS(getrlimit(RLIMIT_NOFILE, &rl));
    int nopen;
    rl.rlim_cur = limit_for_free(rl.rlim_max, FREE_FDS, &nopen);
    int free_slots = (int)rl.rlim_cur - nopen;
    fprintf(stderr, "emfile: soft limit %lu, %d fds open below it, %d free\n",
            (unsigned long)rl.rlim_cur, nopen, free_slots);
    CHECK_SYS(setrlimit(RLIMIT_NOFILE, &rl));

    pthread_t acc;
    CHECK_RC(pthread_create(&acc, NULL, acceptor, NULL));
    CHECK_RC(pthread_join(acc, NULL));
    for (int i = 0; i < NCONN; i++)
        CHECK_RC(pthread_join(handlers[i], NULL));
    close(listen_fd);

    int st;
    CHECK_SYS(waitpid(child, &st, 0));
    int all_seen = 1;
    for (int i = 0; i < NCONN; i++)
        if (seen[i] != 1)
            all_seen = 0;
    fprintf(stderr, "emfile: EMFILE %d times, at most %d held\n", emfile_seen, max_held);
    printf("accept saw EMFILE: %s\n", yesno(emfile_seen > 0));
    printf("held connections never exceeded the free descriptors: %s\n",
           yesno(max_held <= free_slots));
    if (served == NCONN && all_seen)
        printf("recovered: all %d connections served\n", NCONN);
    else
        printf("recovered: %d of %d connections served\n", served, NCONN);
    printf("client process: %s\n",
           (WIFEXITED(st) && WEXITSTATUS(st) == 0) ? "ok" : "failed");
    return 0;
}
