/*
 * tls.c - a fiber's thread control block: its own glibc struct pthread and
 * static TLS blocks, so that __thread, thread_local, errno and glibc's own
 * per-thread state (locale, h_errno, strerror buffers, the owner of stdio's
 * FILE locks, C++ exception globals...) are per fiber, as they are per
 * thread without the runtime.
 *
 * Layout. On x86-64 (TLS variant II) the fs base points at the TCB, glibc's
 * struct pthread, whose header (tcbhead_t) holds the self pointers, the dtv,
 * the stack-protector canary (%fs:0x28) and the pointer guard (%fs:0x30);
 * every module's static TLS block lies at a fixed negative offset below
 * it. glibc carves both from the top of a new thread's stack mapping
 * (nptl/allocatestack.c), and so do we, from the top of the fiber's stack
 * (runtime/stack.c hands out [lo, lo + size), guard below lo):
 *
 *     lo + size  +--------------------------------+  top of the reported stack
 *                | struct fs_fiber (64-aligned)   |  fiber.c
 *     tp ------> +--------------------------------+  fs base while the fiber runs;
 *                | struct pthread (TCB), 2368 B   |  aligned to the static TLS
 *                |  header: tcb, dtv, self, ...   |  alignment (64 here)
 *                |  %fs:0x28 canary, 0x30 guard   |
 *                +--------------------------------+ tp
 *                | static TLS blocks: the program,|  tp - l_tls_offset of each
 *                | libc, this library, ... then   |  module; glibc's surplus for
 *                | the surplus for dlopen'ed      |  later initial-exec modules
 *                | initial-exec modules           |  stays untouched (zero pages)
 *     frames --> +--------------------------------+  tp + TCB - roundup(static
 *                | the fiber's frames, growing    |  size, align): glibc's
 *                | down                           |  stacktop, the fiber's first
 *                |             ...                |  frame
 *     lo         +--------------------------------+
 *                | guard                          |
 *
 * The reported stack stays [lo, lo + size), TCB and TLS included, as
 * pthread_getattr_np reports a glibc thread's. An idle fiber touches the
 * top page (its struct, the TCB and the small static blocks) and the page
 * its first frames use: 8 KiB, where it was 4 KiB without per-fiber TLS.
 * A fiber on a caller-owned stack (pthread_attr_setstack) gets its TCB in
 * a block of its own instead, so that the stack the program sized is
 * left whole (glibc would carve from it, or refuse a small one).
 *
 * What is set, as allocatestack.c and start_thread do for a new thread:
 *  - the TCB is zeroed; tcb and self point at it; the dtv and every
 *    static block's init image come from ld.so's _dl_allocate_tls(tcb),
 *    the function glibc itself calls, so __tls_get_addr and modules
 *    dlopen'ed later work through the dtv's generation counter;
 *  - stack_guard, pointer_guard and the CET feature word are copied from
 *    the running thread (the same in every thread: a function may start
 *    on one fs base and return on another, and setjmp/longjmp and atexit
 *    mangle pointers with the guard);
 *  - multiple_threads = 1; the robust list head points to itself; the
 *    first TSD block is wired in (specific[0]); user_stack = 1, so that
 *    glibc never caches or frees the memory; stackblock and
 *    stackblock_size describe the fiber's stack (glibc's
 *    __libc_alloca_cutoff reads stackblock_size); the rseq area's cpu_id
 *    is "registration failed", so sched_getcpu() asks the kernel instead
 *    of reading a cpu_id no kernel updates; the resolver state pointer
 *    __resp points into the fiber's own struct pthread, as start_thread
 *    does; __ctype_init() runs on the fiber's first switch-in;
 *  - tid is the kernel thread's, written at every switch-in (raise() and
 *    glibc's owner checks read it); and the runtime's own fs__tls_sched.
 * At fiber exit, on the fiber: __call_tls_dtors() (C++ thread_local
 * destructors), before the TSD destructors as in start_thread (the shim
 * calls fs_tls_run_dtors() before its own; fs_exit runs what is left),
 * then what __libc_thread_freeres would free and we can reach (the
 * strerror/strsignal buffers, the resolver's sockets and addresses). After
 * the switch, _dl_deallocate_tls(tcb, false) frees the dtv and the dynamic
 * TLS blocks. A reused stack is initialised again from scratch.
 *
 * How the layout is known. glibc's struct pthread is private. The layout
 * used here is a mirror of glibc 2.36's nptl/descr.h and
 * sysdeps/x86_64/nptl/tls.h (struct fs_glibc_pthread below, built from
 * public types), taken only when gnu_get_libc_version() names a version in
 * fs__glibc_layouts, and then checked at run time against what glibc
 * publishes about itself: libthread_db's descriptors (_thread_db_*, three
 * uint32 {bits, count, offset} each: the size and the offsets of tid,
 * list, dtv, cancelhandling, specific, report_events, schedparam,
 * schedpolicy, start_routine, eventbuf, nextevent), __rseq_offset (the
 * rseq area, the struct's last member), and the running thread's own TCB
 * (self pointers, tid). Fields without a descriptor lie between ones with
 * one, so a shifted field shows up as a mismatch. Any mismatch, a missing
 * symbol, a sanitizer runtime (ASan and TSan keep their per-thread state
 * in TLS) or FIBERSHIM_FIBER_TLS=0 leaves per-fiber TLS off: one line on
 * stderr (none for the explicit switch or a sanitizer build), never a
 * guess.
 *
 * Switching. fs__tls_switch (tls.h) runs right before every
 * fs__context_switch: a fiber to the next, a fiber to the idle loop, the
 * idle loop to a fiber. wrfsbase where the kernel enables FSGSBASE
 * (AT_HWCAP2), else arch_prctl(ARCH_SET_FS), a system call per switch.
 * The idle loop runs on its carrier's own TCB (the carrier thread's, from
 * glibc), or, for an adopted thread whose TCB stays with its fiber (main,
 * a fork child), on one made here for it (fs__tls_idle_setup): main's
 * fiber keeps main's TCB, so a pthread_self() saved before the runtime
 * started still names it.
 *
 * The runtime's own per-carrier state. fs__tls_sched (internal.h) is an
 * initial-exec __thread variable: every context has a copy at the same
 * offset from its thread pointer, and the switch writes the incoming
 * context's copy (one store) before loading its fs base. We keep it there
 * rather than move it to %gs: a %gs base is 0 on threads the runtime did
 * not start (plain threads call fs_self() too), so reading it needs
 * rdgsbase and a test, which only FSGSBASE CPUs have; and %gs is not ours
 * to take from a program. The write-before-load order means a signal
 * handler sees the right sched on either side of the wrfsbase. The other
 * __thread variables of the runtime and the shim are per kernel thread on
 * purpose only where they are read on the carrier's own TCB (fault.c's
 * alternate signal stack, set up on it); the shim's cached carrier signal
 * mask moved to fs_carrier_local(), and its plain-thread TSD pointer is
 * never used by fibers.
 *
 * malloc. glibc's malloc keeps a tcache and an arena per thread in TLS and
 * gives them back in __libc_thread_freeres, which glibc does not export.
 * A TCB per fiber would give every fiber a tcache (640 bytes, plus the
 * chunks it caches) lost at its exit: a leak per connection. So the
 * tcache and arena words travel with the kernel thread instead: the
 * switch copies them from the outgoing TCB to the incoming one, and
 * malloc sees one thread per carrier, exactly as before per-fiber TLS
 * (the words are never used by two kernel threads at once, and a fiber
 * never switches inside malloc). Their offsets are not published either:
 * fs__tls_init finds them by running malloc(40) + free() once on a scratch
 * TCB and diffing libc's TLS block. Exactly two words must change: the
 * tcache, recognised by its shape (fs__tls_is_tcache), and the arena.
 * Anything else refuses per-fiber TLS. When
 * malloc is not glibc's (jemalloc, tcmalloc), it keeps its own per-fiber
 * state and frees it with a TSD destructor, which runs at fiber exit.
 *
 * What glibc does that we do not (README "Known limits"): fibers are not
 * on glibc's thread lists (GL(dl_stack_used)/GL(dl_stack_user)). So a
 * module with initial-exec TLS dlopen'ed after a fiber started has its
 * block initialised in that fiber's surplus only if the fiber starts later
 * (_dl_allocate_tls_init); and dlclose() does not wait for a fiber inside
 * a symbol lookup of another carrier. The kernel's robust list stays the
 * carrier's: the shim moves a robust mutex a fiber locks onto it
 * (shim/robust.c).
 *
 * setuid() and its family. Credentials are per kernel thread; glibc makes
 * them per process by flagging every thread it lists (SETXID bit in
 * cancelhandling) and sending each a SIGSETXID, whose handler makes the
 * system call and clears the flag of THREAD_SELF; glibc repeats until no
 * flag is left. On a carrier running a fiber, THREAD_SELF is the fiber's
 * TCB, and the flag of the TCB glibc listed for that kernel thread (the
 * carrier's own, or main's) would never clear: setuid() would loop for
 * ever. So the runtime wraps glibc's handler (fs__tls_wrap_setxid, once
 * glibc installed it at the first pthread_create): ours first clears the flag
 * of every listed TCB that names the interrupted kernel thread (as glibc's
 * handler would for its own, and before it makes the call, which only then
 * lets glibc go on), then runs glibc's. Every carrier's kernel thread is
 * listed: its own TCB, or for carrier 0 main's, whose fiber never leaves
 * it (adopted fibers are pinned, internal.h), so main's TCB always
 * carries carrier 0's tid.
 *
 * Sanitizers: a build with -fsanitize=address or thread compiles the
 * per-fiber mode out (they keep per-thread state, TSan's whole thread
 * state, in TLS and know nothing of a second TCB per thread); a normal
 * build refuses it when it finds a sanitizer runtime in the process.
 */
