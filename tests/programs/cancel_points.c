// fibershim-carriers: 1 2
/* pthread_cancel of a thread blocked in each cancellation point (POSIX's
 * list, as glibc 2.36 implements it): the blocked call never returns, the
 * thread's cleanup handler runs, pthread_join reports PTHREAD_CANCELED.
 * A pthread_cond_wait that is cancelled reacquires its mutex before the
 * cleanup handler runs. Then the calls that do not block here are checked
 * with the cancel already pending at their entry (the thread disabled
 * cancellation, was cancelled, enabled it again and made the call). A
 * non-cancellation point (pthread_mutex_lock, sem_trywait) with a cancel
 * pending returns. Handed-off calls (waitpid, a FIFO open, an F_SETLKW wait)
 * are among the blocked ones. */
#include "common.h" /* FAIL */

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* What the blocked calls wait on; set up once by main. */
static int pipe_empty[2];             /* nothing is ever written */
static int pipe_full[2];              /* its buffer is full */
static int sock_empty[2];             /* a socketpair nothing is sent on */
static int sock_full[2];              /* [0]'s send buffer is full */
static int udp_empty;                 /* a bound UDP socket nothing is sent to */
static int listener;                  /* a TCP listener nobody connects to */
static struct sockaddr_in backlogged; /* a listener whose backlog is full */
static struct sockaddr_un unix_full;  /* the same, a UNIX-domain one */
static int ep;                        /* an epoll set holding pipe_empty[0] */
static pthread_mutex_t mu;            /* error-checking: unlock tells the owner */
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static sem_t sem;         /* always 0 */
static pthread_t sleeper; /* never ends while the join cases run */
static pid_t child;       /* never ends while the wait cases run */
static char fifo_path[64], file_path[64];
static int lock_fd; /* a file another process holds a lock on */
static pid_t locker;

static atomic_int ready, go;
static char cleanup_note[64];

static void cleanup(void *arg)
{
    const char *name = arg;
    snprintf(cleanup_note, sizeof cleanup_note, "cleanup(%s)", name);
}

static void cleanup_unlock(void *arg)
{
    /* 0 only if this thread holds the mutex (PTHREAD_MUTEX_ERRORCHECK). */
    int rc = pthread_mutex_unlock(&mu);
    snprintf(cleanup_note, sizeof cleanup_note, "cleanup(%s) mutex %s", (const char *)arg,
             rc == 0 ? "held" : strerror(rc));
}

static void close_fd(void *p)
{
    close(*(int *)p);
}

static void *block_forever(void *arg)
{
    (void)arg;
    char c;
    while (read(pipe_empty[0], &c, 1) != 0) /* until main closes the write end */
        ;
    return NULL;
}

static struct timespec far_future(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    ts.tv_sec += 1000;
    return ts;
}

