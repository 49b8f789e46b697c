/*
 * dump.c - a listing of every fiber with a backtrace of its parked stack,
 * like Go's SIGQUIT goroutine dump.
 *
 * A parked fiber's registers sit in the switch frame on its stack
 * (context.h), so its stack can be unwound from another thread: the frame
 * gives rip, rsp, rbp and the other callee-saved registers libunwind
 * needs. The fiber may be woken while we walk; we then stop at that frame
 * and say so. A running fiber is only named (its stack is live).
 *
 * libunwind is loaded at the first dump with dlopen(RTLD_LOCAL), never
 * linked: libunwind.so.8 also defines the whole _Unwind_* API of libgcc_s
 * (_Unwind_Resume, _Unwind_GetLanguageSpecificData, ...), and as a
 * dependency of the preloaded library it came before libgcc_s in the
 * global scope of every program without libgcc_s among its own
 * dependencies (most C programs). Unwinds that libgcc_s drives (glibc's
 * pthread_cancel and pthread_exit, the shim's, C++ exceptions raised by a
 * library loaded later) then ran libgcc's personality routines against
 * libunwind's context accessors and skipped cleanups: a pthread_once
 * routine cancelled in the middle stayed "running" for ever. Without
 * libunwind installed the dump has no backtraces.
 */
#define UNW_LOCAL_ONLY
#include "internal.h"

#include <dlfcn.h>
#include <libunwind.h>
#include <stdarg.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

#include "sys.h"