#include "internal.h"
#include "sys.h"
#include "tls.h"

#include <asm/prctl.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <gnu/libc-version.h>
#include <link.h>
#include <linux/futex.h>
#include <resolv.h>
#undef p_type /* resolv.h's name for __p_type would rename Elf64_Phdr.p_type */
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/rseq.h>
#include <thread_db.h>
#include <unistd.h>
#include <unwind.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FS_TLS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FS_TLS_SANITIZED 1
#endif
#endif

#ifndef HWCAP2_FSGSBASE
#define HWCAP2_FSGSBASE (1 << 1)
#endif

struct fs_tls_info fs__tls;

/* ---- glibc's struct pthread ---------------------------------------------- */

/* sysdeps/x86_64/nptl/tls.h, glibc 2.36: the TCB header. Its layout is ABI
 * in practice (GCC hard-codes %fs:0x28 and %fs:0x30; sanitizers depend on
 * its size). */
struct fs_glibc_tcbhead {
    void *tcb; /* the TCB itself */
    void *dtv;
    void *self; /* struct pthread (the same address here) */
    int multiple_threads;
    int gscope_flag;
    uintptr_t sysinfo;
    uintptr_t stack_guard;   /* %fs:0x28 */
    uintptr_t pointer_guard; /* %fs:0x30 */
    unsigned long unused_vgetcpu_cache[2];
    unsigned int feature_1; /* CET: IBT, SHSTK */
    int glibc_unused1;
    void *private_tm[4];
    void *private_ss;
    unsigned long long ssp_base;
    char glibc_unused2[8 * 4 * 16] __attribute__((aligned(32)));
    void *padding[8];
};

