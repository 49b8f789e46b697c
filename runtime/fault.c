/*
 * fault.c - naming a fiber stack overflow before the process dies.
 *
 * A fiber that runs off its stack touches the guard below it and takes
 * SIGSEGV. The handler runs on the carrier's alternate signal stack (the
 * fiber's own stack is exhausted), recognises a guard (stack.c knows every
 * guard and whose stack it protects), and prints one line: which fiber,
 * its stack size, where it faulted, and how to raise the size. A frame
 * larger than the fiber's own guard that lands in another stack's guard
 * is reported as such. Then, as without the runtime, the program's own
 * SIGSEGV handler (one installed before ours) runs if there is one;
 * otherwise the handler restores the default action and returns: the
 * faulting instruction runs again and the process dies of SIGSEGV as it
 * would have, core dump included. Faults elsewhere go to the program's
 * handler, or the default.
 *
 * A handler the program installs after the runtime started replaces ours:
 * then guard faults reach it directly, as they would without the runtime,
 * unreported.
 */
#include "internal.h"
#include "sys.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

#define FS_ALTSTACK_SIZE (64 * 1024)

static struct sigaction fs__prev_segv;

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

static size_t fs__fmt_hex(char *p, uintptr_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[2 * sizeof v];
    size_t n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    p[0] = '0';
    p[1] = 'x';
    for (size_t i = 0; i < n; i++)
        p[2 + i] = tmp[n - 1 - i];
    return n + 2;
}

/* Prints the line for a fault at addr in the guard below the stack that
 * starts at owner. Async-signal-safe: formats by hand, writes with a raw
 * syscall. */
static void fs__report_guard_fault(const void *addr, const void *owner)
{
    char buf[640];
    size_t n = 0;
    struct fs_sched *s = fs__cur_sched();
    struct fs_fiber *f = s ? s->cur : NULL;
    if (!f) {
        n += fs__put(buf + n, "fibershim: stack overflow in a carrier's scheduler, at ");
        n += fs__fmt_hex(buf + n, (uintptr_t)addr);
        n += fs__put(buf + n, "\n");
        fs__sys3(SYS_write, 2, buf, n);
        return;
    }
    n += fs__put(buf + n, "fibershim: fiber stack overflow: fiber ");
    n += fs__fmt_u64(buf + n, f->id);
    if (f->name[0]) {
        n += fs__put(buf + n, " (");
        n += fs__put(buf + n, f->name);
        n += fs__put(buf + n, ")");
    }
    uintptr_t lo = (uintptr_t)f->stack.lo;
    if (owner == f->stack.lo) {
        n += fs__put(buf + n, " ran past its ");
        n += fs__fmt_u64(buf + n, (uint64_t)(f->stack.size / 1024));
        n += fs__put(buf + n, " KiB stack into its guard, at ");
    } else if ((uintptr_t)addr < lo) {
        /* Below its own guard: a frame bigger than that guard jumped over
         * it, across the stacks below, into another one's guard. */
        n += fs__put(buf + n, " jumped ");
        n += fs__fmt_u64(buf + n, (uint64_t)((lo - (uintptr_t)addr) / 1024));
        n += fs__put(buf + n, " KiB below its ");
        n += fs__fmt_u64(buf + n, (uint64_t)(f->stack.size / 1024));
        n += fs__put(buf + n, " KiB stack, past its guard, into another stack's guard, at ");
    } else {
        n += fs__put(buf + n, " (its stack is ");
        n += fs__fmt_u64(buf + n, (uint64_t)(f->stack.size / 1024));
        n += fs__put(buf + n, " KiB) touched another stack's guard, at ");
    }
    n += fs__fmt_hex(buf + n, (uintptr_t)addr);
    n += fs__put(buf + n, ". Raise the thread's stack size: pthread_attr_setstacksize(), "
                          "or FIBERSHIM_STACK_SIZE for every thread.\n");
    fs__sys3(SYS_write, 2, buf, n);
}

/* The address last reported: a program handler that returns without
 * curing the fault gets the same fault again at once, as without the
 * runtime, and one line about it is enough. A race between carriers only
 * costs a repeated line. */
static const void *volatile fs__last_reported;

static void fs__segv(int sig, siginfo_t *si, void *uc)
{
    void *owner = fs__stack_guard_owner(si->si_addr);
    if (owner && si->si_addr != fs__last_reported) {
        fs__last_reported = si->si_addr;
        fs__report_guard_fault(si->si_addr, owner);
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

/* Gives the calling carrier thread s an alternate signal stack of the
 * runtime's, recorded in s (fs_carrier_altstack), and installs it unless
 * the thread already has one of the program's (an adopted main that set
 * its own: that one is main's fiber's, the shim's business). Raw
 * syscalls: inside libfibershim.so a plain sigaltstack() call would bind
 * to the shim's per-fiber one. */
int fs__fault_thread_init(struct fs_sched *s)
{
    stack_t cur;
    if (!s->altstack) {
        s->altstack = malloc(FS_ALTSTACK_SIZE);
        if (!s->altstack)
            return -ENOMEM;
    }
    if (fs__sys2(SYS_sigaltstack, NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return 0;
    stack_t ss = {.ss_sp = s->altstack, .ss_size = FS_ALTSTACK_SIZE, .ss_flags = 0};
    long rc = fs__sys2(SYS_sigaltstack, &ss, NULL);
    return rc < 0 ? (int)rc : 0;
}

void fs_carrier_altstack(void **sp, size_t *size)
{
    struct fs_sched *s = fs__cur_sched();
    *sp = s ? s->altstack : NULL;
    *size = s && s->altstack ? FS_ALTSTACK_SIZE : 0;
}
