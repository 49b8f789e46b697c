/*
 * offload_util.h - what test_offload.c and test_offload_slow.c share.
 */
#ifndef TESTS_SHIM_OFFLOAD_UTIL_H
#define TESTS_SHIM_OFFLOAD_UTIL_H

#include "sync_util.h"
#include "offload.h"

#include <dirent.h>

/* Kernel threads in this process: spares show up here. */
static inline int task_count(void)
{
    DIR *d = opendir("/proc/self/task");
    FCHECK(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

#endif
