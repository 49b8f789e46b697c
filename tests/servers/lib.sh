# shellcheck shell=bash
# shellcheck disable=SC2154 # XFAIL, fails and pid are the sourcing script's
# lib.sh - what the tests/servers scripts share: reporting a check (with
# the XFAIL mechanism their headers describe), reading a process's state
# from /proc, waiting for a server's "listening PORT" and checking its
# answers. Sourced, never run.

say() { printf '%s\n' "$*"; }
die() { say "FAIL: $*"; exit 1; }

# need_pkg COMMAND-OR-FILE PACKAGE: dies naming PACKAGE unless the file (an
# absolute path) exists or the command is on PATH or in /usr/sbin.
need_pkg() {
    case $1 in
        /*) [ -e "$1" ] ;;
        *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] ;;
    esac || die "missing package: $2 ($1 not found; apt-get install $2)"
}

# make_tmp NAME: a temporary directory in $tmp, removed at exit after the
# server ($pid, if any) is killed; INT and TERM exit with 130 and 143.
make_tmp() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/fibershim-$1.XXXXXX") || die "mktemp"
    pid=
    trap 'cleanup_tmp' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
cleanup_tmp() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    rm -rf -- "$tmp"
}

is_xfail() {
    local p
    for p in $XFAIL; do
        # shellcheck disable=SC2053 # $p is a glob on purpose
        [[ $1 == $p ]] && return 0
    done
    return 1
}

# result NAME OK MESSAGE: reports one check, with the seconds since the
# script started; counts a failure in $fails.
result() {
    local name=$1 ok=$2 msg=$3
    if is_xfail "$name" && [ "${FIBERSHIM_SERVERS_STRICT:-0}" != 1 ]; then
        if [ "$ok" = 1 ]; then
            say "[${SECONDS}s] XPASS $name (listed in XFAIL: remove it)"
        else
            say "[${SECONDS}s] XFAIL $name: $msg"
        fi
    elif [ "$ok" = 1 ]; then
        say "[${SECONDS}s] ok    $name${msg:+ ($msg)}"
    else
        say "[${SECONDS}s] FAIL  $name: $msg"
        fails=$((fails + 1))
    fi
}

# CPU ticks (user + system) of process $1, or -1.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo -1; }
# Voluntary context switches of every thread of process $1.
wakeups() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '$1 == "voluntary_ctxt_switches:" { s += $2 } END { print s + 0 }'; }
# Resident KiB of process $1, or -1.
rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status" 2>/dev/null || echo -1; }
# Whether process $1 exists and is not a zombie.
running() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
# Whether the server under test ($pid) runs.
alive() { [ -n "$pid" ] && running "$pid"; }

# await_listening OUT LIMIT_S [CHECK]: waits for the server ($pid) to print
# "listening PORT" into file OUT, polling every 0.5 s for LIMIT_S seconds at
# most; sets port. Gives up early when the server dies, or when CHECK (a
# command, run at every poll with the poll's number) fails. Then reports
# $tag/start: on a failure it kills and reaps the server, clears pid and
# returns 1. The failure message names why, with err_tail (the sourcing
# script's: the last lines of the server's error output).
await_listening() {
    local out=$1 limit=$2 check=${3:-} t=0 why
    port=
    while [ $t -lt $((limit * 2)) ]; do
        port=$(sed -n 's/^listening \([0-9][0-9]*\)$/\1/p' "$out" 2>/dev/null)
        [ -n "$port" ] && break
        alive || break
        if [ -n "$check" ] && ! $check $t; then
            break
        fi
        sleep 0.5
        t=$((t + 1))
    done
    if [ -n "$port" ]; then
        result "$tag/start" 1 ""
        return 0
    fi
    if alive; then
        why="not listening after $((t / 2)) s"
        [ -n "$check" ] && why="$why (hung: no CPU used for 10 s, or over the limit)"
        result "$tag/start" 0 "$why"
        kill -KILL "$pid" 2>/dev/null
    else
        result "$tag/start" 0 "died while starting: $(err_tail)"
    fi
    wait "$pid" 2>/dev/null
    pid=
    return 1
}

# answers_at NAME PORT PATH: GET PATH twice on one keep-alive connection
# must give 200 each time, then GET /missing a 404 on the same connection.
# Leaves the two bodies in $tmp/b1 and $tmp/b2. Reports only a failure
# (and returns 1).
answers_at() {
    local name=$1 p=$2 path=$3 url="http://127.0.0.1:$2" got
    got=$(timeout 6 curl -s -m 5 -w '|%{http_code}|%{num_connects}\n' "$url$path" "$url$path" \
        "$url/missing" -o "$tmp/b1" -o "$tmp/b2" -o /dev/null 2>&1)
    local want='|200|1
|200|0
|404|0'
    if [ "$got" != "$want" ]; then
        result "$name" 0 "port $p: curl said '$(echo "$got" | tr '\n' ' ')', wanted 200, 200 on the same connection, 404$(alive || echo "; server died: $(err_tail)")"
        return 1
    fi
}

# answers NAME BODY: answers_at on $port for /, and both bodies are BODY
# (compared as $(cat) reads them: trailing newlines aside).
answers() {
    answers_at "$1" "$port" / || return 1
    if [ "$(cat "$tmp/b1")" != "$2" ] || ! cmp -s "$tmp/b1" "$tmp/b2"; then
        result "$1" 0 "wrong body: '$(head -c 100 "$tmp/b1")'"
        return 1
    fi
    result "$1" 1 ""
}
