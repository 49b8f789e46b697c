/*
 * real.c - finding the C library's definition of an interposed symbol.
 */
#include "shim.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *shim__resolve(const char *name, const char *version)
{
    /* dlsym may allocate and take the loader lock, but calls none of our
     * wrappers for a plain symbol lookup; no recursion guard is needed
     * beyond never resolving from inside the allocator. */
    void *p = version ? dlvsym(RTLD_NEXT, name, version) : dlsym(RTLD_NEXT, name);
    if (!p && version)
        p = dlsym(RTLD_NEXT, name);
    if (!p) {
        char buf[256];
        int n = snprintf(buf, sizeof buf, "fibershim: cannot find the C library's %s\n", name);
        if (n > 0)
            (void)!write(2, buf, (size_t)n);
        abort();
    }
    return p;
}
