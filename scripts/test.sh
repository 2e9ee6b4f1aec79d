#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that start their own
# redis-server (also as a Redis Cluster and with Sentinel), valkey-server and
# Snowflake-protocol server (fakesnow behind a compatibility
# proxy) on free ports, run the built binary, and read Redis back, including
# through the real Feast SDK. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
# Create the Python environments up front (one-off, a few minutes on a fresh
# machine) so no test times out waiting for pip.
for env in fakesnow feast signals signals04 valkey databricks bigquery; do
  scripts/python-env.sh "$env" >/dev/null
done
cargo test --locked --features failpoints "$@"
# The end-to-end modules that exercise the store once more, on Valkey instead
# of Redis (only when the whole suite ran, not for a filtered run).
if [ $# -eq 0 ]; then
  MATERIALIZER_TEST_STORE=valkey cargo test --locked --features failpoints --test main -- \
    sync_e2e:: parquet_e2e:: contract_holes:: erasure:: reliability:: type_matrix::
fi
