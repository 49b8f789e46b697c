/*
 * observe.h - FIBERSHIM_STATS, FIBERSHIM_TRACE and FIBERSHIM_DUMP_SIGNAL.
 */
#ifndef SHIM_OBSERVE_H
#define SHIM_OBSERVE_H

#include <stddef.h>

/* Validates the observability variables (constructor time). Returns 0, or
 * -1 with one line for the user in err. Installs the dump signal handler
 * and the at-exit stats writer when asked for. */
int shim__observe_init(char *err, size_t errlen);

/* The signal FIBERSHIM_DUMP_SIGNAL names while the runtime owns it, or 0
 * (none, or the program took it over). */
int shim__observe_dump_signal(void);

/* Starts the monitor thread, if tracing or dumps are on (activation). */
void shim__observe_start(void);

/* In a forked child: the monitor thread is gone; start another. */
void shim__observe_atfork_child(void);

#endif
