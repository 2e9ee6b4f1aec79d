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
#   4. (1m shape, unless BENCH_READS=0) serves the synced store with `run` and,
#      beside it, Feast's feature server (`feast serve`, scripts/feast_serve.py,
#      unless BENCH_FEAST=0) on the same Redis, and measures both with the same
#      load client (examples/read_load.rs): requests/s, p50 and p99 of 1-entity
#      and 100-entity requests with 1 and 16 clients; then ours again while a
#      full resync of the same view runs beside it.
# and prints one table: rows/s, % of the ceiling, peak RSS, incremental time,
# then the read table (ours beside Feast).
#
# Usage: scripts/bench.sh [SHAPE...]   SHAPE = 1m | 200k-x5 | cluster | none
#        (default: 1m 200k-x5; `cluster` runs scripts/bench_cluster.sh: the 1m
#        shape into a Redis Cluster of 1 and of 3 primaries)
# Env: BENCH_DIR (work dir, default target/bench), BENCH_ROWS (default 1000000),
#      BENCH_PAGE_ROWS (sync.page_rows, default 50000), BENCH_SNOWFLAKE_ROWS
#      (also sync this many rows of the 1m shape from the Snowflake-protocol test
#      server, default 0 = skip; slow: fakesnow serves JSON-converted Arrow),
#      BENCH_SNOWFLAKE_PAGE_ROWS (the page_rows of those full syncs, one each,
#      default "10000 1000000 $BENCH_PAGE_ROWS"), BENCH_SNOWFLAKE_CHUNK_ROWS
#      (the server sends results of more rows in chunks of this many, as
#      Snowflake does, default 50000). BENCH_POSTGRES_ROWS (default 1000000,
#      0 = skip), BENCH_POSTGRES_URL, BENCH_POSTGRES_PAGE_ROWS: see the
#      PostgreSQL block below. BENCH_DATABRICKS_ROWS,
#      BENCH_DATABRICKS_CHUNK_ROWS, BENCH_BIGQUERY_ROWS (default 1000000 each,
#      0 = skip): see the Databricks and BigQuery blocks (stand-in servers).
#      Reads: BENCH_READS (0 = skip),
#      BENCH_FEAST (0 = no Feast column), BENCH_READ_SHAPES (default
#      "1x1 16x1 1x100 16x100", clients x entities per request),
#      BENCH_READ_SECONDS (per run, default 3), BENCH_READ_ROUNDS (runs per
#      shape and server, the best kept, default 2), BENCH_FEAST_WORKERS
#      (feast serve --workers, default: the number of cores).
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

# The read API over the synced store of one shape, beside Feast's own feature
# server (`feast serve`, unless BENCH_FEAST=0) reading the same Redis: each
# read shape (clients x entities per request) runs BENCH_READ_ROUNDS times
# for BENCH_READ_SECONDS, the two servers taking turns, and the round with
# the most requests/s of each server is kept. Then ours alone again, beside
# a full resync of the same view. Appends lines to `reads`.
reads=()
read_shapes=${BENCH_READ_SHAPES:-"1x1 16x1 1x100 16x100"}
read_seconds=${BENCH_READ_SECONDS:-3}
read_rounds=${BENCH_READ_ROUNDS:-2}
feast_workers=${BENCH_FEAST_WORKERS:-$(nproc)}

# One run of the load client: prints "req/s p50 p99 errors".
# Args: api (materializer | feast) url clients entities seconds
load_run() {
  local out
  out=$("$load" --api "$1" --url "$2" --join-key domain_userid \
    --attribute bench_features_v1:TOTAL_REVENUE --ids "$work/ids.txt" \
    --clients "$3" --batch "$4" --seconds "$5")
  echo "$out" | sed -E 's/requests\/s ([^ ]+)  p50 ([^ ]+) ms  p99 ([^ ]+) ms  requests [0-9]+  errors ([0-9]+)/\1 \2 \3 \4/'
}

