/* Preloaded after libfibershim.so by programs/tls_refused: claims a glibc
 * whose struct pthread layout the runtime never checked, so that it must
 * refuse per-fiber TLS (one line on stderr) and fall back to per-carrier
 * TLS. */
__attribute__((visibility("default"))) const char *gnu_get_libc_version(void)
{
    return "2.99";
}
