#!/usr/bin/env bash
# The PostgreSQL backend beside SQLite, release build, 2^20 buckets from a
# `dev-operator` on loopback, on a throwaway PostgreSQL server with its
# production defaults (fsync and synchronous_commit on), started here from
# the Debian package and stopped at the end.
#
#   scripts/bench-postgres.sh                   # RUNS=3, DRAIN_RUNS=1, REMAP_RUNS=1,
#                                               # IDENTITIES=1000000
#   ONLY=identities scripts/bench-postgres.sh   # only the identities import
#                                               # and the re-map by 3 workers
#
# Reports, for each backend: the first sync (wall, peak RSS of our process),
# the daily sync of one day's rotations into a database in its usual state
# (first sync drained and purged, yesterday's batch synced and drained), the
# drain of 2^20 items by 8 consumer processes claiming and acking in
# batches of 5,000 (target on PostgreSQL: >= 50,000 items/s), and
# IDENTITIES raw emails imported into a new database, then mapped (v3,
# production batch size) by 3 workers: on SQLite one `remap` process with
# `[mapping] concurrency = 3` (one process only: it has no claims), on
# PostgreSQL 3 `remap` processes at once with `concurrency = 1` each,
# claiming with FOR UPDATE SKIP LOCKED; checked: the 3 sent IDENTITIES in
# all (none twice) and IDENTITIES identities are mapped.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

only=${ONLY:-}
case $only in
    "" | identities) ;;
    *) echo "ONLY=$only: expected ONLY=identities or no ONLY" >&2; exit 2 ;;
esac
runs=${RUNS:-3}
drain_runs=${DRAIN_RUNS:-1}
remap_runs=${REMAP_RUNS:-1}
identities=${IDENTITIES:-1000000}
remap_workers=3
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

sqlite_db() { echo "path = \"$work/$1.db\""; }
pg_db() { echo "url = \"$(url "$1")\""; }