/* One call that blocks forever here. Returns only if it did not block. */
static long call(const char *name)
{
    char buf[64];
    struct iovec iov = {buf, sizeof buf};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    struct mmsghdr mm = {.msg_hdr = mh};
    struct pollfd pfd = {pipe_empty[0], POLLIN, 0};
    struct epoll_event ev;
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(pipe_empty[0], &rs);
    struct timespec ts;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    siginfo_t si;
    int status;
    void *ret;
#define IS(n) (strcmp(name, n) == 0)
    if (IS("read"))
        return read(pipe_empty[0], buf, sizeof buf);
    if (IS("readv"))
        return readv(pipe_empty[0], &iov, 1);
    if (IS("write"))
        return write(pipe_full[1], buf, sizeof buf);
    if (IS("writev"))
        return writev(pipe_full[1], &iov, 1);
    if (IS("recv"))
        return recv(sock_empty[0], buf, sizeof buf, 0);
    if (IS("recvfrom"))
        return recvfrom(udp_empty, buf, sizeof buf, 0, NULL, NULL);
    if (IS("recvmsg"))
        return recvmsg(sock_empty[0], &mh, 0);
    if (IS("recvmmsg"))
        return recvmmsg(udp_empty, &mm, 1, 0, NULL);
    if (IS("send"))
        return send(sock_full[0], buf, sizeof buf, 0);
    if (IS("sendto"))
        return sendto(sock_full[0], buf, sizeof buf, 0, NULL, 0);
    if (IS("sendmsg"))
        return sendmsg(sock_full[0], &mh, 0);
    if (IS("sendmmsg"))
        return sendmmsg(sock_full[0], &mm, 1, 0);
    if (IS("accept"))
        return accept(listener, NULL, NULL);
    if (IS("accept4"))
        return accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (IS("connect")) {
        static int s;
        long r;
        s = socket(AF_INET, SOCK_STREAM, 0);
        pthread_cleanup_push(close_fd, &s);
        r = connect(s, (struct sockaddr *)&backlogged, sizeof backlogged);
        pthread_cleanup_pop(1);
        return r;
    }
    if (IS("connect_unix")) {
        static int s;
        long r;
        s = socket(AF_UNIX, SOCK_STREAM, 0);
        pthread_cleanup_push(close_fd, &s);
        r = connect(s, (struct sockaddr *)&unix_full, sizeof unix_full);
        pthread_cleanup_pop(1);
        return r;
    }
    if (IS("poll"))
        return poll(&pfd, 1, -1);
    if (IS("ppoll"))
        return ppoll(&pfd, 1, NULL, NULL);
    if (IS("select"))
        return select(pipe_empty[0] + 1, &rs, NULL, NULL, NULL);
    if (IS("pselect"))
        return pselect(pipe_empty[0] + 1, &rs, NULL, NULL, NULL, NULL);
    if (IS("epoll_wait"))
        return epoll_wait(ep, &ev, 1, -1);
    if (IS("epoll_pwait"))
        return epoll_pwait(ep, &ev, 1, -1, NULL);
    if (IS("sleep"))
        return sleep(1000);
    if (IS("usleep"))
        return usleep(999999);
    if (IS("nanosleep")) {
        ts = (struct timespec){1000, 0};
        return nanosleep(&ts, NULL);
    }
    if (IS("clock_nanosleep")) {
        ts = (struct timespec){1000, 0};
        return clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
    }
    if (IS("sem_wait"))
        return sem_wait(&sem);
    if (IS("sem_timedwait")) {
        ts = far_future(CLOCK_REALTIME);
        return sem_timedwait(&sem, &ts);
    }
    if (IS("sem_clockwait")) {
        ts = far_future(CLOCK_MONOTONIC);
        return sem_clockwait(&sem, CLOCK_MONOTONIC, &ts);
    }
    if (IS("pthread_join"))
        return pthread_join(sleeper, &ret);
    if (IS("pthread_timedjoin_np")) {
        ts = far_future(CLOCK_REALTIME);
        return pthread_timedjoin_np(sleeper, &ret, &ts);
    }
    if (IS("pthread_clockjoin_np")) {
        ts = far_future(CLOCK_MONOTONIC);
        return pthread_clockjoin_np(sleeper, &ret, CLOCK_MONOTONIC, &ts);
    }
    if (IS("sigwait")) {
        int sig;
        return sigwait(&set, &sig);
    }
    if (IS("sigwaitinfo"))
        return sigwaitinfo(&set, &si);
    if (IS("sigtimedwait")) {
        ts = (struct timespec){1000, 0};
        return sigtimedwait(&set, &si, &ts);
    }
    if (IS("sigsuspend"))
        return sigsuspend(&set); /* SIGUSR1 blocked, nothing else comes */
    if (IS("pause"))
        return pause();
    if (IS("waitpid"))
        return waitpid(child, &status, 0);
    if (IS("wait"))
        return wait(&status);
    if (IS("waitid"))
        return waitid(P_PID, (id_t)child, &si, WEXITED);
    if (IS("open_fifo"))
        return open(fifo_path, O_RDONLY); /* no writer */
    if (IS("fcntl_setlkw")) {
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        return fcntl(lock_fd, F_SETLKW, &fl);
    }
    /* At entry only: these do not block here. */
    if (IS("pread"))
        return pread(lock_fd, buf, 1, 0);
    if (IS("pwrite"))
        return pwrite(lock_fd, buf, 1, 0);
    if (IS("read_file"))
        return read(lock_fd, buf, 1);
    if (IS("open"))
        return open(file_path, O_RDONLY);
    if (IS("openat"))
        return openat(AT_FDCWD, file_path, O_RDONLY);
    if (IS("creat"))
        return creat(file_path, 0600);
    if (IS("close"))
        return close(dup(lock_fd)); /* leaks one fd when it acts: fine */
    if (IS("fsync"))
        return fsync(lock_fd);
    if (IS("fdatasync"))
        return fdatasync(lock_fd);
    if (IS("msync")) {
        void *p = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return msync(p, 4096, MS_ASYNC);
    }
    if (IS("poll0"))
        return poll(&pfd, 1, 0);
    if (IS("epoll_wait0"))
        return epoll_wait(ep, &ev, 1, 0);
    if (IS("waitpid_nohang"))
        return waitpid(child, &status, WNOHANG);
    if (IS("sleep0"))
        return sleep(0);
    if (IS("nanosleep0")) {
        ts = (struct timespec){0, 0};
        return nanosleep(&ts, NULL);
    }
    if (IS("sem_wait_available")) {
        sem_post(&sem);
        long r = sem_wait(&sem);
        return r;
    }
    if (IS("pthread_testcancel")) {
        pthread_testcancel();
        return 0;
    }
    /* Not cancellation points: they return with the cancel pending. */
    if (IS("pthread_mutex_lock")) {
        int r = pthread_mutex_lock(&mu);
        pthread_mutex_unlock(&mu);
        return r;
    }
    if (IS("sem_trywait"))
        return sem_trywait(&sem);
#undef IS
    FAIL("unknown case %s", name);
}