# Best of `read_rounds` runs; prints "req/s p50 p99 errors" of that run.
# Args: api url clients entities
best_of_rounds() {
  local best="" r line
  for r in $(seq "$read_rounds"); do
    line=$(load_run "$1" "$2" "$3" "$4" "$read_seconds")
    echo "   $1, $3 clients x $4 entities, round $r: $line (req/s p50 p99 errors)" >&2
    if [ -z "$best" ] || [ "${line%% *}" -gt "${best%% *}" ]; then best=$line; fi
  done
  echo "$best"
}

read_bench() {
  local dir=$1 config=$2 entities=$3
  local api_port=$((port + 2))
  while listening "$api_port"; do api_port=$((api_port + 1)); done
  { cat "$config"; printf '[api]\nlisten = "127.0.0.1:%s"\n[scheduler]\ninterval = "1h"\n' "$api_port"; } >"$dir/reads.toml"
  "$gen" ids --entities "$entities" --count 200000 >"$work/ids.txt"
  "$bin" --config "$dir/reads.toml" run 2>"$work/reads-daemon.log" &
  local daemon=$!
  pids+=("$daemon")
  local ours=http://127.0.0.1:$api_port feast="" feast_pid=""
  if [ "${BENCH_FEAST:-1}" = 1 ]; then
    local feast_port=$((api_port + 1))
    while listening "$feast_port"; do feast_port=$((feast_port + 1)); done
    echo "== reads: starting feast serve ($feast_workers workers) on the same Redis" >&2
    "$(scripts/python-env.sh feast)" scripts/feast_serve.py --redis "redis://127.0.0.1:$port" \
      --view "$dir/views/bench.json" --repo "$work/feast-repo" --port "$feast_port" \
      --workers "$feast_workers" >"$work/feast.out" 2>"$work/feast.log" </dev/null &
    feast_pid=$!
    pids+=("$feast_pid")
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$feast_port/health" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:$feast_port/health" >/dev/null 2>&1 \
      || { echo "bench.sh: feast serve did not start:" >&2; tail -20 "$work/feast.log" >&2; exit 1; }
    feast=http://127.0.0.1:$feast_port
  fi
  for _ in $(seq 100); do curl -sf "$ours/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  # The daemon runs the view once at start (incremental here): let it finish,
  # and warm the connections (and Feast's registry cache), before measuring.
  sleep 2
  load_run materializer "$ours" 1 1 1 >/dev/null
  [ -z "$feast" ] || load_run feast "$feast" 1 1 1 >/dev/null

  echo "== reads: idle, $read_rounds rounds of ${read_seconds}s per shape and server" >&2
  local shape clients batch o f
  for shape in $read_shapes; do
    clients=${shape%x*} batch=${shape#*x}
    o=$(best_of_rounds materializer "$ours" "$clients" "$batch")
    f="- - - -"
    [ -z "$feast" ] || f=$(best_of_rounds feast "$feast" "$clients" "$batch")
    reads+=("$(read_row idle "$clients" "$batch" "$o" "$f")")
  done
  [ -z "$feast_pid" ] || { kill "$feast_pid" 2>/dev/null || true; wait "$feast_pid" 2>/dev/null || true; }

  echo "== reads: beside a full resync (ours only)" >&2
  "$bin" --config "$dir/reads.toml" reset --view bench_features >/dev/null
  curl -sf -X POST "$ours/api/v1/sync/bench_features/versions/1/run" >/dev/null
  sleep 0.5
  for shape in 1x1 16x1; do
    clients=${shape%x*} batch=${shape#*x}
    o=$(load_run materializer "$ours" "$clients" "$batch" 3)
    echo "   during-sync, $clients clients x $batch entities: $o (req/s p50 p99 errors)" >&2
    reads+=("$(read_row during-sync "$clients" "$batch" "$o" "- - - -")")
  done
  local st
  st=$(curl -sf "$ours/api/v1/sync/status" | grep -o '"status":"[a-z]*"' | head -1)
  echo "   the resync's run record after the measurements: $st (running = it overlapped all of them)" >&2
  kill "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
}

# One line of the read table. Args: label clients entities "ours" "feast",
# each "req/s p50 p99 errors".
read_row() {
  local o f ratio
  read -r -a o <<<"$4"
  read -r -a f <<<"$5"
  ratio=-
  [ "${f[0]}" = - ] || ratio=$(awk -v a="${o[0]}" -v b="${f[0]}" 'BEGIN { printf "%.1fx", a / b }')
  printf '%-12s %7s %8s  %9s %8s %8s %6s  %9s %8s %8s %6s  %7s' "$1" "$2" "$3" \
    "${o[0]}" "${o[1]}" "${o[2]}" "${o[3]}" "${f[0]}" "${f[1]}" "${f[2]}" "${f[3]}" "$ratio"
}

results=()
for shape in "${shapes[@]}"; do
  case $shape in
    1m) entities=$rows ;;
    200k-x5) entities=$((rows / 5)) ;;
    none) continue ;;
    cluster) BENCH_DIR=$work scripts/bench_cluster.sh; continue ;;
    *) echo "bench.sh: unknown shape $shape (1m | 200k-x5 | cluster)" >&2; exit 2 ;;
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

