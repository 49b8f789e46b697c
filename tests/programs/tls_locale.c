/* uselocale() is per thread: a thread that switches to its own locale
 * keeps it across blocking calls, while other threads and main keep
 * theirs. Half the threads use C.UTF-8 (MB_CUR_MAX 6, codeset UTF-8), half
 * the C locale (MB_CUR_MAX 1, codeset ANSI_X3.4-1968); each checks both
 * facts after every blocking call, while the others change theirs. */
// fibershim-carriers: 1 2
#include "common.h"
#include <langinfo.h>
#include <locale.h>

#define NTHREADS 16
#define NROUNDS 10

static locale_t loc_utf8, loc_c;

static int wrong(locale_t want)
{
    size_t mb = MB_CUR_MAX;
    const char *cs = nl_langinfo(CODESET);
    return want == loc_utf8 ? mb == 1 || strcmp(cs, "UTF-8") != 0
                            : mb != 1 || strcmp(cs, "UTF-8") == 0;
}

static void *locale_thread(void *arg)
{
    long id = (long)arg;
    locale_t mine = id % 2 ? loc_utf8 : loc_c;
    if (uselocale((locale_t)0) != LC_GLOBAL_LOCALE)
        FAIL("thread %ld: a new thread does not start in the global locale", id);
    uselocale(mine);
    for (int r = 0; r < NROUNDS; r++) {
        sleep_ms(1 + (id + r) % 3); /* blocking: the others switch theirs meanwhile */
        if (uselocale((locale_t)0) != mine || wrong(mine))
            FAIL("thread %ld: its locale changed across a blocking call (round %d)", id, r);
    }
    uselocale(LC_GLOBAL_LOCALE);
    return NULL;
}

int main(void)
{
    tp_setup(60);
    loc_utf8 = newlocale(LC_ALL_MASK, "C.UTF-8", (locale_t)0);
    loc_c = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (!loc_utf8 || !loc_c) {
        printf("tls_locale: skipped (no C.UTF-8 locale)\n");
        return 77;
    }
    pthread_t tt[NTHREADS];
    for (long i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_create(&tt[i], NULL, locale_thread, (void *)i));
    for (int i = 0; i < NTHREADS; i++)
        CHECK_RC(pthread_join(tt[i], NULL));
    printf("%d threads, uselocale kept across %d blocking calls each: yes\n", NTHREADS, NROUNDS);
    printf("main still in the global C locale: %s\n",
           yesno(uselocale((locale_t)0) == LC_GLOBAL_LOCALE && MB_CUR_MAX == 1));
    freelocale(loc_utf8);
    freelocale(loc_c);
    printf("tls_locale: ok\n");
    return 0;
}
