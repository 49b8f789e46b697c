/*
 * observe.c - seeing into a running program: counters at exit
 * (FIBERSHIM_STATS), a schedtrace line per interval (FIBERSHIM_TRACE) and
 * a fiber dump on a signal (FIBERSHIM_DUMP_SIGNAL).
 *
 * The dump is never written from the signal handler: the handler writes
 * one byte to a pipe, and a monitor thread (a plain kernel thread, not a
 * carrier) reads it and calls fs_dump(), which takes the runtime's
 * fiber-list lock. So a dump under load cannot deadlock a carrier that was
 * interrupted while holding a runtime lock, and the program keeps running.
 *
 * Stats format, one counter per line ("name value"), stable for tools:
 * see shim__stats_write.
 */
#include "shim.h"
#include "observe.h"
#include "offload.h"

#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int fs__parse_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

static const char *shim__stats_path; /* NULL: off; "" : stderr */
static uint64_t shim__trace_ms;
static int shim__dump_sig;
static int shim__dump_pipe[2] = {-1, -1};
static int shim__started;

static void shim__stats_write(int fd)
{
    struct fs_stats st;
    fs_stats_get(&st);
    char buf[8192];
    size_t n = 0;
#define P(name, v)                                                                         \
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s %llu\n", name, (unsigned long long)(v))
    n += (size_t)snprintf(buf + n, sizeof buf - n, "# fibershim stats\n");
    P("carriers", st.carriers);
    P("fibers_created", st.fibers_created);
    P("fibers_peak", st.fibers_peak);
    P("fibers_live", st.fibers_live);
    P("switches", st.switches);
    P("steals", st.steals);
    P("spins", st.spins);
    P("carrier_sleeps", st.carrier_sleeps);
    P("carrier_wakes", st.carrier_wakes);
    for (int r = 0; r < FS_PARK_NREASONS; r++) {
        char name[48];
        snprintf(name, sizeof name, "parks_%s", fs_park_reason_name((enum fs_park_reason)r));
        P(name, st.parks[r]);
    }
    P("epoll_wait_calls", st.epoll_wait_calls);
    P("epoll_ctl_calls", st.epoll_ctl_calls);
    P("timers_armed", st.timers_armed);
    P("timers_fired", st.timers_fired);
    P("timers_stolen", st.timers_stolen);
    P("strands_taken", st.strands_taken);
    P("syscalls_made", st.syscalls_made);
    P("syscalls_avoided", st.syscalls_avoided);
    P("monitor_harvests", st.monitor_harvests);
    P("handoff_carriers", st.extra_carriers);
    P("handoffs", st.handoffs);
    P("fiber_tls", st.fiber_tls);
    P("offloads", shim__offload_count());
    P("file_inplace", shim__file_inplace_count());
    /* Balance: how many fibers each carrier started, its busy time (not
     * asleep in epoll_wait) and the CPU time of its kernel thread.
     * Handoff carriers follow the configured ones. */
    for (unsigned i = 0; i < st.carriers + st.extra_carriers && n < sizeof buf - 128; i++) {
        struct fs_carrier_stats cs;
        if (fs_carrier_stats(i, &cs))
            break;
        char name[48];
        snprintf(name, sizeof name, "carrier%u_fibers_run", i);
        P(name, cs.fibers_run);
        snprintf(name, sizeof name, "carrier%u_busy_ms", i);
        P(name, cs.busy_ns / 1000000);
        snprintf(name, sizeof name, "carrier%u_cpu_ms", i);
        P(name, cs.cpu_ns / 1000000);
    }
#undef P
    for (size_t off = 0; off < n;) {
        ssize_t w = REAL(write)(fd, buf + off, n - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

static _Atomic int shim__stats_written;

/* The stats path with "%p" replaced by this process's pid and "%%" by "%",
 * so that every process of a multi-process server (forked children, a
 * child that dropped privileges and can write only its own file) keeps its
 * own counters. Runs at exit and in a fatal-signal handler: no stdio, no
 * allocation. Returns false if the result does not fit in n bytes. */
static bool shim__stats_expand(char *out, size_t n)
{
    size_t o = 0;
    for (const char *p = shim__stats_path; *p; p++) {
        char num[24];
        const char *piece = p;
        size_t len = 1;
        if (p[0] == '%' && p[1] == 'p') {
            unsigned long v = (unsigned long)getpid();
            size_t k = sizeof num;
            do
                num[--k] = (char)('0' + v % 10);
            while ((v /= 10) != 0);
            piece = num + k;
            len = sizeof num - k;
            p++;
        } else if (p[0] == '%' && p[1] == '%') {
            p++;
        }
        if (o + len >= n)
            return false;
        memcpy(out + o, piece, len);
        o += len;
    }
    out[o] = 0;
    return true;
}

static void shim__stats_at_exit(void)
{
    if (!shim__stats_path || atomic_exchange(&shim__stats_written, 1))
        return;
    if (!*shim__stats_path) {
        shim__stats_write(2);
        return;
    }
    char path[PATH_MAX];
    if (!shim__stats_expand(path, sizeof path)) {
        fprintf(stderr, "fibershim: cannot write stats: the path %s is too long\n",
                shim__stats_path);
        return;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "fibershim: cannot write stats to %s: %s\n", path, strerror(errno));
        return;
    }
    shim__stats_write(fd);
    REAL(close)(fd);
}

/* SIGINT/SIGTERM with the default action would end the process without
 * running atexit: write the stats first, then die of the same signal. */
static void shim__fatal_signal(int sig)
{
    shim__stats_at_exit();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void shim__dump_handler(int sig)
{
    (void)sig;
    int saved = errno;
    if (shim__dump_pipe[1] >= 0) {
        char c = 'd';
        (void)!REAL(write)(shim__dump_pipe[1], &c, 1);
    } else {
        static const char msg[] = "fibershim: fiber dump: no fibers yet (no thread created)\n";
        (void)!REAL(write)(2, msg, sizeof msg - 1);
    }
    errno = saved;
}

/* A program that sets its own action for the dump signal replaces the dump
 * (stunnel and SBCL use SIGUSR2; SBCL for its stop-the-world GC). The
 * program's choice wins, as it must, but silently waiting for a dump that
 * never comes is worse than a line that names the way out: say it once.
 * Only the program's calls come here with another action than ours. */
static _Atomic int shim__dump_taken;

static void shim__dump_signal_check(int sig, const void *h)
{
    if (SHIM_LIKELY(sig != shim__dump_sig || sig <= 0) || h == (const void *)shim__dump_handler ||
        atomic_exchange(&shim__dump_taken, 1))
        return;
    const char *name = sigabbrev_np(sig);
    fprintf(stderr,
            "fibershim: the program sets its own action for SIG%s (%d), the signal "
            "FIBERSHIM_DUMP_SIGNAL names: fiber dumps are off from now on; choose a signal "
            "the program leaves alone, e.g. a real-time one (FIBERSHIM_DUMP_SIGNAL=%d)\n",
            name ? name : "?", sig, SIGRTMAX - 2);
}

int shim__observe_dump_signal(void)
{
    return atomic_load(&shim__dump_taken) ? 0 : shim__dump_sig;
}

int shim__sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (SHIM_UNLIKELY(act != NULL && shim__dump_sig != 0))
        shim__dump_signal_check(sig, (act->sa_flags & SA_SIGINFO)
                                         ? (const void *)act->sa_sigaction
                                         : (const void *)act->sa_handler);
    /* Handlers behind signal.c's trampoline, so that they see their
     * fiber's masks. */
    if (shim__sig_wraps(sig))
        return shim__sigaction_wrapped(sig, act, old);
    return REAL(sigaction)(sig, act, old);
}
SHIM_ALIAS(sigaction)

sighandler_t shim__bsd_signal(int sig, sighandler_t handler);

/* glibc's signal() is its BSD one, over sigaction (sigcompat.c), where
 * the dump signal is checked. */
sighandler_t shim__signal(int sig, sighandler_t h)
{
    return shim__bsd_signal(sig, h);
}
SHIM_ALIAS(signal)

static int shim__parse_signal(const char *v)
{
    uint64_t n;
    if (fs__parse_uint(v, 1, (uint64_t)SIGRTMAX, &n) == 0)
        return (int)n;
    if (strncasecmp(v, "SIG", 3) == 0)
        v += 3;
    static const struct {
        const char *name;
        int sig;
    } names[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"USR1", SIGUSR1},
                 {"USR2", SIGUSR2}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM},
                 {"CHLD", SIGCHLD}, {"CONT", SIGCONT}, {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},
                 {"TTOU", SIGTTOU}, {"URG", SIGURG},   {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ},
                 {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH},
                 {"POLL", SIGPOLL}, {"IO", SIGIO},     {"PWR", SIGPWR},   {"SYS", SIGSYS}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(v, names[i].name) == 0)
            return names[i].sig;
    return -1;
}