struct fs_glibc_key_data {
    uintptr_t seq;
    void *data;
};

/* nptl/descr.h, glibc 2.36 (x86-64): struct pthread, member for member,
 * with public types of the same size and alignment. */
struct fs_glibc_pthread {
    union {
        struct fs_glibc_tcbhead header;
        void *padding[24];
    };
    struct {
        void *next, *prev;
    } list; /* on GL(dl_stack_used) or GL(dl_stack_user) */
    int tid;
    void *robust_prev;
    struct robust_list_head robust_head;
    void *cleanup;
    void *cleanup_jmp_buf;
    int cancelhandling;
    int flags;
    struct fs_glibc_key_data specific_1stblock[32];
    struct fs_glibc_key_data *specific[32];
    bool specific_used;
    bool report_events;
    bool user_stack;
    bool stopped_start;
    int setup_failed;
    int lock;
    unsigned int setxid_futex;
    void *joinid;
    void *result;
    struct sched_param schedparam;
    int schedpolicy;
    void *(*start_routine)(void *);
    void *arg;
    td_eventbuf_t eventbuf;
    void *nextevent;
    struct _Unwind_Exception exc;
    void *stackblock;
    size_t stackblock_size;
    size_t guardsize;
    size_t reported_guardsize;
    void *tpp;
    struct __res_state res;
    unsigned long sigmask[1]; /* internal_sigset_t: 64 signals */
    bool c11;
    bool exiting;
    int exit_lock;
    struct {
        char *strsignal_buf;
        char *strerror_l_buf;
    } tls_state; /* struct tls_internal_t */
    struct rseq rseq_area;
} __attribute__((aligned(64)));

/* What the mirror must give, as glibc 2.36's libthread_db descriptors and
 * __rseq_offset report it on Debian 12 (2026-11-29): a compiler or header
 * that lays the mirror out differently fails the build, not a fiber. */
_Static_assert(sizeof(struct fs_glibc_pthread) == 2368, "struct pthread size");
_Static_assert(offsetof(struct fs_glibc_pthread, header.stack_guard) == 0x28, "stack_guard");
_Static_assert(offsetof(struct fs_glibc_pthread, header.pointer_guard) == 0x30, "pointer_guard");
_Static_assert(offsetof(struct fs_glibc_pthread, header.feature_1) == 0x48, "feature_1");
_Static_assert(offsetof(struct fs_glibc_pthread, list) == 704, "list");
_Static_assert(offsetof(struct fs_glibc_pthread, tid) == 720, "tid");
_Static_assert(offsetof(struct fs_glibc_pthread, robust_head) == 736, "robust_head");
_Static_assert(offsetof(struct fs_glibc_pthread, cancelhandling) == 776, "cancelhandling");
_Static_assert(offsetof(struct fs_glibc_pthread, specific) == 1296, "specific");
_Static_assert(offsetof(struct fs_glibc_pthread, report_events) == 1553, "report_events");
_Static_assert(offsetof(struct fs_glibc_pthread, nextevent) == 1632, "nextevent");
_Static_assert(offsetof(struct fs_glibc_pthread, stackblock) == 1680, "stackblock");
_Static_assert(offsetof(struct fs_glibc_pthread, res) == 1720, "res");
_Static_assert(offsetof(struct fs_glibc_pthread, tls_state) == 2304, "tls_state");
_Static_assert(offsetof(struct fs_glibc_pthread, rseq_area) == 2336, "rseq_area");

/* glibc versions whose struct pthread is the mirror above, checked from
 * their source and on a running system. A version not listed is refused:
 * 2.37 already inserts rtld_catch before tls_state. */
static const char *const fs__glibc_layouts[] = {"2.36"};

/* A libthread_db descriptor and the offset the mirror gives its field. */
struct fs_tls_descr {
    const char *sym;
    size_t want;
};

#define FS_DESCR(field)                                                                            \
    {                                                                                              \
        "_thread_db_pthread_" #field, offsetof(struct fs_glibc_pthread, field)                     \
    }
static const struct fs_tls_descr fs__descrs[] = {
    FS_DESCR(list),
    FS_DESCR(tid),
    FS_DESCR(cancelhandling),
    FS_DESCR(specific),
    FS_DESCR(report_events),
    FS_DESCR(schedpolicy),
    FS_DESCR(start_routine),
    FS_DESCR(eventbuf),
    FS_DESCR(nextevent),
    {"_thread_db_pthread_schedparam_sched_priority", offsetof(struct fs_glibc_pthread, schedparam)},
    {"_thread_db_pthread_dtvp", offsetof(struct fs_glibc_pthread, header.dtv)},
};

