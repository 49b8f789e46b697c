/*
 * sys.h - raw system calls for the runtime's own use.
 *
 * Inside libfibershim.so, a plain call to read(), epoll_wait() or
 * pthread_mutex_lock() from the runtime would bind to the shim's own
 * interposed definition and recurse. The runtime therefore enters the
 * kernel directly for everything the shim interposes. These return the
 * kernel's result: >= 0, or a negative errno; errno is never touched.
 */
#ifndef FS_SYS_H
#define FS_SYS_H

#include <stdint.h>
#include <sys/syscall.h>

static inline long fs__syscall6(long n, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

#define fs__sys0(n) fs__syscall6((n), 0, 0, 0, 0, 0, 0)
#define fs__sys1(n, a) fs__syscall6((n), (long)(a), 0, 0, 0, 0, 0)
#define fs__sys2(n, a, b) fs__syscall6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define fs__sys3(n, a, b, c) fs__syscall6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define fs__sys4(n, a, b, c, d) fs__syscall6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define fs__sys5(n, a, b, c, d, e)                                                         \
    fs__syscall6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)
#define fs__sys6(n, a, b, c, d, e, f)                                                      \
    fs__syscall6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

/* Futex helpers on a private 32-bit word. */
#define FS_FUTEX_WAIT_PRIVATE 128 /* FUTEX_WAIT | FUTEX_PRIVATE_FLAG */
#define FS_FUTEX_WAKE_PRIVATE 129
#define FS_FUTEX_WAIT_BITSET_PRIVATE 137

#endif
