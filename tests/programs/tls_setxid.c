/* setuid() and its family change the credentials of every thread of the
 * process (glibc signals each thread to make the call on itself), even
 * while another thread is blocked in a system call: here one thread sits
 * in a raw nanosleep (which the shim cannot see: its carrier is blocked
 * with that thread's state loaded) while another calls setresgid and
 * setresuid. Every thread must end up with the new ids, and the calls
 * must return. As root the group really changes (to 65534 and back);
 * otherwise the ids are set to what they are. */
// fibershim-carriers: 1 2
#include "common.h"
#include <dirent.h>
#include <stdatomic.h>
#include <sys/syscall.h>

static atomic_int blocking;

static void *blocker(void *arg)
{
    (void)arg;
    atomic_store(&blocking, 1);
    struct timespec ts = {0, 400 * 1000000L};
    syscall(SYS_nanosleep, &ts, NULL); /* raw: no wrapper, the kernel thread blocks */
    return NULL;
}

/* Whether every thread of the process has effective gid `gid`. */
static int all_threads_egid(gid_t gid)
{
    DIR *d = opendir("/proc/self/task");
    CHECK(d != NULL);
    struct dirent *e;
    int ok = 1;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], line[256];
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* the thread ended */
        while (fgets(line, sizeof line, f)) {
            unsigned r, eff;
            if (sscanf(line, "Gid: %u %u", &r, &eff) == 2 && eff != gid)
                ok = 0;
        }
        fclose(f);
    }
    closedir(d);
    return ok;
}

static void *changer(void *arg)
{
    int *result = arg;
    while (!atomic_load(&blocking))
        sleep_ms(1);
    sleep_ms(50); /* the blocker is inside its nanosleep */
    uid_t uid = getuid();
    gid_t gid = getgid(), to = uid == 0 ? 65534 : gid;
    result[0] = setresgid(gid, to, gid);
    result[1] = all_threads_egid(to);
    result[2] = setresgid(gid, gid, gid);
    result[3] = setresuid(uid, uid, uid);
    result[4] = all_threads_egid(gid);
    return NULL;
}

int main(void)
{
    tp_setup(60);
    pthread_t b, c;
    int result[5];
    CHECK_RC(pthread_create(&b, NULL, blocker, NULL));
    CHECK_RC(pthread_create(&c, NULL, changer, result));
    CHECK_RC(pthread_join(c, NULL));
    CHECK_RC(pthread_join(b, NULL));
    printf("setresgid from a thread while another is blocked in a raw system call: %d, every "
           "thread has the new gid: %s\n",
           result[0], yesno(result[1]));
    printf("back: setresgid %d, setresuid %d, every thread agrees: %s\n", result[2], result[3],
           yesno(result[4]));
    printf("tls_setxid: ok\n");
    return 0;
}