/* ---- what we call in ld.so and libc -------------------------------------- */

static void *(*fs__dl_allocate_tls)(void *tcb);
static void (*fs__dl_deallocate_tls)(void *tcb, bool dealloc_tcb);
static void (*fs__ctype_init)(void);
static void (*fs__call_tls_dtors)(void);
static ptrdiff_t fs__resp_tpoff; /* glibc's __resp, from the thread pointer */

/* ---- the probe ----------------------------------------------------------- */

/* Why per-fiber TLS is off, for the one line on stderr. */
static char fs__tls_refusal[200];

__attribute__((format(printf, 1, 2))) static bool fs__tls_refuse(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fs__tls_refusal, sizeof fs__tls_refusal, fmt, ap);
    va_end(ap);
    return false;
}

/* glibc's own description of struct pthread must match the mirror. */
static bool fs__tls_check_descriptors(void)
{
    const uint32_t *d = dlvsym(RTLD_DEFAULT, "_thread_db_sizeof_pthread", "GLIBC_PRIVATE");
    if (!d || d[0] != sizeof(struct fs_glibc_pthread))
        return fs__tls_refuse("glibc's struct pthread is %u bytes, not %zu", d ? d[0] : 0,
                              sizeof(struct fs_glibc_pthread));
    for (size_t i = 0; i < sizeof fs__descrs / sizeof fs__descrs[0]; i++) {
        d = dlvsym(RTLD_DEFAULT, fs__descrs[i].sym, "GLIBC_PRIVATE");
        if (!d || d[2] != fs__descrs[i].want)
            return fs__tls_refuse("glibc's %s says offset %u, the checked layout %zu",
                                  fs__descrs[i].sym, d ? d[2] : 0, fs__descrs[i].want);
    }
    const ptrdiff_t *rseq_off = dlvsym(RTLD_DEFAULT, "__rseq_offset", "GLIBC_2.35");
    if (!rseq_off || *rseq_off != (ptrdiff_t)offsetof(struct fs_glibc_pthread, rseq_area))
        return fs__tls_refuse("glibc's __rseq_offset is %td, the checked layout %zu",
                              rseq_off ? *rseq_off : 0,
                              offsetof(struct fs_glibc_pthread, rseq_area));
    return true;
}

static bool fs__tls_find_symbols(void)
{
    void (*static_info)(size_t *, size_t *);
    static const char *const names[] = {"_dl_allocate_tls",        "_dl_deallocate_tls",
                                        "_dl_get_tls_static_info", "__ctype_init",
                                        "__call_tls_dtors",        "__resp"};
    void *p[6];
    for (int i = 0; i < 6; i++) {
        p[i] = dlvsym(RTLD_DEFAULT, names[i], "GLIBC_PRIVATE");
        if (!p[i])
            return fs__tls_refuse("glibc does not export %s", names[i]);
    }
    fs__dl_allocate_tls = (void *(*)(void *))p[0];
    fs__dl_deallocate_tls = (void (*)(void *, bool))p[1];
    static_info = (void (*)(size_t *, size_t *))p[2];
    fs__ctype_init = (void (*)(void))p[3];
    fs__call_tls_dtors = (void (*)(void))p[4];

    size_t size, align;
    static_info(&size, &align);
    if (align < 64 || (align & (align - 1)) || align > 4096 ||
        size < sizeof(struct fs_glibc_pthread))
        return fs__tls_refuse("glibc's static TLS (%zu bytes, aligned %zu) is implausible", size,
                              align);
    fs__tls.tcb_size = sizeof(struct fs_glibc_pthread);
    fs__tls.align = align;
    /* glibc's __nptl_tls_static_size_for_stack(). */
    fs__tls.block_size = (size + align - 1) & ~(align - 1);

    /* dlvsym of a TLS symbol gives its address in the calling thread. */
    char *tp = fs__tls_tp();
    fs__resp_tpoff = (char *)p[5] - tp;
    if (fs__resp_tpoff >= 0 || -fs__resp_tpoff > (ptrdiff_t)(fs__tls.block_size - fs__tls.tcb_size))
        return fs__tls_refuse("glibc's __resp is not in static TLS");
    fs__tls.sched_tpoff = (char *)&fs__tls_sched - tp;
    return true;
}

/* The running thread's TCB must look like the mirror says. */
static bool fs__tls_check_self(void)
{
    struct fs_glibc_pthread *me = fs__tls_tp();
    if (me->header.tcb != me || me->header.self != me)
        return fs__tls_refuse("the thread pointer is not a glibc TCB");
    if (me->tid != (int)fs__sys0(SYS_gettid))
        return fs__tls_refuse("glibc's struct pthread tid does not hold the thread id");
    if (me->header.feature_1 & 2)
        return fs__tls_refuse("CET shadow stacks are on");
    return true;
}

static bool fs__tls_check_fs(void)
{
    if (getauxval(AT_HWCAP2) & HWCAP2_FSGSBASE) {
        fs__tls.fsgsbase = true;
        return true;
    }
    unsigned long fs;
    if (fs__sys2(SYS_arch_prctl, ARCH_GET_FS, &fs) != 0 || (void *)fs != fs__tls_tp())
        return fs__tls_refuse("neither wrfsbase nor arch_prctl(ARCH_SET_FS) works");
    return true;
}

/* ---- initialising a TCB ------------------------------------------------- */