struct job {
    const char *name;
    bool at_entry; /* cancel pending before the call, not during it */
};

static void *worker(void *p)
{
    struct job *j = p;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (j->at_entry)
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    long r;
    pthread_cleanup_push(cleanup, (void *)j->name);
    atomic_store(&ready, 1);
    if (j->at_entry) {
        while (!atomic_load(&go))
            sched_yield();
        pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
    }
    r = call(j->name);
    pthread_cleanup_pop(0);
    return (void *)(r < 0 ? -1L : 1L); /* it returned */
}

static void *cond_worker(void *p)
{
    struct job *j = p;
    if (pthread_mutex_lock(&mu) != 0)
        FAIL("lock");
    pthread_cleanup_push(cleanup_unlock, (void *)j->name);
    atomic_store(&ready, 1);
    struct timespec ts;
    if (strcmp(j->name, "pthread_cond_wait") == 0) {
        for (;;)
            pthread_cond_wait(&cv, &mu);
    } else if (strcmp(j->name, "pthread_cond_timedwait") == 0) {
        ts = far_future(CLOCK_REALTIME);
        for (;;)
            pthread_cond_timedwait(&cv, &mu, &ts);
    } else {
        ts = far_future(CLOCK_MONOTONIC);
        for (;;)
            pthread_cond_clockwait(&cv, &mu, CLOCK_MONOTONIC, &ts);
    }
    pthread_cleanup_pop(0);
    return NULL;
}

static void run(const char *name, bool at_entry, bool is_cond)
{
    struct job j = {name, at_entry};
    atomic_store(&ready, 0);
    atomic_store(&go, 0);
    cleanup_note[0] = '\0';
    pthread_t t;
    if (pthread_create(&t, NULL, is_cond ? cond_worker : worker, &j) != 0)
        FAIL("create");
    while (!atomic_load(&ready))
        usleep(1000);
    if (!at_entry)
        usleep(20000); /* let it block (if it has not yet, it acts at entry) */
    if (pthread_cancel(t) != 0)
        FAIL("cancel");
    atomic_store(&go, 1);
    void *ret;
    if (pthread_join(t, &ret) != 0)
        FAIL("join %s", name);
    printf("%-22s %s %s\n", name,
           ret == PTHREAD_CANCELED ? "canceled"
           : ret == (void *)1L     ? "returned"
                                   : "failed",
           cleanup_note[0] ? cleanup_note : "no cleanup");
    fflush(stdout);
    if (is_cond) {
        /* The mutex was released by the handler: main can take it. */
        if (pthread_mutex_trylock(&mu) != 0)
            FAIL("mutex still held after %s", name);
        pthread_mutex_unlock(&mu);
    }
}

static void make_socket_full(int s)
{
    int fl = fcntl(s, F_GETFL);
    fcntl(s, F_SETFL, fl | O_NONBLOCK);
    char buf[4096] = {0};
    while (send(s, buf, sizeof buf, 0) > 0)
        ;
    fcntl(s, F_SETFL, fl);
}

