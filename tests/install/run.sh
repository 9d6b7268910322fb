#!/usr/bin/env bash
# Follows the README's install steps as written, as root, on this machine,
# then starts the units as systemd would and uses the database as the
# service user and as two batch-job users in its group.
#
#   tests/install/run.sh BINARY
#
# It installs into /usr/local/bin, /usr/lib/sysusers.d, /etc/systemd/system,
# /etc/uid2-bucket-sync and /var/lib/uid2-bucket-sync and creates users, and
# removes all of it at the end. It refuses to run where any of it exists
# already (a real install), and needs root: exit 77 then, with the reason.
# PID 1 need not be systemd: the units' directives (User=, Group=, UMask=,
# StateDirectory=, StateDirectoryMode=, LoadCredential=, ExecStart=) are read
# from the installed files and applied with setpriv, as systemd applies them.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
binary=$(realpath "${1:?usage: tests/install/run.sh BINARY}")
cd "$root"

skip() {
    echo "install test SKIPPED: $*" >&2
    exit 77
}
[[ $(id -u) -eq 0 ]] || skip "it needs root (CI runs as root)"
for tool in systemd-sysusers systemd-analyze setpriv useradd python3; do
    command -v "$tool" >/dev/null || skip "$tool is not installed"
done
service=uid2-bucket-sync
installed=(/usr/local/bin/uid2-bucket-sync /usr/lib/sysusers.d/uid2-bucket-sync.conf
    /etc/systemd/system/uid2-bucket-sync.service /etc/uid2-bucket-sync /var/lib/uid2-bucket-sync)
for path in "${installed[@]}"; do
    [[ ! -e $path ]] || skip "$path exists: this machine has a real install"
done
getent passwd "$service" >/dev/null && skip "user $service exists: this machine has a real install"
getent group "$service" >/dev/null && skip "group $service exists: this machine has a real install"

tag=$$
consumers=("u2bs-job1-$tag" "u2bs-job2-$tag")
work=$(mktemp -d)
chmod 0755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for user in "${consumers[@]}" "$service"; do
        pkill -KILL -u "$user" 2>/dev/null || true
        userdel "$user" 2>/dev/null || true
    done
    groupdel "$service" 2>/dev/null || true
    rm -rf "${installed[@]}" "$work"
}
trap cleanup EXIT

fail() {
    echo "install test FAILED: $*" >&2
    exit 1
}

# Step 1 without the release build: the binary under test goes where
# `cargo install --root /usr/local` puts it.
install -m 0755 "$binary" /usr/local/bin/uid2-bucket-sync

