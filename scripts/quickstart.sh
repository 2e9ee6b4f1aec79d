#!/usr/bin/env bash
# Quickstart: sync the example attribute table into Redis, no warehouse server.
#  1. installs what is missing (redis-server) and starts Redis on 127.0.0.1:6379
#     if nothing answers there;
#  2. builds materializer and syncs the seed view (config/views/) from the
#     embedded Parquet warehouse (data/example/parquet, made from
#     data/example/*.csv), then shows its status and one profile as Feast
#     stores it.
# `scripts/quickstart.sh snowflake` does the same through a local
# Snowflake-protocol server (fakesnow + compatibility layer, on 127.0.0.1:8099,
# needs Python) with config/snowflake.toml.
# Everything it starts keeps running; `scripts/quickstart.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
state=.quickstart
mkdir -p "$state"

if [ "${1:-}" = "stop" ]; then
  for p in "$state"/*.pid; do
    [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null && echo "stopped $(basename "$p" .pid)"
    rm -f "$p"
  done
  exit 0
fi

config=config/materializer.toml
[ "${1:-}" = "snowflake" ] && config=config/snowflake.toml

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

scripts/ensure-deps.sh

if ! listening 6379; then
  echo "== starting Redis on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$PWD/$state" --logfile "$PWD/$state/redis.log" --pidfile "$PWD/$state/redis.pid"
  for _ in $(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

if [ "$config" = config/snowflake.toml ]; then
  py=$(scripts/python-env.sh fakesnow)
  if ! listening 8099; then
    echo "== starting the Snowflake-protocol server on 127.0.0.1:8099"
    nohup "$py" tests/support/snowflake_server.py --port 8099 >"$state/snowflake.out" 2>"$state/snowflake.log" </dev/null &
    echo $! >"$state/snowflake.pid"
    for _ in $(seq 300); do grep -q READY "$state/snowflake.out" 2>/dev/null && break; sleep 0.1; done
    grep -q READY "$state/snowflake.out" || { echo "server did not start; see $state/snowflake.log" >&2; exit 1; }
  fi
  echo "== loading the example table"
  "$py" scripts/seed_example.py --port 8099
fi

echo "== building materializer (release)"
cargo build --release --locked --quiet
bin=target/release/materializer
[ -n "${CARGO_TARGET_DIR:-}" ] && bin="$CARGO_TARGET_DIR/release/materializer"

echo "== materializer sync"
"$bin" --config "$config" sync
echo "== materializer status"
"$bin" --config "$config" status
entity=$(sed -n 2p data/example/ecommerce_transaction_interactions.csv | cut -d, -f1)
echo "== materializer profile --view ecommerce_transaction_interactions_features $entity"
"$bin" --config "$config" profile --view ecommerce_transaction_interactions_features "$entity"
echo
echo "Done. Run the daemon with: $bin --config $config run"
echo "Stop what the quickstart started with: scripts/quickstart.sh stop"
