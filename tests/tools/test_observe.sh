#!/bin/sh
# test_observe.sh SHIMLIB PROG LAUNCHER - the library's observability:
# validation of every variable before main(), FIBERSHIM_STATS at exit,
# FIBERSHIM_TRACE lines at the interval, and the fiber dump on a signal
# (states, what each fiber waits on, backtraces naming the function).
set -u
lib=$1 prog=$2 launcher=$3
if [ -z "$lib" ] || [ ! -f "$lib" ]; then echo "SKIP: shim not built"; exit 77; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# 1. A bad value is refused before main, with one line naming it, exit 2.
for bad in FIBERSHIM_CARRIERS=abc FIBERSHIM_CARRIERS=0 FIBERSHIM_CARRIERS=2000 \
           FIBERSHIM_STACK_SIZE=1Q FIBERSHIM_STACK_SIZE=4K FIBERSHIM_MIGRATE=2 \
           FIBERSHIM_TRACE=-5 FIBERSHIM_DUMP_SIGNAL=NOPE FIBERSHIM_DUMP_SIGNAL=KILL; do
    name=${bad%%=*}
    env "$bad" LD_PRELOAD="$lib" "$prog" sleepers 1 >"$tmp/out" 2>"$tmp/err"
    rc=$?
    [ $rc -eq 2 ] || fail "$bad: exit $rc, expected 2"
    [ ! -s "$tmp/out" ] || fail "$bad: main() ran"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "$bad: expected one line, got: $(cat "$tmp/err")"
    grep -q "$name" "$tmp/err" || fail "$bad: the line does not name $name"
done
# Validated even in a program that never creates a thread.
env FIBERSHIM_CARRIERS=x LD_PRELOAD="$lib" true 2>"$tmp/err"
[ $? -eq 2 ] || fail "validation in a thread-less program"
# Good values pass.
env FIBERSHIM_CARRIERS=2 FIBERSHIM_STACK_SIZE=64K FIBERSHIM_DUMP_SIGNAL=SIGUSR2 \
    LD_PRELOAD="$lib" "$prog" sleepers 3 >"$tmp/out" || fail "good values refused"

# 2. Stats at exit, plausible for 50 sleeping threads.
env FIBERSHIM_STATS="$tmp/stats" LD_PRELOAD="$lib" "$prog" sleepers 50 >/dev/null ||
    fail "stats run failed"
val() { awk -v k="$1" '$1 == k { print $2 }' "$tmp/stats"; }
[ "$(val fibers_created)" -ge 51 ] || fail "fibers_created $(val fibers_created) < 51"
[ "$(val fibers_peak)" -ge 2 ] || fail "fibers_peak $(val fibers_peak)"
[ "$(val parks_sleep)" -ge 50 ] || fail "parks_sleep $(val parks_sleep) < 50"
[ "$(val parks_join)" -ge 1 ] || fail "parks_join $(val parks_join) < 1"
[ "$(val switches)" -ge 100 ] || fail "switches $(val switches) < 100"
[ "$(val timers_fired)" -ge 50 ] || fail "timers_fired $(val timers_fired) < 50"
# The shim's own counters: calls handed to spare threads, file calls made on
# the carrier (none of either here).
[ "$(val offloads)" = 0 ] || fail "offloads '$(val offloads)', expected 0"
[ "$(val file_inplace)" = 0 ] || fail "file_inplace '$(val file_inplace)', expected 0"
# "%p" in the path: every process writes its own file, named by its pid
# (the shell and both programs here all run with the shim preloaded).
mkdir "$tmp/per"
# shellcheck disable=SC2016 # $1 is expanded by the inner shell
env FIBERSHIM_STATS="$tmp/per/st.%p" LD_PRELOAD="$lib" \
    sh -c '"$1" sleepers 3 >/dev/null & "$1" sleepers 3 >/dev/null; wait' sh "$prog" ||
    fail "%p stats run failed"