fresh_pg() { psql -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"; }

if [[ -z $only ]]; then
    # --- first sync --------------------------------------------------------------
    write_config "$work/sqlite-full.toml" "$(sqlite_db full)"
    write_config "$work/pg-full.toml" "$(pg_db first_sync)"
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
    write_config "$work/sqlite-primed.toml" "$(sqlite_db primed)"
    write_config "$work/pg-primed.toml" "$(pg_db primed)"
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
    write_config "$work/sqlite-daily.toml" "$(sqlite_db daily)"
    write_config "$work/pg-daily.toml" "$(pg_db daily)"
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
    write_config "$work/sqlite-drain.toml" "$(sqlite_db drain)"
    write_config "$work/pg-drain.toml" "$(pg_db drain)"
    for _ in $(seq "$drain_runs"); do
        rm -f "$work"/drain.db*
        cp "$work/full.db" "$work/drain.db"
        drain_all sqlite_drain "$work/sqlite-drain.toml"
        psql -c "DROP DATABASE IF EXISTS drain" -c "CREATE DATABASE drain TEMPLATE first_sync"
        drain_all pg_drain "$work/pg-drain.toml"
    done
fi

# --- IDENTITIES identities mapped by 3 workers ----------------------------------
# sent_by FILE...: the sum of the "remap: N identities sent" lines in FILEs;
# fails when one has none.
sent_by() {
    local file n sum=0
    for file in "$@"; do
        n=$(sed -n 's/^remap: \([0-9]*\) identities sent .*/\1/p' "$file")
        [[ -n $n ]] || { echo "no \"identities sent\" line in $file: $(cat "$file")" >&2; exit 1; }
        sum=$((sum + n))
    done
    echo "$sum"
}
# check_mapped LABEL SENT MAPPED: both must be $identities.
check_mapped() {
    echo "$1: $2 identities sent, $3 mapped"
    [[ $2 -eq $identities && $3 -eq $identities ]] || {
        echo "$1: expected $identities identities sent and mapped, got $2 sent and $3 mapped" >&2
        exit 1
    }
}
# remap_workers_at_once LABEL CONFIG: $remap_workers `remap` processes
# started together; the seconds from the start to the last exit appended to
# $work/LABEL. Their stdout is $work/remap-N.out.
remap_workers_at_once() {
    local start end pids=() worker
    start=$(date +%s.%N)
    for worker in $(seq "$remap_workers"); do
        "$bin" --config "$2" remap >"$work/remap-$worker.out" 2>"$work/remap-$worker.err" &
        pids+=($!)
    done
    for worker in $(seq "$remap_workers"); do
        wait "${pids[worker - 1]}" || {
            echo "$1: remap worker $worker failed:" >&2
            cat "$work/remap-$worker.err" >&2
            exit 1
        }
    done
    end=$(date +%s.%N)
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f\n", e - s }' >>"$work/$1"
}
identities_csv "$identities" "$work/identities.csv"
write_config "$work/sqlite-identities.toml" "$(sqlite_db identities)" v3 "$remap_workers"
write_config "$work/pg-identities.toml" "$(pg_db identities)" v3 1
mapped_sql="SELECT count(*) FROM identity WHERE status = 'mapped'"
for _ in $(seq "$remap_runs"); do
    rm -f "$work"/identities.db*
    measure sqlite_import "$bin" --config "$work/sqlite-identities.toml" identities import "$work/identities.csv"
    measure sqlite_remap "$bin" --config "$work/sqlite-identities.toml" remap
    echo "identities, SQLite: $(cat "$work/last.out")"
    sent=$(sent_by "$work/last.out")
    mapped=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' \
        "$work/identities.db" "$mapped_sql")
    check_mapped "identities, SQLite, 1 process" "$sent" "$mapped"

    fresh_pg identities
    measure pg_import "$bin" --config "$work/pg-identities.toml" identities import "$work/identities.csv"
    remap_workers_at_once pg_remap "$work/pg-identities.toml"
    for worker in $(seq "$remap_workers"); do
        echo "identities, PostgreSQL worker $worker: $(cat "$work/remap-$worker.out")"
    done
    sent=$(sent_by "$work"/remap-*.out)
    mapped=$(psql -At -c "$mapped_sql" identities)
    check_mapped "identities, PostgreSQL, $remap_workers processes" "$sent" "$mapped"
done

# --- report ----------------------------------------------------------------------
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
rate() { awk -v s="$1" -v n="${2:-$buckets}" 'BEGIN { printf "%.0f items/s", n / s }'; } # rate SECONDS [ITEMS]
row() { printf '%-58s %16s %16s\n' "$@"; }
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -z $only ]]; then
    row "benchmark (median of $runs runs; 2^20 buckets)" "SQLite" "PostgreSQL"
    row "first sync, wall" "$(median sqlite_full 1) s" "$(median pg_full 1) s"
    row "first sync, peak RSS of uid2-bucket-sync" "$(mib "$(median sqlite_full 2)")" "$(mib "$(median pg_full 2)")"
    row "daily $daily-rotation sync, wall incl. process start" "$(median sqlite_daily 1) s" "$(median pg_daily 1) s"
    row "hourly re-read (nothing new), wall" "" "$(median pg_reread 1) s"
    sqlite_drain=$(median sqlite_drain 1)
    pg_drain=$(median pg_drain 1)
    row "drain 2^20, $consumers consumers, batches of $batch ($drain_runs runs)" "$sqlite_drain s" "$pg_drain s"
    row "  claimed and acked" "$(rate "$sqlite_drain")" "$(rate "$pg_drain")"
else
    row "benchmark" "SQLite" "PostgreSQL"
fi
sqlite_import=$(median sqlite_import 1)
pg_import=$(median pg_import 1)
sqlite_remap=$(median sqlite_remap 1)
pg_remap=$(median pg_remap 1)
row "import $identities identities, raw emails ($remap_runs runs)" "$sqlite_import s" "$pg_import s"
row "  imported" "$(rate "$sqlite_import" "$identities")" "$(rate "$pg_import" "$identities")"
row "remap $identities identities, $remap_workers workers, wall ($remap_runs runs)" "$sqlite_remap s" "$pg_remap s"
row "  mapped" "$(rate "$sqlite_remap" "$identities")" "$(rate "$pg_remap" "$identities")"
echo "  ($remap_workers workers: on SQLite 1 remap process with concurrency = $remap_workers, on PostgreSQL"
echo "   $remap_workers remap processes at once with concurrency = 1, from the start to the last exit)"
if [[ -z $only ]]; then
    awk -v s="$pg_drain" -v n="$buckets" 'BEGIN { r = n / s; printf "PostgreSQL drain target >= 50000 items/s: %s\n", (r >= 50000) ? "PASS" : sprintf("MISS (%.0f)", r) }'
fi
