/*
 * signal.c - signals as the kernel delivers them to threads, for fibers:
 * pthread_kill, pthread_sigqueue, raise, pthread_sigmask, sigprocmask,
 * sigpending, sigsuspend, pause, sigwait and friends, and the thread that
 * routes process-directed signals to fibers.
 *
 * The delivery model. Every fiber has a signal mask and a set of pending
 * signals of its own (struct shim_sigstate). Carriers never take an
 * asynchronous signal on their own: each carrier's real mask blocks every
 * signal the dispatcher routes (shim__routed: all but SIGKILL, SIGSTOP,
 * glibc's SIGCANCEL and SIGSETXID, the runtime's dump signal and the
 * signals the kernel sends a thread for what it did, SHIM_THREADSYNC),
 * whatever fiber runs and also while idle. So a kill(), alarm(), Ctrl-C
 * or SIGCHLD stays pending for the process, and:
 *
 *  - The dispatcher thread (blocking everything) sees it through a
 *    signalfd, without reading it (it learns which with sigpending), and
 *    picks a fiber as the kernel picks a thread: main if it does not block
 *    the signal, else one waiting for it in sigwait, else the first that
 *    does not block it. If the action is a handler, it marks the signal in
 *    that fiber's ppending and interrupts it (fs_interrupt: a blocked
 *    read, accept, poll, sleep, lock or semaphore wait ends at once). A
 *    sigwaiter takes the signal itself (its own signalfd wakes it). For a
 *    default action that stops or ends the process, the dispatcher
 *    unblocks the signal in itself and the kernel acts (exit status and
 *    core as without the shim); an ignored one it takes and drops. If
 *    every fiber blocks it, the signal stays pending for the process
 *    (sigpending, sigwait and signalfd of any fiber see it), until a fiber
 *    unblocks it: pthread_sigmask, sigsuspend then take it at once.
 *
 *  - The fiber, when it resumes (the runtime's interrupt hook, run on its
 *    own stack once the interrupted park is over) or when it unblocks the
 *    signal itself, delivers it: it sets the mask its handler must see
 *    (its own plus sa_mask plus the signal unless SA_NODEFER; what
 *    pthread_sigmask reports inside the handler), then unblocks just that
 *    signal on its carrier. The kernel delivers the pending signal right
 *    there, at that system call's return, with its own siginfo: the
 *    handler runs in the fiber, on its stack, with its TLS and errno. Then
 *    the carrier blocks it again and the fiber's mask is restored. The
 *    interrupted wrapper restarts the call if every handler that ran had
 *    SA_RESTART, and fails with EINTR otherwise; poll, select, epoll_wait,
 *    sleeps and timed waits always fail with EINTR, as signal(7) says;
 *    lock waits go on (cond waits may return, a spurious wake-up).
 *
 *  - Signals sent to a fiber (pthread_kill, pthread_sigqueue, raise) are
 *    pending on the fiber itself, queued as the kernel queues them for a
 *    thread: a standard signal sent again while pending is dropped (the
 *    first siginfo stays), each instance of a real-time signal is kept,
 *    in order, with its si_code, si_value, si_pid and si_uid, up to
 *    RLIMIT_SIGPENDING (then EAGAIN). They are delivered the same way,
 *    lowest signal first, one instance at a time, each first sent to the
 *    carrier's own kernel thread (tgkill or rt_tgsigqueueinfo, so the
 *    siginfo is the kernel's for those calls) while it blocks them.
 *
 *  - The kernel's thread-directed signals (a fault, SIGPIPE from a write,
 *    SIGXFSZ, SHIM_THREADSYNC) go to the kernel thread that caused them,
 *    which runs the fiber that did; for those the carrier's mask follows
 *    the running fiber's (the hook checks it at every switch once some
 *    fiber blocks one of them). Idle carriers block them too (netpoll.c).
 *
 * A fiber's mask goes to the new image at exec and posix_spawn
 * (shim__sig_exec_begin). Plain threads the program has besides fibers
 * keep the kernel's behaviour: their masks are their own, and the kernel
 * gives them process signals they do not block.
 *
 * sigwait, sigwaitinfo and sigtimedwait from a fiber park it, not its
 * carrier: signals sent to the fiber are taken from its pending set;
 * signals pending for the process are taken with a zero-timeout
 * sigtimedwait; in between, the fiber waits on a signalfd for the set in
 * the netpoller (readable while a signal of its set is pending for the
 * process or the polling thread). As with threads, the set must be blocked
 * in every thread, or some other fiber's handler (or default action) may
 * take the signal first.
 */
#include "shim.h"

#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/ucontext.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "observe.h"
#include "offload.h"
#include "spinlock.h"
#include "sys.h"

fs_fiber *shim__fiber_of(pthread_t t);

/* The carrier's real mask, as last set by us: fs_carrier_local()[0], valid
 * when [1] is 1. Per kernel thread, which a __thread variable no longer
 * is: with per-fiber TLS every fiber would have its own copy, and one
 * fiber's stale copy would skip a change another fiber made. */
#define SHIM_CARRIER_MASK 0
#define SHIM_CARRIER_MASK_KNOWN 1

#define SHIM_SIGBIT(sig) (1ull << ((sig)-1))
#define SHIM_UNBLOCKABLE (SHIM_SIGBIT(SIGKILL) | SHIM_SIGBIT(SIGSTOP))
/* glibc's own: SIGCANCEL (32) and SIGSETXID (33), never blocked. */
#define SHIM_GLIBC_SIGS (SHIM_SIGBIT(32) | SHIM_SIGBIT(33))
/* What the kernel sends the thread that caused it: faults, SIGPIPE from
 * a write to a closed pipe or socket, SIGXFSZ from one past the limit. */
#define SHIM_THREADSYNC                                                                    \
    (SHIM_SIGBIT(SIGSEGV) | SHIM_SIGBIT(SIGBUS) | SHIM_SIGBIT(SIGFPE) | SHIM_SIGBIT(SIGILL) |   \
     SHIM_SIGBIT(SIGTRAP) | SHIM_SIGBIT(SIGSYS) | SHIM_SIGBIT(SIGPIPE) | SHIM_SIGBIT(SIGXFSZ))

/* The signals carriers always block and the dispatcher routes; set once
 * at activation (0 before: no carrier exists). */
static uint64_t shim__routed;

static uint64_t shim__set_to_bits(const sigset_t *set)
{
    uint64_t b = 0;
    for (int sig = 1; sig <= 64 && sig < NSIG; sig++)
        if (sigismember(set, sig) == 1)
            b |= SHIM_SIGBIT(sig);
    return b;
}

static void shim__bits_to_set(uint64_t b, sigset_t *set)
{
    sigemptyset(set);
    for (int sig = 1; sig <= 64 && sig < NSIG; sig++)
        if (b & SHIM_SIGBIT(sig))
            sigaddset(set, sig);
}

/* The calling kernel thread's mask, raw (glibc's pthread_sigmask would
 * leave SIGCANCEL and SIGSETXID out, which we never block anyway). */
static void shim__real_setmask(uint64_t m)
{
    m &= ~SHIM_GLIBC_SIGS;
    fs__sys4(SYS_rt_sigprocmask, SIG_SETMASK, &m, NULL, sizeof m);
}

/* A fiber's mask, read by other threads (the dispatcher) too. */
static uint64_t shim__mask_of(const struct shim_sigstate *ss)
{
    return __atomic_load_n(&ss->mask, __ATOMIC_RELAXED);
}

static void shim__mask_set(struct shim_sigstate *ss, uint64_t m)
{
    __atomic_store_n(&ss->mask, m & ~SHIM_UNBLOCKABLE, __ATOMIC_RELAXED);
    /* Carriers' masks then differ in what they leave to the kernel: the
     * hook must check the carrier's at every switch from now on. */
    if (m & SHIM_THREADSYNC)
        fs_hook_every_switch();
}

/* The real mask of a carrier running a fiber with mask m. */
static uint64_t shim__carrier_want(uint64_t m)
{
    return shim__routed | (m & SHIM_THREADSYNC);
}

