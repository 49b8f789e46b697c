/* __thread variables of dlopen'ed libraries are per thread: module A is
 * loaded before any thread starts, module B while the threads run (its
 * TLS is then new to every running thread: glibc's dtv generation check in
 * __tls_get_addr allocates it on first use). Every thread sees each
 * module's initial value first, sets its own, and keeps it across
 * blocking calls. The modules are built next to this program. */
// fibershim-carriers: 1 2
#include "common.h"
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdatomic.h>

#define NTHREADS 16
#define NROUNDS 5

struct module {
    long *(*counter)(void);
    char *(*name)(void);
};

static struct module mod_a, mod_b;
static atomic_int b_loaded, a_done;

static void load(const char *file, struct module *m)
{
    char exe[PATH_MAX], path[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    CHECK(n > 0);
    exe[n] = 0;
    snprintf(path, sizeof path, "%s/%s", dirname(exe), file);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        FAIL("dlopen %s: %s", file, dlerror());
    m->counter = (long *(*)(void))dlsym(h, "tls_module_counter");
    m->name = (char *(*)(void))dlsym(h, "tls_module_name");
    CHECK(m->counter && m->name);
}

static void use(const struct module *m, const char *which, long id)
{
    if (*m->counter() != 42 || m->name()[0] != 0)
        FAIL("thread %ld: module %s's __thread variables do not start from their image", id, which);
    *m->counter() = id;
    snprintf(m->name(), 32, "%s-%ld", which, id);
}

static void check(const struct module *m, const char *which, long id, int r)
{
    char want[32];
    snprintf(want, sizeof want, "%s-%ld", which, id);
    if (*m->counter() != id || strcmp(m->name(), want) != 0)
        FAIL("thread %ld: module %s's __thread variables changed across a blocking call (round "
             "%d)",
             id, which, r);
}

static void *module_thread(void *arg)
{
    long id = (long)arg;
    use(&mod_a, "a", id);
    for (int r = 0; r < NROUNDS; r++) {
        sleep_ms(1 + (id + r) % 3);
        check(&mod_a, "a", id, r);
    }
    atomic_fetch_add(&a_done, 1);
    while (!atomic_load(&b_loaded))
        sleep_ms(1);
    use(&mod_b, "b", id);
    for (int r = 0; r < NROUNDS; r++) {
        sleep_ms(1 + (id + r) % 3);
        check(&mod_a, "a", id, r);
        check(&mod_b, "b", id, r);
    }
    return NULL;
}

int main(void)
{
    tp_setup(60);
    load("libtls_module_a.so", &mod_a);
    *mod_a.counter() = -1; /* main's own */
    pthread_t tt[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_create(&tt[i], NULL, module_thread, (void *)i));
    while (atomic_load(&a_done) < NTHREADS)
        sleep_ms(1);
    load("libtls_module_b.so", &mod_b);
    atomic_store(&b_loaded, 1);
    for (int i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_join(tt[i], NULL));
    printf("%d threads: __thread variables of a module loaded before they started, and of one "
           "loaded while they ran, per thread across %d blocking calls each: yes\n",
           NTHREADS, 2 * NROUNDS);
    printf("main's untouched: %s\n", yesno(*mod_a.counter() == -1 && *mod_b.counter() == 42));
    printf("tls_dlopen: ok\n");
    return 0;
}
