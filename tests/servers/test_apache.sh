#!/usr/bin/env bash
# test_apache.sh SHIMLIB HTTPD_CONF - issue #15's third real server: Apache
# httpd 2.4 (Debian 12's apache2), worker MPM, in its usual shape: a root
# parent and two child processes of 600 threads each, which drop privileges
# to an unprivileged user and share one blocking listener
# (tests/servers/apache/httpd.conf), run plain and under the shim.
#
# Servers, each on 127.0.0.1 with a free port, with its own ServerRoot,
# pid file, error log, mutex files and document root in a temporary
# directory (under /tmp when run as root: the children's user must reach
# the document root):
#   plain            Apache's own threads
#   shim             LD_PRELOAD=the shim, default carriers
#   shim-c1          the same with FIBERSHIM_CARRIERS=1
#   shim-2l          two Listen ports (-DTWO_LISTENERS): each child's
#                    listener takes the accept mutex (fcntl locks, Debian's
#                    "Mutex file:") and waits in its own epoll pollset
#   shim-2l-pthread  the same with the accept mutex a process-shared robust
#                    priority-inheritance pthread mutex (APR's) in shared
#                    memory (-DPTHREAD_MUTEX)
# Checks, each named SERVER/CHECK:
#   start    the parent and two children run and the scoreboard
#            (/server-status?auto, filled by ap_mpm_query and the workers)
#            shows the worker MPM with 1,200 workers started, within 30 s
#   privs    as root: every kernel thread of each child has the User's
#            real, effective, saved and fs uid and gid; the parent stays root
#   answers  GET /hello.txt is 200 with the static file's body, twice on
#            one keep-alive connection; GET /missing is 404 (2l: both ports)
#   load-cN  wrk -t2 -cN -d3s: at least one request, no socket error (plain
#            threads: timeouts are noted, not failed), no
#            non-2xx answer (2l: 50 connections on each port at once)
#   alive    the same two children live after the load (none died or was
#            replaced, no "exit signal" in the error log), and answer again
#   idle     once the load stopped, under 0.2 s of CPU in 2 s, per process
#   wakeups  in the same 2 s, under 200 voluntary context switches per
#            process, its threads together (a process that polls is
#            spinning slowly: plain Apache makes about 2)
#   rss      each child's resident set after the loads is under 256 MiB,
#            and grew by less than 8 MiB in the idle seconds after them
#   stop     SIGTERM to the parent: it exits with status 0 within 10 s,
#            logs "caught SIGTERM, shutting down", neither SIGKILLed a child
#            nor gave up on one (AH00046, AH00047), and no child is left
#
# Known failures: checks matching a pattern in XFAIL (below) are reported
# as XFAIL, with the cause, and do not fail the test; one that passes is
# reported as XPASS (remove it from XFAIL). FIBERSHIM_SERVERS_STRICT=1 makes
# them count as failures. A missing package fails the test with a line
# naming it. Every wait is bounded; the whole test takes about a minute.
set -u

# Causes (see README): none at present. (shim-2l-pthread/wakeups was one
# until shim/mutex_word.c: the waiting child's listener polled APR's robust
# priority-inheritance accept mutex about 900 times a second.)
XFAIL=""

lib=${1:-}
conf=${2:-}
fails=0

# shellcheck source=tests/servers/lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

if [ -z "$lib" ] || [ ! -f "$lib" ]; then die "the shim library '$lib' is not built"; fi
[ -f "$conf" ] || die "Apache config '$conf' not found"
conf=$(cd "$(dirname "$conf")" && pwd)/$(basename "$conf") # apache2 -f reads it from ServerRoot
need_pkg apache2 apache2
need_pkg /usr/lib/apache2/modules/mod_mpm_worker.so apache2
need_pkg wrk wrk
need_pkg curl curl
need_pkg pgrep procps
need_pkg timeout coreutils

# The children's user: as root, www-data (else nobody); otherwise Apache
# cannot change users and runs the children as the caller.
if [ "$(id -u)" -eq 0 ]; then
    user=www-data
    id -u "$user" >/dev/null 2>&1 || user=nobody
    id -u "$user" >/dev/null 2>&1 || die "neither www-data nor nobody exists to drop privileges to"
    tmp=$(mktemp -d /tmp/fibershim-apache.XXXXXX) || die "mktemp"