/* Makes the carrier's real mask the one its fiber needs. */
static void shim__carrier_follow(const struct shim_sigstate *ss)
{
    if (!shim__routed)
        return;
    uint64_t *cl = fs_carrier_local(); /* fibers only */
    uint64_t want = shim__carrier_want(shim__mask_of(ss));
    if (cl[SHIM_CARRIER_MASK_KNOWN] && cl[SHIM_CARRIER_MASK] == want)
        return;
    shim__real_setmask(want);
    cl[SHIM_CARRIER_MASK] = want;
    cl[SHIM_CARRIER_MASK_KNOWN] = 1;
}

/* ---- the program's handlers: what they see of the mask ---------------------
 *
 * A handler runs with the kernel's mask of its carrier, which is not its
 * fiber's (carriers block every routed signal; see the header), and the
 * kernel saves that carrier mask in the ucontext, to be installed again
 * at sigreturn. Without help a handler would see neither of its fiber's
 * masks: pthread_sigmask inside it reports the fiber's mask, but for a
 * fault or trap (SIGSEGV, SIGTRAP...), which the kernel delivers to the
 * carrier directly, the shim never added sa_mask and the signal (SBCL
 * checks in its pending-interrupt trap, an int3, that every blockable
 * signal is blocked, and dies with "blockables unblocked"); and a handler
 * that edits uc_sigmask to choose the mask it returns to (SBCL defers a
 * signal that way: it blocks the deferrable signals in the frame, and
 * checks later that all of them are blocked) would edit the carrier's,
 * which the shim then overrides. So every handler the program installs
 * (sigaction, signal) is installed behind a trampoline, which, in a fiber:
 *  - shows the interrupted fiber mask in uc_sigmask: the one
 *    shim__deliver_one recorded (h_outer) for a signal it delivers, else,
 *    for a fault or trap, the fiber's mask;
 *  - makes the fiber's mask what a thread's is in the handler (that mask,
 *    plus sa_mask, plus the signal unless SA_NODEFER);
 *  - pins the fiber while the handler runs (it may block; sigreturn must
 *    happen on the kernel thread that saved the frame);
 *  - afterwards takes uc_sigmask, as the handler left it, as the fiber's
 *    mask from then on (h_after, for shim__deliver_one), and puts in the
 *    frame the carrier mask that this fiber mask needs, which sigreturn
 *    installs.
 * Off a fiber the trampoline only calls the handler. sigaction answers
 * with the program's own action. */

static struct sigaction shim__wrapped_act[65]; /* the program's, where wrapped */

static void shim__wrapped_call(int sig, siginfo_t *si, void *uc)
{
    const struct sigaction *pa = &shim__wrapped_act[sig];
    if (pa->sa_flags & SA_SIGINFO)
        pa->sa_sigaction(sig, si, uc);
    else
        pa->sa_handler(sig);
}

static void shim__trampoline(int sig, siginfo_t *si, void *ucv)
{
    fs_fiber *self = fs_self();
    struct shim_sigstate *ss = self ? shim__sigstate(self) : NULL;
    if (!ss || !shim__routed) {
        shim__wrapped_call(sig, si, ucv);
        return;
    }
    int saved_errno = errno;
    ucontext_t *uc = ucv;
    const struct sigaction *pa = &shim__wrapped_act[sig];
    /* Delivered inside a poke: the handler gets the poke's frame, the
     * interrupted code's, whose registers its sigreturn restores. Taken
     * while the handler runs (a signal it raises gets its own frame). */
    ucontext_t *poke = ss->h_poke, *shown = ss->h_outer_set && poke ? poke : uc;
    ss->h_poke = NULL;
    uint64_t outer = ss->h_outer_set ? ss->h_outer : shim__mask_of(ss);
    ss->h_outer_set = false;
    uint64_t inner = outer | shim__set_to_bits(&pa->sa_mask);
    if (!(pa->sa_flags & SA_NODEFER))
        inner |= SHIM_SIGBIT(sig);
    shim__mask_set(ss, inner);
    shim__bits_to_set(outer, &shown->uc_sigmask);
    shim__alt_handler_enter(&ss->alt, shown);
    /* The kernel changed the carrier's mask: our record of it is stale. */
    fs_carrier_local()[SHIM_CARRIER_MASK_KNOWN] = 0;
    fs_pin(self);
    errno = saved_errno;
    shim__wrapped_call(sig, si, shown);
    saved_errno = errno;
    fs_unpin(self);
    uint64_t after = shim__set_to_bits(&shown->uc_sigmask) & ~SHIM_UNBLOCKABLE;
    shim__mask_set(ss, after);
    ss->h_after = after;
    ss->h_after_set = true;
    uint64_t want = shim__carrier_want(after);
    shim__bits_to_set(want, &uc->uc_sigmask);
    shim__alt_handler_leave(&ss->alt, shown);
    if (shown != uc) {
        /* Both sigreturns (ours, then the poke's) install these. */
        shim__bits_to_set(want, &shown->uc_sigmask);
        uc->uc_stack = shown->uc_stack;
    }
    ss->h_poke = poke; /* for the next signal this poke delivers */
    uint64_t *cl = fs_carrier_local(); /* sigreturn installs want */
    cl[SHIM_CARRIER_MASK] = want;
    cl[SHIM_CARRIER_MASK_KNOWN] = 1;
    errno = saved_errno;
}

bool shim__sig_wraps(int sig)
{
    return sig >= 1 && sig <= 64 && !(SHIM_SIGBIT(sig) & (SHIM_UNBLOCKABLE | SHIM_GLIBC_SIGS));
}

int shim__sigaction_wrapped(int sig, const struct sigaction *act, struct sigaction *old)
{
    struct sigaction prev = shim__wrapped_act[sig], kold;
    int rc;
    if (act && act->sa_handler != SIG_DFL && act->sa_handler != SIG_IGN) {
        struct sigaction k = *act;
        k.sa_flags |= SA_SIGINFO;
        k.sa_sigaction = shim__trampoline;
        /* Recorded before it is installed: a signal right after finds it. */
        shim__wrapped_act[sig] = *act;
        rc = REAL(sigaction)(sig, &k, &kold);
        if (rc != 0)
            shim__wrapped_act[sig] = prev;
    } else {
        rc = REAL(sigaction)(sig, act, &kold);
    }
    if (rc == 0 && old) {
        bool ours = (kold.sa_flags & SA_SIGINFO) && kold.sa_sigaction == shim__trampoline;
        *old = ours ? prev : kold;
    }
    return rc;
}

/* ---- pokes: delivery to a fiber that runs ---------------------------------
 *
 * A fiber that runs (a CPU loop, code that makes no blocking call) would
 * see a signal only at its next switch. A poke makes it see it now: glibc's
 * SIGCANCEL (never blocked on carriers, and unused by fibers, whose
 * cancellation is the shim's) sent with rt_tgsigqueueinfo, SI_QUEUE and a
 * value of ours, to the carrier running it. Our handler, on the fiber's
 * stack, delivers the fiber's due signals right there (the handler then
 * runs nested in ours; the trampoline gives it our frame's ucontext, the
 * interrupted code's: what it reads of the registers is that code's, and
 * what it changes there (the program counter, a register, the mask) takes
 * effect when our handler returns, as for a thread), unless the fiber
 * was interrupted inside the runtime or the shim (a spin lock held, a park
 * half made: the program counter is in this library or the vDSO), where
 * no handler may run: then the dispatcher pokes it again 20 us later,
 * doubling up to a millisecond while pokes keep landing there. glibc's own SIGCANCEL (SI_TKILL, for a plain thread) never comes
 * here: glibc installs its handler over ours in pthread_cancel, and pokes
 * then do nothing (delivery at the next switch). */

#define SHIM_SIGPOKE 32
#define SHIM_SA_RESTORER 0x04000000 /* the kernel's, which glibc does not export */
#define SHIM_POKE_VALUE ((void *)0x66697373706f6b65ull) /* "fisspoke" */

/* Where the program counter must not be for a poke to deliver: our text
 * and the vDSO's (clock_gettime called from inside the runtime). */
