#!/bin/sh
# test_launcher_discovery.sh - the installed launcher finds the library
# relative to its own location (<bindir>/<bindir-to-libdir>/libfibershim.so),
# also when started through a symlink, and fails with exit 125 when there is
# none.
#
# Usage: test_launcher_discovery.sh INSTALLED_LAUNCHER TESTLIB REL_LIBDIR FULL_LIBDIR
#   INSTALLED_LAUNCHER: the copy configured for install (no build-tree path);
#   REL_LIBDIR: the configured relative path from bindir to libdir;
#   FULL_LIBDIR: the configured install libdir.
# Exit status: 0 pass, 1 fail.
set -eu
# shellcheck source=common.sh
. "$(dirname -- "$0")/common.sh"
[ $# -eq 4 ] || fail "usage: $0 INSTALLED_LAUNCHER TESTLIB REL_LIBDIR FULL_LIBDIR"
L=$1
TL=$2
rel=$3
full=$4
[ -f "$TL" ] || fail "no test library at $TL"
mktmp

mkdir -p "$tmp/prefix/bin" "$tmp/prefix/bin/$rel" "$tmp/links"
cp "$L" "$tmp/prefix/bin/fibershim"
chmod +x "$tmp/prefix/bin/fibershim"
cp "$TL" "$tmp/prefix/bin/$rel/libfibershim.so"
expected="$(cd -P -- "$tmp/prefix/bin/$rel" && pwd -P)/libfibershim.so"
ln -s "$tmp/prefix/bin/fibershim" "$tmp/links/fibershim"

for launcher in "$tmp/prefix/bin/fibershim" "$tmp/links/fibershim"; do
    # shellcheck disable=SC2016 # expanded by the inner shell
    run_cmd env -u LD_PRELOAD -u FIBERSHIM_LIB "$launcher" sh -c 'printf "%s" "$LD_PRELOAD"'
    expect_rc 0
    expect_out "$expected"
done

# Through PATH, as installed programs are usually run.
# shellcheck disable=SC2016 # expanded by the inner shell
run_cmd env -u LD_PRELOAD -u FIBERSHIM_LIB PATH="$tmp/links:$PATH" fibershim sh -c 'printf "%s" "$LD_PRELOAD"'
expect_rc 0
expect_out "$expected"

# No library next to it: the configured libdir, else a clear error, 125.
rm "$tmp/prefix/bin/$rel/libfibershim.so"
run_cmd env -u LD_PRELOAD -u FIBERSHIM_LIB "$tmp/prefix/bin/fibershim" true
if [ -f "$full/libfibershim.so" ]; then
    expect_rc 0
else
    expect_rc 125
    expect_one_err_line "fibershim: cannot find libfibershim.so"
fi

printf 'PASS\n'
