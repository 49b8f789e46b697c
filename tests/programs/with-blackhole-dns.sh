#!/bin/sh
# Runs a command (run-compare.sh and its arguments) in a private mount
# namespace whose /etc/resolv.conf names 127.0.0.1 with a 2 s timeout and
# one attempt, for dns_blackhole (which plays a resolver that never
# answers). Exit 77 (skipped) when no mount namespace can be made (it
# needs root, or an unprivileged user namespace).
set -u
conf=$(mktemp "${TMPDIR:-/tmp}/resolv.XXXXXX") || exit 1
trap 'rm -f "$conf"' EXIT INT TERM
printf 'nameserver 127.0.0.1\noptions timeout:2 attempts:1\n' >"$conf"
if ! unshare -m sh -c "mount --bind '$conf' /etc/resolv.conf" 2>/dev/null; then
    echo "SKIP: cannot bind-mount /etc/resolv.conf in a mount namespace (needs root)"
    exit 77
fi
unshare -m sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$conf" "$@"