static struct {
    uintptr_t lo, hi;
} shim__no_poke[2];
static _Atomic uint32_t shim__repokes; /* fibers marked for a later poke */
#define SHIM_REPOKE_FIRST_NS 20000 /* the dispatcher's first retry (then doubled) */

static int shim__find_text(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    uintptr_t want = (uintptr_t)arg, lo = UINTPTR_MAX, hi = 0;
    bool vdso = want == 0 && info->dlpi_name && strstr(info->dlpi_name, "linux-vdso");
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr;
        if (a < lo)
            lo = a;
        if (a + ph->p_memsz > hi)
            hi = a + ph->p_memsz;
    }
    if (lo >= hi || !(vdso || (want >= lo && want < hi)))
        return 0;
    shim__no_poke[want ? 0 : 1].lo = lo;
    shim__no_poke[want ? 0 : 1].hi = hi;
    return 1;
}

static bool shim__pc_unsafe(uintptr_t pc)
{
    for (int i = 0; i < 2; i++)
        if (pc >= shim__no_poke[i].lo && pc < shim__no_poke[i].hi)
            return true;
    return false;
}

static void shim__deliver_pending(struct shim_sigstate *ss);
static void shim__disp_kick(void);

static bool shim__due(struct shim_sigstate *ss)
{
    return (atomic_load(&ss->pending) | atomic_load(&ss->ppending)) & ~shim__mask_of(ss);
}

/* Marks the fiber for another poke by the dispatcher (20 us .. 1 ms). */
static void shim__repoke_later(struct shim_sigstate *ss)
{
    if (!atomic_exchange(&ss->repoke, 1))
        atomic_fetch_add(&shim__repokes, 1);
    shim__disp_kick();
}

/* The poke found f running with an asynchronous cancel to act on. As
 * glibc's SIGCANCEL handler, it unwinds from the interrupted instruction,
 * unless that is inside the shim or the runtime (again later). The
 * handler's frame is never returned from: the carrier first takes the
 * mask its fiber needs, not the handler's. */
static void shim__poke_cancel(struct shim_sigstate *ss, const ucontext_t *uc, int saved_errno)
{
    if (shim__pc_unsafe((uintptr_t)uc->uc_mcontext.gregs[REG_RIP])) {
        shim__repoke_later(ss);
        return;
    }
    fs_carrier_local()[SHIM_CARRIER_MASK_KNOWN] = 0;
    shim__carrier_follow(ss);
    errno = saved_errno;
    shim__cancel_async_act();
}

static void shim__poke_handler(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    if (si->si_code == SI_QUEUE && si->si_value.sival_ptr == SHIM_OFFLOAD_CANCEL_VALUE) {
        shim__offload_cancel_signal(ucv); /* on a spare: offload.c */
        return;
    }
    if (si->si_code != SI_QUEUE || si->si_value.sival_ptr != SHIM_POKE_VALUE)
        return;
    int e = errno;
    ucontext_t *uc = ucv;
    fs_fiber *f = fs_self();
    struct shim_sigstate *ss = f ? shim__sigstate(f) : NULL;
    if (ss && shim__due(ss)) {
        if (shim__pc_unsafe((uintptr_t)uc->uc_mcontext.gregs[REG_RIP])) {
            if (!atomic_exchange(&ss->repoke, 1))
                atomic_fetch_add(&shim__repokes, 1);
            shim__disp_kick();
        } else {
            shim__alt_rearm(&ss->alt);
            ss->h_poke = uc; /* their handlers get this frame (the trampoline) */
            shim__deliver_pending(ss);
            ss->h_poke = NULL;
            shim__alt_frame_set(&ss->alt, uc);
        }
    }
    if (ss && shim__cancel_async_due(f))
        shim__poke_cancel(ss, uc, e);
    errno = e;
}

/* Installs the poke handler, with glibc's signal return trampoline (the
 * one its SIGSETXID action has). Without one, no pokes. */
static bool shim__poke_install(void)
{
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    /* Sanitizer runtimes keep their own books of signal handlers. */
    return false;
#endif
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } cur, ours;
    if (fs__sys4(SYS_rt_sigaction, 33, NULL, &cur, 8) != 0 || !(cur.flags & SHIM_SA_RESTORER) ||
        !cur.restorer)
        return false;
    ours.handler = (void *)shim__poke_handler;
    ours.flags = SA_SIGINFO | SHIM_SA_RESTORER | SA_RESTART;
    ours.restorer = cur.restorer;
    ours.mask = ~0ull;
    if (fs__sys4(SYS_rt_sigaction, SHIM_SIGPOKE, NULL, &cur, 8) != 0 ||
        cur.handler != (void *)SIG_DFL)
        return false; /* glibc's own is there: leave it */
    dl_iterate_phdr(shim__find_text, (void *)(uintptr_t)shim__poke_install);
    dl_iterate_phdr(shim__find_text, NULL);
    return fs__sys4(SYS_rt_sigaction, SHIM_SIGPOKE, &ours, NULL, 8) == 0;
}

static _Atomic bool shim__poke_on;

/* Pokes f if it runs now (see above). Any thread. */
static void shim__poke(fs_fiber *f)
{
    if (!atomic_load_explicit(&shim__poke_on, memory_order_relaxed))
        return;
    int tid = fs_fiber_running_tid(f);
    if (tid)
        shim__sig_poke_thread(tid, SHIM_POKE_VALUE);
}

void shim__sig_poke(fs_fiber *f)
{
    shim__poke(f);
}

bool shim__sig_pokes(void)
{
    return atomic_load_explicit(&shim__poke_on, memory_order_relaxed);
}

void shim__sig_poke_thread(int tid, void *value)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = SHIM_SIGPOKE;
    si.si_code = SI_QUEUE;
    si.si_pid = (pid_t)fs__sys0(SYS_getpid);
    si.si_uid = getuid();
    si.si_value.sival_ptr = value;
    fs__sys4(SYS_rt_tgsigqueueinfo, si.si_pid, tid, SHIM_SIGPOKE, &si);
}

static bool shim__repoke_cb(fs_fiber *f, struct shim_sigstate *ss, void *arg)
{
    (void)arg;
    if (!atomic_load(&ss->repoke))
        return false;
    /* An asynchronous cancel waits for its fiber to run (it may be
     * parked, or queued behind others): look every millisecond until a
     * poke can reach it. Nothing else keeps a fiber marked. */
    if (shim__cancel_async_due(f) && !fs_fiber_running_tid(f))
        return false;
    if (atomic_exchange(&ss->repoke, 0)) {
        atomic_fetch_sub(&shim__repokes, 1);
        if (shim__due(ss) || shim__cancel_async_due(f))
            shim__poke(f);
    }
    return false;
}

/* ---- the dispatcher ------------------------------------------------------ */

static struct {
    _Atomic int state;        /* 0 not started, 1 starting or running */
    _Atomic int kickfd;       /* eventfd that wakes it, -1 before */
    /* Pending for the process, and no fiber would take them: they wait
     * in the kernel until a fiber unblocks one (shim__take_held). */
    _Atomic uint64_t held;
    /* Handed to a fiber (ppending) or left to a sigwaiter, not taken yet:
     * out of the signalfd's set meanwhile, looked at again at a kick or
     * every SHIM_DISP_RECHECK_MS. */
    _Atomic uint64_t assigned;
} shim__disp = {.kickfd = -1};

#define SHIM_DISP_RECHECK_MS 50

static void shim__disp_kick(void)
{
    int fd = atomic_load_explicit(&shim__disp.kickfd, memory_order_acquire);
    if (fd >= 0) {
        uint64_t one = 1;
        fs__sys3(SYS_write, fd, &one, sizeof one);
    }
}

/* A fiber is about to stop blocking `unblocked` (its mask already says
 * so): takes the held ones for itself, as the kernel delivers a pending
 * process signal to the thread that unblocks it. seq_cst against the
 * dispatcher, which sets held, then reads the fibers' masks. */
static void shim__take_held(struct shim_sigstate *ss, uint64_t unblocked)
{
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t h = atomic_load(&shim__disp.held) & unblocked;
    if (!h)
        return;
    h = atomic_fetch_and(&shim__disp.held, ~h) & h;
    if (!h)
        return;
    atomic_fetch_or(&shim__disp.assigned, h);
    atomic_fetch_or(&ss->ppending, h);
    shim__disp_kick();
}

