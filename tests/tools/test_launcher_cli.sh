#!/bin/sh
# test_launcher_cli.sh - the fibershim launcher's --help, --version and the
# one-line errors (exit 2) for bad option values. Needs no library.
#
# Usage: test_launcher_cli.sh LAUNCHER VERSION
# Exit status: 0 pass, 1 fail.
set -eu
# shellcheck source=common.sh
. "$(dirname -- "$0")/common.sh"
[ $# -eq 2 ] || fail "usage: $0 LAUNCHER VERSION"
L=$1
version=$2
mktmp

run_cmd "$L" --help
expect_rc 0
expect_out_has "usage: fibershim [options] [--] command [args...]"
expect_out_has "--carriers N"
expect_out_has "fibershim dump PID"
[ -z "$err" ] || fail "--help wrote to stderr: $err"

run_cmd "$L" -h
expect_rc 0
expect_out_has "usage: fibershim"

run_cmd "$L" --version
expect_rc 0
expect_out "fibershim $version"

# Bad values: one line on stderr, nothing on stdout, exit 2. The library is
# never looked up, so none is needed.
bad() {
    run_cmd env -u FIBERSHIM_LIB "$L" "$@"
    expect_rc 2
    expect_one_err_line "fibershim: "
}
bad --carriers 0 true
bad --carriers abc true
bad --carriers 1025 true
bad --carriers '' true
bad --carriers=-1 true
bad -c 2x true
bad -c
bad --stack-size 1Q true
bad --stack-size 8K true
bad --stack-size 2G true
bad --stack-size 99999999999999999999 true
bad -s K true
bad --trace 0 true
bad --trace soon true
bad --dump-signal KILL true
bad --dump-signal 9 true
bad --dump-signal NOSUCH true
bad --dump-signal 65 true
bad --stats= true
bad --lib '' true
bad --no-such-option true
bad -c 2
bad --
bad

case $err in
    *"no command"*) ;;
    *) fail "no command: unexpected message '$err'" ;;
esac

run_cmd env -u FIBERSHIM_LIB "$L" --carriers 0 true
case $err in
    *"--carriers"*"'0'"*"1..1024"*) ;;
    *) fail "--carriers 0: message does not name the option, value and range: $err" ;;
esac

run_cmd env -u FIBERSHIM_LIB "$L" --stack-size 1Q true
case $err in
    *"--stack-size"*"'1Q'"*) ;;
    *) fail "--stack-size 1Q: message does not name the option and value: $err" ;;
esac

# A library that does not exist: one line, exit 125.
run_cmd env -u FIBERSHIM_LIB "$L" --lib "$tmp/no/libfibershim.so" true
expect_rc 125
expect_one_err_line "fibershim: "
run_cmd env FIBERSHIM_LIB="$tmp/no/libfibershim.so" "$L" true
expect_rc 125
expect_one_err_line "fibershim: "

printf 'PASS\n'
