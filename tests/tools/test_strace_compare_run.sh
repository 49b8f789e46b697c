#!/usr/bin/env bash
# test_strace_compare_run.sh - a full strace-compare run: bench/servers'
# threads_http as plain threads and under libfibershim.so, 50 connections
# for 2 s each, and a report with the table and the verdict line.
#
# Usage: test_strace_compare_run.sh STRACE_COMPARE SHIMLIB THREADS_HTTP
#   SHIMLIB may be empty (the shim is not built yet).
# Exit status: 0 pass, 1 fail, 77 skipped (no shim, no threads_http, no
# strace or wrk, or ptrace not permitted).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname -- "$0")/common.sh"
[[ $# -eq 3 ]] || fail "usage: $0 STRACE_COMPARE SHIMLIB THREADS_HTTP"
SC=$1
LIB=$2
SERVER=$3
[[ -n $LIB && -f $LIB ]] || skip "libfibershim.so is not built"
[[ -x $SERVER ]] || skip "no threads_http server at $SERVER"
command -v strace >/dev/null || skip "strace is not installed"
command -v wrk >/dev/null || skip "wrk is not installed"
strace -f -qq -o /dev/null true 2>/dev/null || skip "strace cannot trace here (ptrace not permitted)"
mktmp

run_cmd "$SC" --lib "$LIB" --conns 50 --duration 2 --keep "$tmp/keep" -- "$SERVER" '{port}'
[[ $rc -eq 0 ]] || fail "strace-compare failed ($rc): $err"
for want in '| syscall | threads calls | threads calls/req | threads % time | shim calls | shim calls/req | shim % time |' \
    '| **total** |' 'poll() calls: threads ' '; epoll_ctl per connection: threads ' '; syscalls per request: threads '; do
    expect_out_has "$want"
done
for f in meta threads.strace shim.strace threads.load shim.load; do
    [[ -s $tmp/keep/$f ]] || fail "--keep directory lacks $f"
done
# The kept outputs render the same report again.
report=$out
run_cmd "$SC" --report "$tmp/keep"
expect_rc 0
[[ $out == "$report" ]] || fail "--report of the kept directory differs from the run's report"
# The shim run accepted connections and answered requests.
grep -q '^requests_shim=[1-9]' "$tmp/keep/meta" || fail "the shim run completed no requests"
printf '%s\n' "$report"
printf 'PASS\n'