static void setup(void)
{
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&mu, &ma);
    sem_init(&sem, 0, 0);
    if (pipe(pipe_empty) || pipe(pipe_full))
        FAIL("pipe");
    int fl = fcntl(pipe_full[1], F_GETFL);
    fcntl(pipe_full[1], F_SETFL, fl | O_NONBLOCK);
    char buf[4096] = {0};
    while (write(pipe_full[1], buf, sizeof buf) > 0)
        ;
    fcntl(pipe_full[1], F_SETFL, fl);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sock_empty) ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, sock_full))
        FAIL("socketpair");
    make_socket_full(sock_full[0]);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    udp_empty = socket(AF_INET, SOCK_DGRAM, 0);
    if (bind(udp_empty, (struct sockaddr *)&a, sizeof a))
        FAIL("bind udp");
    listener = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(listener, (struct sockaddr *)&a, sizeof a) || listen(listener, 8))
        FAIL("listen");
    /* A listener with backlog 0 and its queue filled: a new connect's SYN
     * is dropped, and a blocking connect waits for the retransmissions. */
    int bl = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(bl, (struct sockaddr *)&a, sizeof a) || listen(bl, 0) ||
        getsockname(bl, (struct sockaddr *)&backlogged, &al))
        FAIL("backlog listener");
    for (int i = 0; i < 4; i++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(c, (struct sockaddr *)&backlogged, sizeof backlogged);
    }
    usleep(50000);
    /* A UNIX-domain listener with its queue full: connect blocks. */
    int ul = socket(AF_UNIX, SOCK_STREAM, 0);
    unix_full.sun_family = AF_UNIX;
    snprintf(unix_full.sun_path, sizeof unix_full.sun_path, "/tmp/cancel_points.%d.sock",
             (int)getpid());
    if (bind(ul, (struct sockaddr *)&unix_full, sizeof unix_full) || listen(ul, 0))
        FAIL("unix listener");
    for (;;) {
        int c = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (connect(c, (struct sockaddr *)&unix_full, sizeof unix_full) != 0)
            break;
    }
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, pipe_empty[0], &ev);
    snprintf(fifo_path, sizeof fifo_path, "/tmp/cancel_points.%d.fifo", (int)getpid());
    snprintf(file_path, sizeof file_path, "/tmp/cancel_points.%d.file", (int)getpid());
    if (mkfifo(fifo_path, 0600))
        FAIL("mkfifo");
    lock_fd = open(file_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (lock_fd < 0 || write(lock_fd, "x", 1) != 1)
        FAIL("file");
    /* Another process holds a write lock on the file for good. */
    int lp[2];
    if (pipe(lp))
        FAIL("pipe");
    fflush(stdout);
    locker = fork();
    if (locker == 0) {
        struct flock fl2 = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        fcntl(lock_fd, F_SETLK, &fl2);
        if (write(lp[1], "l", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    char c;
    if (read(lp[0], &c, 1) != 1)
        FAIL("locker");
    close(lp[0]);
    close(lp[1]);
    child = fork();
    if (child == 0) {
        for (;;)
            pause();
    }
    if (pthread_create(&sleeper, NULL, block_forever, NULL))
        FAIL("create");
}

int main(void)
{
    setup();
    static const char *const blocking[] = {"read",
                                           "readv",
                                           "write",
                                           "writev",
                                           "recv",
                                           "recvfrom",
                                           "recvmsg",
                                           "recvmmsg",
                                           "send",
                                           "sendto",
                                           "sendmsg",
                                           "sendmmsg",
                                           "accept",
                                           "accept4",
                                           "connect",
                                           "connect_unix",
                                           "poll",
                                           "ppoll",
                                           "select",
                                           "pselect",
                                           "epoll_wait",
                                           "epoll_pwait",
                                           "sleep",
                                           "usleep",
                                           "nanosleep",
                                           "clock_nanosleep",
                                           "sem_wait",
                                           "sem_timedwait",
                                           "sem_clockwait",
                                           "pthread_join",
                                           "pthread_timedjoin_np",
                                           "pthread_clockjoin_np",
                                           "sigwait",
                                           "sigwaitinfo",
                                           "sigtimedwait",
                                           "sigsuspend",
                                           "pause",
                                           "waitpid",
                                           "wait",
                                           "waitid",
                                           "open_fifo",
                                           "fcntl_setlkw"};
    static const char *const conds[] = {"pthread_cond_wait", "pthread_cond_timedwait",
                                        "pthread_cond_clockwait"};
    static const char *const entry[] = {"read",
                                        "write",
                                        "recv",
                                        "send",
                                        "accept",
                                        "poll",
                                        "poll0",
                                        "epoll_wait0",
                                        "sleep0",
                                        "nanosleep0",
                                        "sem_wait",
                                        "sem_wait_available",
                                        "pthread_join",
                                        "sigwait",
                                        "pause",
                                        "waitpid",
                                        "waitpid_nohang",
                                        "pread",
                                        "pwrite",
                                        "read_file",
                                        "open",
                                        "openat",
                                        "creat",
                                        "close",
                                        "fsync",
                                        "fdatasync",
                                        "msync",
                                        "pthread_testcancel",
                                        "pthread_mutex_lock",
                                        "sem_trywait"};
    printf("-- cancelled while blocked\n");
    for (size_t i = 0; i < sizeof blocking / sizeof *blocking; i++)
        run(blocking[i], false, false);
    for (size_t i = 0; i < sizeof conds / sizeof *conds; i++)
        run(conds[i], false, true);
    printf("-- cancel pending at entry\n");
    for (size_t i = 0; i < sizeof entry / sizeof *entry; i++)
        run(entry[i], true, false);
    /* Everything still works after: the objects were left as they were. */
    kill(child, SIGKILL);
    kill(locker, SIGKILL);
    int st;
    if (waitpid(child, &st, 0) != child || !WIFSIGNALED(st))
        FAIL("child");
    if (waitpid(locker, &st, 0) != locker)
        FAIL("locker");
    close(pipe_empty[1]); /* the children had it too */
    if (pthread_join(sleeper, NULL) != 0)
        FAIL("join sleeper");
    unlink(fifo_path);
    unlink(unix_full.sun_path);
    unlink(file_path);
    printf("done\n");
    return 0;
}
