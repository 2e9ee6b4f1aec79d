#!/usr/bin/env bash
# Benchmark: a full sync of 1,000,000 rows (1,000,000 entities, the 1m shape of
# scripts/bench.sh) into a Redis Cluster of 1 and of 3 primaries (no replicas),
# beside the cluster's own ceiling measured in the same run:
# `redis-benchmark --cluster` with a 6-field HSET on random keys, 64 commands
# per round trip, one client per primary. Prints rows/s, % of the ceiling,
# peak RSS, and CPU seconds of materializer and of every redis-server.
#
# Usage: scripts/bench_cluster.sh [PRIMARIES...]   (default: 1 3)
# Env: BENCH_DIR (work dir, default target/bench), BENCH_ROWS (default
#      1000000), BENCH_PAGE_ROWS (default 50000). Called by scripts/bench.sh
#      for its `cluster` shape.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/ensure-deps.sh
cargo build --release --locked --quiet --bin materializer --example gen_bench_data
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$root/$target ;; esac
bin=$target/release/materializer
gen=$target/release/examples/gen_bench_data

work=${BENCH_DIR:-$root/target/bench}/cluster
rows=${BENCH_ROWS:-1000000}
page_rows=${BENCH_PAGE_ROWS:-50000}
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 3)
mkdir -p "$work"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ports=()
cleanup() {
  for p in "${ports[@]}"; do redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

# Starts N cluster-enabled primaries owning every slot; sets `ports`.
start_cluster() {
  local n=$1 port=${BENCH_CLUSTER_PORT:-17000}
  cleanup
  ports=()
  rm -rf "$work/nodes" && mkdir -p "$work/nodes"
  while [ ${#ports[@]} -lt "$n" ]; do
    if ! listening "$port" && ! listening $((port + 10000)); then
      redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file "$work/nodes/nodes-$port.conf" --save "" --appendonly no \
        --dir "$work/nodes" --logfile "$work/nodes/$port.log" --daemonize yes
      ports+=("$port")
    fi
    port=$((port + 1))
  done
  for p in "${ports[@]}"; do
    for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  # redis-cli --cluster create wants 3 primaries at least: assign slots by hand.
  local i=0 per=$((16384 / n))
  for p in "${ports[@]}"; do
    local from=$((i * per)) to=$(((i + 1) * per - 1))
    [ $((i + 1)) -eq "$n" ] && to=16383
    redis-cli -p "$p" cluster addslotsrange "$from" "$to" >/dev/null
    [ "$p" != "${ports[0]}" ] && redis-cli -p "$p" cluster meet 127.0.0.1 "${ports[0]}" >/dev/null
    i=$((i + 1))
  done
  for _ in $(seq 100); do
    local ok=1
    for p in "${ports[@]}"; do
      redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' || ok=0
    done
    [ "$ok" = 1 ] && return 0
    sleep 0.1
  done
  echo "bench_cluster.sh: the cluster did not come up" >&2
  exit 1
}

cluster_cpu() {
  for p in "${ports[@]}"; do redis-cli -p "$p" info cpu; done | tr -d '\r' |
    awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.1f", s }'
}

# HSET-6 ops/s over the whole cluster: one client per primary, 64 per round
# trip (in cluster mode redis-benchmark routes a key by its `{tag}`).
ceiling() {
  # redis-benchmark refuses --cluster for one node, which owns every slot anyway.
  local mode=--cluster
  [ ${#ports[@]} -eq 1 ] && mode=
  redis-benchmark $mode -p "${ports[0]}" -c "${#ports[@]}" -P 64 -r 1000000 \
    -n "${BENCH_HSET_N:-2000000}" -q \
    HSET "bench:{tag}:__rand_int__" _ts:bench __rand_int__ f1 __rand_int__ f2 __rand_int__ \
    f3 __rand_int__ f4 __rand_int__ f5 __rand_int__ 2>/dev/null | tr '\r' '\n' |
    grep 'requests per second' | tail -1 | sed -E 's/.*: ([0-9.]+) requests per second.*/\1/'
  for p in "${ports[@]}"; do redis-cli -p "$p" flushall >/dev/null; done
}

dir=$work/data
if [ ! -d "$dir/BENCH_CLUSTER" ]; then
  echo "== generating $rows rows, $rows entities" >&2
  "$gen" full --dir "$dir" --table BENCH_CLUSTER --rows "$rows" --entities "$rows" >&2
fi
mkdir -p "$work/views"
cat >"$work/views/bench.json" <<EOF
{
  "name": "bench_features", "version": 1,
  "entity": { "name": "domain_userid" },
  "batch_source": { "name": "bench_source", "table": "BENCH_CLUSTER", "timestamp_field": "UPDATED_AT" },
  "fields": [
    { "name": "TOTAL_TRANSACTIONS", "type": "int32" },
    { "name": "TOTAL_REVENUE", "type": "int64" },
    { "name": "AVG_ORDER_VALUE", "type": "float" },
    { "name": "FAVOURITE_CATEGORY", "type": "string" },
    { "name": "IS_RETURNING", "type": "bool" }
  ],
  "online": true
}
EOF

results=()
for n in "${counts[@]}"; do
  start_cluster "$n"
  echo "== $n primaries: redis-benchmark --cluster HSET-6 ceiling" >&2
  ceil=$(ceiling)
  echo "   ${ceil} HSET/s" >&2
  cat >"$work/materializer.toml" <<EOF
[sync]
page_rows = $page_rows
[warehouse]
kind = "parquet"
path = "$dir"
[profiles]
redis_type = "redis_cluster"
redis_url = "redis://127.0.0.1:${ports[0]}"
[registry]
files = ["$work/views/*.json"]
[log]
level = "warn"
format = "text"
EOF
  echo "== $n primaries: full sync" >&2
  before=$(cluster_cpu)
  /usr/bin/time -v -o "$work/sync-$n.time" "$bin" --config "$work/materializer.toml" sync \
    >"$work/sync-$n.out" 2>"$work/sync-$n.err" || {
    echo "bench_cluster.sh: sync failed:" >&2; cat "$work/sync-$n.out" "$work/sync-$n.err" >&2; exit 1; }
  echo "   $(cat "$work/sync-$n.out")" >&2
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$work/sync-$n.time")
  rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$work/sync-$n.time")
  cpu=$(awk -F': ' '/(User|System) time \(seconds\)/ { s += $2 } END { printf "%.1f", s }' "$work/sync-$n.time")
  rcpu=$(awk -v a="$(cluster_cpu)" -v b="$before" 'BEGIN { printf "%.1f", a - b }')
  read=$(sed -nE 's/.* read=([0-9]+).*/\1/p' "$work/sync-$n.out" | head -1)
  keys=0
  for p in "${ports[@]}"; do keys=$((keys + $(redis-cli -p "$p" dbsize))); done
  rate=$(awk -v r="$read" -v w="$wall" 'BEGIN { printf "%.0f", r / w }')
  pct=$(awk -v a="$rate" -v c="$ceil" 'BEGIN { printf "%.0f", 100 * a / c }')
  results+=("$(printf '%9s %9s %9s %7ss %9s %12s %5s%% %7s %7ss %7ss' \
    "$n" "$read" "$keys" "$wall" "$rate" "${ceil%.*}" "$pct" "${rss}MB" "$cpu" "$rcpu")")
done

echo
echo "Redis Cluster, full sync of the 1m shape (page_rows=$page_rows), $(nproc) cores:"
printf '%9s %9s %9s %8s %9s %12s %6s %7s %8s %8s\n' primaries rows keys wall rows/s "ceiling/s" "%ceil" RSS "mat CPU" "redis CPU"
printf '%s\n' "${results[@]}"
