# shellcheck shell=sh
# common.sh - helpers sourced by the tests/tools/test_*.sh scripts (POSIX sh).
#
# Provides: fail MSG (exit 1), skip MSG (exit 77), mktmp (sets $tmp, removed
# at exit), run_cmd CMD... (sets $rc, $out, $err from one run), and the checks
# expect_rc, expect_out, expect_out_has, expect_one_err_line.

fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

skip() {
    printf 'SKIP: %s\n' "$*" >&2
    exit 77
}

mktmp() {
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/fibershim-tools-test.XXXXXX")
    trap 'rm -rf -- "$tmp"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# run_cmd CMD...: runs CMD with stdout and stderr captured.
run_cmd() {
    rc=0
    "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
    desc="$*"
}

expect_rc() {
    [ "$rc" -eq "$1" ] || fail "$desc: exit status $rc, expected $1 (stderr: $err)"
}

expect_out() {
    [ "$out" = "$1" ] || fail "$desc: stdout '$out', expected '$1'"
}

expect_out_has() {
    case $out in
        *"$1"*) ;;
        *) fail "$desc: stdout lacks '$1': $out" ;;
    esac
}

# expect_one_err_line PREFIX: stderr is one line starting with PREFIX and
# stdout is empty.
expect_one_err_line() {
    [ -z "$out" ] || fail "$desc: unexpected stdout '$out'"
    [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "$desc: stderr is not one line: $err"
    case $err in
        "$1"*) ;;
        *) fail "$desc: stderr '$err' does not start with '$1'" ;;
    esac
}
