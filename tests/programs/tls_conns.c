/* A thread-per-connection server keeps its per-connection state in
 * __thread variables, as real servers do (a current-session pointer, a
 * scratch buffer, a counter): 1,000 connection threads each set theirs,
 * then read 5 requests, each a blocking read that waits for the client,
 * and check after every read that their __thread state is still their own.
 * One client thread writes the requests round by round, so that every
 * connection thread is blocked while the others run. */
// fibershim-carriers: 1 2
#include "common.h"
#include <stdatomic.h>

#define NCONN 1000
#define NROUNDS 5

struct session {
    int id;
    long requests;
};

static __thread struct session *cur_session; /* like MariaDB's current_thd */
static __thread char scratch[64];            /* like a per-thread buffer */
static __thread long served;
static int srv_fd[NCONN], cli_fd[NCONN];
static atomic_int ready;

static void *conn_thread(void *arg)
{
    int id = (int)(long)arg;
    struct session s = {.id = id};
    if (cur_session || served || scratch[0])
        FAIL("connection %d: __thread state not initial", id);
    cur_session = &s;
    snprintf(scratch, sizeof scratch, "conn-%d", id);
    atomic_fetch_add(&ready, 1);
    for (int r = 0; r < NROUNDS; r++) {
        int v;
        if (read_full(srv_fd[id], &v, sizeof v) != sizeof v)
            FAIL("connection %d: short read", id);
        if (v != id * 100 + r)
            FAIL("connection %d: request %d is %d", id, r, v);
        char want[64];
        snprintf(want, sizeof want, "conn-%d", id);
        if (cur_session != &s || cur_session->id != id || strcmp(scratch, want) != 0 || served != r)
            FAIL("connection %d: __thread state changed across a blocking read (round %d)", id, r);
        s.requests++;
        served++;
    }
    close(srv_fd[id]);
    return (void *)served;
}

int main(void)
{
    tp_setup(120);
    raise_nofile();
    for (int i = 0; i < NCONN; i++) {
        int sv[2];
        CHECK_SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
        srv_fd[i] = sv[0];
        cli_fd[i] = sv[1];
    }
    pthread_attr_t a;
    CHECK_RC(pthread_attr_init(&a));
    CHECK_RC(pthread_attr_setstacksize(&a, 64 * 1024));
    pthread_t tt[NCONN];
    for (long i = 0; i < NCONN; i++)
        CHECK_RC(pthread_create(&tt[i], &a, conn_thread, (void *)i));
    while (atomic_load(&ready) < NCONN)
        sleep_ms(1);
    /* The client: a round at a time, every connection in turn. */
    for (int r = 0; r < NROUNDS; r++) {
        for (int i = 0; i < NCONN; i++) {
            int v = i * 100 + r;
            write_all(cli_fd[i], &v, sizeof v);
        }
        sleep_ms(2);
    }
    long total = 0;
    for (int i = 0; i < NCONN; i++) {
        void *ret;
        CHECK_RC(pthread_join(tt[i], &ret));
        total += (long)ret;
        close(cli_fd[i]);
    }
    printf("%d connection threads, %d blocking reads each: requests served %ld (expected %d), "
           "__thread state kept by every thread: yes\n",
           NCONN, NROUNDS, total, NCONN * NROUNDS);
    printf("main's __thread state untouched: %s\n",
           yesno(cur_session == NULL && served == 0 && scratch[0] == 0));
    printf("tls_conns: ok\n");
    return 0;
}