/* glibc's dtv (sysdeps/generic/dl-dtv.h): dtv[-1].counter is its
 * capacity, dtv[0].counter the generation it was brought up to, and
 * dtv[m] the TLS block of module id m ({val, to_free}). The array is a
 * malloc chunk that starts at dtv[-1]. */
typedef union {
    size_t counter;
    struct {
        void *val, *to_free;
    } pointer;
} fs_dtv;

/* Trims the dtv _dl_allocate_tls made for pd to the modules loaded now.
 * glibc sizes it for 14 more (DTV_SURPLUS): 19 entries, a 320-byte chunk
 * for a program with three TLS modules, which was what an idle fiber used
 * beyond its two pages (runtime_bench row 5). A smaller capacity is one
 * glibc handles itself: every module id is checked against dtv[-1] before
 * use (_dl_update_slotinfo, _dl_allocate_tls_init, _dl_deallocate_tls)
 * and the array grown with realloc when it falls short, as a thread's
 * grows after enough dlopens. So the new array must be a malloc chunk
 * too (never memory of ours: glibc would realloc it, see glibc bug
 * 32412). Every loaded module's entry is set (val is its block or
 * TLS_DTV_UNALLOCATED, never NULL), so the last non-NULL entry is the
 * highest id in use. Left as it is if malloc fails. */
static void fs__dtv_trim(struct fs_glibc_pthread *pd)
{
    fs_dtv *dtv = pd->header.dtv;
    size_t cap = dtv[-1].counter, used = cap;
    while (used > 0 && dtv[used].pointer.val == NULL)
        used--;
    if (used == cap)
        return;
    fs_dtv *trimmed = malloc((used + 2) * sizeof *trimmed);
    if (!trimmed)
        return;
    memcpy(trimmed, dtv - 1, (used + 2) * sizeof *trimmed);
    trimmed[0].counter = used;
    pd->header.dtv = trimmed + 1;
    free(dtv - 1);
}

/* Makes tcb a TCB for a context running on stack st, as allocatestack.c
 * and start_thread do. Returns 0 or -EAGAIN (no memory for the dtv). */
static int fs__tcb_init(struct fs_glibc_pthread *pd, const struct fs_stack *st, void *(*fn)(void *),
                        void *arg)
{
    struct fs_glibc_pthread *me = fs__tls_tp();
    memset(pd, 0, sizeof *pd);
    pd->header.tcb = pd;
    pd->header.self = pd;
    pd->header.multiple_threads = 1;
    pd->header.sysinfo = me->header.sysinfo;
    pd->header.stack_guard = me->header.stack_guard;
    pd->header.pointer_guard = me->header.pointer_guard;
    pd->header.feature_1 = me->header.feature_1;
    /* An empty list node, not on glibc's thread lists: fork()'s child
     * unlinks THREAD_SELF from them, and then links it (see
     * fs__tls_atfork_child). */
    pd->list.next = pd->list.prev = &pd->list;
    /* The kernel's robust list format: futex word = entry + futex_offset. */
    pd->robust_head.futex_offset = (long)offsetof(pthread_mutex_t, __data.__lock) -
                                   (long)offsetof(pthread_mutex_t, __data.__list.__next);
    pd->robust_head.list.next = (struct robust_list *)&pd->robust_head;
    pd->robust_prev = &pd->robust_head;
    pd->specific[0] = pd->specific_1stblock;
    pd->user_stack = true;
    pd->start_routine = fn; /* for debuggers (libthread_db) */
    pd->arg = arg;
    pd->stackblock = st->guard ? st->guard : st->lo;
    pd->stackblock_size = st->size + st->guard_size;
    pd->guardsize = st->guard_size;
    pd->reported_guardsize = st->guard_size;
    pd->rseq_area.cpu_id = (uint32_t)RSEQ_CPU_ID_REGISTRATION_FAILED;
    if (!fs__dl_allocate_tls(pd))
        return -EAGAIN;
    fs__dtv_trim(pd);
    /* After the init images: __resp's image is main's _res. */
    *(void **)(void *)((char *)pd + fs__resp_tpoff) = &pd->res;
    return 0;
}

/* ---- malloc's per-thread words ------------------------------------------- */

struct fs_tls_libc {
    uintptr_t base;  /* libc's load address */
    ptrdiff_t tpoff; /* its static TLS block, from the thread pointer */
    size_t len;
};

static int fs__tls_libc_cb(struct dl_phdr_info *info, size_t n, void *arg)
{
    struct fs_tls_libc *l = arg;
    (void)n;
    if (info->dlpi_addr != l->base)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type == PT_TLS && info->dlpi_tls_data) {
            l->tpoff = (char *)info->dlpi_tls_data - (char *)fs__tls_tp();
            l->len = info->dlpi_phdr[i].p_memsz;
        }
    }
    return 1;
}

/* Whether word w (a pointer read from TLS) is the glibc tcache the
 * thread just made. tcache_perthread_struct is uint16_t counts[64], then
 * tcache_entry *entries[64]: 640 bytes, in a chunk of its own (656 bytes
 * with its header), where a bin's entry is set exactly when its count is
 * not zero. What the bins hold after malloc(40) and free() varies: the
 * freed chunk; or seven others of its size, when malloc filled the bin
 * from the main arena's fastbins or small bins (a busy heap, CPython's)
 * and the freed one went to a fastbin; or nothing, with the tcache
 * tunables (glibc.malloc.tcache_count=0, tcache_max below 40). So the
 * shape is what is checked, not the contents. */
