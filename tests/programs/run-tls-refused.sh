#!/bin/sh
# programs/tls_refused: under a glibc whose layout the runtime did not
# check (a preloaded library makes gnu_get_libc_version() say 2.99), the
# shim must refuse per-fiber TLS with exactly one line on stderr, report
# fiber_tls 0 in its stats, and run the program as before per-fiber TLS.
# usage: run-tls-refused.sh <shim> <fake-version-lib> <binary> <expected-file>
set -u
shim=$1 fake=$2 bin=$3 expected=$4
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tls-refused.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
FIBERSHIM_STATS="$tmp/stats" LD_PRELOAD="$shim $fake" timeout 120 "$bin" >"$tmp/out" 2>"$tmp/err"
rc=$?
status=0
if [ $rc -ne 0 ]; then echo "FAIL: exit status $rc"; status=1; fi
if ! diff -u "$expected" "$tmp/out"; then echo "FAIL: stdout differs"; status=1; fi
n=$(grep -c "per-fiber TLS is off" "$tmp/err")
if [ "$n" != 1 ] || ! grep -q "glibc 2.99: its struct pthread layout was not checked" "$tmp/err"; then
    echo "FAIL: expected one refusal line naming glibc 2.99 on stderr, got:"; cat "$tmp/err"; status=1
fi
if ! grep -qx "fiber_tls 0" "$tmp/stats"; then echo "FAIL: stats do not say fiber_tls 0"; status=1; fi
[ $status = 0 ] && echo "tls_refused: ok"
exit $status
