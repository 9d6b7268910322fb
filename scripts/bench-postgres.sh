#!/usr/bin/env bash
# The PostgreSQL backend beside SQLite, release build, 2^20 buckets from a
# `dev-operator` on loopback, on a throwaway PostgreSQL server with its
# production defaults (fsync and synchronous_commit on), started here from
# the Debian package and stopped at the end.
#
#   scripts/bench-postgres.sh       # RUNS=3, DRAIN_RUNS=1
#
# Reports, for each backend: the first sync (wall, peak RSS of our process),
# the daily sync of one day's rotations into a database in its usual state
# (first sync drained and purged, yesterday's batch synced and drained), and
# the drain of 2^20 items by 8 consumer processes claiming and acking in
# batches of 5,000 (target on PostgreSQL: >= 50,000 items/s).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

runs=${RUNS:-3}
drain_runs=${DRAIN_RUNS:-1}
buckets=1048576
daily=2874
rotate_every=60
consumers=8
batch=5000

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [[ -z $pg_bin ]]; then
    echo "PostgreSQL is not installed (Debian package postgresql): nothing measured" >&2
    exit 1
fi
cargo build --release --quiet --bin uid2-bucket-sync
bin=$root/target/release/uid2-bucket-sync

work=$(mktemp -d "${TMPDIR:-/tmp}/uid2-bench-pg.XXXXXX")
chmod 755 "$work"
operator_pid=
cleanup() {
    [[ -n $operator_pid ]] && kill "$operator_pid" 2>/dev/null || true
    as_server "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
unset UID2_BUCKET_SYNC_CONFIG UID2_BUCKET_SYNC_DATABASE UID2_BUCKET_SYNC_BASE_URL PGPASSWORD
export UID2_API_KEY=bench-key
UID2_CLIENT_SECRET=$(head -c 32 /dev/urandom | base64)
export UID2_CLIENT_SECRET

# PostgreSQL refuses to run as root: then the server runs as `postgres`.
as_server() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
mkdir "$work/pg" "$work/sock"
[[ $(id -u) -eq 0 ]] && chown postgres: "$work/pg" "$work/sock"
as_server "$pg_bin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_server "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/sock/server.log" -w \
    -o "-p $port -k $work/sock -c listen_addresses=127.0.0.1 -c max_connections=100 -c shared_buffers=256MB" \
    start >/dev/null
psql() { "$pg_bin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres "$@"; }
url() { echo "postgresql://postgres@127.0.0.1:$port/$1?sslmode=disable"; }
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $("$pg_bin/postgres" --version)"

source scripts/bench-lib.sh
start_operator "$bin" "$buckets" "$rotate_every" "$daily"

# config FILE DATABASE-LINE: a configuration for the operator and one database
config() {
    printf '[operator]\nbase_url = "%s"\n\n[sync]\ninitial_since = "2000-01-01T00:00:00"\n\n[database]\n%s\n' \
        "$base_url" "$2" >"$1"
}
sqlite_db() { echo "path = \"$work/$1.db\""; }
pg_db() { echo "url = \"$(url "$1")\""; }

fresh_pg() { psql -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"; }

# --- first sync --------------------------------------------------------------
config "$work/sqlite-full.toml" "$(sqlite_db full)"
config "$work/pg-full.toml" "$(pg_db first_sync)"
for _ in $(seq "$runs"); do
    rm -f "$work"/full.db*
    measure sqlite_full "$bin" --config "$work/sqlite-full.toml" sync
    fresh_pg first_sync
    measure pg_full "$bin" --config "$work/pg-full.toml" sync
done
echo "first sync, PostgreSQL: $(cat "$work/last.out")"

# --- daily sync ----------------------------------------------------------------
# drain CONFIG: claims and acks everything pending, then purges the done.
drain() {
    claim_until_empty "$bin" 100000 1h drain --config "$1" >/dev/null
    "$bin" --config "$1" queue purge --older-than 0s >/dev/null
}
config "$work/sqlite-primed.toml" "$(sqlite_db primed)"
config "$work/pg-primed.toml" "$(pg_db primed)"
cp "$work/full.db" "$work/primed.db"
psql -c "CREATE DATABASE primed TEMPLATE first_sync"
drain "$work/sqlite-primed.toml"
drain "$work/pg-primed.toml"
next_rotation
for backend in sqlite pg; do
    "$bin" --config "$work/$backend-primed.toml" sync >/dev/null 2>&1
    drain "$work/$backend-primed.toml"
done
psql -c "VACUUM ANALYZE" primed
next_rotation
config "$work/sqlite-daily.toml" "$(sqlite_db daily)"
config "$work/pg-daily.toml" "$(pg_db daily)"
for _ in $(seq "$runs"); do
    rm -f "$work"/daily.db*
    cp "$work/primed.db" "$work/daily.db"
    measure sqlite_daily "$bin" --config "$work/sqlite-daily.toml" sync
    grep -q "($daily new rotations" "$work/last.out" || { echo "SQLite daily: $(cat "$work/last.out")" >&2; exit 1; }
    psql -c "DROP DATABASE IF EXISTS daily" -c "CREATE DATABASE daily TEMPLATE primed"
    measure pg_daily "$bin" --config "$work/pg-daily.toml" sync
    grep -q "($daily new rotations" "$work/last.out" || { echo "PostgreSQL daily: $(cat "$work/last.out")" >&2; exit 1; }
    measure pg_reread "$bin" --config "$work/pg-daily.toml" sync
done
echo "daily sync, PostgreSQL: $(cat "$work/last.out")"

# --- drain 2^20 items, 8 consumer processes, batches of 5,000 -----------------
# consume CONFIG WORKER: claims and acks until nothing is pending.
consume() {
    claim_until_empty "$bin" "$batch" 10m "drain-$2" --config "$1" >/dev/null
}
# drain_all LABEL CONFIG: the drain's seconds appended to $work/LABEL
drain_all() {
    local start end pids=() worker
    start=$(date +%s.%N)
    for worker in $(seq "$consumers"); do
        consume "$2" "$worker" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    end=$(date +%s.%N)
    local stats
    stats=$("$bin" --config "$2" queue stats --json)
    [[ $stats == *"\"pending\":0,"* && $stats == *"\"done\":$buckets,"* ]] || {
        echo "$1: the queue was not drained: $stats" >&2
        exit 1
    }
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f\n", e - s }' >>"$work/$1"
}
config "$work/sqlite-drain.toml" "$(sqlite_db drain)"
config "$work/pg-drain.toml" "$(pg_db drain)"
for _ in $(seq "$drain_runs"); do
    rm -f "$work"/drain.db*
    cp "$work/full.db" "$work/drain.db"
    drain_all sqlite_drain "$work/sqlite-drain.toml"
    psql -c "DROP DATABASE IF EXISTS drain" -c "CREATE DATABASE drain TEMPLATE first_sync"
    drain_all pg_drain "$work/pg-drain.toml"
done

# --- report ----------------------------------------------------------------------
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
rate() { awk -v s="$1" -v n="$buckets" 'BEGIN { printf "%.0f items/s", n / s }'; }
row() { printf '%-58s %16s %16s\n' "$@"; }
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
row "benchmark (median of $runs runs; 2^20 buckets)" "SQLite" "PostgreSQL"
row "first sync, wall" "$(median sqlite_full 1) s" "$(median pg_full 1) s"
row "first sync, peak RSS of uid2-bucket-sync" "$(mib "$(median sqlite_full 2)")" "$(mib "$(median pg_full 2)")"
row "daily $daily-rotation sync, wall incl. process start" "$(median sqlite_daily 1) s" "$(median pg_daily 1) s"
row "hourly re-read (nothing new), wall" "" "$(median pg_reread 1) s"
sqlite_drain=$(median sqlite_drain 1)
pg_drain=$(median pg_drain 1)
row "drain 2^20, $consumers consumers, batches of $batch ($drain_runs runs)" "$sqlite_drain s" "$pg_drain s"
row "  claimed and acked" "$(rate "$sqlite_drain")" "$(rate "$pg_drain")"
awk -v s="$pg_drain" -v n="$buckets" 'BEGIN { r = n / s; printf "PostgreSQL drain target >= 50000 items/s: %s\n", (r >= 50000) ? "PASS" : sprintf("MISS (%.0f)", r) }'
