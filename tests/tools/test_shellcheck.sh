#!/bin/sh
# test_shellcheck.sh - runs the shellcheck linter over the tools and their
# tests when it is installed (the build does not need it).
#
# Usage: test_shellcheck.sh SOURCE_DIR
# Exit status: 0 clean, 1 findings, 77 shellcheck not installed (skip).
set -eu
[ $# -eq 1 ] || { echo "usage: $0 SOURCE_DIR" >&2; exit 1; }
src=$1
if ! command -v shellcheck >/dev/null 2>&1; then
    echo "SKIP: shellcheck is not installed" >&2
    exit 77
fi
cd "$src"
shellcheck -x -P SCRIPTDIR tools/fibershim tools/strace-compare \
    tests/tools/common.sh tests/tools/test_*.sh tests/servers/*.sh bench/real-servers
echo PASS
