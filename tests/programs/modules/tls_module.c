/* A shared library with __thread variables, for tls_dlopen: built twice
 * (libtls_module_a.so, libtls_module_b.so) so that the program can load
 * one before its threads start and the other while they run. dlopen'ed
 * modules use the general-dynamic model: every access goes through
 * __tls_get_addr and the thread's dtv. */
static __thread long counter = 42; /* an init image to copy */
static __thread char name[32];     /* .tbss, zero */

__attribute__((visibility("default"))) long *tls_module_counter(void)
{
    return &counter;
}

__attribute__((visibility("default"))) char *tls_module_name(void)
{
    return name;
}
