# Helpers the benchmark scripts share (scripts/bench, bench-drain.sh,
# bench-postgres.sh, bench-remap.sh). Source it after setting $work, the
# directory each measurement writes to.

# start_operator BIN BUCKETS ROTATE_EVERY ROTATE_COUNT: a dev-operator on
# loopback rotating ROTATE_COUNT buckets every ROTATE_EVERY seconds; sets
# $operator_pid and $base_url. Its log is $work/operator.err.
start_operator() {
    "$1" dev-operator --listen 127.0.0.1:0 --buckets "$2" \
        --rotate-every "${3}s" --rotate-count "$4" >"$work/operator.out" 2>"$work/operator.err" &
    operator_pid=$!
    for _ in $(seq 100); do
        grep -q listening "$work/operator.out" 2>/dev/null && break
        sleep 0.1
    done
    base_url=$(grep -o 'http://[0-9.:]*' "$work/operator.out")
}

# write_config FILE DATABASE-LINE [API CONCURRENCY]: a configuration for
# the operator at $base_url and one database (DATABASE-LINE: `path = "..."`
# or `url = "..."`); with API and CONCURRENCY, also a [mapping] section for
# `remap`, with the production batch size.
write_config() {
    printf '[operator]\nbase_url = "%s"\n\n[sync]\ninitial_since = "2000-01-01T00:00:00"\n\n[database]\n%s\n' \
        "$base_url" "$2" >"$1"
    if [[ $# -ge 4 ]]; then
        printf '\n[mapping]\napi = "%s"\nconcurrency = %d\n' "$3" "$4" >>"$1"
    fi
}

# identities_csv N FILE: N distinct raw emails, as `identities import` reads
# them (id,email).
identities_csv() {
    awk -v n="$1" 'BEGIN { print "id,email"; for (i = 0; i < n; i++) printf "user%07d,Person.%d+tag@Example%d.com\n", i, i, i % 97 }' \
        >"$2"
}

# next_rotation: waits until the operator has rotated one more batch.
next_rotation() {
    local seen
    seen=$(grep -c 'rotated buckets' "$work/operator.err" || true)
    while [[ $(grep -c 'rotated buckets' "$work/operator.err" || true) -le $seen ]]; do
        sleep 0.2
    done
}

# measure LABEL COMMAND...: one run; appends "seconds kilobytes" to $work/LABEL
measure() {
    local label=$1
    shift
    /usr/bin/time -f '%e %M' -o "$work/time.out" "$@" >"$work/last.out" 2>"$work/last.err" || {
        echo "$label failed:" >&2
        cat "$work/last.err" >&2
        exit 1
    }
    cat "$work/time.out" >>"$work/$label"
}

# median LABEL COLUMN (1: seconds, 2: kilobytes)
median() {
    sort -n -k"$2","$2" "$work/$1" | awk -v c="$2" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'
}

# claim_until_empty BIN LIMIT LEASE WORKER DATABASE-ARGS...: claims and acks
# batches of LIMIT, as a consumer would, until nothing is claimable; prints
# how many batches. DATABASE-ARGS select the database (--db FILE or
# --config FILE).
claim_until_empty() {
    local bin=$1 limit=$2 lease=$3 worker=$4 claimed batches=0
    shift 4
    while claimed=$("$bin" "$@" queue claim --limit "$limit" --lease "$lease" --worker "$worker" --json) &&
        [[ -n $claimed ]]; do
        LC_ALL=C grep -o '"lease_id":"[0-9a-f]*"' <<<"$claimed" | cut -d'"' -f4 |
            "$bin" "$@" queue ack >/dev/null
        batches=$((batches + 1))
    done
    echo "$batches"
}