# --- PostgreSQL (warehouse.kind = "postgres") -------------------------------
# BENCH_POSTGRES_ROWS rows (default 1000000; 0 = skip) of the 1m shape, seeded
# server-side with generate_series into schema bench_pg of BENCH_POSTGRES_URL
# (default postgres://postgres@127.0.0.1:5432/test, the quickstart's server),
# then one full sync per BENCH_POSTGRES_PAGE_ROWS (default "10000 1000000
# $BENCH_PAGE_ROWS"): one statement streamed into pages, whatever the size.
pg_results=()
postgres_bench() {
  local pg_rows=${BENCH_POSTGRES_ROWS:-1000000}
  local url=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
  [ "$pg_rows" -gt 0 ] || return 0
  command -v psql >/dev/null || { echo "bench.sh: psql not found (scripts/ensure-deps.sh installs PostgreSQL)" >&2; exit 1; }
  local dir=$work/postgres
  mkdir -p "$dir/views"
  echo "== postgres: seeding $pg_rows rows (1m shape) into bench_pg.BENCH_PG" >&2
  psql -q -v ON_ERROR_STOP=1 "$url" >&2 <<EOF
DROP SCHEMA IF EXISTS bench_pg CASCADE;
CREATE SCHEMA bench_pg;
CREATE TABLE bench_pg."BENCH_PG" ("DOMAIN_USERID" text, "TOTAL_TRANSACTIONS" integer,
  "TOTAL_REVENUE" bigint, "AVG_ORDER_VALUE" real, "FAVOURITE_CATEGORY" text,
  "IS_RETURNING" boolean, "UPDATED_AT" timestamp);
INSERT INTO bench_pg."BENCH_PG"
  SELECT 'user-' || lpad(s::text, 8, '0'), (s % 1000)::integer, s * 37, (s % 997) / 7.0,
         (ARRAY['books', 'garden', 'toys', 'music', 'sports'])[(1 + s % 5)::integer], s % 3 = 0,
         TIMESTAMP '2024-01-01' + (s * 2592) * INTERVAL '1 millisecond'
  FROM generate_series(0::bigint, $pg_rows - 1) AS s;
ANALYZE bench_pg."BENCH_PG";
EOF
  cat >"$dir/views/bench.json" <<EOF
{
  "name": "bench_features", "version": 1,
  "entity": { "name": "domain_userid" },
  "batch_source": { "name": "bench_source", "schema": "BENCH_PG",
                    "table": "BENCH_PG", "timestamp_field": "UPDATED_AT" },
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
  local pg_page_rows rate
  for pg_page_rows in ${BENCH_POSTGRES_PAGE_ROWS:-10000 1000000 $page_rows}; do
    cat >"$dir/materializer.toml" <<EOF
[sync]
page_rows = $pg_page_rows
[warehouse]
kind = "postgres"
url = "$url"
query_timeout = "5m"
[profiles]
redis_url = "redis://127.0.0.1:$port"
[registry]
files = ["$dir/views/*.json"]
[log]
level = "warn"
format = "text"
EOF
    redis_cli flushall >/dev/null
    echo "== postgres full sync, page_rows=$pg_page_rows" >&2
    timed_sync "$dir/materializer.toml" "postgres-full-$pg_page_rows"
    rate=$(awk -v r="$read" -v w="$wall" 'BEGIN { printf "%.0f", r / w }')
    pg_results+=("$(printf '%-10s %9s %9s %7ss %7ss %9s %10s %8s' \
      "$pg_page_rows" "$read" "$(redis_cli dbsize)" "$wall" "$run_s" "$rate" "$statements" "${rss}MB")")
  done
  psql -q "$url" -c 'DROP SCHEMA IF EXISTS bench_pg CASCADE' >&2 || true
}
postgres_bench
# --- end PostgreSQL -----------------------------------------------------------

# --- Databricks (warehouse.kind = "databricks") -------------------------------
# BENCH_DATABRICKS_ROWS rows (default 1000000; 0 = skip) of the 1m shape, served
# by the SQL Statement Execution API stand-in (tests/support/databricks_server.py,
# DuckDB inside; venv from scripts/python-env.sh databricks) on a free port,
# results cut into chunks of BENCH_DATABRICKS_CHUNK_ROWS rows (default 50000),
# each behind an external link (Arrow IPC). Seeded server-side through the API:
# DuckDB reads the Parquet files `gen_bench_data full` writes (CREATE TABLE ...
# AS SELECT ... FROM read_parquet). Then one full sync at BENCH_PAGE_ROWS. The
# stand-in's speed is not the service's: the figures show the daemon's side.
dbx_results=()
databricks_bench() {
  local n=${BENCH_DATABRICKS_ROWS:-1000000}
  [ "$n" -gt 0 ] || return 0
  local py dir=$work/databricks host rate
  py=$(scripts/python-env.sh databricks)
  rm -rf "$dir"
  mkdir -p "$dir/views"
  "$py" tests/support/databricks_server.py --port 0 --chunk-rows "${BENCH_DATABRICKS_CHUNK_ROWS:-50000}" \
    >"$dir/server.out" 2>"$dir/server.log" </dev/null &
  pids+=($!)
  for _ in $(seq 300); do grep -q READY "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
  grep -q READY "$dir/server.out" || { echo "bench.sh: databricks_server.py did not start:" >&2; tail -20 "$dir/server.log" >&2; exit 1; }
  host=http://127.0.0.1:$(sed -nE 's/^READY ([0-9]+).*/\1/p' "$dir/server.out")
  echo "== databricks: generating $n rows (1m shape), seeding bench_dbx.bench.BENCH_DBX" >&2
  "$gen" full --dir "$dir/data" --table BENCH_DBX --rows "$n" --entities "$n" >&2
  # Statements in order, token auth; waits for each (polling past wait_timeout).
  "$py" - "$host" "$dir/data/BENCH_DBX" <<'EOF' >&2
import json, sys, time, urllib.request
host, files = sys.argv[1], sys.argv[2]
def call(method, path, body=None):
    req = urllib.request.Request(host + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer dapi-test-token", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
for sql in ["CREATE CATALOG IF NOT EXISTS bench_dbx", "CREATE SCHEMA IF NOT EXISTS bench_dbx.bench",
            "CREATE OR REPLACE TABLE bench_dbx.bench.BENCH_DBX AS SELECT DOMAIN_USERID, TOTAL_TRANSACTIONS, "
            "TOTAL_REVENUE, AVG_ORDER_VALUE, FAVOURITE_CATEGORY, IS_RETURNING, UPDATED_AT "
            f"FROM read_parquet('{files}/*.parquet')"]:
    r = call("POST", "/api/2.0/sql/statements", {"statement": sql, "warehouse_id": "test-warehouse", "wait_timeout": "50s"})
    while r["status"]["state"] in ("PENDING", "RUNNING"):
        time.sleep(0.5)
        r = call("GET", "/api/2.0/sql/statements/" + r["statement_id"])
    if r["status"]["state"] != "SUCCEEDED":
        sys.exit(f"seeding failed: {sql}\n{json.dumps(r)}")
EOF
  cat >"$dir/views/bench.json" <<EOF
{
  "name": "bench_features", "version": 1,
  "entity": { "name": "domain_userid" },
  "batch_source": { "name": "bench_source", "database": "bench_dbx", "schema": "bench",
                    "table": "BENCH_DBX", "timestamp_field": "UPDATED_AT" },
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
  cat >"$dir/materializer.toml" <<EOF
[sync]
page_rows = $page_rows
[warehouse]
kind = "databricks"
host = "$host"
warehouse_id = "test-warehouse"
token = "dapi-test-token"
query_timeout = "10m"
[profiles]
redis_url = "redis://127.0.0.1:$port"
[registry]
files = ["$dir/views/*.json"]
[log]
level = "warn"
format = "text"
EOF
  redis_cli flushall >/dev/null
  echo "== databricks full sync, page_rows=$page_rows" >&2
  timed_sync "$dir/materializer.toml" "databricks-full-$page_rows"
  rate=$(awk -v r="$read" -v w="$wall" 'BEGIN { printf "%.0f", r / w }')
  dbx_results+=("$(printf '%-10s %9s %9s %7ss %7ss %9s %10s %8s' \
    "$page_rows" "$read" "$(redis_cli dbsize)" "$wall" "$run_s" "$rate" "$statements" "${rss}MB")")
  kill "${pids[-1]}" 2>/dev/null || true
}
databricks_bench
# --- end Databricks -----------------------------------------------------------

# --- BigQuery (warehouse.kind = "bigquery") -----------------------------------
# BENCH_BIGQUERY_ROWS rows (default 1000000; 0 = skip) of the 1m shape, served by
# the REST API v2 stand-in (tests/support/bigquery_server.py, DuckDB inside;
# venv from scripts/python-env.sh bigquery) on a free port: one query job, its
# result read in pages of maxResults = page_rows rows (JSON cells, as the REST
# API sends them). Seeded server-side through jobs.query from the Parquet files
# `gen_bench_data full` writes (CREATE TABLE ... AS SELECT ... FROM
# read_parquet) into bench-project.bench.BENCH_BQ; the daemon authenticates with
# a throwaway service-account key (openssl genpkey) at the stand-in's /token.
# One full sync at BENCH_PAGE_ROWS. The stand-in's speed is not the service's.
bq_results=()
bigquery_bench() {
  local n=${BENCH_BIGQUERY_ROWS:-1000000}
  [ "$n" -gt 0 ] || return 0
  command -v openssl >/dev/null || { echo "bench.sh: openssl not found (apt-get install openssl)" >&2; exit 1; }
  local py dir=$work/bigquery base rate
  py=$(scripts/python-env.sh bigquery)
  rm -rf "$dir"
  mkdir -p "$dir/views"
  "$py" tests/support/bigquery_server.py --port 0 >"$dir/server.out" 2>"$dir/server.log" </dev/null &
  pids+=($!)
  for _ in $(seq 300); do grep -q READY "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
  grep -q READY "$dir/server.out" || { echo "bench.sh: bigquery_server.py did not start:" >&2; tail -20 "$dir/server.log" >&2; exit 1; }
  base=http://127.0.0.1:$(sed -nE 's/^READY ([0-9]+).*/\1/p' "$dir/server.out")
  echo "== bigquery: generating $n rows (1m shape), seeding bench-project.bench.BENCH_BQ" >&2
  "$gen" full --dir "$dir/data" --table BENCH_BQ --rows "$n" --entities "$n" >&2
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/key.pem" 2>/dev/null
  # The key file, then the statements in order through jobs.query (polled to completion).
  "$py" - "$base" "$dir/data/BENCH_BQ" "$dir/key.pem" "$dir/service-account.json" <<'EOF' >&2
import json, sys, time, urllib.request
base, files, pem, keyfile = sys.argv[1:5]
with open(keyfile, "w") as f:
    json.dump({"type": "service_account", "project_id": "bench-project", "private_key_id": "bench-key",
               "private_key": open(pem).read(), "client_email": "materializer@bench-project.iam.gserviceaccount.com",
               "client_id": "1", "token_uri": base + "/token"}, f)
api = base + "/bigquery/v2/projects/bench-project"
def call(method, path, body=None):
    req = urllib.request.Request(api + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
for sql in ["CREATE SCHEMA IF NOT EXISTS `bench-project`.`bench`",
            "CREATE OR REPLACE TABLE `bench-project`.`bench`.`BENCH_BQ` AS SELECT DOMAIN_USERID, TOTAL_TRANSACTIONS, "
            "TOTAL_REVENUE, AVG_ORDER_VALUE, FAVOURITE_CATEGORY, IS_RETURNING, UPDATED_AT "
            f"FROM read_parquet('{files}/*.parquet')"]:
    r = call("POST", "/queries", {"query": sql, "useLegacySql": False, "timeoutMs": 10000})
    while not r.get("jobComplete"):
        r = call("GET", "/queries/%s?timeoutMs=10000" % r["jobReference"]["jobId"])
EOF
  cat >"$dir/views/bench.json" <<EOF
{
  "name": "bench_features", "version": 1,
  "entity": { "name": "domain_userid" },
  "batch_source": { "name": "bench_source", "database": "bench-project", "schema": "bench",
                    "table": "BENCH_BQ", "timestamp_field": "UPDATED_AT" },
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
  cat >"$dir/materializer.toml" <<EOF
[sync]
page_rows = $page_rows
[warehouse]
kind = "bigquery"
project = "bench-project"
api_url = "$base/bigquery/v2"
token_url = "$base/token"
credentials_path = "$dir/service-account.json"
query_timeout = "30m"
[profiles]
redis_url = "redis://127.0.0.1:$port"
[registry]
files = ["$dir/views/*.json"]
[log]
level = "warn"
format = "text"
EOF
  redis_cli flushall >/dev/null
  echo "== bigquery full sync, page_rows=$page_rows" >&2
  timed_sync "$dir/materializer.toml" "bigquery-full-$page_rows"
  rate=$(awk -v r="$read" -v w="$wall" 'BEGIN { printf "%.0f", r / w }')
  bq_results+=("$(printf '%-10s %9s %9s %7ss %7ss %9s %10s %8s' \
    "$page_rows" "$read" "$(redis_cli dbsize)" "$wall" "$run_s" "$rate" "$statements" "${rss}MB")")
  kill "${pids[-1]}" 2>/dev/null || true
}
bigquery_bench
# --- end BigQuery -------------------------------------------------------------

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
if [ ${#pg_results[@]} -gt 0 ]; then
  echo
  echo "PostgreSQL (warehouse.kind = \"postgres\", 1m shape seeded with generate_series), full sync:"
  printf '%-10s %9s %9s %8s %8s %9s %10s %8s\n' page_rows rows keys wall run rows/s statements peakRSS
  for r in "${pg_results[@]}"; do echo "$r"; done
fi
if [ ${#dbx_results[@]} -gt 0 ]; then
  echo
  echo "Databricks (warehouse.kind = \"databricks\", stand-in tests/support/databricks_server.py: DuckDB, chunks of ${BENCH_DATABRICKS_CHUNK_ROWS:-50000} rows behind external links), full sync:"
  printf '%-10s %9s %9s %8s %8s %9s %10s %8s\n' page_rows rows keys wall run rows/s statements peakRSS
  for r in "${dbx_results[@]}"; do echo "$r"; done
fi
if [ ${#bq_results[@]} -gt 0 ]; then
  echo
  echo "BigQuery (warehouse.kind = \"bigquery\", stand-in tests/support/bigquery_server.py: DuckDB, REST pages of maxResults = page_rows), full sync:"
  printf '%-10s %9s %9s %8s %8s %9s %10s %8s\n' page_rows rows keys wall run rows/s statements peakRSS
  for r in "${bq_results[@]}"; do echo "$r"; done
fi
if [ ${#reads[@]} -gt 0 ]; then
  echo
  echo "Read API: one attribute of N random entities per request, best of $read_rounds rounds of ${read_seconds}s; feast = feast serve ($feast_workers workers) on the same Redis; p50/p99 in ms"
  printf '%-12s %7s %8s  %9s %8s %8s %6s  %9s %8s %8s %6s  %7s\n' reads clients entities \
    ours-req/s p50 p99 errors feast-req/s p50 p99 errors "ours/feast"
  for r in "${reads[@]}"; do echo "$r"; done
fi
