#!/usr/bin/env bash
# Runs the consumer examples (examples/consumer.py, examples/consumer.sh)
# end to end: each drains its own small database, filled through the
# library by the `ingest_rss` example, and the queue must end all done.
# Needs cargo, python3 and bash. The same checks, with a failing bucket,
# run under `cargo test --test it examples::`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
cargo build --quiet --bin uid2-bucket-sync --example ingest_rss
bin=$root/target/debug/uid2-bucket-sync
rows=50

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset UID2_BUCKET_SYNC_CONFIG UID2_BUCKET_SYNC_DATABASE

for consumer in consumer.py consumer.sh; do
    db=$work/$consumer.db
    target/debug/examples/ingest_rss --rows "$rows" --db "$db" >/dev/null
    case $consumer in
    consumer.py)
        python3 examples/consumer.py --binary "$bin" --db "$db" --batch 7 --until-empty >"$work/out"
        ;;
    consumer.sh)
        UID2_BUCKET_SYNC_BIN=$bin BATCH=7 bash examples/consumer.sh --db "$db" --until-empty >"$work/out"
        ;;
    esac
    remapped=$(grep -c '^re-mapping identifiers of bucket ' "$work/out")
    stats=$("$bin" --db "$db" queue stats --json)
    if [[ $remapped != "$rows" || $stats != *'"pending":0,"leased":0,"done":'"$rows"',"dead":0,'* ]]; then
        echo "$consumer: re-mapped $remapped of $rows; queue: $stats" >&2
        exit 1
    fi
    echo "$consumer: re-mapped and acked $rows buckets"
done
