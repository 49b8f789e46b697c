#!/bin/sh
# test_launcher_env.sh - the environment the fibershim launcher gives the
# command: one FIBERSHIM_* variable per option, LD_PRELOAD composition, and
# that the command is exec'd (same pid, exit status passed through).
#
# Usage: test_launcher_env.sh LAUNCHER TESTLIB
#   TESTLIB: a real shared library (built by tools/CMakeLists.txt as
#   tools/testlib/libfibershim.so) preloaded in place of the shim.
# Exit status: 0 pass, 1 fail.
set -eu
# shellcheck source=common.sh
. "$(dirname -- "$0")/common.sh"
[ $# -eq 2 ] || fail "usage: $0 LAUNCHER TESTLIB"
L=$1
TL=$2
[ -f "$TL" ] || fail "no test library at $TL"
mktmp
TL=$(cd -P -- "$(dirname -- "$TL")" && pwd -P)/$(basename -- "$TL")
cd "$tmp"

# var NAME: the value of NAME in the last captured "env" output.
var() {
    printf '%s\n' "$out" | sed -n "s/^$1=//p"
}

expect_var() {
    v=$(var "$1")
    [ "$v" = "$2" ] || fail "$desc: $1='$v', expected '$2'"
}

expect_unset() {
    if printf '%s\n' "$out" | grep -q "^$1="; then
        fail "$desc: $1 is set: $(var "$1")"
    fi
}

clean_env() {
    env -u LD_PRELOAD -u FIBERSHIM_LIB -u FIBERSHIM_CARRIERS -u FIBERSHIM_STACK_SIZE \
        -u FIBERSHIM_MIGRATE -u FIBERSHIM_STATS -u FIBERSHIM_TRACE -u FIBERSHIM_DUMP_SIGNAL "$@"
}

# Every option.
run_cmd clean_env "$L" --lib "$TL" -c 3 -s 64K --migrate --stats=stats.txt --trace 250 \
    --dump-signal usr2 -- env
expect_rc 0
expect_var FIBERSHIM_CARRIERS 3
expect_var FIBERSHIM_STACK_SIZE 65536
expect_var FIBERSHIM_MIGRATE 1
expect_var FIBERSHIM_STATS "$(pwd -P)/stats.txt"
expect_var FIBERSHIM_TRACE 250
expect_var FIBERSHIM_DUMP_SIGNAL SIGUSR2
expect_var LD_PRELOAD "$TL"
[ -z "$err" ] || fail "$desc: unexpected stderr: $err"

# --pin: migration off.
run_cmd clean_env "$L" --lib "$TL" --pin -- env
expect_rc 0
expect_var FIBERSHIM_MIGRATE 0

# No options: only LD_PRELOAD.
run_cmd clean_env "$L" --lib "$TL" env
expect_rc 0
expect_var LD_PRELOAD "$TL"
for v in CARRIERS STACK_SIZE MIGRATE STATS TRACE DUMP_SIGNAL; do
    expect_unset "FIBERSHIM_$v"
done

# Long forms with "=", other spellings, normalization.
run_cmd clean_env "$L" --lib="$TL" --carriers=1024 --stack-size=1M --stats --trace=1 \
    --dump-signal=SIGUSR1 env
expect_rc 0
expect_var FIBERSHIM_CARRIERS 1024
expect_var FIBERSHIM_STACK_SIZE 1048576
expect_var FIBERSHIM_STATS 1
expect_var FIBERSHIM_TRACE 1
expect_var FIBERSHIM_DUMP_SIGNAL SIGUSR1

run_cmd clean_env "$L" --lib "$TL" -c 007 -s 16k --dump-signal 12 --stats=/abs/s.txt env
expect_rc 0
expect_var FIBERSHIM_CARRIERS 7
expect_var FIBERSHIM_STACK_SIZE 16384
expect_var FIBERSHIM_DUMP_SIGNAL 12
expect_var FIBERSHIM_STATS /abs/s.txt

run_cmd clean_env "$L" --lib "$TL" -c1 -s1G env
expect_rc 0
expect_var FIBERSHIM_CARRIERS 1
expect_var FIBERSHIM_STACK_SIZE 1073741824

# Variables already in the environment pass through; options override them.
run_cmd clean_env FIBERSHIM_CARRIERS=5 FIBERSHIM_TRACE=9 "$L" --lib "$TL" -c 2 env
expect_var FIBERSHIM_CARRIERS 2
expect_var FIBERSHIM_TRACE 9

# Options stop at the command: later words are the command's.
run_cmd clean_env "$L" --lib "$TL" sh -c 'printf "%s|" "$@"' sh --carriers 0 -- x
expect_rc 0
expect_out "--carriers|0|--|x|"

# Library from $FIBERSHIM_LIB; --lib wins over it; a relative --lib is made
# absolute.
run_cmd clean_env FIBERSHIM_LIB="$TL" "$L" env
expect_var LD_PRELOAD "$TL"
run_cmd clean_env FIBERSHIM_LIB="$tmp/nonexistent.so" "$L" --lib "$TL" env
expect_rc 0
expect_var LD_PRELOAD "$TL"
mkdir rel
cp "$TL" rel/libfibershim.so
run_cmd clean_env "$L" --lib rel/libfibershim.so env
expect_var LD_PRELOAD "$(pwd -P)/rel/libfibershim.so"

# Existing LD_PRELOAD entries are kept after ours, in order; ours is not
# added twice; another copy of libfibershim.so is dropped. All entries are
# real libraries, so the loader stays quiet.
mkdir other
cp "$TL" other/liba.so
cp "$TL" other/libb.so
cp "$TL" other/libfibershim.so
A=$(pwd -P)/other/liba.so
B=$(pwd -P)/other/libb.so
C=$(pwd -P)/other/libfibershim.so
run_cmd clean_env LD_PRELOAD="$A" "$L" --lib "$TL" env
expect_rc 0
expect_var LD_PRELOAD "$TL:$A"
[ -z "$err" ] || fail "$desc: unexpected stderr: $err"
run_cmd clean_env LD_PRELOAD="$A:$B" "$L" --lib "$TL" env
expect_var LD_PRELOAD "$TL:$A:$B"
run_cmd clean_env LD_PRELOAD="$A $TL $B" "$L" --lib "$TL" env
expect_var LD_PRELOAD "$TL:$A:$B"
run_cmd clean_env LD_PRELOAD="$TL" "$L" --lib "$TL" env
expect_var LD_PRELOAD "$TL"
run_cmd clean_env LD_PRELOAD="$C:$A" "$L" --lib "$TL" env
expect_var LD_PRELOAD "$TL:$A"
# Nested launchers do not stack the library.
run_cmd clean_env "$L" --lib "$TL" "$L" --lib "$TL" env
expect_var LD_PRELOAD "$TL"

# The command replaces the launcher (same pid) and its exit status is the
# launcher's.
env -u LD_PRELOAD -u FIBERSHIM_LIB "$L" --lib "$TL" sh -c 'echo $$ >pid; exec sleep 5' &
bg=$!
i=0
while [ ! -s pid ] && [ $i -lt 100 ]; do
    sleep 0.05
    i=$((i + 1))
done
kill "$bg" 2>/dev/null || true
wait "$bg" 2>/dev/null || true
[ "$(cat pid)" = "$bg" ] || fail "the command runs as pid $(cat pid), the launcher was $bg: not exec'd"

run_cmd clean_env "$L" --lib "$TL" sh -c 'exit 7'
expect_rc 7
run_cmd clean_env "$L" --lib "$TL" "$tmp/no-such-command"
expect_rc 127

printf 'PASS\n'
