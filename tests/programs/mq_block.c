// fibershim-carriers: 1 2
/* POSIX message queues between threads: a full queue blocks mq_send, an
 * empty one mq_receive, and the timed forms end with ETIMEDOUT at their
 * CLOCK_REALTIME deadline. A queue opened O_NONBLOCK gives EAGAIN; a bad
 * timeout EINVAL even when the call would not wait (the kernel checks it
 * at entry). A handler without SA_RESTART ends a blocked call with EINTR;
 * with SA_RESTART the call goes on. Then 8 producers and 8 consumers pass
 * 20,000 messages through a queue of 4. The shim runs this with one
 * carrier and no spare carriers: a queue call that blocked its carrier
 * would stop every thread (the open POSIX suite's mq_timedsend/12-1:
 * the signal never ended the call). */
#include "common.h"

#include <mqueue.h>

static char qname[64];
static mqd_t q;

static mqd_t open_queue(long maxmsg, int extra_flags)
{
    struct mq_attr a = {.mq_maxmsg = maxmsg, .mq_msgsize = 16};
    mq_unlink(qname);
    mqd_t m = mq_open(qname, O_CREAT | O_EXCL | O_RDWR | extra_flags, 0600, &a);
    if (m == (mqd_t)-1 && (errno == ENOSYS || errno == EACCES)) {
        printf("no message queues here\n");
        exit(77);
    }
    CHECK(m != (mqd_t)-1);
    return m;
}

static struct timespec in_ms(int ms)
{
    return ns_to_ts(clock_ns(CLOCK_REALTIME) + (int64_t)ms * 1000000);
}

static void *send_later(void *p)
{
    usleep(50000);
    CHECK_SYS(mq_send(q, (const char *)p, strlen(p), 3));
    return NULL;
}

static void *receive_later(void *p)
{
    (void)p;
    usleep(50000);
    char b[16];
    CHECK_SYS(mq_receive(q, b, sizeof b, NULL));
    return NULL;
}

static volatile int handled;
static void on_usr1(int sig)
{
    (void)sig;
    handled++;
}

struct blocked {
    int send;
    int rc, err;
    ssize_t n;
    char buf[16];
};

static void *blocked_call(void *p)
{
    struct blocked *b = p;
    errno = 0;
    if (b->send)
        b->rc = mq_send(q, "x", 1, 0);
    else
        b->n = b->rc = (int)mq_receive(q, b->buf, sizeof b->buf, NULL);
    b->err = errno;
    return NULL;
}

/* A thread blocks in a queue call; a signal comes; with restart, a
 * message (or room) then comes too. */
static void interrupt_case(int send, int restart)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = restart ? SA_RESTART : 0;
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
    q = open_queue(1, 0);
    if (send)
        CHECK_SYS(mq_send(q, "full", 4, 0));
    handled = 0;
    struct blocked b = {.send = send};
    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, blocked_call, &b));
    usleep(50000);
    CHECK_RC(pthread_kill(t, SIGUSR1));
    usleep(50000);
    if (restart) {
        char tmp[16];
        if (send)
            CHECK_SYS(mq_receive(q, tmp, sizeof tmp, NULL)); /* room */
        else
            CHECK_SYS(mq_send(q, "late", 4, 0));
    }
    CHECK_RC(pthread_join(t, NULL));
    printf("%s, handler %s SA_RESTART: handled %d, returned %d %s\n",
           send ? "mq_send on a full queue" : "mq_receive on an empty queue",
           restart ? "with" : "without", handled, b.rc, b.rc < 0 ? errname(b.err) : "ok");
    CHECK_SYS(mq_close(q));
}

#define NPROD 8
#define NCONS 8
#define PER 2500

static _Atomic long sum_in, sum_out;

static void *producer(void *p)
{
    long id = (long)p;
    for (long i = 0; i < PER; i++) {
        long v = id * PER + i + 1;
        CHECK_SYS(mq_send(q, (const char *)&v, sizeof v, (unsigned)(v % 5)));
        sum_in += v;
    }
    return NULL;
}