/* What the dispatcher decides for one signal. */
struct shim_pick {
    uint64_t bit;
    int pass;      /* 0: the adopted (main) fiber; 1: a sigwaiter; 2: any */
    bool handler;  /* the action is a handler */
    bool waiter;   /* out: the one found waits for it in sigwait */
};

static bool shim__pick_cb(fs_fiber *f, struct shim_sigstate *ss, void *arg)
{
    struct shim_pick *p = arg;
    bool waits = atomic_load(&ss->waiting) & p->bit;
    if (!waits && (shim__mask_of(ss) & p->bit))
        return false;
    if ((p->pass == 0 && !fs_fiber_adopted(f)) || (p->pass == 1 && !waits))
        return false;
    p->waiter = waits;
    if (!waits && p->handler) {
        /* The reference we hold keeps f alive for the interrupt. */
        atomic_fetch_or(&ss->ppending, p->bit);
        fs_interrupt(f);
        shim__offload_cancel(f);
        shim__poke(f);
    }
    return true;
}

static bool shim__pick(struct shim_pick *p)
{
    for (p->pass = 0; p->pass < 3; p->pass++)
        if (shim__threads_each(shim__pick_cb, p))
            return true;
    return false;
}

/* The default action of sig: 0 ignore, 1 stop, 2 terminate (or core). */
static int shim__default_kind(int sig)
{
    switch (sig) {
    case SIGCHLD:
    case SIGCONT:
    case SIGURG:
    case SIGWINCH:
        return 0;
    case SIGTSTP:
    case SIGTTIN:
    case SIGTTOU:
        return 1;
    default:
        return 2;
    }
}

/* Routes one signal pending for the process (see the header). */
static void shim__route(int sig)
{
    uint64_t bit = SHIM_SIGBIT(sig);
    struct sigaction sa;
    if (REAL(sigaction)(sig, NULL, &sa) != 0)
        return;
    bool ign = sa.sa_handler == SIG_IGN || (sa.sa_handler == SIG_DFL && !shim__default_kind(sig));
    struct shim_pick p = {.bit = bit, .handler = sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL};
    if (!shim__pick(&p)) {
        /* Every fiber blocks it: held, then a second look, for a fiber
         * that unblocked it before it could see the held bit. */
        atomic_fetch_or(&shim__disp.held, bit);
        atomic_thread_fence(memory_order_seq_cst);
        if (!shim__pick(&p))
            return;
        atomic_fetch_and(&shim__disp.held, ~bit);
    }
    if (p.waiter || p.handler) {
        atomic_fetch_or(&shim__disp.assigned, bit);
        return;
    }
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    if (ign) {
        /* Some fiber would take it and do nothing: do nothing here. */
        static const struct timespec zero;
        siginfo_t si;
        REAL(sigtimedwait)(&one, &si, &zero);
        return;
    }
    /* Stop or terminate the process: the kernel does it, as it would in
     * the fiber, if we stop blocking it. A stopped process goes on here
     * once continued. */
    REAL(pthread_sigmask)(SIG_UNBLOCK, &one, NULL);
    REAL(pthread_sigmask)(SIG_BLOCK, &one, NULL);
}

static void *shim__disp_main(void *arg)
{
    (void)arg;
    /* Everything but glibc's own: setuid() waits until every thread of the
     * process has taken its SIGSETXID. */
    shim__real_setmask(~0ull);
    int kfd = atomic_load(&shim__disp.kickfd);
    sigset_t w;
    shim__bits_to_set(shim__routed, &w);
    int sfd = signalfd(-1, &w, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        return NULL; /* no routing: signals stay pending for the process */
    sfd = fs_fd_hide(sfd);
    uint64_t cur = shim__routed;
    long repoke_ns = SHIM_REPOKE_FIRST_NS;
    for (;;) {
        uint64_t want = shim__routed & ~atomic_load(&shim__disp.held) &
                        ~atomic_load(&shim__disp.assigned);
        if (want != cur) {
            shim__bits_to_set(want, &w);
            signalfd(sfd, &w, 0);
            cur = want;
        }
        struct pollfd pf[2] = {{.fd = sfd, .events = POLLIN}, {.fd = kfd, .events = POLLIN}};
        int tmo = atomic_load(&shim__repokes)            ? 1
                  : atomic_load(&shim__disp.assigned) ? SHIM_DISP_RECHECK_MS
                                                      : -1;
        if (REAL(poll)(pf, 2, tmo) < 0)
            continue;
        uint64_t n;
        while (REAL(read)(kfd, &n, sizeof n) == sizeof n)
            ;
        if (atomic_load(&shim__repokes)) {
            /* Let it leave the runtime first: 20 us, doubled while pokes
             * keep landing there, up to 1 ms. A fiber poked inside the
             * shim is nearly always out of it within microseconds (a
             * lock-free fast path, a short spin), and a program that
             * sends a CPU-bound thread signal after signal, each waiting
             * for the last one's handler, got one delivery a millisecond. */
            struct timespec d = {0, repoke_ns};
            REAL(nanosleep)(&d, NULL);
            shim__threads_each(shim__repoke_cb, NULL);
            repoke_ns = repoke_ns * 2 > 1000000 ? 1000000 : repoke_ns * 2;
        } else {
            repoke_ns = SHIM_REPOKE_FIRST_NS;
        }
        sigset_t pend;
        if (REAL(sigpending)(&pend) != 0)
            continue;
        uint64_t p = shim__set_to_bits(&pend) & shim__routed;
        /* Taken by their fiber (or a sigwait, a signalfd) meanwhile. */
        atomic_fetch_and(&shim__disp.assigned, p);
        atomic_fetch_and(&shim__disp.held, p);
        /* Newly pending, plus those assigned still pending at a recheck
         * (their fiber may have ended), plus held ones whose fiber may
         * have unblocked them since. */
        for (uint64_t todo = p; todo; todo &= todo - 1)
            shim__route(__builtin_ctzll(todo) + 1);
    }
    return NULL;
}

/* Starts the dispatcher (activation, and a fork child's first need). */
static void shim__disp_start(void)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&shim__disp.state, &expect, 1))
        return;
    int kfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (kfd < 0) {
        atomic_store(&shim__disp.state, 0);
        return;
    }
    kfd = fs_fd_hide(kfd); /* not fd 3 of the program's */
    atomic_store_explicit(&shim__disp.kickfd, kfd, memory_order_release);
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 * 1024);
    pthread_t t;
    if (REAL(pthread_create)(&t, &a, shim__disp_main, NULL) != 0) {
        atomic_store(&shim__disp.kickfd, -1);
        REAL(close)(kfd);
        atomic_store(&shim__disp.state, 0);
    }
    pthread_attr_destroy(&a);
}

void shim__signal_atfork_child(void)
{
    /* The thread is gone; its descriptors were inherited. */
    int kfd = atomic_exchange(&shim__disp.kickfd, -1);
    if (kfd >= 0)
        REAL(close)(kfd);
    atomic_store(&shim__disp.held, 0);
    atomic_store(&shim__disp.assigned, 0);
    atomic_store(&shim__disp.state, 0);
    if (shim__routed)
        shim__disp_start();
}

/* ---- per-fiber state and delivery --------------------------------------- */

void shim__sigstate_init(struct shim_sigstate *ss, const sigset_t *mask)
{
    atomic_store(&ss->pending, 0);
    ss->qhead = ss->qtail = NULL;
    atomic_store(&ss->qlock, 0);
    ss->h_poke = NULL;
    atomic_store(&ss->ppending, 0);
    atomic_store(&ss->restart, 1);
    ss->handled = 0;
    atomic_store(&ss->waiting, 0);
    shim__alt_init(&ss->alt, false);
    struct shim_sigstate *cur = shim__sigstate(fs_self());
    uint64_t inherited;
    if (cur) {
        inherited = shim__mask_of(cur);
    } else {
        sigset_t m;
        REAL(pthread_sigmask)(SIG_BLOCK, NULL, &m);
        inherited = shim__set_to_bits(&m);
    }
    uint64_t m = mask ? shim__set_to_bits(mask) : inherited;
    shim__mask_set(ss, m);
    /* A mask other than its creator's may let in a held signal: the
     * dispatcher looks again (it is set before the fiber can run). */
    if (mask && (inherited & ~m) && atomic_load(&shim__disp.held)) {
        atomic_thread_fence(memory_order_seq_cst);
        shim__disp_kick();
    }
}

