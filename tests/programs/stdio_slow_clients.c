// fibershim-carriers: 1 2
/* A thread-per-connection line server written with stdio on sockets:
 * each connection thread reads with fgets from fdopen(fd, "r") and answers
 * with fprintf+fflush on fdopen(dup(fd), "w").
 *
 * 200 slow clients connect first and send half a line each, then stall
 * until main releases them; their 200 server threads are all inside fgets,
 * waiting for the rest of the line. Only then do 20 fast clients connect
 * and exchange 10 lines each. The fast clients must all finish while every
 * slow client is still stalled mid-line (main releases the slow ones only
 * after joining the fast ones): with kernel threads this always holds; if
 * a slow server thread's fgets held a carrier, the fast clients' server
 * threads would never run and the program would hang (its alarm fails it).
 * Then the slow clients send the rest of their line and each must get its
 * whole line echoed; every server thread ends on EOF and closes both of
 * its streams. */
#include "common.h"
#include <stdatomic.h>

#define NSLOW 200
#define NFAST 20
#define NLINES 10
#define STACK (64 * 1024)

static int port, listen_fd;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int reading;   /* server threads that have entered their first fgets */
static int slow_sent; /* slow clients that sent half a line */
static int released;  /* main let the slow clients finish their line */
static atomic_int slow_done, eof_threads, echoed_lines;

static void bump(int *v)
{
    pthread_mutex_lock(&mu);
    (*v)++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void wait_for(int *v, int n)
{
    pthread_mutex_lock(&mu);
    while (*v < n)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

/* ---- server ---- */

static void *conn_thread(void *arg)
{
    int fd = (int)(intptr_t)arg;
    FILE *in = fdopen(fd, "r");
    FILE *out = fdopen((int)CHECK_SYS(dup(fd)), "w");
    if (!in || !out)
        FAIL("fdopen: %s", errname(errno));
    char line[256];
    bump(&reading);
    while (fgets(line, sizeof line, in)) {
        if (fprintf(out, "echo:%s", line) < 0 || fflush(out) != 0)
            FAIL("fprintf/fflush: %s", errname(errno));
        atomic_fetch_add(&echoed_lines, 1);
    }
    if (!feof(in) || ferror(in))
        FAIL("fgets ended without EOF: %s", errname(errno));
    if (fclose(in) != 0 || fclose(out) != 0)
        FAIL("fclose: %s", errname(errno));
    atomic_fetch_add(&eof_threads, 1);
    return NULL;
}

static void *acceptor(void *arg)
{
    (void)arg;
    for (int i = 0; i < NSLOW + NFAST; i++) {
        int fd = (int)CHECK_SYS(accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC));
        pthread_t t;
        int rc = create_thread(&t, STACK, conn_thread, (void *)(intptr_t)fd);
        if (rc)
            FAIL("pthread_create: %s", errname(rc));
        pthread_detach(t);
    }
    return NULL;
}

/* ---- clients ---- */

static void *slow_client(void *arg)
{
    int id = (int)(intptr_t)arg;
    int fd = connect_local(port);
    FILE *in = fdopen(fd, "r"), *out = fdopen((int)CHECK_SYS(dup(fd)), "w");
    if (!in || !out)
        FAIL("fdopen: %s", errname(errno));
    fprintf(out, "slow-%d-first-half", id);
    if (fflush(out) != 0)
        FAIL("fflush: %s", errname(errno));
    bump(&slow_sent);
    wait_for(&released, 1);
    fprintf(out, "-second-half\n");
    if (fflush(out) != 0)
        FAIL("fflush: %s", errname(errno));
    char want[128], got[256];
    snprintf(want, sizeof want, "echo:slow-%d-first-half-second-half\n", id);
    if (!fgets(got, sizeof got, in) || strcmp(got, want) != 0)
        FAIL("slow client %d got \"%s\"", id, got);
    fclose(out);
    fclose(in);
    atomic_fetch_add(&slow_done, 1);
    return NULL;
}

static void *fast_client(void *arg)
{
    int id = (int)(intptr_t)arg;
    int fd = connect_local(port);
    FILE *in = fdopen(fd, "r"), *out = fdopen((int)CHECK_SYS(dup(fd)), "w");
    if (!in || !out)
        FAIL("fdopen: %s", errname(errno));
    for (int i = 0; i < NLINES; i++) {
        char want[128], got[256];
        fprintf(out, "fast-%d-line-%d\n", id, i);
        if (fflush(out) != 0)
            FAIL("fflush: %s", errname(errno));
        snprintf(want, sizeof want, "echo:fast-%d-line-%d\n", id, i);
        if (!fgets(got, sizeof got, in) || strcmp(got, want) != 0)
            FAIL("fast client %d line %d: got \"%s\"", id, i, got);
    }
    fclose(out);
    fclose(in);
    return NULL;
}

int main(void)
{
    tp_setup(120);
    raise_nofile();
    listen_fd = listen_local(NSLOW + NFAST, &port);
    pthread_t acc, slow[NSLOW], fast[NFAST];
    CHECK_SYS(pthread_create(&acc, NULL, acceptor, NULL));

    for (int i = 0; i < NSLOW; i++)
        if (create_thread(&slow[i], STACK, slow_client, (void *)(intptr_t)i))
            FAIL("pthread_create");
    wait_for(&slow_sent, NSLOW);
    wait_for(&reading, NSLOW);
    printf("slow clients stalled mid-line: %d, server threads in fgets: %d\n", NSLOW, NSLOW);
    fflush(stdout);

    for (int i = 0; i < NFAST; i++)
        if (create_thread(&fast[i], STACK, fast_client, (void *)(intptr_t)i))
            FAIL("pthread_create");
    for (int i = 0; i < NFAST; i++)
        pthread_join(fast[i], NULL);
    printf("fast clients done: %d x %d lines, slow clients finished meanwhile: %d\n", NFAST, NLINES,
           atomic_load(&slow_done));
    fflush(stdout);

    pthread_mutex_lock(&mu);
    released = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < NSLOW; i++)
        pthread_join(slow[i], NULL);
    pthread_join(acc, NULL);
    while (atomic_load(&eof_threads) < NSLOW + NFAST)
        sleep_ms(1);
    printf("slow clients echoed whole lines: %d\n", atomic_load(&slow_done));
    printf("server threads ended on EOF: %d, lines echoed: %d\n", atomic_load(&eof_threads),
           atomic_load(&echoed_lines));
    close(listen_fd);
    return 0;
}
