#!/usr/bin/env bash
# Benchmark: materializer syncing Parquet into Redis, against Redis's own ceiling
# measured in the same run on the same Redis.
#
# For each shape (1,000,000 rows x 1,000,000 entities; 1,000,000 rows x 200,000
# entities x 5 versions) it generates the reference table (string entity
# DOMAIN_USERID; int32, int64, float, string, bool fields; UPDATED_AT), then:
#   1. measures `redis-benchmark -P 64` (one client) with a 6-field HSET on random
#      keys: the ceiling;
#   2. times a full `materializer sync` (newest-wins guard on) under
#      /usr/bin/time -v, recording peak RSS;
#   3. appends 1% new rows and times the incremental `sync` that follows;
#   4. (1m shape, unless BENCH_READS=0) serves the synced store with `run` and
#      measures the read API (examples/read_load.rs): requests/s, p50 and p99 of
#      1-entity and 100-entity requests with 1 and 16 clients, idle and while a
#      full resync of the same view runs beside them.
# and prints one table: rows/s, % of the ceiling, peak RSS, incremental time,
# then the read table.
#
# Usage: scripts/bench.sh [SHAPE...]   SHAPE = 1m | 200k-x5 | none (default: both)
# Env: BENCH_DIR (work dir, default target/bench), BENCH_ROWS (default 1000000),
#      BENCH_PAGE_ROWS (sync.page_rows, default 50000), BENCH_SNOWFLAKE_ROWS
#      (also sync this many rows of the 1m shape from the Snowflake-protocol test
#      server, default 0 = skip; slow: fakesnow serves JSON-converted Arrow),
#      BENCH_SNOWFLAKE_PAGE_ROWS (the page_rows of those full syncs, one each,
#      default "10000 1000000 $BENCH_PAGE_ROWS"), BENCH_SNOWFLAKE_CHUNK_ROWS
#      (the server sends results of more rows in chunks of this many, as
#      Snowflake does, default 50000).
# Redis runs on a free port, without persistence, and is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/ensure-deps.sh
command -v redis-benchmark >/dev/null || { echo "bench.sh: redis-benchmark not found (apt-get install redis-tools)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench.sh: /usr/bin/time not found (apt-get install time)" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench.sh: curl not found (apt-get install curl)" >&2; exit 1; }

echo "== building (release)" >&2
cargo build --release --locked --quiet --bin materializer --example gen_bench_data --example read_load
target=${CARGO_TARGET_DIR:-target}
bin=$root/$target/release/materializer
gen=$root/$target/release/examples/gen_bench_data
load=$root/$target/release/examples/read_load
[ -x "$bin" ] || { bin=$target/release/materializer; gen=$target/release/examples/gen_bench_data; load=$target/release/examples/read_load; }

work=${BENCH_DIR:-$root/target/bench}
rows=${BENCH_ROWS:-1000000}
page_rows=${BENCH_PAGE_ROWS:-50000}
sf_rows=${BENCH_SNOWFLAKE_ROWS:-0}
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(1m 200k-x5)
mkdir -p "$work"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=${BENCH_REDIS_PORT:-16379}
while listening "$port"; do port=$((port + 1)); done
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" --logfile "$work/redis.log" --pidfile "$work/redis.pid" --daemonize yes
pids=()
cleanup() {
  [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis_cli() { redis-cli -p "$port" "$@"; }

# ops/s of a 6-field HSET on random keys, one client, 64 commands per round trip.
hset_ceiling() {
  redis_cli flushall >/dev/null
  local out
  out=$(redis-benchmark -p "$port" -c 1 -P 64 -r 1000000 -n "${BENCH_HSET_N:-2000000}" -q \
    HSET "bench:__rand_int__" _ts:bench __rand_int__ f1 __rand_int__ f2 __rand_int__ \
    f3 __rand_int__ f4 __rand_int__ f5 __rand_int__ 2>/dev/null | tr '\r' '\n' | grep 'requests per second' | tail -1)
  redis_cli flushall >/dev/null
  echo "$out" | sed -E 's/.*: ([0-9.]+) requests per second.*/\1/'
}

# Writes the view and config of one shape; prints the config path.
setup_shape() {
  local dir=$1 table=$2 kind=${3:-parquet}
  mkdir -p "$dir/views"
  cat >"$dir/views/bench.json" <<EOF
{
  "name": "bench_features", "version": 1,
  "entity": { "name": "domain_userid" },
  "batch_source": { "name": "bench_source", "database": "BENCH", "schema": "PUBLIC",
                    "table": "$table", "timestamp_field": "UPDATED_AT" },
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
  local warehouse
  if [ "$kind" = parquet ]; then
    warehouse="kind = \"parquet\"
path = \"$dir/data\""
  else
    warehouse="kind = \"snowflake\"
account = \"local\"
user = \"SIGNALS\"
password = \"local-dev-only\"
database = \"BENCH\"
base_url = \"http://127.0.0.1:$sf_port\"
query_timeout = \"5m\""
  fi
  cat >"$dir/materializer.toml" <<EOF
[sync]
page_rows = $page_rows
[warehouse]
$warehouse
[profiles]
redis_url = "redis://127.0.0.1:$port"
[registry]
files = ["$dir/views/*.json"]
[log]
level = "warn"
format = "text"
EOF
  echo "$dir/materializer.toml"
}

redis_cpu() { redis_cli info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.2f", s }'; }

# Runs `sync` under /usr/bin/time -v; sets wall (s), rss (MB), read, written,
# run_s, cpu (materializer user+sys s), rcpu (Redis user+sys s during the sync).
timed_sync() {
  local config=$1 tag=$2
  local before
  before=$(redis_cpu)
  /usr/bin/time -v -o "$work/$tag.time" "$bin" --config "$config" sync >"$work/$tag.out" 2>"$work/$tag.err" || {
    echo "bench.sh: sync failed ($tag):" >&2; cat "$work/$tag.out" "$work/$tag.err" >&2; exit 1; }
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$work/$tag.time")
  rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$work/$tag.time")
  read=$(sed -nE 's/.* read=([0-9]+).*/\1/p' "$work/$tag.out" | head -1)
  written=$(sed -nE 's/.* written=([0-9]+).*/\1/p' "$work/$tag.out" | head -1)
  run_s=$(sed -nE 's/.* ([0-9.]+)s$/\1/p' "$work/$tag.out" | head -1)
  statements=$(sed -nE 's/.* statements=([0-9]+).*/\1/p' "$work/$tag.out" | head -1)
  cpu=$(awk -F': ' '/(User|System) time \(seconds\)/ { s += $2 } END { printf "%.1f", s }' "$work/$tag.time")
  rcpu=$(awk -v a="$(redis_cpu)" -v b="$before" 'BEGIN { printf "%.1f", a - b }')
  echo "   $(cat "$work/$tag.out")" >&2
  echo "   CPU: materializer ${cpu}s, redis-server ${rcpu}s, wall ${wall}s" >&2
}

# The read API over the synced store of one shape: idle, then beside a full
# resync of the same view. Appends lines to `reads`.
reads=()
read_bench() {
  local dir=$1 config=$2 entities=$3
  local api_port=$((port + 2))
  while listening "$api_port"; do api_port=$((api_port + 1)); done
  { cat "$config"; printf '[api]\nlisten = "127.0.0.1:%s"\n[scheduler]\ninterval = "1h"\n' "$api_port"; } >"$dir/reads.toml"
  "$gen" ids --entities "$entities" --count 200000 >"$work/ids.txt"
  "$bin" --config "$dir/reads.toml" run 2>"$work/reads-daemon.log" &
  local daemon=$!
  pids+=("$daemon")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$api_port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  # The daemon runs the view once at start (incremental here): let it finish,
  # and warm the connections, before measuring.
  sleep 2
  "$load" --url "http://127.0.0.1:$api_port" --join-key domain_userid \
    --attribute bench_features_v1:TOTAL_REVENUE --ids "$work/ids.txt" --seconds 1 >/dev/null
  measure() { # label clients batch seconds
    local out
    out=$("$load" --url "http://127.0.0.1:$api_port" --join-key domain_userid \
      --attribute bench_features_v1:TOTAL_REVENUE --ids "$work/ids.txt" --clients "$2" --batch "$3" --seconds "$4")
    echo "   $1, $2 clients x $3 entities: $out" >&2
    reads+=("$(printf '%-12s %7s %8s  %s' "$1" "$2" "$3" "$out")")
  }
  echo "== reads: idle" >&2
  measure idle 1 1 5
  measure idle 16 1 5
  measure idle 1 100 5
  measure idle 16 100 5
  echo "== reads: beside a full resync" >&2
  "$bin" --config "$dir/reads.toml" reset --view bench_features >/dev/null
  curl -sf -X POST "http://127.0.0.1:$api_port/api/v1/sync/bench_features/versions/1/run" >/dev/null
  sleep 0.5
  measure during-sync 1 1 3
  measure during-sync 16 1 3
  local st
  st=$(curl -sf "http://127.0.0.1:$api_port/api/v1/sync/status" | grep -o '"status":"[a-z]*"' | head -1)
  echo "   the resync's run record after the measurements: $st (running = it overlapped all of them)" >&2
  kill "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
}

results=()
for shape in "${shapes[@]}"; do
  case $shape in
    1m) entities=$rows ;;
    200k-x5) entities=$((rows / 5)) ;;
    none) continue ;;
    *) echo "bench.sh: unknown shape $shape (1m | 200k-x5)" >&2; exit 2 ;;
  esac
  dir=$work/$shape
  table=BENCH_${shape//-/_}
  table=${table^^}
  echo "== $shape: generating $rows rows, $entities entities" >&2
  "$gen" full --dir "$dir/data" --table "$table" --rows "$rows" --entities "$entities" >&2
  config=$(setup_shape "$dir" "$table")

  echo "== $shape: redis-benchmark HSET-6 ceiling (-P 64, one client)" >&2
  ceiling=$(hset_ceiling)
  echo "   ${ceiling} HSET/s" >&2

  echo "== $shape: full sync" >&2
  timed_sync "$config" "$shape-full"
  full_wall=$wall full_rss=$rss full_read=$read full_run=$run_s
  full_rate=$(awk -v r="$full_read" -v w="$full_wall" 'BEGIN { printf "%.0f", r / w }')
  pct=$(awk -v a="$full_rate" -v c="$ceiling" 'BEGIN { printf "%.0f", 100 * a / c }')
  keys=$(redis_cli dbsize)

  echo "== $shape: 1% incremental sync" >&2
  "$gen" increment --dir "$dir/data" --table "$table" --rows $((rows / 100)) --entities "$entities" >&2
  timed_sync "$config" "$shape-incremental"
  inc_pct=$(awk -v i="$wall" -v f="$full_wall" 'BEGIN { printf "%.1f", 100 * i / f }')

  echo "== $shape: ceiling again (the machine is shared: the load moves)" >&2
  ceiling_after=$(hset_ceiling)
  echo "   ${ceiling_after} HSET/s" >&2
  results+=("$(printf '%-8s %9s %9s %6ss %6ss %9s %13s %13s %5s%% %7s %8ss %5s%%' \
    "$shape" "$full_read" "$keys" "$full_wall" "$full_run" "$full_rate" \
    "${ceiling%.*}" "${ceiling_after%.*}" "$pct" "${full_rss}MB" "$wall" "$inc_pct")")
  if [ "$shape" = 1m ] && [ "${BENCH_READS:-1}" = 1 ]; then
    read_bench "$dir" "$config" "$entities"
  fi
done

sf_results=()
if [ "$sf_rows" -gt 0 ]; then
  echo "== snowflake-protocol server: $sf_rows rows of the 1m shape" >&2
  py=$(scripts/python-env.sh fakesnow)
  sf_port=$((port + 1))
  while listening "$sf_port"; do sf_port=$((sf_port + 1)); done
  "$py" tests/support/snowflake_server.py --port "$sf_port" --chunk-rows "${BENCH_SNOWFLAKE_CHUNK_ROWS:-50000}" \
    >"$work/sf.out" 2>"$work/sf.log" </dev/null &
  pids+=($!)
  for _ in $(seq 300); do grep -q READY "$work/sf.out" 2>/dev/null && break; sleep 0.1; done
  dir=$work/snowflake
  "$gen" full --dir "$dir/data" --table BENCH_SF --rows "$sf_rows" --entities "$sf_rows" >&2
  "$py" scripts/bench_seed_snowflake.py --port "$sf_port" --table BENCH_SF --files "$dir/data/BENCH_SF" >&2
  default_page_rows=$page_rows
  for sf_page_rows in ${BENCH_SNOWFLAKE_PAGE_ROWS:-10000 1000000 $default_page_rows}; do
    page_rows=$sf_page_rows
    config=$(setup_shape "$dir" BENCH_SF snowflake)
    redis_cli flushall >/dev/null
    echo "== snowflake-protocol full sync, page_rows=$page_rows" >&2
    timed_sync "$config" "snowflake-full-$page_rows"
    sf_rate=$(awk -v r="$read" -v w="$wall" 'BEGIN { printf "%.0f", r / w }')
    sf_results+=("$(printf '%-10s %9s %9s %7ss %7ss %9s %10s %8s' \
      "$page_rows" "$read" "$(redis_cli dbsize)" "$wall" "$run_s" "$sf_rate" "$statements" "${rss}MB")")
  done
  page_rows=$default_page_rows
fi

echo
echo "materializer $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), page_rows=$page_rows, $(date -u +%FT%TZ)"
printf '%-8s %9s %9s %7s %7s %9s %13s %13s %6s %7s %9s %6s\n' \
  shape rows keys wall run rows/s hset6-before hset6-after %ceil peakRSS "1%-incr" "%full"
for r in "${results[@]}"; do echo "$r"; done
echo "(rows/s = rows read / wall time of the whole sync command; %ceil against the ceiling measured before it)"
if [ ${#sf_results[@]} -gt 0 ]; then
  echo
  echo "Snowflake protocol (fakesnow + tests/support/snowflake_server.py, results in chunks of ${BENCH_SNOWFLAKE_CHUNK_ROWS:-50000} rows), full sync:"
  printf '%-10s %9s %9s %8s %8s %9s %10s %8s\n' page_rows rows keys wall run rows/s statements peakRSS
  for r in "${sf_results[@]}"; do echo "$r"; done
fi
if [ ${#reads[@]} -gt 0 ]; then
  echo
  printf '%-12s %7s %8s  %s\n' reads clients entities result
  for r in "${reads[@]}"; do echo "$r"; done
fi
