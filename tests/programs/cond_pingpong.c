// fibershim-carriers: 1 2 3
/* Condition-variable ping-pong, many short rounds: a stress test for lost
 * wake-ups between carriers.
 *
 * Two threads take turns under one mutex:
 *     while (turn != me) pthread_cond_wait(&c, &m);
 *     turn = !me; pthread_cond_signal(&c);
 * Each hand-over parks one thread and wakes the other; when the two sit on
 * different carriers, every hand-over crosses carriers and usually finds
 * the other carrier asleep, so the sleep/kick protocol, the inbox and the
 * park word are all on the path of every round trip. A single lost wake-up
 * hangs the program (the alarm ends it with FAIL).
 *
 * Placement is what differs between rounds: new threads are created for
 * every round, after a warm-up spin of a length that varies with the
 * round, so some rounds run both players on one carrier and others split
 * them; 1 to 3 pairs run at once, with signal or broadcast, and with a
 * normal or an errorcheck mutex (whose owner bookkeeping adds work inside
 * the critical section).
 */
#include "common.h"

#define ROUNDS 300
#define TRIPS 400

struct pair {
    pthread_mutex_t m;
    pthread_cond_t c;
    int turn;
    int broadcast;
    long trips[2];
};

struct player {
    struct pair *p;
    int me;
    int spin_us;
};

static void spin_us(int us)
{
    int64_t end = now_ns() + (int64_t)us * 1000;
    while (now_ns() < end)
        ;
}

static void *player(void *arg)
{
    struct player *pl = arg;
    struct pair *p = pl->p;
    int me = pl->me;
    spin_us(pl->spin_us);
    for (int i = 0; i < TRIPS; i++) {
        CHECK_RC(pthread_mutex_lock(&p->m));
        while (p->turn != me)
            CHECK_RC(pthread_cond_wait(&p->c, &p->m));
        p->turn = !me;
        p->trips[me]++;
        if (p->broadcast)
            CHECK_RC(pthread_cond_broadcast(&p->c));
        else
            CHECK_RC(pthread_cond_signal(&p->c));
        CHECK_RC(pthread_mutex_unlock(&p->m));
    }
    return NULL;
}

int main(void)
{
    tp_setup(240);
    long total = 0;
    for (int r = 0; r < ROUNDS; r++) {
        int npairs = 1 + r % 3;
        struct pair pairs[3];
        struct player pl[3][2];
        pthread_t t[3][2];
        for (int k = 0; k < npairs; k++) {
            struct pair *p = &pairs[k];
            memset(p, 0, sizeof *p);
            pthread_mutexattr_t ma;
            CHECK_RC(pthread_mutexattr_init(&ma));
            CHECK_RC(pthread_mutexattr_settype(&ma, (r / 3) % 2 ? PTHREAD_MUTEX_ERRORCHECK
                                                                : PTHREAD_MUTEX_NORMAL));
            CHECK_RC(pthread_mutex_init(&p->m, &ma));
            CHECK_RC(pthread_mutexattr_destroy(&ma));
            CHECK_RC(pthread_cond_init(&p->c, NULL));
            p->broadcast = (r / 6) % 2;
            for (int me = 0; me < 2; me++) {
                /* 0..600 us of warm-up: the second player of a pair often
                 * starts while the first still spins, and is then taken
                 * by the other carrier. */
                pl[k][me] = (struct player){p, me, ((r * 7 + k * 3 + me * 5) % 4) * 200};
                CHECK_RC(pthread_create(&t[k][me], NULL, player, &pl[k][me]));
            }
        }
        for (int k = 0; k < npairs; k++) {
            for (int me = 0; me < 2; me++)
                CHECK_RC(pthread_join(t[k][me], NULL));
            CHECK(pairs[k].trips[0] == TRIPS && pairs[k].trips[1] == TRIPS);
            total += pairs[k].trips[0] + pairs[k].trips[1];
            CHECK_RC(pthread_cond_destroy(&pairs[k].c));
            CHECK_RC(pthread_mutex_destroy(&pairs[k].m));
        }
    }
    printf("rounds %d, hand-overs %ld: ok\n", ROUNDS, total);
    return 0;
}