/* ---- the instances queued to a fiber --------------------------------------
 *
 * One node per instance, in the fiber's list in the order sent. Nodes
 * come from a pool carved from mmap'ed chunks (pthread_kill and raise are
 * async-signal-safe: no malloc), never returned to the system. The
 * kernel counts a user's queued signals against RLIMIT_SIGPENDING (SigQ
 * in /proc/PID/status); ours are not in its count, so a real-time
 * instance is refused with EAGAIN when ours plus its reach the limit, as
 * the kernel refuses a thread's. */

struct shim_siginst {
    struct shim_siginst *next;
    int sig, code;
    union sigval value;
    pid_t pid;
    uid_t uid;
};

static fs_spinlock shim__inst_lock = FS_SPINLOCK_INIT;
static struct shim_siginst *shim__inst_free;
static _Atomic long shim__inst_held; /* in fibers' lists, all fibers */

#define SHIM_INST_CHUNK (64 * 1024)

static struct shim_siginst *shim__inst_alloc(void)
{
    fs__spin_lock(&shim__inst_lock);
    struct shim_siginst *n = shim__inst_free;
    if (n)
        shim__inst_free = n->next;
    fs__spin_unlock(&shim__inst_lock);
    if (n)
        return n;
    long p = fs__sys6(SYS_mmap, 0, SHIM_INST_CHUNK, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p < 0 && p > -4096)
        return NULL;
    struct shim_siginst *v = (struct shim_siginst *)p;
    size_t cnt = SHIM_INST_CHUNK / sizeof *v;
    for (size_t i = 1; i + 1 < cnt; i++)
        v[i].next = &v[i + 1];
    fs__spin_lock(&shim__inst_lock);
    v[cnt - 1].next = shim__inst_free;
    shim__inst_free = &v[1];
    fs__spin_unlock(&shim__inst_lock);
    return &v[0];
}

static void shim__inst_put(struct shim_siginst *n)
{
    fs__spin_lock(&shim__inst_lock);
    n->next = shim__inst_free;
    shim__inst_free = n;
    fs__spin_unlock(&shim__inst_lock);
}

static void shim__q_lock(struct shim_sigstate *ss)
{
    while (atomic_exchange_explicit(&ss->qlock, 1, memory_order_acquire))
        while (atomic_load_explicit(&ss->qlock, memory_order_relaxed))
            __builtin_ia32_pause();
}

static void shim__q_unlock(struct shim_sigstate *ss)
{
    atomic_store_explicit(&ss->qlock, 0, memory_order_release);
}

/* Whether one more queued signal would pass the caller's
 * RLIMIT_SIGPENDING: ours held plus the kernel's count for the user.
 * With none of ours held the kernel's own count decides alone, which it
 * does at delivery anyway: not read then. */
