#!/usr/bin/env bash
# The crash-consistency test at production size: 2^20 buckets (CI runs
# 2^18), with the release build. Every kill's moment and the seed are
# printed; CRASH_SEED=N replays a run.
#
#   scripts/crash-test.sh [BUCKETS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CRASH_BUCKETS=${1:-1048576}
exec cargo test --release --test it crash_consistency:: -- --nocapture --test-threads 1