# Steps 2 to 4, the README's block as written; its two `read -rs` get the
# key and the secret from stdin, as a person types them.
block=$(awk '/<!-- readme-test: install -->/ { found = 1; next }
             found && /^```/ { if (inside) exit; inside = 1; next }
             inside { print }' README.md)
[[ -n $block ]] || fail "README.md has no readme-test: install block"
api_key="install-test-key-$tag"
client_secret=$(head -c 32 /dev/urandom | base64)
printf '%s\n%s\n' "$api_key" "$client_secret" | bash -euo pipefail -c "$block"

expect_stat() {
    local path=$1 wanted=$2 found
    found=$(stat -c '%U:%G %a' "$path")
    [[ $found == "$wanted" ]] || fail "$path is $found, expected $wanted"
}
expect_stat /etc/uid2-bucket-sync "root:$service 750"
expect_stat /etc/uid2-bucket-sync/config.toml "root:$service 640"
expect_stat /etc/uid2-bucket-sync/credentials "root:root 700"
expect_stat /etc/uid2-bucket-sync/credentials/api_key "root:root 600"
[[ $(cat /etc/uid2-bucket-sync/credentials/api_key) == "$api_key" ]] || fail "api_key file content"
systemd-analyze verify --man=no /etc/systemd/system/uid2-bucket-sync.service

# The batch-job users, as the README says to add them.
for user in "${consumers[@]}"; do
    useradd --no-create-home --user-group --shell /bin/sh "$user"
    usermod -aG "$service" "$user"
done

# A simulated operator for the installed config to poll, rotating buckets
# so every poll has news.
export UID2_API_KEY=$api_key UID2_CLIENT_SECRET=$client_secret
/usr/local/bin/uid2-bucket-sync dev-operator --listen 127.0.0.1:0 --buckets 256 \
    --rotate-every 1s --rotate-count 5 > "$work/operator.out" 2> "$work/operator.log" &
pids+=($!)
unset UID2_API_KEY UID2_CLIENT_SECRET
for _ in $(seq 100); do [[ -s $work/operator.out ]] && break; sleep 0.1; done
base_url=$(grep -o 'http://[0-9.:]*' "$work/operator.out") || fail "dev-operator did not start"

# What systemd does before ExecStart=, from the unit's own directives.
directive() { sed -n "s/^$1=//p" "$2"; }
unit=/etc/systemd/system/uid2-bucket-sync.service
user=$(directive User "$unit")
group=$(directive Group "$unit")
umask_value=$(directive UMask "$unit")
state=/var/lib/$(directive StateDirectory "$unit")
install -d -m "$(directive StateDirectoryMode "$unit")" -o "$user" -g "$group" "$state"
credentials=$work/credentials
install -d -m 0500 -o "$user" "$credentials"
while IFS=: read -r name source; do
    install -m 0400 -o "$user" "$source" "$credentials/$name"
done < <(directive LoadCredential "$unit")
# The installed config polls `uid2-prod`; point it at the simulator and start
# from before its rotations, as an edited config would.
sed -i "s|^environment = .*|base_url = \"$base_url\"|; s|^initial_since = .*|initial_since = \"2000-01-01T00:00:00\"|" \
    /etc/uid2-bucket-sync/config.toml

# `ExecStart=` of a unit, as its user with its umask and credentials. Both
# exec: call them in a subshell, `(as_unit …)`, whose pid becomes the
# program's.
as_unit() {
    unit_file=$1
    shift
    read -r -a exec_start <<<"$(directive ExecStart "$unit_file")"
    exec setpriv --reuid="$user" --regid="$group" --init-groups -- \
        env -i PATH=/usr/bin:/bin CREDENTIALS_DIRECTORY="$credentials" \
        /bin/sh -c "umask $umask_value && exec \"\$@\"" sh "${exec_start[@]}" "$@"
}
# A command as a batch-job user: a login's umask, the default config path.
as_job() {
    local job=$1
    shift
    exec setpriv --reuid="$job" --regid="$job" --init-groups -- \
        env -i PATH=/usr/bin:/bin /bin/sh -c 'umask 0022 && exec "$@"' sh /usr/local/bin/uid2-bucket-sync "$@"
}
claim_and_ack() {
    local job=$1 ids
    ids=$( (as_job "$job" queue claim --limit 5 --lease 5m --json | python3 -c '
import json, sys
for line in sys.stdin:
    print(json.loads(line)["lease_id"])') ) || fail "queue claim as $job"
    [[ -n $ids ]] || fail "queue claim as $job got nothing"
    printf '%s\n' "$ids" | (as_job "$job" queue ack -) > /dev/null || fail "queue ack as $job"
    echo "install test: $job claimed and acked $(wc -l <<<"$ids")"
}

# The daemon, as the unit runs it, creates the database and syncs.
(as_unit "$unit") > "$work/daemon.log" 2>&1 &
daemon=$!
pids+=("$daemon")
for _ in $(seq 100); do
    (as_job "${consumers[0]}" status --json) 2>/dev/null | grep -q '"high_water_mark":"' && break
    kill -0 "$daemon" 2>/dev/null || fail "the daemon exited: $(cat "$work/daemon.log")"
    sleep 0.2
done
expect_stat "$state" "$user:$group 2770"
expect_stat "$state/buckets.db" "$user:$group 660"
for job in "${consumers[@]}"; do claim_and_ack "$job"; done
kill -TERM "$daemon"
status=0
wait "$daemon" || status=$?
[[ $status -eq 0 ]] || fail "the daemon did not stop cleanly (exit $status): $(cat "$work/daemon.log")"

# The timer variant: the oneshot unit polls once per start. Each of the
# three opens the database first in turn (creating -wal and -shm) and holds
# it while the others poll, claim and ack.
install -m 0644 systemd/uid2-bucket-sync-poll.service systemd/uid2-bucket-sync-poll.timer "$work/"
systemd-analyze verify --man=no "$work/uid2-bucket-sync-poll.service" "$work/uid2-bucket-sync-poll.timer"
poll_unit=$work/uid2-bucket-sync-poll.service
[[ $(directive User "$poll_unit") == "$user" && $(directive UMask "$poll_unit") == "$umask_value" ]] ||
    fail "the poll unit runs as another user or umask than the daemon"
diff <(directive LoadCredential "$poll_unit") <(directive LoadCredential "$unit") ||
    fail "the poll unit's credentials differ from the daemon's"
for first in "$user" "${consumers[@]}"; do
    regid=$first
    [[ $first == "$user" ]] && regid=$group
    coproc holder {
        setpriv --reuid="$first" --regid="$regid" --init-groups -- env -i PATH=/usr/bin:/bin python3 -c '
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("SELECT count(*) FROM remap_queue").fetchall()
print("open", flush=True)
sys.stdin.read()' "$state/buckets.db"
    }
    read -r opened <&"${holder[0]}"
    [[ $opened == open ]] || fail "the SQL reader as $first did not open the database"
    expect_stat "$state/buckets.db-wal" "$first:$group 660"
    sleep 1.1
    (as_unit "$poll_unit") > "$work/poll.log" 2>&1 || fail "poll with $first first: $(cat "$work/poll.log")"
    for job in "${consumers[@]}"; do claim_and_ack "$job"; done
    holder_pid=$holder_PID
    eval "exec ${holder[1]}>&-"
    wait "$holder_pid"
done
echo "install test: passed"
