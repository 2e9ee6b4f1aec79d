#!/usr/bin/env python3
"""Loads a benchmark Parquet table into the Snowflake-protocol test server.

Creates BENCH.PUBLIC.<table> with Snowflake types (VARCHAR, NUMBER, FLOAT,
BOOLEAN, TIMESTAMP_NTZ) and fills it from the Parquet files of one table
directory written by `gen_bench_data full`, through the real Python connector.
Used by scripts/bench.sh when BENCH_SNOWFLAKE_ROWS is set.

Usage: bench_seed_snowflake.py --port PORT --table NAME --files DIR
"""
import argparse
import glob
import os
import time

import pyarrow.parquet as pq
import snowflake.connector

COLUMNS = (
    "DOMAIN_USERID VARCHAR, TOTAL_TRANSACTIONS NUMBER(10,0), TOTAL_REVENUE NUMBER(19,0), "
    "AVG_ORDER_VALUE FLOAT, FAVOURITE_CATEGORY VARCHAR, IS_RETURNING BOOLEAN, UPDATED_AT TIMESTAMP_NTZ"
)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--files", required=True, help="directory of .parquet files")
    a = ap.parse_args()
    conn = snowflake.connector.connect(
        account="local", user="SIGNALS", password="local-dev-only",
        host=a.host, port=a.port, protocol="http", database="BENCH",
    )
    cur = conn.cursor()
    cur.execute("CREATE DATABASE IF NOT EXISTS BENCH")
    cur.execute("CREATE SCHEMA IF NOT EXISTS BENCH.PUBLIC")
    cur.execute(f"CREATE OR REPLACE TABLE BENCH.PUBLIC.{a.table} ({COLUMNS})")
    started, n = time.time(), 0
    for path in sorted(glob.glob(os.path.join(a.files, "*.parquet"))):
        t = pq.read_table(path)
        cols = [t.column(i).to_pylist() for i in range(t.num_columns)]
        rows = list(zip(*cols))
        for i in range(0, len(rows), 2000):
            values = ", ".join(
                f"('{e}', {tx}, {rev}, {avg!r}, '{cat}', {str(ret).upper()}, "
                f"'{ts.strftime('%Y-%m-%d %H:%M:%S.%f')}')"
                for e, tx, rev, avg, cat, ret, ts in rows[i : i + 2000]
            )
            cur.execute(f"INSERT INTO BENCH.PUBLIC.{a.table} VALUES {values}")
        n += len(rows)
    print(f"loaded {n} rows into BENCH.PUBLIC.{a.table} in {time.time() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