int shim__observe_init(char *err, size_t errlen)
{
    const char *v;
    if ((v = secure_getenv("FIBERSHIM_STATS")) && *v && strcmp(v, "0") != 0) {
        shim__stats_path = strcmp(v, "1") == 0 ? "" : v;
        atexit(shim__stats_at_exit);
        int sigs[] = {SIGINT, SIGTERM};
        for (int i = 0; i < 2; i++) {
            struct sigaction old;
            if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL)
                signal(sigs[i], shim__fatal_signal);
        }
    }
    if ((v = secure_getenv("FIBERSHIM_TRACE")) && *v) {
        if (fs__parse_uint(v, 1, 3600000, &shim__trace_ms)) {
            snprintf(err, errlen,
                     "FIBERSHIM_TRACE=\"%s\" is invalid: expected an interval in milliseconds "
                     "from 1 to 3600000",
                     v);
            return -1;
        }
    }
    if ((v = secure_getenv("FIBERSHIM_DUMP_SIGNAL")) && *v) {
        int sig = shim__parse_signal(v);
        if (sig <= 0 || sig == SIGKILL || sig == SIGSTOP || sig == SIGSEGV || sig == SIGBUS) {
            snprintf(err, errlen,
                     "FIBERSHIM_DUMP_SIGNAL=\"%s\" is invalid: expected a catchable signal name "
                     "(USR2, SIGUSR2, ...) or number (1-%d, not KILL, STOP, SEGV or BUS)",
                     v, SIGRTMAX);
            return -1;
        }
        shim__dump_sig = sig;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = shim__dump_handler;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        sigaction(sig, &sa, NULL);
    }
    return 0;
}

