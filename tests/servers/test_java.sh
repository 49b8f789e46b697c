#!/usr/bin/env bash
# test_java.sh SHIMLIB JAVA_DIR - the JVM (Debian 12's OpenJDK 17) run
# plain and under the shim: every Java thread is a pthread, so under the
# shim every one (the program's, and the JVM's own: GC workers, JIT
# compilers, the signal dispatcher, the reference handler) is a fiber.
#
# Runs, in a temporary directory (the classes compiled there by javac):
#   conf          java Conf (JAVA_DIR/Conf.java): monitors, wait/notify, an
#                 executor, a parallel stream, sleep and interrupt, null
#                 checks by SIGSEGV, StackOverflowError, GC with 200 threads
#                 parked, ConcurrentHashMap, ThreadLocal. Plain, then under
#                 the shim (default carriers, then FIBERSHIM_CARRIERS=1):
#                 the same output, exit status 0, within 60 s.
#   plain, shim, shim-c1: java Srv 0 (JAVA_DIR/Srv.java), a thread-per-
#                 connection HTTP server on blocking sockets.
# Checks, each named SERVER/CHECK:
#   start    "listening PORT" within 30 s
#   answers  GET / is 200 with the fixed body, twice on one connection,
#            then GET /missing is 404
#   load-cN  wrk -t2 -cN -d3s --timeout 2s (after a 2 s warm-up of the JIT
#            at the same N): at least one request, no socket error, no
#            non-2xx answer (plain threads: timeouts are noted, not failed)
#   threads  (shim) at most 64 kernel threads while 1,000 connections are
#            open (plain: one per connection, and the JVM's own)
#   alive    the process lives after the loads and answers again
#   stop     SIGTERM: the JVM runs its shutdown hook ("stopped") and exits
#            with status 143 within 10 s
# Each line ends with the seconds since the test started. About 60 s on a
# quiet 2-core machine. A missing package fails the test with a line
# naming it.
set -u

lib=${1:-}
src=${2:-}
fails=0
XFAIL=""

# shellcheck source=tests/servers/lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

if [ -z "$lib" ] || [ ! -f "$lib" ]; then die "the shim library '$lib' is not built"; fi
if [ ! -f "$src/Conf.java" ] || [ ! -f "$src/Srv.java" ]; then die "Java sources not found in '$src'"; fi
need_pkg java openjdk-17-jdk-headless
need_pkg javac openjdk-17-jdk-headless
need_pkg wrk wrk
need_pkg curl curl
need_pkg timeout coreutils

make_tmp java
# The JVM writes hsperfdata and may write crash logs under these.
export HOME=$tmp TMPDIR=$tmp
# Enough descriptors for 1,000 connections.
ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)"

timeout 120 javac -d "$tmp" "$src/Conf.java" "$src/Srv.java" >"$tmp/javac.out" 2>&1 ||
    die "javac failed: $(tail -3 "$tmp/javac.out" | tr '\n' ' ')"

err_tail() { tail -c 400 "$tmp/$tag.err" 2>/dev/null | tail -3 | tr '\n' ' '; }

# ---- Conf: the same output plain and under the shim ------------------------

conf() { # TAG ENV...
    local tag=$1
    shift
    timeout -k 5 60 env "$@" java -cp "$tmp" Conf >"$tmp/conf.$tag.out" 2>"$tmp/conf.$tag.err" </dev/null
}
conf plain
rc=$?
if [ $rc -ne 0 ]; then
    result conf/plain 0 "exit status $rc: $(tail -3 "$tmp/conf.plain.err" | tr '\n' ' ')"
else
    result conf/plain 1 ""
    for run in "shim LD_PRELOAD=$lib" "shim-c1 LD_PRELOAD=$lib FIBERSHIM_CARRIERS=1"; do
        # shellcheck disable=SC2086 # the words of $run split on purpose
        set -- $run
        conf "$@"
        rc=$?
        if [ $rc -ne 0 ]; then
            result "conf/$1" 0 "exit status $rc: $(tail -3 "$tmp/conf.$1.err" | tr '\n' ' ')"
        elif ! cmp -s "$tmp/conf.plain.out" "$tmp/conf.$1.out"; then
            result "conf/$1" 0 "output differs: $(diff "$tmp/conf.plain.out" "$tmp/conf.$1.out" | head -4 | tr '\n' ' ')"
        else
            result "conf/$1" 1 ""
        fi
    done
