# shellcheck shell=bash
# shellcheck disable=SC2154 # XFAIL, fails and pid are the sourcing script's
# lib.sh - what the tests/servers scripts share: reporting a check (with
# the XFAIL mechanism their headers describe) and reading a process's
# state from /proc. Sourced, never run.

say() { printf '%s\n' "$*"; }
die() { say "FAIL: $*"; exit 1; }

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