static void fs__dump_write(int fd, const char *s, size_t n)
{
    while (n) {
        long w = fs__sys3(SYS_write, fd, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void fs__dump_printf(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fs__dump_printf(int fd, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0)
        fs__dump_write(fd, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static const char *fs__state_name(int st)
{
    switch (st) {
    case FS_F_RUNNABLE: return "runnable";
    case FS_F_RUNNING: return "running";
    case FS_F_PARKED: return "parked";
    case FS_F_DEAD: return "dead";
    default: return "?";
    }
}

/* libunwind's local-unwinding entry points (what the unw_* macros name
 * under UNW_LOCAL_ONLY), resolved at the first dump. */
static struct {
    _Atomic int state; /* 0 not tried, 1 loaded, -1 unavailable */
    int (*init_local)(unw_cursor_t *, unw_context_t *);
    int (*get_reg)(unw_cursor_t *, unw_regnum_t, unw_word_t *);
    int (*get_proc_name)(unw_cursor_t *, char *, size_t, unw_word_t *);
    int (*step)(unw_cursor_t *);
} fs__uw;

/* Loads libunwind if not yet tried; racing first dumps load it twice,
 * which dlopen's reference count absorbs. */
bool fs_dump_prepare(void)
{
    int st = atomic_load_explicit(&fs__uw.state, memory_order_acquire);
    if (st)
        return st > 0;
    void *h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    if (h) {
        fs__uw.init_local = (int (*)(unw_cursor_t *, unw_context_t *))dlsym(h, "_ULx86_64_init_local");
        fs__uw.get_reg = (int (*)(unw_cursor_t *, unw_regnum_t, unw_word_t *))dlsym(h, "_ULx86_64_get_reg");
        fs__uw.get_proc_name = (int (*)(unw_cursor_t *, char *, size_t, unw_word_t *))dlsym(
            h, "_ULx86_64_get_proc_name");
        fs__uw.step = (int (*)(unw_cursor_t *))dlsym(h, "_ULx86_64_step");
    }
    bool ok = h && fs__uw.init_local && fs__uw.get_reg && fs__uw.get_proc_name && fs__uw.step;
    atomic_store_explicit(&fs__uw.state, ok ? 1 : -1, memory_order_release);
    return ok;
}

static void fs__dump_backtrace(int fd, struct fs_fiber *f)
{
    uint64_t pw = atomic_load(&f->park);
    struct fs_switch_frame fr;
    memcpy(&fr, f->ctx.sp, sizeof fr);
    unw_context_t uc;
    memset(&uc, 0, sizeof uc);
    ucontext_t *u = (ucontext_t *)&uc;
    u->uc_mcontext.gregs[REG_RIP] = (greg_t)fr.rip;
    u->uc_mcontext.gregs[REG_RSP] = (greg_t)((char *)f->ctx.sp + FS_CTX_FRAME);
    u->uc_mcontext.gregs[REG_RBP] = (greg_t)fr.rbp;
    u->uc_mcontext.gregs[REG_RBX] = (greg_t)fr.rbx;
    u->uc_mcontext.gregs[REG_R12] = (greg_t)fr.r12;
    u->uc_mcontext.gregs[REG_R13] = (greg_t)fr.r13;
    u->uc_mcontext.gregs[REG_R14] = (greg_t)fr.r14;
    u->uc_mcontext.gregs[REG_R15] = (greg_t)fr.r15;
    unw_cursor_t c;
    if (atomic_load_explicit(&fs__uw.state, memory_order_acquire) <= 0 ||
        fs__uw.init_local(&c, &uc) < 0) {
        fs__dump_printf(fd, "    (no backtrace)\n");
        return;
    }
    for (int depth = 0; depth < 32; depth++) {
        unw_word_t ip, off;
        char sym[256];
        if (fs__uw.get_reg(&c, UNW_REG_IP, &ip) < 0 || ip == 0)
            break;
        if (fs__uw.get_proc_name(&c, sym, sizeof sym, &off) == 0)
            fs__dump_printf(fd, "    #%-2d 0x%016lx %s+0x%lx\n", depth, (unsigned long)ip, sym,
                            (unsigned long)off);
        else
            fs__dump_printf(fd, "    #%-2d 0x%016lx ?\n", depth, (unsigned long)ip);
        if (atomic_load(&f->park) != pw) {
            fs__dump_printf(fd, "    (woken during the dump)\n");
            return;
        }
        if (fs__uw.step(&c) <= 0)
            break;
    }
}

void fs_dump(int fd)
{
    int64_t now = fs__now_coarse();
    fs_dump_prepare(); /* before the lock: dlopen may take a while */
    struct fs_stats st;
    fs_stats_get(&st);
    fs__dump_printf(fd,
                    "fibershim: fiber dump: %lu live, %lu created, %u carriers\n",
                    (unsigned long)st.fibers_live, (unsigned long)st.fibers_created,
                    st.carriers);
    fs__spin_lock(&fs__g.all_lock);
    for (struct fs_fiber *f = fs__g.all_fibers; f; f = f->all_next) {
        int state = atomic_load(&f->state);
        fs__dump_printf(fd, "fiber %lu%s%s%s: %s", (unsigned long)f->id, f->name[0] ? " (" : "",
                        f->name, f->name[0] ? ")" : "", fs__state_name(state));
        if (f->home)
            fs__dump_printf(fd, " on carrier %u", f->home->id);
        if (state == FS_F_PARKED) {
            fs__dump_printf(fd, ", waiting for %s", fs_park_reason_name(f->why));
            if (f->why <= FS_PARK_CONNECT)
                fs__dump_printf(fd, " on fd %d", (int)(intptr_t)f->wait_obj);
            else if (f->wait_obj)
                fs__dump_printf(fd, " on %p", f->wait_obj);
            if (f->park_since)
                fs__dump_printf(fd, " for %.3f s", (double)(now - f->park_since) / 1e9);
            if (f->timer_sched)
                fs__dump_printf(fd, ", deadline in %.3f s",
                                (double)(f->timer.deadline - fs_now()) / 1e9);
        }
        fs__dump_printf(fd, "\n");
        if (state == FS_F_PARKED || (state == FS_F_RUNNABLE && f->ctx.sp))
            fs__dump_backtrace(fd, f);
    }
    fs__spin_unlock(&fs__g.all_lock);
}