static bool fs__tls_is_tcache(uintptr_t w)
{
    if (w < 4096 || w % 16)
        return false;
    size_t hdr = ((const size_t *)w)[-1] & ~(size_t)7; /* less the flag bits */
    if (hdr != 64 * sizeof(uint16_t) + 64 * sizeof(void *) + 2 * sizeof(size_t))
        return false;
    const uint16_t *counts = (const uint16_t *)w;
    void *const *entries = (void *const *)(w + 64 * sizeof(uint16_t));
    for (int i = 0; i < 64; i++)
        if ((counts[i] == 0) != (entries[i] == NULL))
            return false;
    return true;
}

/* Finds glibc malloc's tcache and arena words (see "malloc" above) by
 * running malloc on a scratch TCB. Runs the fs switch for the first time
 * too, and checks that TLS follows it (errno's address moves by exactly
 * the distance between the two thread pointers). */
static bool fs__tls_probe_malloc(void)
{
    /* libc itself (its handle, not a symbol: a preloaded library may
     * interpose any of them), and whether the malloc everyone calls is its
     * own. */
    void *h = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    struct link_map *lm = NULL;
    if (!h || dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0 || !lm) {
        if (h)
            dlclose(h);
        return fs__tls_refuse("cannot locate libc");
    }
    bool glibc_malloc = dlsym(h, "malloc") == dlsym(RTLD_DEFAULT, "malloc");
    dlclose(h); /* RTLD_NOLOAD took a reference: libc stays loaded */
    struct fs_tls_libc l = {.base = lm->l_addr};
    dl_iterate_phdr(fs__tls_libc_cb, &l);
    if (!l.len || l.tpoff >= 0 || l.tpoff + (ptrdiff_t)l.len > 0)
        return fs__tls_refuse("libc's TLS block is not in static TLS");

    size_t len = fs__tls.block_size + fs__tls.align;
    char *mem = aligned_alloc(fs__tls.align, len);
    if (!mem)
        return fs__tls_refuse("no memory for a scratch TCB");
    char *tcb = mem + fs__tls.block_size - fs__tls.tcb_size;
    struct fs_stack st = {.lo = mem, .size = len};
    if (fs__tcb_init((struct fs_glibc_pthread *)(void *)tcb, &st, NULL, NULL)) {
        free(mem);
        return fs__tls_refuse("no memory for a scratch TCB");
    }
    ((struct fs_glibc_pthread *)(void *)tcb)->tid = (int)fs__sys0(SYS_gettid);

    enum { NWORDS = 64 };
    uintptr_t before[NWORDS];
    size_t nwords = l.len / sizeof(uintptr_t) < NWORDS ? l.len / sizeof(uintptr_t) : NWORDS;
    char *block = tcb + l.tpoff;
    memcpy(before, block, nwords * sizeof(uintptr_t));

    /* glibc's, through a volatile pointer: __errno_location is declared
     * const, and the compiler would reuse the first answer. */
    int *(*volatile errloc)(void) = __errno_location;
    void *(*volatile do_malloc)(size_t) = malloc;
    void (*volatile do_free)(void *) = free;
    char *tp = fs__tls_tp();
    int saved = errno;
    char *e0 = (char *)errloc();
    fs__tls_load(tcb);
    char *e1 = (char *)errloc();
    void *p = NULL;
    if (e1 - e0 == tcb - tp && glibc_malloc) {
        p = do_malloc(40);
        do_free(p);
    }
    fs__tls_load(tp);
    errno = saved;

    bool ok = true;
    if (e1 - e0 != tcb - tp) {
        ok = fs__tls_refuse("TLS does not follow the fs base (errno stayed put)");
    } else if (glibc_malloc) {
        int nchanged = 0;
        ptrdiff_t tcache = 0, other = 0;
        for (size_t i = 0; i < nwords; i++) {
            uintptr_t w;
            memcpy(&w, block + i * sizeof w, sizeof w);
            if (w == before[i])
                continue;
            nchanged++;
            ptrdiff_t off = l.tpoff + (ptrdiff_t)(i * sizeof w);
            if (!tcache && fs__tls_is_tcache(w))
                tcache = off;
            else
                other = off;
        }
        if (nchanged != 2 || !tcache || !other)
            ok = fs__tls_refuse("glibc's malloc keeps per-thread state this build does not "
                                "know (%d words changed, tcache %s)",
                                nchanged, tcache ? "found" : "not found");
        fs__tls.tcache_tpoff = tcache;
        fs__tls.arena_tpoff = other;
    }
    /* The scratch TCB's dtv goes; its tcache and arena stay in glibc's
     * hands (an arena serves any thread; 640 bytes of tcache, once). */
    fs__dl_deallocate_tls(tcb, false);
    free(mem);
    return ok;
}

/* ---- setuid() and its family (see the top of the file) ----------------------- */

#define FS_SIGSETXID 33            /* glibc's __SIGRTMIN + 1 */
#define FS_SETXID_BITMASK (1 << 6) /* nptl/descr.h SETXID_BIT */

/* The kernel's struct sigaction (raw rt_sigaction: glibc's sigaction
 * refuses its internal signals). */
struct fs_kernel_sigaction {
    void (*handler)(int, siginfo_t *, void *);
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};

static struct fs_kernel_sigaction fs__setxid_glibc;

