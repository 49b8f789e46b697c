/*
 * testlib.c - a do-nothing shared library for the tools tests.
 *
 * Built as <builddir>/tools/testlib/libfibershim.so and preloaded by the
 * launcher tests in place of the real shim: a real ELF library (so the loader
 * prints no warning), with the name the launcher and "fibershim dump" look
 * for, and no behaviour of its own.
 */
__attribute__((visibility("default"))) int fibershim_tools_testlib(void);

int fibershim_tools_testlib(void)
{
    return 0;
}
