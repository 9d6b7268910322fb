#!/usr/bin/env bash
# Drain bench: fills a queue with 2^20 pending buckets (a first full sync,
# through the library), then four consumer processes of the release binary
# each loop `queue claim --limit 5000 --json` -> `queue ack` (ids on stdin)
# until nothing is pending. Prints the drain time; target: <= 30 s.
#
#   scripts/bench-drain.sh [ROWS]        (default 1048576)
#   BIN=PATH scripts/bench-drain.sh   # another build's consumers (same schema version)
set -euo pipefail

rows=${1:-1048576}
workers=${WORKERS:-4}
batch=5000

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cargo build --release --quiet --bin uid2-bucket-sync --example ingest_rss
# The queue is always filled by this build; BIN= only changes the consumers.
bin=${BIN:-$root/target/release/uid2-bucket-sync}

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-drain.XXXXXX")
trap 'rm -rf "$work"' EXIT
db=$work/drain.db
unset UID2_BUCKET_SYNC_CONFIG UID2_BUCKET_SYNC_DATABASE

target/release/examples/ingest_rss --rows "$rows" --db "$db"

source scripts/bench-lib.sh
consume() {
    echo "worker $1: $(claim_until_empty "$bin" "$batch" 10m "drain-$1" --db "$db") batches"
}

start=$(date +%s.%N)
pids=()
for worker in $(seq 1 "$workers"); do
    consume "$worker" &
    pids+=($!)
done
for pid in "${pids[@]}"; do
    wait "$pid"
done
end=$(date +%s.%N)

stats=$("$bin" --db "$db" queue stats --json)
echo "queue after the drain: $stats"
for expected in '"pending":0,' '"retry_waiting":0,' '"leased":0,' "\"done\":$rows," '"dead":0,'; do
    if [[ $stats != *"$expected"* ]]; then
        echo "the queue was not drained: expected $expected" >&2
        exit 1
    fi
done
awk -v s="$start" -v e="$end" -v n="$rows" -v w="$workers" \
    'BEGIN { printf "drained %d items with %d consumer processes in %.1f s (%.0f items/s)\n", n, w, e - s, n / (e - s) }'