fi

# ---- Srv: a thread-per-connection server -------------------------------------

# start TAG ENV... : starts the server, sets pid and port.
start() {
    tag=$1
    shift
    env "$@" java -Xss512k -cp "$tmp" Srv 0 >"$tmp/$tag.out" 2>"$tmp/$tag.err" </dev/null &
    pid=$!
    await_listening "$tmp/$tag.out" 30
}

# load C: a JIT warm-up at C connections, then the measured run; for the
# shim at 1,000 connections also counts the kernel threads during it.
load() {
    local c=$1 out="$tmp/$tag.wrk$1" nthreads=
    if ! alive; then
        result "$tag/load-c$c" 0 "server not running"
        return 1
    fi
    timeout 20 wrk -t2 -c"$c" -d2s --timeout 2s "http://127.0.0.1:$port/" >/dev/null 2>&1
    timeout 20 wrk -t2 -c"$c" -d3s --timeout 2s "http://127.0.0.1:$port/" >"$out" 2>&1 &
    local w=$!
    if [ "$c" -ge 1000 ]; then
        sleep 2
        nthreads=$(find "/proc/$pid/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    fi
    wait $w
    local rc=$? n errs
    n=$(awk '/requests in/ { print $1 }' "$out")
    errs=$(grep -E 'Socket errors|Non-2xx' "$out" | tr '\n' ' ')
    if [ "$tag" = plain ] && [ $rc -eq 0 ] && [ "${n:-0}" -gt 0 ] && ! grep -q 'Non-2xx' "$out" &&
        grep -qE '^ *Socket errors: connect 0, read 0, write 0, timeout [0-9]+ *$' "$out"; then
        result "$tag/load-c$c" 1 "plain threads too slow for some: $n requests, $errs"
    elif [ $rc -ne 0 ] || [ -z "$n" ] || [ "$n" -eq 0 ] || [ -n "$errs" ]; then
        result "$tag/load-c$c" 0 "wrk rc $rc, ${n:-no} requests; $errs$(alive || echo "; server died: $(err_tail)")"
        return 1
    else
        result "$tag/load-c$c" 1 "$n requests in 3 s"
    fi
    if [ -n "$nthreads" ] && [ "$tag" != plain ]; then
        if [ "$nthreads" -le 64 ]; then
            result "$tag/threads" 1 "$nthreads kernel threads at 1,000 connections"
        else
            result "$tag/threads" 0 "$nthreads kernel threads at 1,000 connections (at most 64)"
        fi
    fi
}

stop() {
    if ! alive; then
        result "$tag/stop" 0 "server not running"
        pid=
        return 1
    fi
    kill -TERM "$pid"
    local t=0
    while [ $t -lt 20 ] && running "$pid"; do
        sleep 0.5
        t=$((t + 1))
    done
    if running "$pid"; then
        result "$tag/stop" 0 "still running 10 s after SIGTERM"
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        pid=
        return 1
    fi
    wait "$pid"
    local rc=$?
    pid=
    if [ $rc -ne 143 ] || ! grep -qx stopped "$tmp/$tag.out"; then
        result "$tag/stop" 0 "exit status $rc (wanted 143), shutdown hook $(grep -qx stopped "$tmp/$tag.out" && echo ran || echo "did not run"): $(err_tail)"
        return 1
    fi
    result "$tag/stop" 1 ""
}

server() { # TAG ENV...
    start "$@" || return
    answers "$tag/answers" "Hello, world"
    load 10
    load 100
    load 1000
    answers "$tag/alive" "Hello, world"
    stop
}

server plain
server shim LD_PRELOAD="$lib"
server shim-c1 LD_PRELOAD="$lib" FIBERSHIM_CARRIERS=1

if [ "$fails" -gt 0 ]; then
    say "FAIL: $fails check(s) failed"
    exit 1
fi
say "PASS"
