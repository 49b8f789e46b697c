// fibershim-carriers: 1 2
/* The stack pthread_getattr_np reports, [lo, hi), is exactly the usable
 * stack: its lowest byte is writable and every byte of the guard below it
 * faults.
 *  - default attributes (one-page guard): writing lo works; writing lo - 1
 *    and lo - 4096 (the guard's lowest byte) faults; the thread's locals
 *    lie inside [lo, hi).
 *  - a 256 KiB stack: size reported exactly; same probes.
 *  - a 64 KiB guard: lo - 1, lo - 60 KiB and lo - 64 KiB fault.
 *  - a 1 MiB guard: lo - 1, lo - 512 KiB and lo - 1 MiB fault.
 *  - a stack of the program's own (pthread_attr_setstack): reported
 *    exactly, guard 0.
 * A probe is a write under a SIGSEGV handler (installed by main before any
 * thread exists, run on an alternate stack each thread sets up) that
 * siglongjmps back. Each thread is created and joined alone. */
#include "common.h"
#include <setjmp.h>
#include <sys/mman.h>

#define ALTSTACK (64 * 1024)

/* The probe in progress: only one thread probes at a time. */
static sigjmp_buf *volatile probe_jb;
static char altstacks[8][ALTSTACK]; /* never freed: see probe_thread */
static int nthreads;

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)si;
    (void)uc;
    if (probe_jb)
        siglongjmp(*probe_jb, 1);
    signal(sig, SIG_DFL); /* not a probe: die of it */
}

/* 1 if writing one byte at p faults, 0 if it does not. */
static int faults(volatile char *p)
{
    sigjmp_buf jb;
    if (sigsetjmp(jb, 1) == 0) {
        probe_jb = &jb;
        *p = 1;
        probe_jb = NULL;
        return 0;
    }
    probe_jb = NULL;
    return 1;
}

struct probe {
    const char *what;
    size_t below[3]; /* offsets below lo to probe; 0 ends the list */
    void *lo;
    size_t size, guard;
    int inside, lo_ok, fault[3];
};

static void *probe_thread(void *arg)
{
    struct probe *p = arg;
    /* An alternate signal stack for the handler, as a thread that expects
     * to fault sets up; static, so it outlives the thread. */
    stack_t ss = {.ss_sp = altstacks[nthreads++ % 8], .ss_size = ALTSTACK};
    CHECK_SYS(sigaltstack(&ss, NULL));
    pthread_attr_t a;
    int local = 0;
    CHECK_RC(pthread_getattr_np(pthread_self(), &a));
    CHECK_RC(pthread_attr_getstack(&a, &p->lo, &p->size));
    CHECK_RC(pthread_attr_getguardsize(&a, &p->guard));
    CHECK_RC(pthread_attr_destroy(&a));
    char *lo = p->lo;
    p->inside = (char *)&local >= lo && (char *)&local < lo + p->size;
    p->lo_ok = !faults(lo);
    for (int i = 0; i < 3 && p->below[i]; i++)
        p->fault[i] = faults(lo - p->below[i]);
    ss.ss_flags = SS_DISABLE;
    CHECK_SYS(sigaltstack(&ss, NULL));
    return NULL;
}

static void run(struct probe *p, const pthread_attr_t *attr, size_t want_size, size_t want_guard)
{
    pthread_t t;
    CHECK_RC(pthread_create(&t, attr, probe_thread, p));
    CHECK_RC(pthread_join(t, NULL));
    printf("%s: ", p->what);
    if (want_size)
        printf("size == %zu KiB: %s, ", want_size / 1024, yesno(p->size == want_size));
    printf("guard == %zu KiB: %s, locals inside: %s, writing lo: %s", want_guard / 1024,
           yesno(p->guard == want_guard), yesno(p->inside), p->lo_ok ? "works" : "FAULTS");
    for (int i = 0; i < 3 && p->below[i]; i++)
        printf(", lo - %zu: %s", p->below[i], p->fault[i] ? "faults" : "DOES NOT FAULT");
    printf("\n");
}

int main(void)
{
    tp_setup(60);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    CHECK_SYS(sigaction(SIGSEGV, &sa, NULL));
    size_t page = (size_t)sysconf(_SC_PAGESIZE);

    struct probe d = {.what = "default attributes", .below = {1, page}};
    run(&d, NULL, 0, page);

    pthread_attr_t a;
    CHECK_RC(pthread_attr_init(&a));
    CHECK_RC(pthread_attr_setstacksize(&a, 256 * 1024));
    struct probe s = {.what = "256 KiB stack", .below = {1, page}};
    run(&s, &a, 256 * 1024, page);
    CHECK_RC(pthread_attr_destroy(&a));

    CHECK_RC(pthread_attr_init(&a));
    CHECK_RC(pthread_attr_setguardsize(&a, 64 * 1024));
    struct probe g = {.what = "64 KiB guard", .below = {1, 60 * 1024, 64 * 1024}};
    run(&g, &a, 0, 64 * 1024);
    CHECK_RC(pthread_attr_destroy(&a));

    CHECK_RC(pthread_attr_init(&a));
    CHECK_RC(pthread_attr_setguardsize(&a, 1024 * 1024));
    struct probe m = {.what = "1 MiB guard", .below = {1, 512 * 1024, 1024 * 1024}};
    run(&m, &a, 0, 1024 * 1024);
    CHECK_RC(pthread_attr_destroy(&a));

    /* The program's own stack: no guard, and nothing below it probed. */
    size_t own = 512 * 1024;
    char *mem = mmap(NULL, own, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    CHECK_RC(pthread_attr_init(&a));
    CHECK_RC(pthread_attr_setstack(&a, mem, own));
    struct probe u = {.what = "own stack"};
    run(&u, &a, own, 0);
    printf("own stack: lo == its address: %s\n", yesno(u.lo == mem));
    CHECK_RC(pthread_attr_destroy(&a));
    printf("done\n");
    return 0;
}
