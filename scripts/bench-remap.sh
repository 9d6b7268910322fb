#!/usr/bin/env bash
# The re-map worker at production size, release build, against its own
# `dev-operator` (2^20 buckets) on loopback, next to a baseline: the official
# Python SDK's IdentityMapV3Client (uid2-client 2.9.0), 8 threads of 5,000
# emails, storing each answer with sqlite3, as a data provider's own job
# would. Prints one line per measurement and a summary table.
#
#   scripts/bench-remap.sh            # RUNS=3 of each, IDENTITIES=1000000
#   BIN=target/before/REV/bin scripts/bench-remap.sh   # another build, side by side
#
# Measured, each from a fresh copy of the same database:
#   - `identities import` of IDENTITIES raw emails into a new database;
#   - the first `remap` of them (v3, concurrency 8), and
#     the operator's CPU time during it (what the simulator costs);
#   - the baseline over the same emails;
#   - a v3 "due day": 1/30 of them past their refresh time;
#   - a v2 day: the identities in the 2,874 buckets of one day's rotations,
#     after `sync` recorded them.
# Needs cargo, python3 with .venv (created like .ci/run does) and /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

runs=${RUNS:-3}
identities=${IDENTITIES:-1000000}
buckets=1048576
daily=2874
concurrency=8

# BIN=PATH measures another build (e.g. target/before/REV/bin of scripts/bench).
if [[ -z ${BIN:-} ]]; then cargo build --release --quiet --bin uid2-bucket-sync; fi
bin=${BIN:-$root/target/release/uid2-bucket-sync}
if [[ ! -x .venv/bin/python ]]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check uid2-client==2.9.0

work=$(mktemp -d "${TMPDIR:-/tmp}/uid2-bench-remap.XXXXXX")
operator_pid=
cleanup() {
    [[ -n $operator_pid ]] && kill "$operator_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
unset UID2_BUCKET_SYNC_CONFIG UID2_BUCKET_SYNC_DATABASE UID2_BUCKET_SYNC_BASE_URL
export UID2_API_KEY=bench-key
UID2_CLIENT_SECRET=$(head -c 32 /dev/urandom | base64)
export UID2_CLIENT_SECRET

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"

source scripts/bench-lib.sh
# One day's rotations every 90 s: the v2 day waits for one batch.
start_operator "$bin" "$buckets" 90 "$daily"

config() { # config FILE DATABASE API
    write_config "$1" "path = \"$2\"" "$3" "$concurrency"
}

# The operator's CPU time so far, in seconds.
operator_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$operator_pid/stat"
}

# measure LABEL COMMAND...: one run; appends "seconds kilobytes operator_cpu_seconds" to $work/LABEL
# (bench-lib.sh's measure, plus the operator's CPU time)
measure() {
    local label=$1 before after
    shift
    before=$(operator_cpu)
    /usr/bin/time -f '%e %M' -o "$work/time.out" "$@" >"$work/last.out" 2>"$work/last.err" || {
        echo "$label failed:" >&2
        cat "$work/last.err" >&2
        exit 1
    }
    after=$(operator_cpu)
    echo "$(cat "$work/time.out") $(awk -v a="$after" -v b="$before" 'BEGIN { printf "%.2f", a - b }')" >>"$work/$label"
}

# remap_from LABEL SOURCE CONFIG DATABASE: RUNS measured passes, each on a
# fresh copy of SOURCE.
remap_from() {
    local label=$1 source=$2 config=$3 database=$4
    for _ in $(seq "$runs"); do
        rm -f "$database"*
        cp "$source" "$database"
        measure "$label" "$bin" --config "$config" remap
    done
}

# (median LABEL COLUMN, from bench-lib.sh, also reads column 3: operator CPU seconds.)

# --- identities import: raw emails into a new database ---------------------------
identities_csv "$identities" "$work/identities.csv"
for _ in $(seq "$runs"); do
    rm -f "$work"/imported.db*
    measure import "$bin" --db "$work/imported.db" identities import "$work/identities.csv"
done
echo "identities import: $(cat "$work/last.out")"

# --- first remap, v3 -------------------------------------------------------------
config "$work/v3.toml" "$work/v3.db" v3
remap_from first "$work/imported.db" "$work/v3.toml" "$work/v3.db"
echo "first remap: $(cat "$work/last.out")"
cp "$work/v3.db" "$work/mapped.db"

# --- the SDK baseline --------------------------------------------------------------
cat >"$work/baseline.py" <<'PY'
import concurrent.futures, csv, os, sqlite3, sys
from uid2_client import IdentityMapV3Client, IdentityMapV3Input

client = IdentityMapV3Client(os.environ["BASE_URL"], os.environ["UID2_API_KEY"], os.environ["UID2_CLIENT_SECRET"])
with open(sys.argv[1], newline="") as f:
    rows = list(csv.reader(f))[1:]
