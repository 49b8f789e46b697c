/*
 * config.c - configuration from the environment, the default carrier
 * count (CPU affinity mask, capped by the cgroup v2 CPU quota) and the
 * default stack (glibc's for a new thread).
 *
 * Variables are read with secure_getenv(), so a setuid program ignores
 * them. Files are read with raw system calls: inside libfibershim.so,
 * read() and friends would bind to the shim's wrappers. A bad value is an error with one line naming the variable, the
 * value and what is accepted: never silently ignored.
 */
#include "internal.h"
#include "sys.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Parses a decimal unsigned integer in [lo, hi]; the whole string. */
int fs__parse_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

/* Parses a byte size with an optional K, M or G suffix (powers of 1024,
 * case-insensitive, optional trailing 'B' or 'iB'). */
int fs__parse_size(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    unsigned shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    default: break;
    }
    if (shift && (*end == 'i' || *end == 'I'))
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end)
        return -EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return -EINVAL;
    v <<= shift;
    if (v < lo || v > hi)
        return -EINVAL;
    *out = v;
    return 0;
}

int fs_config_from_env(struct fs_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    const char *v;
    uint64_t n;
    if ((v = secure_getenv("FIBERSHIM_CARRIERS")) && *v) {
        if (fs__parse_uint(v, 1, FS_MAX_CARRIERS, &n)) {
            snprintf(err, errlen,
                     "FIBERSHIM_CARRIERS=\"%s\" is invalid: expected an integer from 1 to %u", v,
                     FS_MAX_CARRIERS);
            return -EINVAL;
        }
        cfg->carriers = (unsigned)n;
    }
    if ((v = secure_getenv("FIBERSHIM_STACK_SIZE")) && *v) {
        if (fs__parse_size(v, FS_MIN_STACK_SIZE, FS_MAX_STACK_SIZE, &n)) {
            snprintf(err, errlen,
                     "FIBERSHIM_STACK_SIZE=\"%s\" is invalid: expected a size from 16K to 1G "
                     "(bytes, or with a K, M or G suffix)",
                     v);
            return -EINVAL;
        }
        cfg->stack_size = (size_t)n;
    }
    if ((v = secure_getenv("FIBERSHIM_MIGRATE")) && *v) {
        if (strcmp(v, "0") && strcmp(v, "1")) {
            snprintf(err, errlen, "FIBERSHIM_MIGRATE=\"%s\" is invalid: expected 0 or 1", v);
            return -EINVAL;
        }
        cfg->migrate = v[0] == '1' ? FS_MIGRATE_ON : FS_MIGRATE_OFF;
    }
    if ((v = secure_getenv("FIBERSHIM_FIBER_TLS")) && *v) {
        if (strcmp(v, "0") && strcmp(v, "1")) {
            snprintf(err, errlen, "FIBERSHIM_FIBER_TLS=\"%s\" is invalid: expected 0 or 1", v);
            return -EINVAL;
        }
        cfg->fiber_tls_off = v[0] == '0';
    }
    if ((v = secure_getenv("FIBERSHIM_IDLE_SPIN_NS")) && *v) {
        if (fs__parse_uint(v, 0, FS_MAX_IDLE_SPIN_NS, &n)) {
            snprintf(err, errlen,
                     "FIBERSHIM_IDLE_SPIN_NS=\"%s\" is invalid: expected an integer from 0 "
                     "(sleep at once) to %ld (default %ld)",
                     v, FS_MAX_IDLE_SPIN_NS, FS_DEFAULT_IDLE_SPIN_NS);
            return -EINVAL;
        }
        cfg->idle_spin_ns = n ? (long)n : FS_IDLE_SPIN_OFF;
    }
    if ((v = secure_getenv("FIBERSHIM_HANDOFF_MAX")) && *v) {
        if (fs__parse_uint(v, 0, FS_MAX_CARRIERS, &n)) {
            snprintf(err, errlen,
                     "FIBERSHIM_HANDOFF_MAX=\"%s\" is invalid: expected an integer from 0 "
                     "(no handoff) to %u",
                     v, FS_MAX_CARRIERS);
            return -EINVAL;
        }
        cfg->handoff_max = (unsigned)n;
        cfg->handoff_off = n == 0;
    }
    return 0;
}

/* The cgroup v2 CPU quota of this process, in CPUs (rounded up), or 0 if
 * there is none. Reads /proc/self/cgroup, then <mount>/<path>/cpu.max and
 * every ancestor's (a parent's limit binds its children). */
static unsigned fs__cgroup_cpus(void)
{
    char path[512], buf[512];
    int fd = (int)fs__sys4(SYS_openat, AT_FDCWD, "/proc/self/cgroup", O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    ssize_t n = fs__sys3(SYS_read, fd, buf, sizeof buf - 1);
    fs__sys1(SYS_close, fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = strstr(buf, "0::");
    if (!p)
        return 0;
    p += 3;
    char *nl = strchr(p, '\n');
    if (nl)
        *nl = 0;
    unsigned best = 0;
    for (;;) {
        snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max", strcmp(p, "/") ? p : "");
        fd = (int)fs__sys4(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);
        if (fd >= 0) {
            char q[64];
            ssize_t m = fs__sys3(SYS_read, fd, q, sizeof q - 1);
            fs__sys1(SYS_close, fd);
            if (m > 0) {
                q[m] = 0;
                unsigned long long quota, period;
                if (sscanf(q, "%llu %llu", &quota, &period) == 2 && period) {
                    unsigned cpus = (unsigned)((quota + period - 1) / period);
                    if (cpus && (!best || cpus < best))
                        best = cpus;
                }
            }
        }
        char *slash = strrchr(p, '/');
        if (!slash || (slash == p && !p[1]))
            break;
        if (slash == p)
            p[1] = 0;
        else
            *slash = 0;
    }
    return best;
}

unsigned fs_default_carriers(void)
{
    cpu_set_t set;
    unsigned n = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = (unsigned)CPU_COUNT(&set);
    if (!n) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (unsigned)c : 1;
    }
    unsigned q = fs__cgroup_cpus();
    if (q && q < n)
        n = q;
    if (n > FS_MAX_CARRIERS)
        n = FS_MAX_CARRIERS;
    return n;
}

/* glibc's own answer rather than RLIMIT_STACK: it also reflects
 * pthread_setattr_default_np, its rounding and its 2 MiB for an unlimited
 * limit (ARCH_STACK_DEFAULT_SIZE on x86-64). The call copies glibc's
 * default attributes under its lock: about 15 ns. */
void fs__thread_stack_defaults(size_t *size, size_t *guard)
{
    pthread_attr_t a;
    *size = (size_t)2 << 20;
    *guard = (size_t)sysconf(_SC_PAGESIZE);
    if (pthread_getattr_default_np(&a) != 0)
        return; /* only for want of memory to copy an affinity mask */
    pthread_attr_getstacksize(&a, size);
    pthread_attr_getguardsize(&a, guard);
    pthread_attr_destroy(&a);
}

size_t fs_default_stack_size(void)
{
    size_t size, guard;
    fs__thread_stack_defaults(&size, &guard);
    return size;
}
