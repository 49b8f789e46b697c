/*
 * fault.c - naming a fiber stack overflow before the process dies.
 *
 * A fiber that runs off its stack touches the guard page below it and
 * takes SIGSEGV. The handler runs on the carrier's alternate signal stack
 * (the fiber's own stack is exhausted), recognises the guard page, prints
 * which fiber overflowed, its stack size and how to raise it, then restores
 * the default action and returns: the faulting instruction runs again and
 * the process dies of SIGSEGV as it would have, core dump included. Faults
 * elsewhere go to the handler installed before ours, or the default.
 */
#include "internal.h"
#include "sys.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

#define FS_ALTSTACK_SIZE (64 * 1024)

static struct sigaction fs__prev_segv;
static __thread void *fs__altstack;

static size_t fs__fmt_u64(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

static size_t fs__put(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return n;
}

/* Async-signal-safe: formats by hand, writes with a raw syscall. */
static void fs__segv(int sig, siginfo_t *si, void *uc)
{
    if (fs__stack_is_guard(si->si_addr)) {
        char buf[512];
        size_t n = 0;
        struct fs_sched *s = fs__cur_sched();
        struct fs_fiber *f = s ? s->cur : NULL;
        n += fs__put(buf + n, "fibershim: fiber stack overflow: fiber ");
        n += fs__fmt_u64(buf + n, f ? f->id : 0);
        if (f && f->name[0]) {
            n += fs__put(buf + n, " (");
            n += fs__put(buf + n, f->name);
            n += fs__put(buf + n, ")");
        }
        n += fs__put(buf + n, " ran past its ");
        n += fs__fmt_u64(buf + n, f ? (uint64_t)(f->stack.size / 1024) : 0);
        n += fs__put(buf + n, " KiB stack. Raise FIBERSHIM_STACK_SIZE (e.g. "
                              "FIBERSHIM_STACK_SIZE=8M) or the thread's "
                              "pthread_attr_setstacksize().\n");
        fs__sys3(SYS_write, 2, buf, n);
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    if (fs__prev_segv.sa_flags & SA_SIGINFO && fs__prev_segv.sa_sigaction) {
        fs__prev_segv.sa_sigaction(sig, si, uc);
        return;
    }
    if (fs__prev_segv.sa_handler != SIG_DFL && fs__prev_segv.sa_handler != SIG_IGN &&
        fs__prev_segv.sa_handler) {
        fs__prev_segv.sa_handler(sig);
        return;
    }
    signal(SIGSEGV, SIG_DFL); /* re-fault and die as usual */
}

void fs__fault_init(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fs__segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &fs__prev_segv);
}

/* Gives the calling carrier thread an alternate signal stack, unless it
 * already has one of the program's. */
int fs__fault_thread_init(void)
{
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return 0;
    if (!fs__altstack) {
        fs__altstack = malloc(FS_ALTSTACK_SIZE);
        if (!fs__altstack)
            return -ENOMEM;
    }
    stack_t ss = {.ss_sp = fs__altstack, .ss_size = FS_ALTSTACK_SIZE, .ss_flags = 0};
    return sigaltstack(&ss, NULL) ? -1 : 0;
}
