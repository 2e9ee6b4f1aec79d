#!/usr/bin/env python3
"""Loads the example attribute table into a Snowflake-protocol server.

Creates SNOWPLOW_DEV1.SIGNALS.SNOWPLOW_ECOMMERCE_TRANSACTION_INTERACTIONS_FEATURES
(the table of the seed view in config/views/) and fills it from
data/example/ecommerce_transaction_interactions.csv, replacing what was there.
Uses the real Snowflake Python connector, so it works against Snowflake too
(pass --account/--user/--password and no --port).

Usage: seed_example.py [--host 127.0.0.1 --port 8099] [--csv PATH]
"""
import argparse
import csv
import os
import sys

import snowflake.connector

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = "SNOWPLOW_ECOMMERCE_TRANSACTION_INTERACTIONS_FEATURES"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8099)
    ap.add_argument("--account", default="local")
    ap.add_argument("--user", default="SIGNALS")
    ap.add_argument("--password", default="local-dev-only")
    ap.add_argument("--csv", default=os.path.join(ROOT, "data/example/ecommerce_transaction_interactions.csv"))
    a = ap.parse_args()
    with open(a.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    conn = snowflake.connector.connect(
        account=a.account, user=a.user, password=a.password,
        host=a.host, port=a.port, protocol="http", database="SNOWPLOW_DEV1",
    )
    cur = conn.cursor()
    cur.execute("CREATE DATABASE IF NOT EXISTS SNOWPLOW_DEV1")
    cur.execute("CREATE SCHEMA IF NOT EXISTS SNOWPLOW_DEV1.SIGNALS")
    cur.execute(
        f"CREATE OR REPLACE TABLE SNOWPLOW_DEV1.SIGNALS.{TABLE} ("
        "DOMAIN_USERID VARCHAR, TOTAL_TRANSACTIONS NUMBER(38,0), TOTAL_REVENUE NUMBER(38,0), "
        "AVG_TRANSACTION_REVENUE NUMBER(38,0), UPDATED_AT TIMESTAMP_NTZ)"
    )
    def lit(s: str) -> str:
        return "'" + s.replace("\\", "\\\\").replace("'", "''") + "'"
    for i in range(0, len(rows), 500):
        chunk = rows[i : i + 500]
        values = ", ".join(
            f"({lit(r['DOMAIN_USERID'])}, {int(r['TOTAL_TRANSACTIONS'])}, {int(r['TOTAL_REVENUE'])}, "
            f"{int(r['AVG_TRANSACTION_REVENUE'])}, {lit(r['UPDATED_AT'])})"
            for r in chunk
        )
        cur.execute(f"INSERT INTO SNOWPLOW_DEV1.SIGNALS.{TABLE} VALUES {values}")
    users = len({r["DOMAIN_USERID"] for r in rows})
    print(f"loaded {len(rows)} rows ({users} users) into SNOWPLOW_DEV1.SIGNALS.{TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