static bool shim__inst_over_limit(void)
{
    long held = atomic_load(&shim__inst_held);
    if (held == 0)
        return false;
    struct rlimit rl;
    if (fs__sys4(SYS_prlimit64, 0, RLIMIT_SIGPENDING, NULL, &rl) != 0 ||
        rl.rlim_cur == RLIM_INFINITY)
        return false;
    if ((unsigned long)held >= rl.rlim_cur)
        return true;
    char buf[2048];
    long fd = fs__sys4(SYS_openat, AT_FDCWD, "/proc/self/status", O_RDONLY | O_CLOEXEC, 0);
    long n = fd < 0 ? -1 : fs__sys3(SYS_read, fd, buf, sizeof buf - 1);
    if (fd >= 0)
        fs__sys1(SYS_close, fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    const char *p = strstr(buf, "\nSigQ:");
    if (!p)
        return false;
    unsigned long k = 0;
    for (p += 6; *p == ' ' || *p == '\t'; p++) {
    }
    for (; *p >= '0' && *p <= '9'; p++)
        k = k * 10 + (unsigned long)(*p - '0');
    return (unsigned long)held + k >= rl.rlim_cur;
}

/* Queues one instance of sig (with its siginfo fields) to ss, as the
 * kernel queues one to a thread: a standard signal already pending is
 * dropped. 0 or EAGAIN. Any thread; signals are blocked around the list
 * for a plain thread (a handler of its own could send to the same fiber
 * while it holds the lock); fibers run no handler inside the shim. */
static int shim__enqueue(struct shim_sigstate *ss, int sig, int code, union sigval v)
{
    uint64_t bit = SHIM_SIGBIT(sig);
    bool rt = sig >= __SIGRTMIN;
    if (!rt && (atomic_load(&ss->pending) & bit))
        return 0;
    if (rt && shim__inst_over_limit())
        return EAGAIN;
    struct shim_siginst *n = shim__inst_alloc();
    if (!n && rt)
        return EAGAIN;
    if (n) {
        n->next = NULL;
        n->sig = sig;
        n->code = code;
        n->value = v;
        n->pid = (pid_t)fs__sys0(SYS_getpid);
        n->uid = (uid_t)fs__sys0(SYS_getuid);
    }
    uint64_t all = ~0ull, old;
    bool plain = !fs_self();
    if (plain)
        fs__sys4(SYS_rt_sigprocmask, SIG_BLOCK, &all, &old, sizeof all);
    shim__q_lock(ss);
    if (!rt && (atomic_load(&ss->pending) & bit)) {
        shim__q_unlock(ss); /* a racing sender's came first */
    } else {
        if (n) {
            if (ss->qtail)
                ss->qtail->next = n;
            else
                ss->qhead = n;
            ss->qtail = n;
            atomic_fetch_add(&shim__inst_held, 1);
            n = NULL;
        }
        atomic_fetch_or(&ss->pending, bit);
        shim__q_unlock(ss);
    }
    if (plain)
        fs__sys4(SYS_rt_sigprocmask, SIG_SETMASK, &old, NULL, sizeof old);
    if (n)
        shim__inst_put(n);
    return 0;
}

/* The fiber's queued instances are dropped (it ends). Its own. */
static void shim__queue_drop(struct shim_sigstate *ss)
{
    shim__q_lock(ss);
    struct shim_siginst *n = ss->qhead;
    ss->qhead = ss->qtail = NULL;
    atomic_store(&ss->pending, 0);
    shim__q_unlock(ss);
    while (n) {
        struct shim_siginst *next = n->next;
        atomic_fetch_sub(&shim__inst_held, 1);
        shim__inst_put(n);
        n = next;
    }
}

/* Takes the first instance of sig off the fiber's queue into *out: false
 * if another taker had the last one. sig stays pending while instances
 * of it remain. */
static bool shim__take_one(struct shim_sigstate *ss, int sig, struct shim_siginst *out)
{
    uint64_t bit = SHIM_SIGBIT(sig);
    shim__q_lock(ss);
    if (!(atomic_load(&ss->pending) & bit)) {
        shim__q_unlock(ss);
        return false;
    }
    struct shim_siginst **pp = &ss->qhead, *prev = NULL, *found = NULL;
    while (*pp && (*pp)->sig != sig) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if ((found = *pp) != NULL) {
        *pp = found->next;
        if (ss->qtail == found)
            ss->qtail = prev;
    }
    bool more = false;
    for (struct shim_siginst *n = found ? found->next : NULL; n && !more; n = n->next)
        more = n->sig == sig;
    if (!more)
        atomic_fetch_and(&ss->pending, ~bit);
    shim__q_unlock(ss);
    if (found) {
        *out = *found;
        atomic_fetch_sub(&shim__inst_held, 1);
        shim__inst_put(found);
    } else {
        /* Pending without a node (none could be had): the kernel loses
         * the siginfo that way too. */
        memset(out, 0, sizeof *out);
        out->sig = sig;
        out->code = SI_USER;
    }
    return true;
}

/* Sends sig to the calling carrier's kernel thread as it was sent to the
 * fiber: tgkill for a pthread_kill or raise of this process, else
 * rt_tgsigqueueinfo with the instance's siginfo fields (the kernel lets
 * a process queue any to its own threads). */
static int shim__raise_on_carrier(const struct shim_siginst *in)
{
    long pid = fs__sys0(SYS_getpid), tid = fs__sys0(SYS_gettid);
    if (in->code == SI_TKILL && in->pid == (pid_t)pid && in->uid == (uid_t)fs__sys0(SYS_getuid))
        return (int)-fs__sys3(SYS_tgkill, pid, tid, in->sig);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = in->sig;
    si.si_code = in->code;
    si.si_pid = in->pid;
    si.si_uid = in->uid;
    si.si_value = in->value;
    return (int)-fs__sys4(SYS_rt_tgsigqueueinfo, pid, tid, in->sig, &si);
}

/* Delivers sig to the calling fiber, now (see the header): sent to this
 * carrier first unless it is pending for the process (proc). */
static void shim__deliver_one(struct shim_sigstate *ss, int sig, bool proc,
                              const struct shim_siginst *in)
{
    uint64_t bit = SHIM_SIGBIT(sig);
    struct sigaction sa;
    bool handler = false;
    uint64_t saved = shim__mask_of(ss), during = saved;
    if (REAL(sigaction)(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_IGN &&
        sa.sa_handler != SIG_DFL) {
        handler = true;
        if (!(sa.sa_flags & SA_RESTART))
            atomic_store(&ss->restart, 0);
        ss->handled++;
        during |= shim__set_to_bits(&sa.sa_mask) | ((sa.sa_flags & SA_NODEFER) ? 0 : bit);
        if (sa.sa_flags & SA_ONSTACK)
            shim__alt_for_delivery(&ss->alt); /* the fiber's, not the carrier's */
    }
    if (!proc)
        shim__raise_on_carrier(in);
    /* What pthread_sigmask reports in the handler. */
    __atomic_store_n(&ss->mask, during & ~SHIM_UNBLOCKABLE, __ATOMIC_RELAXED);
    /* Forget the cached mask first: a handler that never returns (it
     * exits the thread, or jumps out) leaves the kernel's mask behind. */
    fs_carrier_local()[SHIM_CARRIER_MASK_KNOWN] = 0;
    /* The kernel delivers it as this call returns. The handler may park:
     * the fiber stays on this kernel thread until it returns, so that
     * sigreturn restores the frame's mask and alternate stack settings on
     * the thread they were saved from. */
    fs_fiber *self = fs_self();
    ss->h_outer = saved; /* the mask the handler interrupts (the trampoline) */
    ss->h_outer_set = true;
    ss->h_after_set = false;
    fs_pin(self);
    shim__real_setmask(shim__carrier_want(saved) & ~bit);
    fs_unpin(self);
    ss->h_outer_set = false;
    /* The fiber's mask after the handler: what the handler left in its
     * frame's uc_sigmask (the trampoline), else the one it interrupted. */
    if (ss->h_after_set) {
        saved = ss->h_after;
        ss->h_after_set = false;
    }
    __atomic_store_n(&ss->mask, saved, __ATOMIC_RELAXED);
    fs_carrier_local()[SHIM_CARRIER_MASK_KNOWN] = 0;
    shim__carrier_follow(ss);
    if (handler)
        shim__alt_follow(&ss->alt);
    if (proc)
        shim__disp_kick(); /* taken: the dispatcher watches for it again */
}

/* Delivers the fiber's pending signals that its mask lets in, now. */
static void shim__deliver_pending(struct shim_sigstate *ss)
{
    for (;;) {
        uint64_t m = shim__mask_of(ss);
        uint64_t mine = atomic_load(&ss->pending) & ~m;
        uint64_t proc = atomic_load(&ss->ppending) & ~m;
        if (!(mine | proc))
            return;
        struct shim_siginst in;
        if (mine) {
            int sig = __builtin_ctzll(mine) + 1;
            if (shim__take_one(ss, sig, &in))
                shim__deliver_one(ss, sig, false, &in);
        } else {
            int sig = __builtin_ctzll(proc) + 1;
            if (atomic_fetch_and(&ss->ppending, ~SHIM_SIGBIT(sig)) & SHIM_SIGBIT(sig))
                shim__deliver_one(ss, sig, true, NULL);
        }
    }
}

static void shim__sig_hook(fs_fiber *f)
{
    struct shim_sigstate *ss = shim__sigstate(f);
    if (!ss)
        return;
    shim__carrier_follow(ss);
    shim__alt_follow(&ss->alt);
    /* The interrupted wait's wrapper asks right after this whether every
     * handler that ran had SA_RESTART (shim__sig_should_restart): those
     * run here, for this wait. A handler without it that ran elsewhere
     * (delivered by a poke, at an unblock, or in a sleep that ends with
     * EINTR anyway and never asks) must not make a later wait fail:
     * after a handled kill(), the next blocking read of the thread
     * returned EINTR at its next interrupt of any kind. */
    atomic_store(&ss->restart, 1);
    if (atomic_load_explicit(&ss->pending, memory_order_relaxed) |
        atomic_load_explicit(&ss->ppending, memory_order_relaxed))
        shim__deliver_pending(ss);
    /* Resumed inside the shim with an asynchronous cancel to act on (it
     * was parked or runnable when pthread_cancel came): the poke that acts
     * must find it back in the program's code. */
    if (SHIM_UNLIKELY(shim__cancel_async_due(f)) && atomic_load(&shim__poke_on))
        shim__repoke_later(ss);
}

/* Activation, on the adopted thread (carrier 0, main's fiber), before
 * any other carrier starts: they inherit its mask (runtime.c). */
void shim__signal_activate(void)
{
    uint64_t r = ~(SHIM_UNBLOCKABLE | SHIM_GLIBC_SIGS | SHIM_THREADSYNC);
    int dump = shim__observe_dump_signal();
    if (dump > 0 && dump <= 64)
        r &= ~SHIM_SIGBIT(dump);
    shim__routed = r;
    fs_set_interrupt_hook(shim__sig_hook);
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (ss) {
        fs_carrier_local()[SHIM_CARRIER_MASK_KNOWN] = 0;
        shim__carrier_follow(ss);
    }
    shim__disp_start(); /* a first pthread_create: glibc's SIGSETXID action is set */
    if (shim__poke_install())
        atomic_store(&shim__poke_on, true);
}

bool shim__sig_should_restart(void)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (!ss)
        return false;
    return atomic_exchange(&ss->restart, 1) != 0;
}

/* Queues one instance of sig (valid, not 0; si_code code, value v) to f
 * and gets it delivered: at once if f is the caller, else by interrupting
 * f if it does not block sig or waits for it in sigwait. f may not have
 * run yet: its local word (its signal state) is set before it can run
 * (thread.c). 0, or EAGAIN past RLIMIT_SIGPENDING. */
static int shim__post(fs_fiber *f, int sig, int code, union sigval v)
{
    struct shim_sigstate *ss = shim__sigstate(f);
    int rc = shim__enqueue(ss, sig, code, v);
    if (rc)
        return rc;
    if (f == fs_self())
        shim__deliver_pending(ss); /* to ourselves: now, as raise() would */
    else if (!(shim__mask_of(ss) & SHIM_SIGBIT(sig))) {
        fs_interrupt(f);
        shim__offload_cancel(f); /* in a handed-off call: woken, to interrupt it */
        shim__poke(f); /* if it runs: now, not at its next switch */
    } else if (atomic_load(&ss->waiting) & SHIM_SIGBIT(sig)) {
        fs_interrupt(f); /* Dekker with shim__sigwait: pending, then waiting */
    }
    return 0;
}

/* Moves the signals pending for the calling kernel thread alone (SigPnd
 * in /proc/thread-self/status: a pthread_kill to itself while it blocked
 * them) to the adopted fiber ss belongs to, so they stay its own and no
 * other fiber of this carrier takes or sees them. sigtimedwait dequeues a
 * thread's own signals before the process's. Raw syscalls: the caller is
 * already a fiber, whose open and read the shim would park. */
void shim__adopt_pending(struct shim_sigstate *ss)
{
    shim__alt_init(&ss->alt, true);
    char buf[2048];
    long fd = fs__sys4(SYS_openat, AT_FDCWD, "/proc/thread-self/status", O_RDONLY | O_CLOEXEC, 0);
    long n = fd < 0 ? -1 : fs__sys3(SYS_read, fd, buf, sizeof buf - 1);
    if (fd >= 0)
        fs__sys1(SYS_close, fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    const char *p = strstr(buf, "\nSigPnd:");
    if (!p)
        return;
    uint64_t bits = 0;
    for (p += 8; *p == ' ' || *p == '\t'; p++) {
    }
    for (;; p++) {
        int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
        if (d < 0)
            break;
        bits = bits << 4 | (uint64_t)d;
    }
    static const struct timespec zero;
    for (int sig = 1; sig <= 64 && sig < NSIG; sig++) {
        if (!(bits & SHIM_SIGBIT(sig)))
            continue;
        sigset_t one;
        siginfo_t si;
        sigemptyset(&one);
        sigaddset(&one, sig);
        /* Every instance, in order (real-time signals queue). */
        while (REAL(sigtimedwait)(&one, &si, &zero) == sig) {
            struct shim_siginst *node = shim__inst_alloc();
            if (node) {
                node->next = NULL;
                node->sig = sig;
                node->code = si.si_code;
                node->value = si.si_value;
                node->pid = si.si_pid;
                node->uid = si.si_uid;
                if (ss->qtail)
                    ss->qtail->next = node;
                else
                    ss->qhead = node;
                ss->qtail = node;
                atomic_fetch_add(&shim__inst_held, 1);
            }
            atomic_fetch_or(&ss->pending, SHIM_SIGBIT(sig));
        }
    }
}

uint32_t shim__sig_handled(void)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    return ss ? ss->handled : 0;
}

int shim__pthread_kill(pthread_t t, int sig)
{
    int rc = shim__kill_ended(t, sig); /* never glibc's code on a shim handle */
    if (rc >= 0)
        return rc;
    fs_fiber *f = shim__fiber_of(t);
    if (!f)
        return REAL(pthread_kill)(t, sig);
    /* glibc 2.36 refuses its own SIGCANCEL and SIGSETXID to any thread. */
    if (sig < 0 || sig >= NSIG || sig > 64 || sig == __SIGRTMIN || sig == __SIGRTMIN + 1)
        return EINVAL;
    if (sig == 0)
        return 0; /* it exists: its handle has not been released by a join */
    return shim__post(f, sig, SI_TKILL, (union sigval){0});
}
SHIM_ALIAS(pthread_kill)

/* glibc 2.36: ESRCH once the thread ended (its tid is 0), EINVAL for the
 * signals glibc keeps for itself and for a number the kernel refuses. */
int shim__pthread_sigqueue(pthread_t t, int sig, const union sigval value)
{
    fs_fiber *f;
    int rc = shim__fiber_running(t, &f);
    if (rc < 0)
        return REAL(pthread_sigqueue)(t, sig, value);
    if (rc)
        return rc;
    if (sig < 0 || sig >= NSIG || sig > 64 || sig == __SIGRTMIN || sig == __SIGRTMIN + 1)
        return EINVAL;
    if (sig == 0)
        return 0;
    return shim__post(f, sig, SI_QUEUE, value);
}
SHIM_ALIAS(pthread_sigqueue)

/* The caller's pending signals, as the kernel reports a thread's: those
 * sent to this fiber and those pending for the process, that its mask
 * blocks. */
int shim__sigpending(sigset_t *set)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (!ss)
        return REAL(sigpending)(set);
    sigset_t k;
    if (REAL(sigpending)(&k) != 0)
        return -1;
    uint64_t p = (shim__set_to_bits(&k) | atomic_load(&ss->pending)) & shim__mask_of(ss);
    shim__bits_to_set(p, set);
    return 0;
}
SHIM_ALIAS(sigpending)