static void shim__trace_line(int64_t dt_ns, struct fs_stats *prev)
{
    struct fs_stats st;
    fs_stats_get(&st);
    char buf[2048];
    double secs = (double)dt_ns / 1e9;
    uint64_t parks = 0, pparks = 0;
    for (int r = 0; r < FS_PARK_NREASONS; r++) {
        parks += st.parks[r];
        pparks += prev->parks[r];
    }
    int n = snprintf(buf, sizeof buf,
                     "fibershim: trace: fibers %llu live; %.0f switches/s %.0f parks/s %.0f "
                     "steals/s; carriers",
                     (unsigned long long)st.fibers_live,
                     (double)(st.switches - prev->switches) / secs,
                     (double)(parks - pparks) / secs, (double)(st.steals - prev->steals) / secs);
    for (unsigned i = 0; i < st.carriers + st.extra_carriers && n < (int)sizeof buf - 64; i++) {
        struct fs_carrier_stats cs;
        if (fs_carrier_stats(i, &cs))
            break;
        n += snprintf(buf + n, sizeof buf - (size_t)n, " [%u%s %s q=%u]", i,
                      cs.extra ? (cs.retired ? " spare,retired" : " spare") : "",
                      cs.sleeping ? "idle" : "busy", cs.runq_len);
    }
    n += snprintf(buf + n, sizeof buf - (size_t)n, "\n");
    (void)!REAL(write)(2, buf, (size_t)n);
    *prev = st;
}

static void *shim__monitor(void *arg)
{
    (void)arg;
    if (shim__dump_sig)
        fs_dump_prepare(); /* now, not when the program may be stuck in malloc */
    struct fs_stats prev;
    fs_stats_get(&prev);
    int64_t last = fs_now();
    for (;;) {
        int timeout = shim__trace_ms ? (int)shim__trace_ms : -1;
        if (shim__trace_ms) {
            int64_t left = last + (int64_t)shim__trace_ms * 1000000 - fs_now();
            timeout = left > 0 ? (int)((left + 999999) / 1000000) : 0;
        }
        struct pollfd p = {.fd = shim__dump_pipe[0], .events = POLLIN};
        int rc = REAL(poll)(&p, shim__dump_pipe[0] >= 0 ? 1 : 0, timeout);
        if (rc > 0) {
            char c[64];
            (void)!REAL(read)(shim__dump_pipe[0], c, sizeof c);
            fs_dump(2);
        }
        int64_t now = fs_now();
        if (shim__trace_ms && now - last >= (int64_t)shim__trace_ms * 1000000) {
            shim__trace_line(now - last, &prev);
            last = now;
        }
    }
    return NULL;
}

void shim__observe_start(void)
{
    if (shim__started || (!shim__trace_ms && !shim__dump_sig))
        return;
    shim__started = 1;
    if (shim__dump_sig && REAL(pipe2)(shim__dump_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        shim__dump_pipe[0] = shim__dump_pipe[1] = -1;
    if (shim__dump_pipe[0] >= 0) { /* out of the program's low fd numbers */
        shim__dump_pipe[0] = fs_fd_hide(shim__dump_pipe[0]);
        shim__dump_pipe[1] = fs_fd_hide(shim__dump_pipe[1]);
    }
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 256 * 1024);
    /* A plain kernel thread, so that it sleeps in the kernel and never
     * occupies a carrier. */
    if (REAL(pthread_create)(&t, &a, shim__monitor, NULL) != 0)
        fprintf(stderr, "fibershim: cannot start the monitor thread: trace and dump are off\n");
    pthread_attr_destroy(&a);
}

void shim__observe_atfork_child(void)
{
    if (!shim__started)
        return;
    shim__started = 0;
    if (shim__dump_pipe[0] >= 0) {
        REAL(close)(shim__dump_pipe[0]);
        REAL(close)(shim__dump_pipe[1]);
        shim__dump_pipe[0] = shim__dump_pipe[1] = -1;
    }
    if (fs_self())
        shim__observe_start();
}

/* A program that ends with _exit() (often from its own SIGINT/SIGTERM
 * handler) runs no atexit handler: write the stats here too. Formatting
 * and writing a few lines allocates nothing, so this is safe where _exit
 * itself is called from a signal handler. */
void shim___exit(int status)
{
    shim__stats_at_exit();
    REAL(_exit)(status);
    __builtin_unreachable();
}
SHIM_ALIAS(_exit)

void shim___Exit(int status)
{
    shim__stats_at_exit();
    REAL(_Exit)(status);
    __builtin_unreachable();
}
SHIM_ALIAS(_Exit)
