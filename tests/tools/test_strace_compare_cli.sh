#!/usr/bin/env bash
# test_strace_compare_cli.sh - strace-compare without running anything: --help,
# usage errors (exit 2), and the Markdown report rendered with --report from
# canned strace -c summaries and a canned stats file (tests/tools/fixtures).
#
# Usage: test_strace_compare_cli.sh STRACE_COMPARE FIXTURES_DIR
# Exit status: 0 pass, 1 fail.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname -- "$0")/common.sh"
[[ $# -eq 2 ]] || fail "usage: $0 STRACE_COMPARE FIXTURES_DIR"
SC=$1
FX=$2
mktmp

run_cmd "$SC" --help
expect_rc 0
expect_out_has "usage: strace-compare [options] -- server-command args..."
expect_out_has "--no-strace"
expect_out_has "{port}"

bad() {
    run_cmd "$SC" "$@"
    expect_rc 2
    expect_one_err_line "strace-compare: "
}
bad
bad --
bad --conns 0 -- srv '{port}'
bad --conns x -- srv '{port}'
bad --duration -- srv '{port}'
bad --duration=0 -- srv '{port}'
bad --port 70000 -- srv
bad --path noslash -- srv '{port}'
bad --load '' -- srv '{port}'
bad --requests 10 -- srv '{port}'
bad --no-strace=1 -- srv '{port}'
bad --bogus -- srv '{port}'
bad -- srv 8080
case $err in
    *"{port}"*) ;;
    *) fail "server command without {port}: message does not mention {port}: $err" ;;
esac

# A server that cannot run: exit 1 with a message, no report (needs no
# library: --lib names any existing file, the threads run fails first).
if command -v strace >/dev/null && command -v wrk >/dev/null; then
    run_cmd "$SC" --lib "$FX/strace/meta" --startup-timeout 5 -- "$tmp/no-such-server" '{port}'
    expect_rc 1
    [[ -z $out ]] || fail "$desc: unexpected stdout: $out"
fi

run_cmd "$SC" --report "$tmp/nothing-here"
expect_rc 1

# expect_line LINE: the report has exactly this line.
# (A here-string, not printf | grep -q: under pipefail, grep leaving at the
# first match could fail the pipe with printf's SIGPIPE.)
expect_line() {
    grep -qFx -- "$1" <<<"$out" || fail "report lacks the line: $1
report:
$out"
}

run_cmd "$SC" --report "$FX/strace"
expect_rc 0
# The backquotes are Markdown code spans.
# shellcheck disable=SC2016
expect_line '## strace-compare: `threads_http {port}`'
# shellcheck disable=SC2016
expect_line '- load: `wrk -t2 -c50 -d2s http://127.0.0.1:{port}/`'
expect_line '- threads: 10000 requests (5000.00 req/s); shim: 20000 requests (10000.00 req/s)'
expect_line '- shim load: Socket errors: connect 0, read 1, write 0, timeout 0'
expect_line '| syscall | threads calls | threads calls/req | threads % time | shim calls | shim calls/req | shim % time |'
expect_line '| read | 10050 | 1.005 | 48.10 | 20100 | 1.005 | 45.00 |'
expect_line '| write | 10000 | 1.000 | 40.00 | 20000 | 1.000 | 40.00 |'
expect_line '| epoll_wait | 0 | 0 | 0.00 | 3000 | 0.150 | 10.00 |'
expect_line '| futex | 200 | 0.020 | 6.00 | 100 | 0.005 | 1.00 |'
expect_line '| mmap | 5 | 5.00e-04 | 0.20 | 5 | 2.50e-04 | 0.20 |'
expect_line '| poll | 50 | 0.005 | 0.80 | 0 | 0 | 0.00 |'
expect_line '| **total** | 20457 | 2.046 | 100.00 | 43507 | 2.175 | 100.00 |'
expect_line 'poll() calls: threads 50, shim 0; epoll_ctl per connection: threads 0, shim 1.961; syscalls per request: threads 2.046, shim 2.175 (1.06x)'
# Rows by shim calls, then threads calls (descending); the total row last.
order=$(printf '%s\n' "$out" | awk -F' [|] ' '/^[|] / && !/^[|] syscall/ { sub(/^[|] /, ""); printf "%s ", $1 }')
[[ $order == "read write epoll_wait accept4 futex epoll_ctl close mmap clone3 accept poll **total** " ]] ||
    fail "report rows in the wrong order: $order"

run_cmd "$SC" --report "$FX/stats"
expect_rc 0
expect_line '| counter | shim value | per request | per connection |'
expect_line '| fibers_created | 52 | 0.003 | 1.040 |'
expect_line '| switches | 40000 | 2.000 | 800.000 |'
expect_line '| epoll_ctl_calls | 100 | 0.005 | 2.000 |'
expect_line '| parks_read | 19900 | 0.995 | 398.000 |'
expect_line '| carriers | 2 | 1.00e-04 | 0.040 |'
expect_line 'requests/sec: threads 5000.00, shim 10000.00 (2.00x); epoll_wait_calls per request: 0.150; switches per request: 2.000; syscalls_avoided per request: 1.000; epoll_ctl per connection: 2.000'
case $out in
    *not_a_counter* | *"fibershim stats"*) fail "the stats report lists a line that is not a counter" ;;
esac

printf 'PASS\n'