static void *consumer(void *p)
{
    (void)p;
    for (long i = 0; i < NPROD * PER / NCONS; i++) {
        long v;
        ssize_t n = CHECK_SYS(mq_receive(q, (char *)&v, 16, NULL));
        CHECK(n == sizeof v);
        sum_out += v;
    }
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    snprintf(qname, sizeof qname, "/fibershim-mq-%d", (int)getpid());

    q = open_queue(2, 0);
    pthread_t t;
    char b[16];
    unsigned prio = 0;
    CHECK_RC(pthread_create(&t, NULL, send_later, "hello"));
    ssize_t n = CHECK_SYS(mq_receive(q, b, sizeof b, &prio));
    CHECK_RC(pthread_join(t, NULL));
    printf("mq_receive waited for a sender: %zd bytes \"%.*s\", priority %u\n", n, (int)n, b,
           prio);

    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    struct timespec dl = in_ms(60);
    EXPECT_ERRNO(mq_timedreceive(q, b, sizeof b, NULL, &dl), ETIMEDOUT);
    printf("mq_timedreceive on an empty queue: ETIMEDOUT, not before its deadline: %s\n",
           yesno(clock_ns(CLOCK_MONOTONIC) - t0 >= 55000000));

    CHECK_SYS(mq_send(q, "a", 1, 0));
    CHECK_SYS(mq_send(q, "b", 1, 0));
    t0 = clock_ns(CLOCK_MONOTONIC);
    dl = in_ms(60);
    EXPECT_ERRNO(mq_timedsend(q, "c", 1, 0, &dl), ETIMEDOUT);
    printf("mq_timedsend on a full queue: ETIMEDOUT, not before its deadline: %s\n",
           yesno(clock_ns(CLOCK_MONOTONIC) - t0 >= 55000000));
    CHECK_RC(pthread_create(&t, NULL, receive_later, NULL));
    dl = in_ms(5000);
    CHECK_SYS(mq_timedsend(q, "c", 1, 0, &dl));
    CHECK_RC(pthread_join(t, NULL));
    printf("mq_timedsend waited for room: yes\n");

    struct timespec bad = {0, 1000000000};
    EXPECT_ERRNO(mq_timedreceive(q, b, sizeof b, NULL, &bad), EINVAL);
    EXPECT_ERRNO(mq_timedsend(q, "d", 1, 0, &bad), EINVAL);
    printf("a bad timeout: EINVAL, also with a message queued\n");
    EXPECT_ERRNO(mq_send(q, "this is too long for it", 23, 0), EMSGSIZE);
    EXPECT_ERRNO(mq_receive(q, b, 4, NULL), EMSGSIZE);
    printf("EMSGSIZE both ways\n");
    CHECK_SYS(mq_close(q));
    EXPECT_ERRNO(mq_receive(q, b, sizeof b, NULL), EBADF);
    printf("after mq_close: EBADF\n");

    q = open_queue(1, O_NONBLOCK);
    EXPECT_ERRNO(mq_receive(q, b, sizeof b, NULL), EAGAIN);
    CHECK_SYS(mq_send(q, "x", 1, 0));
    EXPECT_ERRNO(mq_send(q, "y", 1, 0), EAGAIN);
    struct mq_attr a = {0}, old;
    CHECK_SYS(mq_setattr(q, &a, &old)); /* blocking from now on */
    CHECK_RC(pthread_create(&t, NULL, receive_later, NULL));
    CHECK_SYS(mq_send(q, "y", 1, 0));
    CHECK_RC(pthread_join(t, NULL));
    printf("O_NONBLOCK: EAGAIN both ways; after mq_setattr it blocks: yes\n");
    CHECK_SYS(mq_close(q));

    interrupt_case(0, 0);
    interrupt_case(0, 1);
    interrupt_case(1, 0);
    interrupt_case(1, 1);

    q = open_queue(4, 0);
    pthread_t ps[NPROD], cs[NCONS];
    for (long i = 0; i < NCONS; i++)
        CHECK_RC(pthread_create(&cs[i], NULL, consumer, NULL));
    for (long i = 0; i < NPROD; i++)
        CHECK_RC(pthread_create(&ps[i], NULL, producer, (void *)i));
    for (int i = 0; i < NPROD; i++)
        CHECK_RC(pthread_join(ps[i], NULL));
    for (int i = 0; i < NCONS; i++)
        CHECK_RC(pthread_join(cs[i], NULL));
    printf("%d producers, %d consumers, %d messages through 4 slots: sums equal %s\n", NPROD,
           NCONS, NPROD * PER, yesno(sum_in == sum_out));
    CHECK_SYS(mq_close(q));
    CHECK_SYS(mq_unlink(qname));
    return 0;
}
