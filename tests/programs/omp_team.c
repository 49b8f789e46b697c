// fibershim-carriers: 1 2
/* libgomp 12 waits for its team with inline syscall instructions
 * (FUTEX_WAIT), which block whatever kernel thread runs the waiter: under
 * the shim each waiting member holds a carrier until it is woken, so the
 * team needs the monitor's spare carriers, one per waiter (hung at 1 and
 * 2 carriers while started fibers were pinned and spares were capped at
 * the carrier count).
 *
 * An OpenMP program (libgomp, OMP_NUM_THREADS=8 from the test's
 * environment): a parallel for with a reduction, explicit barriers
 * between the phases of a team, a critical section guarding a plain
 * counter, and a single. libgomp keeps its threads in a pool across
 * parallel regions and waits for them with its own futex calls. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define N 1000000
#define ROUNDS 50

static int data[N];

int main(void)
{
    for (int i = 0; i < N; i++)
        data[i] = i % 1000;

    long total = 0;
    for (int r = 0; r < ROUNDS; r++) {
        long sum = 0;
#pragma omp parallel for reduction(+ : sum) schedule(static)
        for (int i = 0; i < N; i++)
            sum += data[i] + r;
        total += sum;
    }

    int team = 0;
    long crit = 0;
    int phase_ok = 1;
    static int phase_seen[64];
#pragma omp parallel
    {
#pragma omp single
        team = omp_get_num_threads();
        int me = omp_get_thread_num();
        for (int p = 0; p < 200; p++) {
#pragma omp critical
            crit++;
            if (me < 64)
                phase_seen[me] = p;
#pragma omp barrier
            /* Every member finished phase p before any starts p + 1. */
            for (int i = 0; i < team && i < 64; i++)
                if (phase_seen[i] != p)
#pragma omp atomic write
                    phase_ok = 0;
#pragma omp barrier
        }
    }

    printf("parallel for + reduction: %d rounds, total %ld\n", ROUNDS, total);
    printf("team of %d: critical counter %ld, barrier phases in step: %s\n", team, crit,
           phase_ok ? "yes" : "no");
    return 0;
}
