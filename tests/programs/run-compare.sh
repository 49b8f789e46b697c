#!/bin/sh
# Runs a conformance program with plain threads and under LD_PRELOAD=<shim>,
# and compares each run's stdout with the checked-in expected output.
#
# usage: run-compare.sh [options] <binary> <expected-file> <shim-path-or-empty>
# options:
#   --mode both|plain|shim   which runs to do (default both; "plain" = plain
#                            threads only, "shim" = only under the shim)
#   --expect-rc N            exit status each run must have (default 0)
#   --sed EXPR               sed -E expression applied to stdout before diff
#                            (to blank out numbers that legitimately vary)
#   --ulimit-v KB            run with this address-space limit (ulimit -v)
#   --timeout S              per-run wall-clock bound (default 120)
#   --shim-env VAR=VALUE     set in the environment of the shim run only
#                            (repeatable): the shim's own settings
# Exit status: 0 pass, 1 fail, 77 skipped (a program exited 77, or the
# requested mode needs a shim that was not built).
set -u

mode=both
expect_rc=0
sedexpr=
ulimit_v=
tmo=120
shim_env=
while [ $# -gt 0 ]; do
    case "$1" in
    --mode) mode=$2; shift 2 ;;
    --expect-rc) expect_rc=$2; shift 2 ;;
    --sed) sedexpr=$2; shift 2 ;;
    --ulimit-v) ulimit_v=$2; shift 2 ;;
    --timeout) tmo=$2; shift 2 ;;
    --shim-env)
        case "$2" in FIBERSHIM_*=*) ;; *) echo "run-compare.sh: --shim-env takes FIBERSHIM_VAR=VALUE" >&2; exit 2 ;; esac
        shim_env="$shim_env $2"; shift 2 ;;
    --) shift; break ;;
    -*) echo "run-compare.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
if [ $# -ne 3 ]; then
    echo "usage: run-compare.sh [options] <binary> <expected-file> <shim-path-or-empty>" >&2
    exit 2
fi
bin=$1
expected=$2
shim=$3
name=$(basename "$bin")

if [ ! -x "$bin" ]; then echo "FAIL: $bin is not executable"; exit 1; fi
if [ ! -f "$expected" ]; then echo "FAIL: missing expected file $expected"; exit 1; fi
if [ -n "$shim" ] && [ ! -f "$shim" ]; then
    echo "FAIL: shim library $shim does not exist"; exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/run-compare.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

status=0
skipped=0
ran=0

# run_one <label> <preload-or-empty>
run_one() {
    label=$1
    preload=$2
    out=$tmp/$label.out
    err=$tmp/$label.err
    echo "== $name [$label]${preload:+ LD_PRELOAD=$preload}${preload:+$shim_env}"
    (
        if [ -n "$ulimit_v" ]; then ulimit -v "$ulimit_v" || exit 125; fi
        if [ -n "$preload" ]; then
            # shellcheck disable=SC2086 # the VAR=VALUE words split on purpose
            LD_PRELOAD=$preload exec env $shim_env timeout -k 10 "$tmo" "$bin"
        else
            exec timeout -k 10 "$tmo" "$bin"
        fi
    ) >"$out" 2>"$err" </dev/null
    rc=$?
    ran=$((ran + 1))
    if [ $rc -eq 77 ]; then
        echo "SKIP [$label]: program exited 77"
        sed 's/^/  stdout: /' "$out"
        skipped=$((skipped + 1))
        return
    fi
    if [ -n "$sedexpr" ]; then
        sed -E "$sedexpr" "$out" >"$out.n" && mv "$out.n" "$out"
    fi
    ok=1
    if [ $rc -ne "$expect_rc" ]; then
        if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            echo "FAIL [$label]: timed out after ${tmo}s (exit $rc)"
        else
            echo "FAIL [$label]: exit status $rc, expected $expect_rc"
        fi
        ok=0
    fi
    if ! diff -u --label "expected/$(basename "$expected")" --label "actual [$label]" \
            "$expected" "$out" >"$tmp/$label.diff"; then
        echo "FAIL [$label]: stdout differs from $(basename "$expected"):"
        cat "$tmp/$label.diff"
        ok=0
    fi
    if [ $ok -eq 1 ]; then
        echo "PASS [$label]"
    else
        status=1
        if [ -s "$err" ]; then
            echo "-- stderr [$label] (last 40 lines):"
            tail -n 40 "$err"
        fi
    fi
}

case "$mode" in
both)
    run_one plain ""
    if [ -n "$shim" ]; then
        run_one shim "$shim"
        # Also compare the two runs directly (catches a stale expected file
        # only matching one of them in a confusing way).
        if [ $status -eq 0 ] && [ $skipped -eq 0 ] &&
                ! cmp -s "$tmp/plain.out" "$tmp/shim.out"; then
            echo "FAIL: plain and shim outputs differ:"
            diff -u --label plain --label shim "$tmp/plain.out" "$tmp/shim.out"
            status=1
        fi
    else
        echo "NOTE: shim library not built; ran in plain-thread mode only"
    fi
    ;;
plain)
    run_one plain ""
    ;;
shim)
    if [ -z "$shim" ]; then
        echo "SKIP: shim library not built; this test runs only under the shim"
        exit 77
    fi
    run_one shim "$shim"
    ;;
*)
    echo "run-compare.sh: bad --mode $mode" >&2
    exit 2
    ;;
esac

if [ $status -ne 0 ]; then exit 1; fi
if [ $skipped -gt 0 ]; then exit 77; fi  # any skipped run: report SKIP
exit 0
