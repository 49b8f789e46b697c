// fibershim-carriers: 1
/* A thread that waits for an io_uring completion the way liburing's
 * io_uring_wait_cqe does (__io_uring_get_cqe, exported by liburing.so.2;
 * MariaDB's InnoDB completion thread waits there for good) must not hold
 * its kernel thread from the other threads. liburing enters the kernel
 * with its own syscall instruction, so under the shim the wait would block
 * the carrier: run at 1 carrier with no spare carrier
 * (FIBERSHIM_HANDOFF_MAX=0), the thread that completes the read (by
 * writing the pipe it reads) could then never run, and the program would
 * hang. The shim parks the waiting thread on the ring fd instead.
 *
 * liburing's headers are not needed (nor installed everywhere): the
 * program loads liburing.so.2 (exit 77 without it) and uses its ABI, the
 * layout of struct io_uring (stable for soname 2) and the exported
 * io_uring_queue_init, io_uring_submit, __io_uring_get_cqe and
 * io_uring_queue_exit, found as the program's own calls would find them
 * (the global scope: a preloaded library first). */
#include "common.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdint.h>

struct uring_sq {
    unsigned *khead, *ktail, *kring_mask, *kring_entries, *kflags, *kdropped, *array;
    void *sqes;
    unsigned sqe_head, sqe_tail;
    size_t ring_sz;
    void *ring_ptr;
    unsigned ring_mask, ring_entries, pad[2];
};
struct uring_cq {
    unsigned *khead, *ktail, *kring_mask, *kring_entries, *kflags, *koverflow;
    void *cqes;
    size_t ring_sz;
    void *ring_ptr;
    unsigned ring_mask, ring_entries, pad[2];
};
struct uring {
    struct uring_sq sq;
    struct uring_cq cq;
    unsigned flags;
    int ring_fd;
    unsigned features;
    int enter_ring_fd;
    uint8_t int_flags, pad[3];
    unsigned pad2;
};
_Static_assert(sizeof(struct uring) == 216, "liburing 2.x struct io_uring");

struct sqe { /* struct io_uring_sqe, for a read */
    uint8_t opcode, flags;
    uint16_t ioprio;
    int32_t fd;
    uint64_t off, addr;
    uint32_t len, rw_flags;
    uint64_t user_data;
    uint8_t rest[24];
};
_Static_assert(sizeof(struct sqe) == 64, "struct io_uring_sqe");
struct cqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
};
#define OP_READ 22 /* IORING_OP_READ */

static int (*queue_init)(unsigned, struct uring *, unsigned);
static int (*submit)(struct uring *);
static int (*get_cqe)(struct uring *, struct cqe **, unsigned, unsigned, void *);
static void (*queue_exit)(struct uring *);

static struct uring ring;
static int pipe_fd[2];
static char byte;
static atomic_int submitted;

static void *waiter(void *arg)
{
    (void)arg;
    struct uring_sq *sq = &ring.sq;
    struct sqe *e = (struct sqe *)sq->sqes + (sq->sqe_tail & *sq->kring_mask);
    memset(e, 0, sizeof *e);
    e->opcode = OP_READ;
    e->fd = pipe_fd[0];
    e->off = (uint64_t)-1; /* the file position: a pipe has none */
    e->addr = (uint64_t)(uintptr_t)&byte;
    e->len = 1;
    e->user_data = 42;
    sq->sqe_tail++;
    if (submit(&ring) != 1)
        FAIL("io_uring_submit");
    atomic_store(&submitted, 1);
    struct cqe *c = NULL;
    int rc = get_cqe(&ring, &c, 0, 1, NULL); /* io_uring_wait_cqe, as liburing.h makes it */
    if (rc != 0 || !c)
        FAIL("__io_uring_get_cqe: %d", rc);
    printf("waiter: completion %llu, res %d, read '%c'\n", (unsigned long long)c->user_data, c->res,
           byte);
    __atomic_store_n(ring.cq.khead, *ring.cq.khead + 1, __ATOMIC_RELEASE); /* io_uring_cqe_seen */
    return NULL;
}

static void *writer(void *arg)
{
    (void)arg;
    while (!atomic_load(&submitted))
        usleep(1000);
    usleep(20000); /* the waiter is waiting by now, in all likelihood */
    printf("writer: writing\n");
    fflush(stdout);
    CHECK_SYS(write(pipe_fd[1], "x", 1));
    return NULL;
}

int main(void)
{
    void *lib = dlopen("liburing.so.2", RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        fprintf(stderr, "skipped: liburing.so.2 not found (liburing2): %s\n", dlerror());
        return 77;
    }
    queue_init = (int (*)(unsigned, struct uring *, unsigned))dlsym(RTLD_DEFAULT, "io_uring_queue_init");
    submit = (int (*)(struct uring *))dlsym(RTLD_DEFAULT, "io_uring_submit");
    get_cqe = (int (*)(struct uring *, struct cqe **, unsigned, unsigned, void *))dlsym(
        RTLD_DEFAULT, "__io_uring_get_cqe");
    queue_exit = (void (*)(struct uring *))dlsym(RTLD_DEFAULT, "io_uring_queue_exit");
    if (!queue_init || !submit || !get_cqe || !queue_exit)
        FAIL("liburing.so.2 lacks a function");
    int rc = queue_init(8, &ring, 0);
    if (rc == -ENOSYS || rc == -EPERM) {
        fprintf(stderr, "skipped: io_uring unavailable: %s\n", strerror(-rc));
        return 77;
    }
    if (rc != 0)
        FAIL("io_uring_queue_init: %s", strerror(-rc));
    CHECK_SYS(pipe(pipe_fd));
    pthread_t w, p;
    CHECK_RC(pthread_create(&w, NULL, waiter, NULL));
    CHECK_RC(pthread_create(&p, NULL, writer, NULL));
    CHECK_RC(pthread_join(p, NULL));
    CHECK_RC(pthread_join(w, NULL));
    queue_exit(&ring);
    printf("main: done\n");
    return 0;
}