/* Clears pd's SETXID flag if glibc listed it for kernel thread tid and it
 * is not the TCB running (glibc's handler clears that one), as glibc's
 * handler would, and wakes a setxid_futex waiter. */
static void fs__tls_setxid_clear(struct fs_glibc_pthread *pd, const void *running, int tid)
{
    if (!pd || pd == running || __atomic_load_n(&pd->tid, __ATOMIC_RELAXED) != tid)
        return;
    int ch = __atomic_load_n(&pd->cancelhandling, __ATOMIC_RELAXED);
    while ((ch & FS_SETXID_BITMASK) &&
           !__atomic_compare_exchange_n(&pd->cancelhandling, &ch, ch & ~FS_SETXID_BITMASK, false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        ;
    if (!(ch & FS_SETXID_BITMASK))
        return;
    __atomic_store_n(&pd->setxid_futex, 1, __ATOMIC_RELEASE);
    fs__sys3(SYS_futex, &pd->setxid_futex, FS_FUTEX_WAKE_PRIVATE, 1);
}

/* Async-signal-safe: reads the sched table (scheds are never freed) and
 * TCBs, takes no lock. */
static void fs__tls_setxid_handler(int sig, siginfo_t *si, void *ctx)
{
    struct fs_sched *s = fs__cur_sched();
    /* glibc's own checks: its signal, sent by this process with tgkill. */
    if (s && si->si_code == SI_TKILL && si->si_pid == (pid_t)fs__sys0(SYS_getpid)) {
        int tid = (int)fs__sys0(SYS_gettid);
        void *running = fs__tls_tp();
        fs__tls_setxid_clear(s->idle_tp, running, tid);
        unsigned n = atomic_load_explicit(&fs__g.nstarted, memory_order_acquire);
        for (unsigned i = 0; i < n; i++)
            if (fs__g.scheds[i])
                fs__tls_setxid_clear(fs__g.scheds[i]->adopted_tp, running, tid);
    }
    fs__setxid_glibc.handler(sig, si, ctx);
}

void fs__tls_wrap_setxid(void)
{
    /* Once wrapped, for good: glibc installs its handler once per process
     * (and a fork child inherits ours). Racing first callers both wrap
     * glibc's handler, which is the same one. */
    static _Atomic bool wrapped;
    struct fs_kernel_sigaction cur, ours;
    if (!fs__tls.on || atomic_load_explicit(&wrapped, memory_order_relaxed) ||
        fs__sys4(SYS_rt_sigaction, FS_SIGSETXID, NULL, &cur, 8) != 0)
        return;
    /* glibc installs its handler at its first pthread_create (late_init),
     * once per process; until then there is nothing to wrap. */
    if (cur.handler == fs__tls_setxid_handler || !(cur.flags & SA_SIGINFO) ||
        (uintptr_t)cur.handler <= (uintptr_t)SIG_IGN)
        return;
    fs__setxid_glibc = cur;
    ours = cur;
    ours.handler = fs__tls_setxid_handler;
    if (fs__sys4(SYS_rt_sigaction, FS_SIGSETXID, &ours, NULL, 8) == 0)
        atomic_store_explicit(&wrapped, true, memory_order_relaxed);
}

/* ---- public to the runtime ------------------------------------------------ */

static bool fs__tls_sanitizer_loaded(void)
{
    static const char *const inits[] = {"__asan_init", "__tsan_init", "__msan_init",
                                        "__hwasan_init"};
    for (int i = 0; i < 4; i++)
        if (dlsym(RTLD_DEFAULT, inits[i]))
            return true;
    return false;
}

static bool fs__tls_probe(void)
{
    const char *v = gnu_get_libc_version();
    bool known = false;
    for (size_t i = 0; i < sizeof fs__glibc_layouts / sizeof fs__glibc_layouts[0]; i++)
        known = known || strcmp(v, fs__glibc_layouts[i]) == 0;
    if (!known)
        return fs__tls_refuse("glibc %s: its struct pthread layout was not checked (2.36 was)", v);
    if (fs__tls_sanitizer_loaded())
        return fs__tls_refuse("a sanitizer runtime is loaded (it keeps thread state in TLS)");
    return fs__tls_check_descriptors() && fs__tls_find_symbols() && fs__tls_check_self() &&
           fs__tls_check_fs() && fs__tls_probe_malloc();
}

void fs__tls_init(const struct fs_config *cfg)
{
    memset(&fs__tls, 0, sizeof fs__tls);
#ifdef FS_TLS_SANITIZED
    (void)cfg;
    (void)fs__tls_probe;
#else
    if (cfg->fiber_tls_off)
        return;
    if (!fs__tls_probe()) {
        memset(&fs__tls, 0, sizeof fs__tls);
        char buf[320];
        int n = snprintf(buf, sizeof buf,
                         "fibershim: per-fiber TLS is off, __thread variables are per carrier: "
                         "%s\n",
                         fs__tls_refusal);
        if (n > 0)
            fs__sys3(SYS_write, 2, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
        return;
    }
    fs__tls.tid_off = offsetof(struct fs_glibc_pthread, tid);
    fs__tls.on = true;
    fs__tls_wrap_setxid(); /* if the program already started a thread */
#endif
}

size_t fs__tls_stack_size(size_t size)
{
    /* What glibc keeps below a thread's TLS at least (16 KiB,
     * MINIMAL_REST_STACK), halved: the runtime's minimum stack is 16 KiB
     * and a small TLS must not double it. */
    size_t need = fs__tls.on ? fs__tls.block_size + FS_MIN_STACK_SIZE / 2 : 0;
    return size < need ? need : size;
}

/* Where a TCB goes below top (exclusive), and the fiber's first frame: as
 * allocatestack.c places them, tp aligned and the blocks below. */
static char *fs__tls_carve(uintptr_t *top)
{
    uintptr_t tcb = (*top - fs__tls.tcb_size) & ~(uintptr_t)(fs__tls.align - 1);
    *top = tcb + fs__tls.tcb_size - fs__tls.block_size;
    return (char *)tcb;
}

/*
 * TCB blocks of fibers on caller-owned stacks: kept on a free list for
 * reuse, never given back to malloc. A fiber's TCB address is its
 * pthread_t (fs_fiber_tcb), and the shim keeps the handles of ended
 * threads answering as glibc's do by that address until another fiber
 * takes it: an address that malloc handed to something else, or glibc to
 * a thread of its own, must never be one. TCBs carved from the runtime's
 * stacks have that property already (stack arenas are never unmapped).
 * The link lives in the block's first word.
 */
static fs_spinlock fs__tls_blocks_lock = FS_SPINLOCK_INIT;
static void *fs__tls_blocks;

static void *fs__tls_block_get(void)
{
    fs__spin_lock(&fs__tls_blocks_lock);
    void *b = fs__tls_blocks;
    if (b)
        fs__tls_blocks = *(void **)b;
    fs__spin_unlock(&fs__tls_blocks_lock);
    return b ? b : aligned_alloc(fs__tls.align, fs__tls.block_size);
}

static void fs__tls_block_put(void *b)
{
    if (!b)
        return;
    fs__spin_lock(&fs__tls_blocks_lock);
    *(void **)b = fs__tls_blocks;
    fs__tls_blocks = b;
    fs__spin_unlock(&fs__tls_blocks_lock);
}

int fs__tls_fiber_setup(struct fs_fiber *f, uintptr_t *top)
{
    if (!fs__tls.on)
        return 0;
    char *tcb;
    if (*top) {
        tcb = fs__tls_carve(top);
    } else {
        f->tls_mem = fs__tls_block_get();
        if (!f->tls_mem)
            return -EAGAIN;
        tcb = (char *)f->tls_mem + fs__tls.block_size - fs__tls.tcb_size;
    }
    struct fs_stack st = f->own_stack ? f->stack_map : f->stack;
    if (fs__tcb_init((struct fs_glibc_pthread *)(void *)tcb, &st, f->fn, f->arg)) {
        fs__tls_block_put(f->tls_mem);
        f->tls_mem = NULL;
        return -EAGAIN;
    }
    f->tp = tcb;
    f->tls_live = true;
    return 0;
}

void fs__tls_first_run(void)
{
    fs__ctype_init();
}

void fs__tls_fiber_exit(struct fs_fiber *f)
{
    struct fs_glibc_pthread *pd = f->tp;
    fs__call_tls_dtors();
    /* __libc_thread_freeres's share we can reach: the strsignal and
     * strerror_l buffers (tls-internal.c) and the resolver's sockets and
     * name server addresses (res-close.c). */
    free(pd->tls_state.strsignal_buf);
    free(pd->tls_state.strerror_l_buf);
    pd->tls_state.strsignal_buf = pd->tls_state.strerror_l_buf = NULL;
    if (pd->res.nscount)
        res_nclose(&pd->res);
}

void fs__tls_fiber_release(struct fs_fiber *f)
{
    if (f->tls_live) {
        f->tls_live = false;
        fs__dl_deallocate_tls(f->tp, false);
    }
    fs__tls_block_put(f->tls_mem);
    f->tls_mem = NULL;
}

void fs__tls_atfork_child(struct fs_fiber *self)
{
    /* A thread the child does not have may have held it: its list is
     * whole at every instant (a block caught in between is lost). */
    fs__tls_blocks_lock = (fs_spinlock)FS_SPINLOCK_INIT;
    if (!self || !self->tls_live)
        return;
    /* glibc's fork child (reclaim_stacks) put our TCB on GL(dl_stack_user)
     * as the only running thread. The fiber may end before the process
     * does, and its stack be reused for another TCB while glibc still
     * links it: take it off again. The child has one thread, so glibc's
     * list lock is not needed. */
    struct fs_glibc_pthread *pd = self->tp;
    struct fs_glibc_list {
        struct fs_glibc_list *next, *prev;
    } *l = (struct fs_glibc_list *)(void *)&pd->list;
    l->next->prev = l->prev;
    l->prev->next = l->next;
    l->next = l->prev = l;
}

int fs__tls_idle_setup(struct fs_sched *s, uintptr_t *top)
{
    if (!fs__tls.on)
        return 0;
    char *tcb = fs__tls_carve(top);
    int rc = fs__tcb_init((struct fs_glibc_pthread *)(void *)tcb, &s->idle_stack, NULL, NULL);
    if (rc == 0)
        s->idle_tp = tcb;
    return rc;
}

/* ---- public --------------------------------------------------------------- */

void fs_tls_run_dtors(void)
{
    struct fs_sched *s = fs__cur_sched();
    struct fs_fiber *f = s ? s->cur : NULL;
    if (f && f->tls_live)
        fs__call_tls_dtors();
}

bool fs_fiber_tls(void)
{
    return fs__tls.on;
}
