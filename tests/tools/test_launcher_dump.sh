#!/bin/sh
# test_launcher_dump.sh - "fibershim dump PID": its errors, and that it sends
# the signal named by the target's FIBERSHIM_DUMP_SIGNAL. The target is a
# shell started by the launcher with the test library (named
# libfibershim.so) preloaded, which traps the signal and reports it.
#
# Usage: test_launcher_dump.sh LAUNCHER TESTLIB
# Exit status: 0 pass, 1 fail.
set -eu
# shellcheck source=common.sh
. "$(dirname -- "$0")/common.sh"
[ $# -eq 2 ] || fail "usage: $0 LAUNCHER TESTLIB"
L=$1
TL=$2
[ -f "$TL" ] || fail "no test library at $TL"
mktmp
target=
cleanup() {
    if [ -n "$target" ]; then
        kill "$target" 2>/dev/null || true
    fi
    rm -rf -- "$tmp"
}
trap cleanup EXIT

# wait_for FILE TEXT: waits up to 10 s for TEXT to appear in FILE.
wait_for() {
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        [ $i -lt 200 ] || return 1
        sleep 0.05
        i=$((i + 1))
    done
}

# start_target LOG [launcher options]: a shell that prints "ready", then
# "got USR1" on SIGUSR1. Sets $target.
start_target() {
    log=$1
    shift
    rm -f -- "$log"
    # shellcheck disable=SC2016 # expanded by the inner shell
    env -u LD_PRELOAD -u FIBERSHIM_LIB -u FIBERSHIM_DUMP_SIGNAL "$L" --lib "$TL" "$@" -- \
        sh -c 'trap "echo got USR1" USR1; echo ready; i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done' \
        >"$log" 2>&1 &
    target=$!
    wait_for "$log" ready || fail "the target shell did not start: $(cat "$log")"
}

run_cmd "$L" dump
expect_rc 2
expect_one_err_line "fibershim: "
run_cmd "$L" dump 1 2
expect_rc 2
expect_one_err_line "fibershim: "
run_cmd "$L" dump abc
expect_rc 2
expect_one_err_line "fibershim: "
run_cmd "$L" dump 0
expect_rc 2
expect_one_err_line "fibershim: "

# No such process.
run_cmd "$L" dump 2147483646
expect_rc 1
expect_one_err_line "fibershim: dump: no process"

# A process without the library.
run_cmd "$L" dump $$
expect_rc 1
expect_one_err_line "fibershim: dump: "
case $err in
    *libfibershim*) ;;
    *) fail "dump of a process without the library: message does not say so: $err" ;;
esac

# With the library, but started without --dump-signal.
start_target "$tmp/t1.log"
run_cmd "$L" dump "$target"
expect_rc 1
expect_one_err_line "fibershim: dump: "
case $err in
    *FIBERSHIM_DUMP_SIGNAL*) ;;
    *) fail "dump without FIBERSHIM_DUMP_SIGNAL: message does not say so: $err" ;;
esac
kill "$target"
wait "$target" 2>/dev/null || true
target=

# With --dump-signal: dump sends exactly that signal.
for sig in USR1 SIGUSR1 10; do
    start_target "$tmp/t-$sig.log" --dump-signal "$sig"
    run_cmd "$L" dump "$target"
    expect_rc 0
    wait_for "$tmp/t-$sig.log" "got USR1" ||
        fail "dump --dump-signal $sig: the target got no SIGUSR1: $(cat "$tmp/t-$sig.log")"
    kill "$target"
    wait "$target" 2>/dev/null || true
    target=
done

printf 'PASS\n'