n=0
for f in "$tmp/per"/st.*; do
    case "${f##*/st.}" in *[!0-9]*|'') fail "stats file $f is not named by a pid" ;; esac
    c=$(awk '$1 == "fibers_created" { print $2 }' "$f")
    [ "${c:-0}" -ge 4 ] && n=$((n + 1))
done
[ "$n" -eq 2 ] || fail "%p: $n stats files with the programs' fibers, expected 2: $(ls "$tmp/per")"
# A path that cannot be opened: one line on stderr, the program's exit status kept.
env FIBERSHIM_STATS="$tmp/no/such/dir/st" LD_PRELOAD="$lib" "$prog" sleepers 1 >/dev/null 2>"$tmp/err" ||
    fail "an unwritable stats path changed the exit status"
grep -q "cannot write stats to $tmp/no/such/dir/st" "$tmp/err" || fail "no line for an unwritable stats path"
# To stderr with FIBERSHIM_STATS=1.
env FIBERSHIM_STATS=1 LD_PRELOAD="$lib" "$prog" sleepers 2 2>"$tmp/err" >/dev/null
grep -q '^epoll_ctl_calls ' "$tmp/err" || fail "FIBERSHIM_STATS=1 printed no counters"

# 2b. A program that sets its own action for the dump signal wins, and the
#     library says once that dumps are off (SBCL and stunnel use SIGUSR2).
env FIBERSHIM_DUMP_SIGNAL=USR2 LD_PRELOAD="$lib" "$prog" ownsig 3 >"$tmp/out" 2>"$tmp/err" ||
    fail "ownsig run failed"
grep -q '^own handler ran 1$' "$tmp/out" || fail "the program's own SIGUSR2 handler did not run: $(cat "$tmp/out")"
[ "$(grep -c 'FIBERSHIM_DUMP_SIGNAL' "$tmp/err")" -eq 1 ] ||
    fail "expected one warning about the dump signal, got: $(cat "$tmp/err")"
grep -q 'SIGUSR2' "$tmp/err" || fail "the warning does not name SIGUSR2"
# Without the variable, nothing is said.
env LD_PRELOAD="$lib" "$prog" ownsig 1 >/dev/null 2>"$tmp/err" || fail "ownsig run failed"
[ ! -s "$tmp/err" ] || fail "a warning without FIBERSHIM_DUMP_SIGNAL: $(cat "$tmp/err")"

# 3. Trace: about one line per 100 ms over a 1 s run.
env FIBERSHIM_TRACE=100 LD_PRELOAD="$lib" "$prog" busy 1000 >/dev/null 2>"$tmp/trace"
lines=$(grep -c 'fibershim: trace:' "$tmp/trace")
if [ "$lines" -lt 6 ] || [ "$lines" -gt 14 ]; then fail "trace printed $lines lines in 1 s at 100 ms"; fi
grep -q 'switches/s' "$tmp/trace" || fail "trace line lacks rates"

# 4. Dump on the signal, through the launcher: every parked fiber, what it
#    waits on, and a backtrace naming the function it parked in. The
#    program keeps running and exits normally afterwards.
"$launcher" --lib "$lib" --dump-signal USR2 -- "$prog" park 2 >"$tmp/out" 2>"$tmp/dump" &
pid=$!
i=0
while ! grep -q ready "$tmp/out" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "program never got ready"; sleep 0.05
done
"$launcher" dump "$pid" || fail "fibershim dump failed"
sleep 0.5
wait "$pid" || fail "program died after the dump"
grep -q released "$tmp/out" || fail "program did not finish normally"
for w in "waiting for read on fd" "waiting for sleep" "waiting for mutex"; do
    grep -q "$w" "$tmp/dump" || fail "dump lacks '$w': $(cat "$tmp/dump")"
done
for f in blocked_in_read blocked_in_sleep blocked_in_mutex; do
    grep -q "$f" "$tmp/dump" || fail "no backtrace through $f"
done
echo "observe: ok"