/* The fiber's mask becomes m: the carrier follows, signals it lets in
 * that are pending for the fiber, or held for the process, are delivered
 * before we return (as the kernel delivers them before sigprocmask
 * returns). */
static void shim__mask_change(struct shim_sigstate *ss, uint64_t m)
{
    uint64_t unblocked = shim__mask_of(ss) & ~m;
    shim__mask_set(ss, m);
    shim__carrier_follow(ss);
    if (unblocked)
        shim__take_held(ss, unblocked);
    if ((atomic_load(&ss->pending) | atomic_load(&ss->ppending)) & ~shim__mask_of(ss))
        shim__deliver_pending(ss);
}

int shim__pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (!ss)
        return REAL(pthread_sigmask)(how, set, old);
    if (set && how != SIG_BLOCK && how != SIG_UNBLOCK && how != SIG_SETMASK)
        return EINVAL;
    uint64_t cur = shim__mask_of(ss);
    if (old) {
        /* Signals above 64 do not exist on Linux/x86-64; keep the rest. */
        shim__bits_to_set(cur, old);
    }
    if (!set)
        return 0;
    uint64_t b = shim__set_to_bits(set);
    uint64_t m = cur;
    if (how == SIG_BLOCK)
        m |= b;
    else if (how == SIG_UNBLOCK)
        m &= ~b;
    else
        m = b;
    shim__mask_change(ss, m & ~SHIM_UNBLOCKABLE);
    return 0;
}
SHIM_ALIAS(pthread_sigmask)

int shim__sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
    if (!fs_self())
        return REAL(sigprocmask)(how, set, old);
    int rc = shim__pthread_sigmask(how, set, old);
    if (rc) {
        errno = rc;
        return -1;
    }
    return 0;
}
SHIM_ALIAS(sigprocmask)

/* raise(sig) in a fiber: sent to the fiber, delivered before it returns.
 * glibc's would send it to the carrier's kernel thread. */
int shim__raise(int sig)
{
    fs_fiber *f = fs_self();
    if (!f || !shim__sigstate(f))
        return REAL(raise)(sig);
    if (sig < 0 || sig >= NSIG || sig > 64) {
        errno = EINVAL;
        return -1;
    }
    int rc = sig ? shim__post(f, sig, SI_TKILL, (union sigval){0}) : 0;
    if (rc) {
        errno = rc;
        return -1;
    }
    return 0;
}
SHIM_ALIAS(raise)

/* sigsuspend from a fiber parks it, not its carrier, with mask `set`
 * until a handler has run in it (an ignored signal does not end it);
 * then the mask is restored and it fails with EINTR. */
static int shim__suspend(struct shim_sigstate *ss, uint64_t m)
{
    shim__cancel_point(); /* a cancellation point */
    uint64_t saved = shim__mask_of(ss);
    uint32_t h0 = ss->handled;
    shim__mask_change(ss, m & ~SHIM_UNBLOCKABLE);
    while (ss->handled == h0 && !shim__cancel_due()) {
        /* Only an interrupt ends this park; one that came before it was
         * prepared ends it at once (park.c). The handler runs at its end. */
        fs_park_token tok = fs_park_prepare();
        fs_park(tok, FS_PARK_SLEEP, NULL, FS_NO_DEADLINE, NULL, NULL);
    }
    (void)shim__sig_should_restart(); /* never restarted */
    shim__mask_change(ss, saved);
    shim__cancel_point(); /* a cancel ended it: with the mask back */
    errno = EINTR;
    return -1;
}

int shim__sigsuspend(const sigset_t *set)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (!ss)
        return REAL(sigsuspend)(set);
    return shim__suspend(ss, shim__set_to_bits(set));
}
SHIM_ALIAS(sigsuspend)

int shim__pause(void)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (!ss)
        return REAL(pause)();
    return shim__suspend(ss, shim__mask_of(ss));
}
SHIM_ALIAS(pause)

