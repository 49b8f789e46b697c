// fibershim-carriers: 1 2
/* sigaltstack is per thread. Each thread below sets its own alternate
 * signal stack (or none), and its SA_ONSTACK handler must run on it: when
 * the thread is blocked in sem_wait (two such threads at once, so that
 * one carrier runs both), when it spins (no system call), and for a
 * process-directed kill. Inside the handler sigaltstack reports
 * SS_ONSTACK, refuses a change with EPERM, and uc_stack names the
 * thread's stack; a nested SA_ONSTACK handler runs further down the same
 * stack. A thread without one sees SS_DISABLE and runs its handler on its
 * own stack. The kernel's checks (ENOMEM, EINVAL), SS_DISABLE, and the
 * restore at sigreturn of a setting changed inside a handler that did not
 * run on it. */
#include "common.h"

#include <semaphore.h>
#include <stdatomic.h>
#include <ucontext.h>

#define ALT (64 * 1024)
static char alts[6][ALT];

struct seen {
    int ran, on_alt, flags, eperm, uc_names, nested_on_alt, nested_below;
};

static __thread char *my_alt; /* this thread's alternate stack, or NULL */
static __thread int my_parks;  /* its handler blocks until released */
static sem_t in_handler, release_handler;
static __thread struct seen *my_seen;
static __thread volatile char *volatile outer_local;
static __thread volatile int nested_ran, nested_on, nested_below;

static int on(const char *alt, const volatile void *p)
{
    return alt && (const char *)p >= alt && (const char *)p < alt + ALT;
}

static void nested(int sig)
{
    (void)sig;
    volatile char local = 0;
    nested_ran = 1;
    nested_on = on(my_alt, &local);
    nested_below = outer_local && (const volatile char *)&local < outer_local;
}

static void handler(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    (void)si;
    int e = errno;
    volatile char local = 0;
    ucontext_t *uc = ucv;
    struct seen *s = my_seen;
    s->ran = 1;
    s->on_alt = on(my_alt, &local);
    stack_t o, n = {.ss_sp = alts[5], .ss_size = ALT};
    CHECK_SYS(sigaltstack(NULL, &o));
    s->flags = o.ss_flags;
    errno = 0;
    s->eperm = sigaltstack(&n, NULL) == -1 && errno == EPERM;
    s->uc_names = my_alt ? uc->uc_stack.ss_sp == my_alt && uc->uc_stack.ss_size == ALT
                         : uc->uc_stack.ss_size == 0 || (uc->uc_stack.ss_flags & SS_DISABLE);
    if (my_parks) {
        /* Blocks on its alternate stack while another thread's handler
         * runs on that one's; then goes on, still on its own. */
        CHECK_SYS(sem_post(&in_handler));
        while (sem_wait(&release_handler) != 0)
            CHECK(errno == EINTR);
        s->on_alt = s->on_alt && on(my_alt, &local);
        CHECK_SYS(sigaltstack(NULL, &o));
        s->flags = o.ss_flags == s->flags ? s->flags : -1;
    }
    if (my_alt) {
        outer_local = &local;
        raise(SIGUSR2);
        outer_local = NULL;
        s->nested_on_alt = nested_ran && nested_on;
        s->nested_below = nested_ran && nested_below;
    }
    errno = e;
}

static void print(const char *what, const struct seen *s, int with_alt)
{
    printf("%s: ran %s, on its alternate stack %s, flags %s, change refused with EPERM %s, "
           "uc_stack names its setting %s",
           what, yesno(s->ran), yesno(s->on_alt),
           s->flags == SS_ONSTACK ? "SS_ONSTACK" : s->flags == SS_DISABLE ? "SS_DISABLE"
           : s->flags == 0 ? "0" : "other",
           yesno(s->eperm), yesno(s->uc_names));
    if (with_alt)
        printf(", nested handler on it %s, below %s", yesno(s->nested_on_alt),
               yesno(s->nested_below));
    printf("\n");
}

struct job {
    int alt;       /* index into alts, or -1 */
    int spin;      /* spin instead of sem_wait */
    int parks;     /* its handler blocks */
    sem_t ready, go;
    struct seen seen;
    atomic_int done;
};

static void unblock_usr1(void)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    CHECK_RC(pthread_sigmask(SIG_UNBLOCK, &s, NULL));
}

static void *worker(void *arg)
{
    struct job *j = arg;
    my_seen = &j->seen;
    my_parks = j->parks;
    if (j->alt >= 0) {
        my_alt = alts[j->alt];
        stack_t ss = {.ss_sp = my_alt, .ss_size = ALT};
        CHECK_SYS(sigaltstack(&ss, NULL));
    }
    unblock_usr1();
    sem_post(&j->ready);
    if (j->spin) {
        while (!*(volatile int *)&j->seen.ran)
            ;
    } else {
        /* Interrupted, or posted by main once the handler ran (the
         * signal may come before the wait starts). */
        (void)sem_wait(&j->go);
    }
    return NULL;
}

static void start(struct job *j, pthread_t *t, int alt, int spin, int parks)
{
    memset(j, 0, sizeof *j);
    j->alt = alt;
    j->spin = spin;
    j->parks = parks;
    CHECK_SYS(sem_init(&j->ready, 0, 0));
    CHECK_SYS(sem_init(&j->go, 0, 0));
    CHECK_RC(pthread_create(t, NULL, worker, j));
    while (sem_wait(&j->ready) != 0)
        CHECK(errno == EINTR);
}