else
    user=$(id -un)
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/fibershim-apache.XXXXXX") || die "mktemp"
fi
uid=$(id -u "$user")
gid=$(id -g "$user")
group=$(id -gn "$user")

pid=
kids=
# Kills the server: the parent and the children it has or had.
kill_server() {
    # shellcheck disable=SC2046,SC2086 # lists of pids
    [ -n "$pid" ] && kill -KILL "$pid" $kids $(pgrep -P "$pid") 2>/dev/null
}
cleanup() {
    kill_server
    rm -rf -- "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

chmod 755 "$tmp"
printf 'Hello from Apache httpd under test\n' >"$tmp/hello.txt"

children() { pgrep -P "$pid" 2>/dev/null | sort -n | tr '\n' ' ' | sed 's/ $//'; }
log_tail() {
    grep -v -e AH00094 -e AH00128 -e AH00292 -e AH00293 "$tmp/$tag/error.log" 2>/dev/null |
        tail -3 | cut -c1-200 | tr '\n' ' '
    tail -c 300 "$tmp/$tag.err" 2>/dev/null | tr '\n' ' '
}
# What answers_at (lib.sh) quotes when the server died.
err_tail() { log_tail; }
free_port() {
    local p i
    for i in $(seq 50); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        [ "$p" = "${1:-}" ] && continue
        # Nothing listens there (a connect is refused at once).
        if ! timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# scoreboard PORT: "MPM busy idle" from /server-status?auto.
scoreboard() {
    timeout 6 curl -s -m 5 "http://127.0.0.1:$1/server-status?auto" 2>/dev/null | awk -F': ' '
        $1 == "ServerMPM" { mpm = $2 } $1 == "BusyWorkers" { b = $2 } $1 == "IdleWorkers" { i = $2 }
        END { printf "%s %d %d\n", (mpm == "" ? "-" : mpm), b, i }'
}

# start TAG ENV... : starts Apache with the defines in $defs; sets pid,
# port, port2, kids.
start() {
    tag=$1
    shift
    local sb="" t mpm busy idle
    mkdir -p "$tmp/$tag/run" "$tmp/$tag/htdocs"
    chmod 755 "$tmp/$tag" "$tmp/$tag/htdocs"
    cp "$tmp/hello.txt" "$tmp/$tag/htdocs/hello.txt"
    chmod 644 "$tmp/$tag/htdocs/hello.txt"
    for _ in 1 2 3; do
        port=$(free_port) || die "no free port found"
        port2=$(free_port "$port") || die "no free port found"
        : >"$tmp/$tag/error.log"
        # shellcheck disable=SC2086 # $defs: zero or more -D words
        env FS_APACHE_DIR="$tmp/$tag" FS_APACHE_PORT="$port" FS_APACHE_PORT2="$port2" \
            FS_APACHE_USER="$user" FS_APACHE_GROUP="$group" "$@" \
            apache2 -f "$conf" -DFOREGROUND $defs >"$tmp/$tag.out" 2>"$tmp/$tag.err" </dev/null &
        pid=$!
        kids=
        for t in $(seq 60); do
            sleep 0.5
            alive || break
            kids=$(children)
            [ "$(wc -w <<<"$kids")" -eq 2 ] || continue
            sb=$(scoreboard "$port")
            read -r mpm busy idle <<<"$sb"
            [ "$mpm" = worker ] && [ $((busy + idle)) -eq 1200 ] && break
        done
        alive && break
        wait "$pid" 2>/dev/null
        # Someone took the port between the check and the bind: again.
        grep -q 'could not bind' "$tmp/$tag/error.log" "$tmp/$tag.err" 2>/dev/null || break
    done
    read -r mpm busy idle <<<"${sb:-- 0 0}"
    if alive && [ "$(wc -w <<<"$kids")" -eq 2 ] && [ "$mpm" = worker ] && [ $((busy + idle)) -eq 1200 ]; then
        result "$tag/start" 1 ""
        return 0
    fi
    if alive; then
        result "$tag/start" 0 "after 30 s: children '$kids', scoreboard MPM $mpm, $busy busy + $idle idle workers (wanted 2 children, worker, 1200); $(log_tail)"
        kill_server
    else
        result "$tag/start" 0 "died while starting: $(log_tail)"
    fi
    wait "$pid" 2>/dev/null
    pid=
    return 1
}

# Every kernel thread of each child runs as the User, the parent as root.
privs() {
    if [ "$(id -u)" -ne 0 ]; then
        say "skip  $tag/privs: not root, Apache drops no privileges"
        return 0
    fi
    local c bad="" want="$uid $uid $uid $uid/$gid $gid $gid $gid" got
    for c in $kids; do
        got=$(for t in /proc/"$c"/task/*; do
            awk '$1 == "Uid:" { u = $2 " " $3 " " $4 " " $5 } $1 == "Gid:" { g = $2 " " $3 " " $4 " " $5 }
                 END { print u "/" g }' "$t/status"
        done | sort -u | tr '\n' ';')
        [ "$got" = "$want;" ] || bad="$bad child $c threads have uid/gid '$got', wanted '$want';"
    done
    got=$(awk '$1 == "Uid:" { print $3 }' "/proc/$pid/status")
    [ "$got" = 0 ] || bad="$bad parent's euid is $got;"
    if [ -n "$bad" ]; then
        result "$tag/privs" 0 "$bad"
    else
        result "$tag/privs" 1 ""
    fi
}

# The static file twice on one connection, and a 404, on port $1.
answers_port() {
    local name=$1 p=$2
    answers_at "$name" "$p" /hello.txt || return 1
    if ! cmp -s "$tmp/b1" "$tmp/hello.txt" || ! cmp -s "$tmp/b2" "$tmp/hello.txt"; then
        result "$name" 0 "port $p: wrong body: '$(head -c 100 "$tmp/b1")'"
        return 1
    fi
    return 0
}
answers() {
    answers_port "$1" "$port" || return 1
    if [[ " $defs " == *" -DTWO_LISTENERS "* ]]; then
        answers_port "$1" "$port2" || return 1
    fi
    result "$1" 1 ""
}

# load C [PORT...]: wrk at C connections, split over the ports given (all
# at once), default the first port.
load() {
    local c=$1 ports p n rc bad="" i=0 wrks=()
    shift
    ports=("${@:-$port}")
    if ! alive; then
        result "$tag/load-c$c" 0 "server not running"
        return 1
    fi
    for p in "${ports[@]}"; do
        timeout 20 wrk -t2 -c$((c / ${#ports[@]})) -d3s --timeout 2s \
            "http://127.0.0.1:$p/hello.txt" >"$tmp/$tag.wrk$c.$i" 2>&1 &
        wrks+=($!)
        i=$((i + 1))
    done
    local note=""
    for i in "${!wrks[@]}"; do
        wait "${wrks[$i]}"
        rc=$?
        local out="$tmp/$tag.wrk$c.$i"
        n=$(awk '/requests in/ { print $1 }' "$out")
        local errs
        errs=$(grep -E 'Socket errors|Non-2xx' "$out" | tr '\n' ' ')
        # Plain threads are the reference, not what is tested: requests
        # that waited over 2 s for one of plain Apache's 1,200 threads on
        # a machine loaded by the tests running beside this one (207 of
        # 64,000 at 1,000 connections, once in CI) are noted, not failed.
        # Any other error fails the plain run too, and under the shim a
        # timeout is a failure.
        if [ "$tag" = plain ] && [ $rc -eq 0 ] && [ "${n:-0}" -gt 0 ] &&
            ! grep -q 'Non-2xx' "$out" &&
            grep -qE '^ *Socket errors: connect 0, read 0, write 0, timeout [0-9]+ *$' "$out"; then
            note="$note port ${ports[$i]}: $n requests, $errs"
        elif [ $rc -ne 0 ] || [ -z "$n" ] || [ "$n" -eq 0 ] || [ -n "$errs" ]; then
            bad="$bad port ${ports[$i]}: wrk rc $rc, ${n:-no} requests $errs;"
        fi
    done
    if [ -n "$bad" ]; then
        result "$tag/load-c$c" 0 "$bad$(alive || echo " server died: $(log_tail)")"
        return 1
    fi
    result "$tag/load-c$c" 1 "${note:+plain threads too slow for some:$note}"
}

after_load() {
    if ! alive; then
        result "$tag/alive" 0 "parent died: $(log_tail)"
        return 1
    fi
    local now c gone=""
    now=$(children)
    for c in $kids; do running "$c" || gone="$gone $c"; done
    if [ -n "$gone" ] || [ "$now" != "$kids" ] || grep -q 'exit signal' "$tmp/$tag/error.log"; then
        result "$tag/alive" 0 "children were '$kids', now '$now'$([ -n "$gone" ] && echo " ($gone gone)"); $(grep -m2 'exit signal' "$tmp/$tag/error.log" | cut -c1-200 | tr '\n' ' ')"
    else
        answers "$tag/alive"
    fi
    sleep 1
    local p procs="$pid $kids" a w r0 r1 b x badcpu="" badwake="" badrss=""
    declare -A a w r0
    for p in $procs; do
        a[$p]=$(cpu_ticks "$p")
        w[$p]=$(wakeups "$p")
        r0[$p]=$(rss_kib "$p")
    done
    sleep 2
    for p in $procs; do
        b=$(cpu_ticks "$p")
        x=$(wakeups "$p")
        r1=$(rss_kib "$p")
        if [ "${a[$p]}" -lt 0 ] || [ "$b" -lt 0 ] || [ $((b - a[$p])) -gt 20 ]; then
            badcpu="$badcpu pid $p: $((b - a[$p])) ticks of CPU in 2 s idle;"
        fi
        if [ $((x - w[$p])) -ge 200 ]; then
            badwake="$badwake pid $p: $((x - w[$p])) voluntary context switches in 2 s idle;"
        fi
        if [ "$p" != "$pid" ]; then
            if [ "$r1" -lt 0 ] || [ "$r1" -gt $((256 * 1024)) ] || [ $((r1 - r0[$p])) -gt $((8 * 1024)) ]; then
                badrss="$badrss child $p: RSS ${r0[$p]} KiB after the loads, $r1 KiB 2 s later;"
            fi
        fi
    done
    result "$tag/idle" "$([ -z "$badcpu" ] && echo 1 || echo 0)" "$badcpu$(alive || echo " died: $(log_tail)")"
    result "$tag/wakeups" "$([ -z "$badwake" ] && echo 1 || echo 0)" "$badwake"
    result "$tag/rss" "$([ -z "$badrss" ] && echo 1 || echo 0)" "$badrss"
}

stop() {
    if ! alive; then
        result "$tag/stop" 0 "server not running: $(log_tail)"
        wait "$pid" 2>/dev/null
        pid=
        return 1
    fi
    kill -TERM "$pid"
    local i=0 c left=""
    while alive && [ $i -lt 20 ]; do
        sleep 0.5
        i=$((i + 1))
    done
    if alive; then
        kill_server
        wait "$pid" 2>/dev/null
        pid=
        result "$tag/stop" 0 "still running 10 s after SIGTERM (killed): $(log_tail)"
        return 1
    fi
    wait "$pid"
    local rc=$?
    pid=
    for c in $kids; do running "$c" && left="$left $c"; done
    if [ -n "$left" ]; then
        # shellcheck disable=SC2086 # a list of pids
        kill -KILL $left 2>/dev/null
        result "$tag/stop" 0 "the parent exited ($rc) but children$left were left running (killed)"
        return 1
    fi
    if grep -qE 'AH00046|AH00047' "$tmp/$tag/error.log"; then
        result "$tag/stop" 0 "a child did not exit on its own: the parent SIGKILLed it or gave up: $(log_tail)"
        return 1
    fi
    if [ $rc -ne 0 ] || ! grep -q 'caught SIGTERM, shutting down' "$tmp/$tag/error.log"; then
        result "$tag/stop" 0 "exit status $rc after SIGTERM: $(log_tail)"
        return 1
    fi
    result "$tag/stop" 1 ""
}

defs=
if start plain; then
    privs
    answers plain/answers
    load 10
    load 100
    load 1000
    after_load
    stop
fi

if start shim LD_PRELOAD="$lib"; then
    privs
    answers shim/answers
    load 10
    load 100
    load 1000
    after_load
    stop
fi

if start shim-c1 LD_PRELOAD="$lib" FIBERSHIM_CARRIERS=1; then
    privs
    answers shim-c1/answers
    load 100
    load 1000
    after_load
    stop
fi

defs="-DTWO_LISTENERS"
if start shim-2l LD_PRELOAD="$lib"; then
    answers shim-2l/answers
    load 100 "$port" "$port2"
    after_load
    stop
fi

defs="-DTWO_LISTENERS -DPTHREAD_MUTEX"
if start shim-2l-pthread LD_PRELOAD="$lib"; then
    answers shim-2l-pthread/answers
    load 100 "$port" "$port2"
    after_load
    stop
fi

if [ $fails -ne 0 ]; then
    say "FAIL: $fails check(s) failed"
    exit 1
fi
say "PASS"
