/*
 * dump.c - a listing of every fiber with a backtrace of its parked stack,
 * like Go's SIGQUIT goroutine dump.
 *
 * A parked fiber's registers sit in the switch frame on its stack
 * (context.h), so its stack can be unwound from another thread: the frame
 * gives rip, rsp, rbp and the other callee-saved registers libunwind
 * needs. The fiber may be woken while we walk; we then stop at that frame
 * and say so. A running fiber is only named (its stack is live).
 */
#define UNW_LOCAL_ONLY
#include "internal.h"

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
    if (unw_init_local(&c, &uc) < 0) {
        fs__dump_printf(fd, "    (no backtrace)\n");
        return;
    }
    for (int depth = 0; depth < 32; depth++) {
        unw_word_t ip, off;
        char sym[256];
        if (unw_get_reg(&c, UNW_REG_IP, &ip) < 0 || ip == 0)
            break;
        if (unw_get_proc_name(&c, sym, sizeof sym, &off) == 0)
            fs__dump_printf(fd, "    #%-2d 0x%016lx %s+0x%lx\n", depth, (unsigned long)ip, sym,
                            (unsigned long)off);
        else
            fs__dump_printf(fd, "    #%-2d 0x%016lx ?\n", depth, (unsigned long)ip);
        if (atomic_load(&f->park) != pw) {
            fs__dump_printf(fd, "    (woken during the dump)\n");
            return;
        }
        if (unw_step(&c) <= 0)
            break;
    }
}

void fs_dump(int fd)
{
    int64_t now = fs__now_coarse();
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
