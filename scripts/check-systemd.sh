#!/usr/bin/env bash
# Checks the units in systemd/: `systemd-analyze verify` must be clean and
# every service's `systemd-analyze security --offline=true` exposure must be
# at most 1.5. Usage: scripts/check-systemd.sh [BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:-target/debug/uid2-bucket-sync}")
max_exposure=1.5

if ! command -v systemd-analyze >/dev/null; then
    echo "check-systemd: systemd-analyze is not installed" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# verify insists that ExecStart= exists; point it at the build instead of
# the install location.
for unit in systemd/*.service systemd/*.timer; do
    sed "s#/usr/local/bin/uid2-bucket-sync#${binary}#" "$unit" > "$work/$(basename "$unit")"
done
(cd "$work" && systemd-analyze verify --man=no ./*.service ./*.timer)
echo "check-systemd: verify ok"

failed=0
for unit in "$work"/*.service; do
    line=$(systemd-analyze security --offline=true "$unit" 2>&1 | grep 'Overall exposure level')
    score=$(sed -E 's/.*: ([0-9.]+) .*/\1/' <<<"$line")
    if awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }'; then
        echo "check-systemd: $(basename "$unit") exposure $score (<= $max_exposure)"
    else
        echo "check-systemd: $(basename "$unit") exposure $score is above $max_exposure" >&2
        failed=1
    fi
done
exit "$failed"
