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
for env in fakesnow feast signals signals04 valkey databricks; do
  scripts/python-env.sh "$env" >/dev/null
done
cargo test --locked --features failpoints "$@"