int shim__sig_mask_push(const sigset_t *mask, uint64_t *saved)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (!ss) {
        *saved = 0;
        return 0;
    }
    uint32_t h0 = ss->handled;
    *saved = shim__mask_of(ss);
    shim__mask_change(ss, shim__set_to_bits(mask) & ~SHIM_UNBLOCKABLE);
    if (ss->handled == h0)
        return 0;
    (void)shim__sig_should_restart(); /* these calls are never restarted */
    return 1;
}

void shim__sig_mask_pop(uint64_t saved)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (ss)
        shim__mask_change(ss, saved);
}

void shim__sig_safe_point(void)
{
    fs_fiber *f = fs_self();
    struct shim_sigstate *ss = f ? shim__sigstate(f) : NULL;
    if (ss && shim__due(ss))
        shim__deliver_pending(ss);
}

void shim__sig_fiber_exit(void)
{
    if (!shim__routed || !fs_self())
        return;
    uint64_t *cl = fs_carrier_local();
    shim__real_setmask(shim__routed);
    cl[SHIM_CARRIER_MASK] = shim__routed;
    cl[SHIM_CARRIER_MASK_KNOWN] = 1;
    shim__alt_carrier_reset(); /* its memory may go with it */
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (ss)
        shim__queue_drop(ss); /* the record is cleared for its next thread */
    /* Marked for a later poke (an asynchronous cancel it acted on, a
     * signal): the dispatcher no longer sees it once it ended, and would
     * go on looking every millisecond for good. */
    if (ss && atomic_exchange(&ss->repoke, 0))
        atomic_fetch_sub(&shim__repokes, 1);
}

void shim__sig_exec_begin(void)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (!ss || !shim__routed)
        return;
    fs_carrier_local()[SHIM_CARRIER_MASK_KNOWN] = 0;
    shim__real_setmask(shim__mask_of(ss));
}

void shim__sig_exec_end(void)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (!ss || !shim__routed)
        return;
    fs_carrier_local()[SHIM_CARRIER_MASK_KNOWN] = 0;
    shim__carrier_follow(ss);
}

/* ---- sigwait and friends ----------------------------------------------- */

/* Takes one signal of bits from the fiber's own pending set; 0 if none. */
static int shim__take_fiber_pending(struct shim_sigstate *ss, uint64_t bits, siginfo_t *info)
{
    uint64_t p;
    while ((p = atomic_load(&ss->pending) & bits) != 0) {
        int sig = __builtin_ctzll(p) + 1;
        struct shim_siginst in;
        if (!shim__take_one(ss, sig, &in))
            continue; /* delivered by the hook meanwhile */
        if (!info)
            return sig;
        /* The siginfo the sender's tgkill or rt_tgsigqueueinfo would give
         * (si_code differs between kernels): send it to our carrier, where
         * the fiber's mask blocks it, and take it back at once. */
        sigset_t cur, one;
        static const struct timespec zero;
        sigemptyset(&one);
        sigaddset(&one, sig);
        if (REAL(pthread_sigmask)(SIG_BLOCK, NULL, &cur) == 0 && sigismember(&cur, sig) == 1 &&
            shim__raise_on_carrier(&in) == 0 &&
            REAL(sigtimedwait)(&one, info, &zero) == sig)
            return sig;
        memset(info, 0, sizeof *info);
        info->si_signo = sig;
        info->si_code = in.code;
        info->si_value = in.value;
        info->si_pid = in.pid;
        info->si_uid = in.uid;
        return sig;
    }
    return 0;
}

/* The fiber version of sigtimedwait: returns the signal, or -EAGAIN when
 * the timeout passes, -EINTR when a handler of another signal ran in this
 * fiber (restart says whether the caller wants that), -EINVAL. Contract
 * of sigtimedwait(2); timeout NULL waits forever. */
static int shim__sigwait_fiber(const sigset_t *set, siginfo_t *info, const struct timespec *tmo,
                               bool restart)
{
    struct shim_sigstate *ss = shim__sigstate(fs_self());
    if (tmo && (tmo->tv_sec < 0 || tmo->tv_nsec < 0 || tmo->tv_nsec >= 1000000000L))
        return -EINVAL;
    int64_t deadline = FS_NO_DEADLINE;
    if (tmo) {
        int64_t ns = tmo->tv_sec > INT64_MAX / 2000000000 ? INT64_MAX / 2
                                                          : tmo->tv_sec * 1000000000 + tmo->tv_nsec;
        deadline = fs_now() + ns;
    }
    uint64_t bits = shim__set_to_bits(set) & ~SHIM_UNBLOCKABLE;
    sigset_t waitset;
    shim__bits_to_set(bits, &waitset);
    static const struct timespec zero;
    int sfd = -1, rc;
    uint32_t snap = 0, h0 = ss->handled;
    atomic_store(&ss->waiting, bits); /* seq_cst: then we read pending */
    for (;;) {
        if ((rc = shim__take_fiber_pending(ss, bits, info)) > 0)
            break;
        if (sfd >= 0)
            snap = fs_fd_edges(sfd, FS_POLL_READ); /* before the check below */
        rc = REAL(sigtimedwait)(&waitset, info, &zero);
        if (rc > 0)
            break;
        if (errno == EINTR) {
            if (restart)
                continue;
            rc = -EINTR;
            break;
        }
        if (errno != EAGAIN) {
            rc = -errno;
            break;
        }
        if (sfd < 0) {
            sfd = signalfd(-1, &waitset, SFD_NONBLOCK | SFD_CLOEXEC);
            if (sfd < 0) {
                rc = -errno;
                break;
            }
            continue; /* take the edge snapshot, then look again */
        }
        int w = fs_wait_fd(sfd, FS_POLL_READ, snap, deadline, FS_PARK_POLL);
        if (w == -ETIMEDOUT) {
            /* One last look, as the kernel's timeout would have had. */
            if ((rc = shim__take_fiber_pending(ss, bits, info)) > 0)
                break;
            rc = REAL(sigtimedwait)(&waitset, info, &zero);
            if (rc <= 0)
                rc = -EAGAIN;
            break;
        }
        if (w == -EINTR && shim__cancel_due()) {
            rc = -EINTR; /* the wrapper acts on it, once this is undone */
            break;
        }
        if (w == -EINTR && ss->handled != h0) {
            /* A handler of another signal ran in this fiber. The kernel
             * never restarts sigwaitinfo/sigtimedwait, SA_RESTART or not. */
            (void)shim__sig_should_restart();
            h0 = ss->handled;
            if (!restart) {
                rc = -EINTR;
                break;
            }
        }
        /* Readiness, or an interrupt for a signal of ours: look again. */
    }
    atomic_store(&ss->waiting, 0);
    if (rc > 0 && (shim__routed & SHIM_SIGBIT(rc)))
        shim__disp_kick(); /* one it may have assigned to us is taken */
    if (sfd >= 0) {
        fs_fd_close(sfd);
        REAL(close)(sfd);
    }
    return rc;
}

int shim__sigtimedwait(const sigset_t *set, siginfo_t *info, const struct timespec *tmo)
{
    if (!fs_self())
        return REAL(sigtimedwait)(set, info, tmo);
    shim__cancel_point();
    int rc = shim__sigwait_fiber(set, info, tmo, false);
    if (rc == -EINTR)
        shim__cancel_point();
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return rc;
}
SHIM_ALIAS(sigtimedwait)

int shim__sigwaitinfo(const sigset_t *set, siginfo_t *info)
{
    if (!fs_self())
        return REAL(sigwaitinfo)(set, info);
    shim__cancel_point();
    int rc = shim__sigwait_fiber(set, info, NULL, false);
    if (rc == -EINTR)
        shim__cancel_point();
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return rc;
}
SHIM_ALIAS(sigwaitinfo)

/* sigwait returns an error number and is never interrupted (POSIX). */
int shim__sigwait(const sigset_t *set, int *sig)
{
    if (!fs_self())
        return REAL(sigwait)(set, sig);
    shim__cancel_point();
    int rc = shim__sigwait_fiber(set, NULL, NULL, true);
    if (rc == -EINTR)
        shim__cancel_point(); /* sigwait itself is never interrupted */
    if (rc < 0)
        return -rc;
    *sig = rc;
    return 0;
}
SHIM_ALIAS(sigwait)