db = sqlite3.connect(sys.argv[2])
db.execute("PRAGMA journal_mode = WAL")
db.execute("CREATE TABLE IF NOT EXISTS identity (id TEXT PRIMARY KEY, uid2 TEXT, previous_uid2 TEXT, refresh_from TEXT, status TEXT)")

def map_batch(batch):
    answer = client.generate_identity_map(IdentityMapV3Input.from_emails([email for _, email in batch]))
    out = []
    for id_, email in batch:
        mapped = answer.mapped_identities.get(email)
        if mapped is None:
            out.append((id_, None, None, None, "unmapped"))
        else:
            out.append((id_, mapped.current_raw_uid, mapped.previous_raw_uid, mapped.refresh_from.isoformat(), "mapped"))
    return out

batches = [rows[i:i + 5000] for i in range(0, len(rows), 5000)]
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    for results in pool.map(map_batch, batches):
        with db:
            db.executemany("INSERT OR REPLACE INTO identity VALUES (?, ?, ?, ?, ?)", results)
print(f"baseline stored {db.execute('SELECT count(*) FROM identity WHERE status = ?', ('mapped',)).fetchone()[0]} mappings")
db.close()
PY
for _ in $(seq "$runs"); do
    rm -f "$work"/baseline.db*
    BASE_URL=$base_url measure baseline .venv/bin/python "$work/baseline.py" "$work/identities.csv" "$work/baseline.db"
done
echo "$(cat "$work/last.out")"

# --- a v3 due day: 1/30 past their refresh time ------------------------------------
.venv/bin/python - "$work/mapped.db" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
with db:
    db.execute("UPDATE identity SET refresh_from_ms = ? WHERE CAST(substr(id, 5) AS INTEGER) % 30 = 0",
               (int(time.time() * 1000) - 60_000,))
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
db.close()
PY
remap_from dueday "$work/mapped.db" "$work/v3.toml" "$work/v3.db"
echo "due day: $(cat "$work/last.out")"

# --- a v2 day: one day's rotations, then the identities in those buckets --------------
config "$work/v2.toml" "$work/v2.db" v2
rm -f "$work"/v2.db*
cp "$work/imported.db" "$work/v2.db"
"$bin" --config "$work/v2.toml" sync >/dev/null 2>&1
"$bin" --config "$work/v2.toml" remap >"$work/v2-first.out" 2>/dev/null
echo "first remap (v2): $(cat "$work/v2-first.out")"
# Catch up with what rotated during the first pass, right after a batch, so
# that exactly one more batch comes before the measured day.
next_rotation
"$bin" --config "$work/v2.toml" sync >/dev/null 2>&1
"$bin" --config "$work/v2.toml" remap >/dev/null 2>&1
# A pass looks again at rotations observed up to an hour before the last
# complete pass started (a sync may commit a moment after it stamped them),
# so a day after the first sync its 2^20 rotations are behind that margin.
# The bench cannot wait an hour: it moves the mark where that hour's pass
# would have put it.
.venv/bin/python - "$work/v2.db" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
with db:
    db.execute("UPDATE mapping_state SET rotations_checked_ms = ? WHERE id = 1", (int(time.time() * 1000),))
db.close()
PY
next_rotation
"$bin" --config "$work/v2.toml" sync >"$work/v2-sync.out" 2>/dev/null
echo "v2 day sync: $(cat "$work/v2-sync.out")"
if ! grep -q "($daily new rotations" "$work/v2-sync.out"; then
    echo "the v2 day did not see exactly one batch of $daily rotations" >&2
    exit 1
fi
cp "$work/v2.db" "$work/v2-primed.db"
remap_from v2day "$work/v2-primed.db" "$work/v2.toml" "$work/v2.db"
echo "v2 day: $(cat "$work/last.out")"

# --- report ------------------------------------------------------------------------
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
row() { printf '%-58s %10s %10s %14s\n' "$1" "$2" "$3" "$4"; }
row "re-map worker (median of $runs runs; $identities identities)" "wall" "peak RSS" "operator CPU"
for label in import first baseline dueday v2day; do
    case $label in
    import) name="identities import (raw emails, CSV)" ;;
    first) name="first remap, v3, concurrency $concurrency" ;;
    baseline) name="  baseline: SDK IdentityMapV3Client x8 + sqlite3" ;;
    dueday) name="v3 due day (1/30 due)" ;;
    v2day) name="v2 day ($daily rotated buckets)" ;;
    esac
    row "$name" "$(median $label 1) s" "$(($(median $label 2) / 1024)) MiB" "$(median $label 3) s"
done
awk -v n="$identities" -v s="$(median import 1)" \
    'BEGIN { printf "import: %d identities/s (target: 500000/s, peak RSS <= 100 MB)\n", n / s }'
awk -v a="$(median first 1)" -v b="$(median baseline 1)" -v o="$(median first 3)" \
    'BEGIN { printf "first remap vs baseline: %.1fx faster (target: 5x); the simulator used %.2f s of CPU during it\n", b / a, o }'
