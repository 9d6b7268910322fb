#!/usr/bin/env bash
# A batch job that consumes the uid2-bucket-sync re-mapping queue, in bash
# with nothing but the CLI (no jq: the few fields needed are matched with
# bash regular expressions; bucket ids and lease ids never contain quotes).
#
#   consumer.sh [--db PATH | --config FILE] [--until-empty]
#
# --until-empty stops when a claim returns nothing (a one-off drain, e.g.
# from cron) instead of waiting for more. Other arguments are passed to
# every uid2-bucket-sync invocation. Settings come from the environment:
#   UID2_BUCKET_SYNC_BIN  the binary (default: uid2-bucket-sync on PATH)
#   BATCH                 buckets per claim (default 500)
#   LEASE                 how long a claim is held (default 5m)
#   WORKER                the name recorded with each lease
#   POLL                  seconds to wait when nothing is pending (default 30)
#   UNTIL_EMPTY=1         the same as --until-empty: stop when nothing can be
#                         claimed instead of waiting (failed buckets waiting
#                         for their retry time are left for the next run)
#   REMAP_FAIL_BUCKETS    space-separated bucket ids whose re-mapping fails
#                         (to try the fail path)
#
# Each claimed bucket is re-mapped (here: a line on stdout; put your
# POST /v2/identity/map calls in `remap`); successes are acked together
# through stdin, failures returned with `queue fail --error`. Delivery is
# at-least-once: re-mapping must be safe to repeat.
set -euo pipefail

bin=${UID2_BUCKET_SYNC_BIN:-uid2-bucket-sync}
batch=${BATCH:-500}
lease=${LEASE:-5m}
worker=${WORKER:-consumer.sh-$$}
poll=${POLL:-30}
leases_refused=3   # `queue ack` / `queue fail`: some leases were no longer held


remap() {
    local bucket_id=$1 last_updated=$2
    for failing in ${REMAP_FAIL_BUCKETS:-}; do
        [[ $bucket_id == "$failing" ]] && return 1
    done
    echo "re-mapping identifiers of bucket $bucket_id (rotated $last_updated)"
}

# Runs a queue command that names leases; a refused lease is not fatal.
release() {
    local status=0
    "$bin" "$@" >/dev/null || status=$?
    if ((status == leases_refused)); then
        echo "consumer: some leases had expired; their buckets will be delivered again" >&2
    elif ((status != 0)); then
        exit "$status"
    fi
}

until_empty=${UNTIL_EMPTY:-}
global=()
for arg in "$@"; do
    if [[ $arg == --until-empty ]]; then
        until_empty=1
    else
        global+=("$arg")
    fi
done

while :; do
    claimed=$("$bin" "${global[@]}" queue claim --limit "$batch" --lease "$lease" \
        --worker "$worker" --json)
    if [[ -z $claimed ]]; then
        [[ $until_empty == 1 ]] && exit 0
        sleep "$poll"
        continue
    fi

    done_leases=()
    while IFS= read -r line; do
        [[ $line =~ \"bucket_id\":\"([^\"]*)\" ]] && bucket_id=${BASH_REMATCH[1]}
        [[ $line =~ \"last_updated\":\"([^\"]*)\" ]] && last_updated=${BASH_REMATCH[1]}
        [[ $line =~ \"lease_id\":\"([0-9a-f]+)\" ]] && lease_id=${BASH_REMATCH[1]}
        if remap "$bucket_id" "$last_updated"; then
            done_leases+=("$lease_id")
        else
            release "${global[@]}" queue fail "$lease_id" --error "re-mapping bucket $bucket_id failed"
        fi
    done <<<"$claimed"

    if ((${#done_leases[@]} > 0)); then
        printf '%s\n' "${done_leases[@]}" | release "${global[@]}" queue ack
    fi
done