static void finish(struct job *j, pthread_t t)
{
    while (!*(volatile int *)&j->seen.ran)
        usleep(1000);
    CHECK_SYS(sem_post(&j->go));
    CHECK_RC(pthread_join(t, NULL));
}

static void *errors(void *arg)
{
    (void)arg;
    stack_t o, ss;
    CHECK_SYS(sigaltstack(NULL, &o));
    printf("new thread: sp NULL %s, size %zu, flags %s\n", yesno(o.ss_sp == NULL), o.ss_size,
           o.ss_flags == SS_DISABLE ? "SS_DISABLE" : "other");
    ss = (stack_t){.ss_sp = alts[4], .ss_size = 1000};
    EXPECT_ERRNO(sigaltstack(&ss, NULL), ENOMEM);
    ss = (stack_t){.ss_sp = alts[4], .ss_size = ALT, .ss_flags = 12345};
    EXPECT_ERRNO(sigaltstack(&ss, NULL), EINVAL);
    CHECK_SYS(sigaltstack(NULL, &o));
    printf("after the errors: still disabled %s\n", yesno(o.ss_flags == SS_DISABLE));
    ss = (stack_t){.ss_sp = alts[4], .ss_size = ALT};
    CHECK_SYS(sigaltstack(&ss, &o));
    printf("set: old disabled %s\n", yesno(o.ss_flags == SS_DISABLE));
    CHECK_SYS(sigaltstack(NULL, &o));
    printf("get: same sp %s, size %zu, flags %d\n", yesno(o.ss_sp == alts[4]), o.ss_size,
           o.ss_flags);
    ss.ss_flags = SS_DISABLE;
    CHECK_SYS(sigaltstack(&ss, &o));
    printf("disable: old was it %s\n", yesno(o.ss_sp == alts[4] && o.ss_flags == 0));
    CHECK_SYS(sigaltstack(NULL, &o));
    printf("get: sp NULL %s, size %zu, flags %s\n", yesno(o.ss_sp == NULL), o.ss_size,
           o.ss_flags == SS_DISABLE ? "SS_DISABLE" : "other");
    return NULL;
}

/* A handler, not on an alternate stack, that sets one: sigreturn puts
 * back the setting the frame saved (none). */
static __thread int set_in_handler_rc = -2;
static void sets_one(int sig)
{
    (void)sig;
    stack_t ss = {.ss_sp = alts[4], .ss_size = ALT};
    set_in_handler_rc = sigaltstack(&ss, NULL);
}

static void *restore_at_return(void *arg)
{
    (void)arg;
    raise(SIGURG);
    stack_t o;
    CHECK_SYS(sigaltstack(NULL, &o));
    printf("set inside a handler: call %s, after the handler disabled again %s\n",
           set_in_handler_rc == 0 ? "worked" : "failed", yesno(o.ss_flags == SS_DISABLE));
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGUSR1, &sa, NULL));
    sa.sa_handler = nested;
    sa.sa_flags = SA_ONSTACK;
    CHECK_SYS(sigaction(SIGUSR2, &sa, NULL));
    sa.sa_handler = sets_one;
    sa.sa_flags = 0;
    CHECK_SYS(sigaction(SIGURG, &sa, NULL));
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    CHECK_RC(pthread_sigmask(SIG_BLOCK, &s, NULL));

    pthread_t t;
    CHECK_RC(pthread_create(&t, NULL, errors, NULL));
    CHECK_RC(pthread_join(t, NULL));
    CHECK_RC(pthread_create(&t, NULL, restore_at_return, NULL));
    CHECK_RC(pthread_join(t, NULL));

    /* Two blocked threads with stacks of their own, and one without. */
    struct job a, b, c;
    pthread_t ta, tb, tc;
    start(&a, &ta, 0, 0, 0);
    start(&b, &tb, 1, 0, 0);
    start(&c, &tc, -1, 0, 0);
    struct job *jobs[] = {&a, &b, &c};
    pthread_t ts[] = {ta, tb, tc};
    const char *names[] = {"blocked thread A", "blocked thread B", "blocked thread without"};
    for (int i = 0; i < 3; i++) {
        CHECK_RC(pthread_kill(ts[i], SIGUSR1));
        finish(jobs[i], ts[i]);
        print(names[i], &jobs[i]->seen, i < 2);
    }

    /* A handler that blocks on its alternate stack, while another
     * thread's runs on its own. */
    CHECK_SYS(sem_init(&in_handler, 0, 0));
    CHECK_SYS(sem_init(&release_handler, 0, 0));
    start(&a, &ta, 0, 0, 1);
    start(&b, &tb, 1, 0, 0);
    CHECK_RC(pthread_kill(ta, SIGUSR1));
    while (sem_wait(&in_handler) != 0)
        CHECK(errno == EINTR);
    CHECK_RC(pthread_kill(tb, SIGUSR1));
    finish(&b, tb);
    CHECK_SYS(sem_post(&release_handler));
    finish(&a, ta);
    print("thread signalled while another blocks in its handler", &b.seen, 1);
    print("handler that blocked", &a.seen, 1);

    /* A spinning thread (no system call). */
    start(&a, &ta, 2, 1, 0);
    usleep(20000);
    CHECK_RC(pthread_kill(ta, SIGUSR1));
    CHECK_RC(pthread_join(ta, NULL));
    print("spinning thread", &a.seen, 1);

    /* A process-directed signal, taken by the only thread that does not
     * block it. */
    start(&a, &ta, 3, 0, 0);
    CHECK_SYS(kill(getpid(), SIGUSR1));
    finish(&a, ta);
    print("kill", &a.seen, 1);
    return 0;
}
