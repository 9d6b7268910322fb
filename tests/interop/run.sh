#!/usr/bin/env bash
# Checks the official UID2 Python SDK (uid2-client==2.9.0) against `dev-operator`.
# Builds nothing: pass the binary (default: target/debug/uid2-bucket-sync).
# The interpreter is $PYTHON, else python3; it must be able to import uid2_client.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
binary="${1:-$root/target/debug/uid2-bucket-sync}"
python="${PYTHON:-python3}"

if [[ ! -x "$binary" ]]; then
    echo "interop: no executable at $binary; build it first (cargo build)" >&2
    exit 2
fi
if ! "$python" -c 'import uid2_client' 2>/dev/null; then
    echo "interop: $python cannot import uid2_client; pip install uid2-client==2.9.0" >&2
    exit 2
fi
exec "$python" "$here/sdk_interop.py" "$binary"
